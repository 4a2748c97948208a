"""IoT Edge module `system_reader` (see main.py)."""
