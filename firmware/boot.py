"""Runs first at power-up. Kept tiny so a mistake here can never lock the board out of the REPL."""

import gc

try:
    import esp

    esp.osdebug(None)  # no vendor debug output on the console
except ImportError:
    pass

gc.collect()
