"""Module start-up inside IoT Edge: ``IOTEDGE_*`` variables and the workload API on a unix socket (a stand-in)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from edge_modules import common
from edge_modules.system_reader.main import SystemReader
from tests.azure_standins.edgehub import HUB_HOSTNAME, IOTHUB_PORT, EdgeHubStandIn
from tests.azure_standins.workload import WorkloadApi
from thermolog import contract
from thermolog.settings import Settings

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
API_VERSION = "2019-01-30"


@pytest.fixture
def edgehub(tmp_path: Path) -> Iterator[EdgeHubStandIn]:
    """An edgeHub stand-in without routes."""
    hub = EdgeHubStandIn(tmp_path).start()
    yield hub
    hub.stop()


@pytest.fixture
def workload(tmp_path: Path, edgehub: EdgeHubStandIn) -> Iterator[WorkloadApi]:
    """The workload API whose trust bundle is the stand-in's CA."""
    # AF_UNIX paths are limited to ~108 bytes: pytest's tmp_path can be longer.
    api = WorkloadApi(Path(f"/tmp/thermolog-workload-{uuid.uuid4().hex[:8]}.sock"), edgehub.tls.ca.read_text())
    api.start()
    yield api
    api.stop()


def edge_env(workload: WorkloadApi, device_id: str, module_id: str) -> dict[str, str]:
    """The variables IoT Edge's agent gives every module container."""
    return {
        "IOTEDGE_IOTHUBHOSTNAME": HUB_HOSTNAME,
        "IOTEDGE_DEVICEID": device_id,
        "IOTEDGE_MODULEID": module_id,
        "IOTEDGE_GATEWAYHOSTNAME": "localhost",
        "IOTEDGE_MODULEGENERATIONID": "gen-1",
        "IOTEDGE_WORKLOADURI": workload.uri,
        "IOTEDGE_APIVERSION": API_VERSION,
        "IOTEDGE_AUTHSCHEME": "sasToken",
    }


def test_module_starts_from_the_edge_environment(edgehub: EdgeHubStandIn, workload: WorkloadApi,
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The client takes its CA from the trust bundle, signs its SAS token through the workload API and sends."""
    monkeypatch.chdir(tmp_path)
    for key, value in edge_env(workload, "edge-env-1", "system_reader").items():
        monkeypatch.setenv(key, value)
    module = SystemReader(common.create_client(**edgehub.client_kwargs()), Settings(edge_system_interval_s=1))
    assert module.host == "edge-env-1"  # the host name comes from IOTEDGE_DEVICEID
    module.start()
    try:
        event = edgehub.wait_for(lambda r: [e for e in r.events if e.device_id == "edge-env-1"
                                            and e.module_id == "system_reader"])[0]
    finally:
        module.stop()
    assert event.output == "system"
    contract.parse_system(event.body)
    gets = [r for r in workload.requests if r[0] == "GET"]
    signs = [r for r in workload.requests if r[0] == "POST"]
    assert gets and gets[0][1] == "/trust-bundle" and gets[0][2]["api-version"] == [API_VERSION]
    assert signs and signs[0][1] == "/modules/system_reader/genid/gen-1/sign"
    assert signs[0][3]["keyId"] == "primary" and signs[0][3]["algo"] == "HMACSHA256"
    signed = base64.b64decode(signs[0][3]["data"]).decode()
    resource, expiry = signed.split("\n")
    assert unquote(resource) == f"{HUB_HOSTNAME}/devices/edge-env-1/modules/system_reader"
    assert int(expiry) > time.time()


def test_broken_workload_api_fails_start_up_clearly(edgehub: EdgeHubStandIn, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a trust bundle the module cannot verify edgeHub and refuses to start."""
    api = WorkloadApi(Path(f"/tmp/thermolog-workload-{uuid.uuid4().hex[:8]}.sock"), "", fail_trust_bundle=True)
    api.start()
    try:
        for key, value in edge_env(api, "edge-env-2", "system_reader").items():
            monkeypatch.setenv(key, value)
        with pytest.raises(OSError, match="IoTEdge"):
            common.create_client()
    finally:
        api.stop()


@pytest.mark.slow
def test_module_main_runs_until_sigterm(edgehub: EdgeHubStandIn, workload: WorkloadApi, tmp_path: Path) -> None:
    """``python -m edge_modules.system_reader.main`` as the container runs it: samples flow, SIGTERM exits 0."""
    if edgehub.port != IOTHUB_PORT:
        pytest.skip("port 8883 is taken on this machine: main() cannot be pointed at the proxied stand-in")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THERMOLOG_", "Edge"))}
    env.update(edge_env(workload, "edge-env-3", "system_reader"), THERMOLOG_EDGE_SYSTEM_INTERVAL_S="1")
    proc = subprocess.Popen([sys.executable, "-m", "edge_modules.system_reader.main"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        edgehub.wait_for(lambda r: [e for e in r.events if e.device_id == "edge-env-3"], timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
