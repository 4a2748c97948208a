"""Azurite (the Azure Storage emulator, npm package installed by `make install` into tools/azurite) on a free
loopback port, with its well-known development account."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MAIN_JS = ROOT / "tools" / "azurite" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's published development key (not a secret)."""


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


@contextmanager
def azurite(workdir: Path) -> Iterator[str]:
    """Run Azurite's blob service; yields its connection string. ``--skipApiVersionCheck``: azure-storage-blob
    speaks a newer API version than Azurite 3.37 knows, for calls Azurite serves alike."""
    if shutil.which("node") is None or not MAIN_JS.exists():
        pytest.fail("Azurite is not installed: run `make install` (npm install in tools/azurite)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "azurite.log").open("wb") as log:
        proc = subprocess.Popen(["node", str(MAIN_JS), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                 "--location", str(workdir), "--silent", "--disableTelemetry",
                                 "--skipApiVersionCheck"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60.0)  # node starts slowly on a busy machine
        yield connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
