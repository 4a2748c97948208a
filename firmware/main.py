"""Entry point on the board: load ``config.json``, build the real parts, run the thermostat loop forever.

A crash switches the heater off and restarts the board after a pause; a configuration error stops at the REPL
with the key to fix (restarting would not help).
"""

import time

import board
import config
import machine
from device import Device


def log(message):
    """Log to the serial console (``mpremote`` shows it), stamped with milliseconds since boot."""
    print("[%d] %s" % (time.ticks_ms(), message))


def run(device, loop_ms, max_loops=None):
    """Call ``device.step()`` every ``loop_ms`` (``max_loops`` bounds it for tests)."""
    loops = 0
    while max_loops is None or loops < max_loops:
        started = time.ticks_ms()
        device.step()
        loops += 1
        spent = time.ticks_diff(time.ticks_ms(), started)
        if spent < loop_ms:
            time.sleep_ms(loop_ms - spent)


def main(config_path="config.json", max_loops=None):
    """Build the device from the configuration and run it; the heater is switched off however the loop ends."""
    cfg = config.load(config_path)
    parts = board.build(cfg, log)
    device = Device(cfg, log=log, **parts)
    log("thermostat %s starting: target %s, mode %s" % (cfg["device_id"], device.thermostat.target, device.mode))
    try:
        run(device, cfg["intervals"]["loop_ms"], max_loops)
    finally:
        device.shutdown()
    return device


if __name__ == "__main__":
    try:
        main()
    except config.ConfigError as exc:
        log("config error: %s" % exc)
    except KeyboardInterrupt:
        log("stopped")
    except Exception as exc:  # noqa: BLE001 - anything else: restart and try again
        log("fatal: %r; restarting in 10 s" % (exc,))
        time.sleep(10)
        machine.reset()
