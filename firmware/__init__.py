"""The ESP32 MicroPython firmware, importable on the PC for the host run and the tests.

On the board every file sits at the top of the flash and modules import each other by plain name
(``import device``), with the shared control logic copied there as ``control.py``. Importing this package on
the PC recreates that: the firmware folder goes on ``sys.path`` and ``control`` is ``thermolog.control``.
"""

import sys
from pathlib import Path

import thermolog.control

FIRMWARE_DIR = Path(__file__).resolve().parent

sys.modules.setdefault("control", thermolog.control)
if str(FIRMWARE_DIR) not in sys.path:
    sys.path.append(str(FIRMWARE_DIR))
