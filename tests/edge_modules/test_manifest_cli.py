"""The rendered deployment manifest passes the Azure CLI's own schema check, and a built wheel can render it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from edge_modules.manifest import TEMPLATE, TWIN_VALUE_MAX_CHARS, main, render, split_create_options
from tests.azure_standins.cli_schemas import SCHEMAS, cli_schema_errors
from tests.edge_modules.test_manifest import MANIFEST_ENV

ROOT = Path(__file__).resolve().parents[2]
SHARED_SCHEMAS = ROOT.parent / "shared" / "reference" / "azure-iot-cli-schemas"
NUMBERED = [f"createOptions{i:02d}" for i in range(1, 8)]


def all_modules(manifest: dict) -> dict[str, dict]:
    """System and user modules of ``$edgeAgent`` by name."""
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    return {**agent["systemModules"], **agent["modules"]}


def joined_create_options(settings: dict) -> str:
    """What the IoT Edge agent reads: ``createOptions`` followed by ``createOptions01``, ``02``, ... in order."""
    pieces = [settings["createOptions"]]
    for key in NUMBERED:
        if key not in settings:
            break
        pieces.append(settings[key])
    return "".join(pieces)


def write_template(tmp_path: Path, binds: int) -> Path:
    """The project's template with ``binds`` extra volume binds in thermostat_reader's createOptions."""
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    reader = template["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["thermostat_reader"]
    reader["settings"]["createOptions"]["HostConfig"]["Binds"] += [
        f"/srv/thermolog/volume-{i:03d}:/data/volume-{i:03d}:ro" for i in range(binds)]
    path = tmp_path / "deployment.template.json"
    path.write_text(json.dumps(template), encoding="utf-8")
    return path


def test_the_cli_schemas_refuse_the_template_as_it_is() -> None:
    """The check itself: the template's createOptions objects are the five errors the real CLI printed."""
    errors = cli_schema_errors(json.loads(TEMPLATE.read_text(encoding="utf-8")))
    assert len(errors) == 5, errors
    assert all(e.split(":")[0].endswith(".settings.createOptions") and "is not of type 'string'" in e
               for e in errors), errors


@pytest.mark.parametrize("platform", [None, "amd64", "arm64v8"])
def test_rendered_manifest_passes_the_cli_schemas(platform: str | None) -> None:
    """`python -m edge_modules.manifest` output has no error under the CLI's own schemas."""
    assert cli_schema_errors(render(MANIFEST_ENV, platform=platform)) == []


def test_create_options_are_compact_json_strings_of_the_template_objects() -> None:
    """Each module's createOptions is its template object as compact JSON; `$schema-template` is gone."""
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    manifest = render(MANIFEST_ENV, platform="amd64")
    assert "$schema-template" in template and "$schema-template" not in manifest
    expected = all_modules(template)
    for name, module in all_modules(manifest).items():
        text = module["settings"]["createOptions"]
        assert isinstance(text, str) and len(text) <= TWIN_VALUE_MAX_CHARS
        assert json.loads(text) == expected[name]["settings"]["createOptions"]
        assert text == json.dumps(json.loads(text), separators=(",", ":"))
    reader = all_modules(manifest)["thermostat_reader"]["settings"]["createOptions"]
    assert reader == '{"HostConfig":{"Binds":["/etc/thermolog/ca.pem:/etc/thermolog/ca.pem:ro"]}}'


def test_long_create_options_are_split_as_iotedgedev_splits_them(tmp_path: Path) -> None:
    """1,300+ characters become createOptions, createOptions01, createOptions02: 512 characters each but the last,
    joined back they are the object, and the CLI schemas accept the pieces."""
    manifest = render(MANIFEST_ENV, template=write_template(tmp_path, binds=30))
    settings = all_modules(manifest)["thermostat_reader"]["settings"]
    pieces = {k: v for k, v in settings.items() if k.startswith("createOptions")}
    assert list(pieces) == ["createOptions", "createOptions01", "createOptions02"]
    assert [len(v) for v in pieces.values()][:2] == [TWIN_VALUE_MAX_CHARS] * 2
    assert 0 < len(pieces["createOptions02"]) <= TWIN_VALUE_MAX_CHARS
    binds = json.loads(joined_create_options(settings))["HostConfig"]["Binds"]
    assert len(binds) == 31 and binds[-1] == "/srv/thermolog/volume-029:/data/volume-029:ro"
    assert cli_schema_errors(manifest) == []


