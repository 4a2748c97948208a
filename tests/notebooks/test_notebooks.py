"""Every notebook runs top to bottom (nbclient, a kernel on this interpreter) on history that went through MQTT
and ingest, and the notebooks are committed without outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.simhistory import History

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL = "thermolog-test"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def kernel_on_this_interpreter(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kernelspec that starts ipykernel with this very interpreter (the project's .venv), found first."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "thermolog tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        yield KERNEL


def test_there_are_notebooks_for_each_topic() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_explore_telemetry.ipynb", "02_heating_behaviour.ipynb", "03_thermal_model.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    """Outputs and execution counts stay out of git: diffs stay readable and no data leaks into the repo."""
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {cell.id} has output"


def _set_parameters(book: nbformat.NotebookNode, values: dict[str, object]) -> None:
    (cell,) = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line
             and not line.startswith("#")}
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items() if k in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_on_ingested_history(path: Path, simulated_history: History,
                                                        kernel_on_this_interpreter: str) -> None:
    """Executes every cell on the 14-day history (an error in any cell fails the test) and draws Plotly figures."""
    book = nbformat.read(path, as_version=4)
    _set_parameters(book, {"DB_PATH": str(simulated_history.db_path),
                           "PARAMS_PATH": str(simulated_history.params_path)})
    client = NotebookClient(book, kernel_name=kernel_on_this_interpreter, timeout=180,
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    client.execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert figures, f"{path.name} drew no Plotly figure"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{simulated_history.readings:,} readings of 3 devices" in text
