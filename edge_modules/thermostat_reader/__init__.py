"""IoT Edge module `thermostat_reader` (see main.py)."""