def test_split_keeps_strings_and_empty_values() -> None:
    """A createOptions already written as a string is cut, not re-encoded; an empty one stays one empty piece."""
    assert split_create_options("m", "") == {"createOptions": ""}
    assert split_create_options("m", {}) == {"createOptions": "{}"}
    text = '{"Env": ["' + "x" * 600 + '"]}'
    pieces = split_create_options("m", text)
    assert list(pieces) == ["createOptions", "createOptions01"] and "".join(pieces.values()) == text


def test_create_options_beyond_eight_pieces_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """More than 8 x 512 characters cannot be deployed: an error naming the module, no manifest written."""
    template = write_template(tmp_path, binds=120)
    with pytest.raises(ValueError, match="createOptions of thermostat_reader is .* the most IoT Edge takes is 4096"):
        render(MANIFEST_ENV, template=template)
    for key, value in MANIFEST_ENV.items():
        monkeypatch.setenv(key, value)
    output = tmp_path / "deployment.json"
    monkeypatch.setattr("edge_modules.manifest.render",
                        lambda env, platform=None: render(env, platform, template=template))
    assert main(["-o", str(output)]) == 2
    assert "thermostat_reader" in capsys.readouterr().err and not output.exists()


def test_vendored_schemas_equal_the_shared_reference_copy() -> None:
    """The copies in tests/schemas are the reference files unchanged (checked where shared/ is beside the repo)."""
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip(f"{SHARED_SCHEMAS} is not here (only CI and the project machines have shared/)")
    reference = sorted(p.name for p in SHARED_SCHEMAS.glob("*.json"))
    assert reference == sorted(p.name for p in SCHEMAS.glob("*.json"))
    for name in reference:
        assert (SCHEMAS / name).read_bytes() == (SHARED_SCHEMAS / name).read_bytes(), name


def copy_build_inputs(destination: Path) -> None:
    """pyproject.toml, README.md and the package folders pyproject's ``packages.find`` includes, nothing else, so
    the build neither sees nor writes the working tree."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    for folder in ROOT.iterdir():
        if folder.is_dir() and (folder / "__init__.py").is_file() and any(fnmatch(folder.name, p) for p in patterns):
            shutil.copytree(folder, destination / folder.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def test_wheel_carries_the_edge_deployment_files_and_renders_from_them(tmp_path: Path) -> None:
    """A wheel built from the project holds every file of edge_modules/ (template, module.json, Dockerfiles,
    requirements), and the manifest renders from the unpacked wheel alone, valid for the CLI."""
    source, dist, unpacked = tmp_path / "source", tmp_path / "dist", tmp_path / "site"
    source.mkdir()
    copy_build_inputs(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(source)], check=True, capture_output=True, timeout=240)
    (wheel,) = dist.glob("thermolog-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(unpacked)
    edge = ROOT / "edge_modules"
    wanted = {p.relative_to(ROOT).as_posix() for p in edge.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert {"edge_modules/deployment.template.json", "edge_modules/thermostat_reader/Dockerfile",
            "edge_modules/system_reader/module.json", "edge_modules/cloud_publisher/requirements.txt"} <= wanted
    assert wanted - names == set()

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(MANIFEST_ENV, PYTHONPATH=str(unpacked))
    where = subprocess.run([sys.executable, "-c", "import edge_modules.manifest as m; print(m.TEMPLATE)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()) == unpacked / "edge_modules" / "deployment.template.json"
    rendered = subprocess.run([sys.executable, "-m", "edge_modules.manifest", "--platform", "amd64"], cwd=tmp_path,
                              env=env, check=True, capture_output=True, text=True, timeout=60)
    manifest = json.loads(rendered.stdout)
    assert cli_schema_errors(manifest) == []
    assert all_modules(manifest)["system_reader"]["settings"]["image"] == \
        "thermologacr.azurecr.io/thermolog-system-reader:0.1.0-amd64"
