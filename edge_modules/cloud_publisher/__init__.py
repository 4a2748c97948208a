"""IoT Edge module `cloud_publisher` (see main.py)."""
