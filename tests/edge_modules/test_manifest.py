"""Structure of the edge deployment: manifest routes, module folders, Dockerfiles and requirements."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from tests.azure_standins.routes import UPSTREAM, load_manifest, manifest_routes, parse_route

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "edge_modules"
MODULES = ("system_reader", "thermostat_reader", "cloud_publisher")
EXPECTED_ROUTES = {
    ("thermostat_reader", "telemetry", "cloud_publisher", "telemetry"),
    ("system_reader", "system", "cloud_publisher", "system"),
    ("cloud_publisher", "*", UPSTREAM, None),
}
# Import name -> requirement name, for the packages a module image may install.
IMPORT_TO_REQUIREMENT = {
    "azure": "azure-iot-device", "paho": "paho-mqtt", "orjson": "orjson", "pydantic": "pydantic",
    "pydantic_settings": "pydantic-settings", "psutil": "psutil",
}
NOT_IN_IMAGES = ("duckdb", "polars", "pyarrow", "streamlit", "plotly", "numpy", "scipy", "msal", "amqtt", "ingest",
                 "app", "simulator")


def _outputs_and_inputs(module: str) -> tuple[set[str], set[str]]:
    """Output names a module's main.py sends to, and input names it accepts, read from its source."""
    tree = ast.parse((EDGE / module / "main.py").read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    outputs = {constants["OUTPUT"]} if "OUTPUT" in constants else set()
    inputs: set[str] = set()
    if module == "cloud_publisher":
        from edge_modules.cloud_publisher.main import INPUTS

        inputs, outputs = set(INPUTS), {"*"}  # forwards each input on the output of the same name
    return outputs, inputs


def test_manifest_routes_are_exactly_the_architecture_routes() -> None:
    """thermostat_reader/telemetry and system_reader/system to cloud_publisher; cloud_publisher/* upstream."""
    routes = manifest_routes(load_manifest(EDGE / "deployment.template.json"))
    assert {(r.module, r.output, r.sink_module, r.sink_input) for r in routes} == EXPECTED_ROUTES


def test_every_route_names_an_existing_module_output_and_input() -> None:
    """Each route's source output is one its module sends to; each sink input is one its module reads."""
    manifest = load_manifest(EDGE / "deployment.template.json")
    deployed = set(manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"])
    assert deployed == set(MODULES)
    for route in manifest_routes(manifest):
        outputs, _ = _outputs_and_inputs(route.module)
        assert route.module in deployed
        assert route.output in outputs or route.output == "*", route
        if route.sink_module != UPSTREAM:
            _, inputs = _outputs_and_inputs(route.sink_module)
            assert route.sink_module in deployed and route.sink_input in inputs, route


def test_manifest_sets_store_and_forward_ttl_and_module_images() -> None:
    """edgeHub keeps messages while offline; every module image comes from its module.json."""
    content = load_manifest(EDGE / "deployment.template.json")["modulesContent"]
    ttl = content["$edgeHub"]["properties.desired"]["storeAndForwardConfiguration"]["timeToLiveSecs"]
    assert isinstance(ttl, int) and ttl >= 3600
    for name, module in content["$edgeAgent"]["properties.desired"]["modules"].items():
        assert module["settings"]["image"] == f"${{MODULES.{name}}}"
        assert module["restartPolicy"] == "always"


def test_route_parser_refuses_what_edgehub_would_not_route() -> None:
    """The checker itself: a sink that is not a module input is an error, not silently accepted."""
    with pytest.raises(ValueError):
        parse_route("r", 'FROM /messages/modules/a/outputs/x INTO BrokeredEndpoint("/modules/b/outputs/y")')
    with pytest.raises(ValueError):
        parse_route("r", "FROM /messages/* INTO $upstream")


@pytest.mark.parametrize("module", MODULES)
def test_module_folder_has_main_dockerfile_requirements_and_module_json(module: str) -> None:
    """The four files IoT Edge tooling needs, with module.json pointing at the Dockerfile and the repo root."""
    folder = EDGE / module
    for name in ("main.py", "Dockerfile", "requirements.txt", "module.json"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "module.json").read_text(encoding="utf-8"))
    assert meta["image"]["contextPath"] == "../.."
    assert set(meta["image"]["tag"]["platforms"].values()) == {"./Dockerfile"}
    assert meta["image"]["repository"].startswith("$CONTAINER_REGISTRY_ADDRESS/")


@pytest.mark.parametrize("module", MODULES)
def test_dockerfile_is_slim_python_non_root_and_copies_what_exists(module: str) -> None:
    """Parsed with Docker's own parser: slim Python base, a non-root USER before CMD, COPY sources exist."""
    commands = dockerfile.parse_file(str(EDGE / module / "Dockerfile"))
    kinds = [c.cmd for c in commands]
    assert kinds[0] == "FROM" and commands[0].value[0].startswith("python:3.11-slim")
    users = [c for c in commands if c.cmd == "USER"]
    assert users and users[-1].value[0].split(":")[0] not in ("root", "0")
    assert kinds.index("USER") < kinds.index("CMD")
    cmd = next(c for c in commands if c.cmd == "CMD")
    assert cmd.json and cmd.value == ("python", "-m", f"edge_modules.{module}.main")
    for copy in (c for c in commands if c.cmd == "COPY"):
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), f"COPY {source} does not exist in the build context"


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_what_its_requirements_install(module: str) -> None:
    """Importing main.py pulls in no project dependency missing from the module's requirements.txt."""
    code = (f"import sys, json; import edge_modules.{module}.main; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                                           text=True).stdout))
    lines = (EDGE / module / "requirements.txt").read_text(encoding="utf-8").splitlines()
    required = {line.split(">")[0].split("<")[0].split("=")[0].strip() for line in lines
                if line.strip() and not line.startswith("#")}
    for name, requirement in IMPORT_TO_REQUIREMENT.items():
        if name in loaded:
            assert requirement in required, f"{module} imports {name} but does not require {requirement}"
    assert not loaded & set(NOT_IN_IMAGES), loaded & set(NOT_IN_IMAGES)


MANIFEST_ENV = {
    "CONTAINER_REGISTRY_ADDRESS": "thermologacr.azurecr.io",
    "CONTAINER_REGISTRY_USERNAME": "thermologacr",
    "CONTAINER_REGISTRY_PASSWORD": 'p"ss\\word',
    "THERMOLOG_MQTT_URL": "mqtts://broker.local:8883",
    "THERMOLOG_MQTT_USERNAME": "edge",
    "THERMOLOG_MQTT_PASSWORD": "secret",
}


def test_rendered_manifest_names_module_images_and_fills_every_placeholder() -> None:
    """`python -m edge_modules.manifest` output is ready for `az iot edge set-modules`."""
    from edge_modules.manifest import render

    manifest = render(MANIFEST_ENV, platform="amd64")
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    images = {name: m["settings"]["image"] for name, m in agent["modules"].items()}
    assert images == {m: f"thermologacr.azurecr.io/thermolog-{m.replace('_', '-')}:0.1.0-amd64" for m in MODULES}
    assert agent["runtime"]["settings"]["registryCredentials"]["thermologacr"]["password"] == 'p"ss\\word'
    text = json.dumps(manifest)
    assert "${" not in text and not re.search(r"\$[A-Z]", text)
    assert "$upstream" in text and "$edgeHub" in manifest["modulesContent"]  # hub names stay
    assert {r.sink_module for r in manifest_routes(manifest)} == {"cloud_publisher", UPSTREAM}


def test_rendering_without_a_value_names_the_missing_placeholder(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing registry password is an error, not a manifest with `$CONTAINER_REGISTRY_PASSWORD` in it."""
    from edge_modules.manifest import main

    for key, value in MANIFEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CONTAINER_REGISTRY_PASSWORD")
    assert main([]) == 2
    assert "CONTAINER_REGISTRY_PASSWORD" in capsys.readouterr().err
