"""The settings a user changes on the device (target, mode), kept in a small JSON file on flash."""

import json
import os


def load(path):
    """The saved dict, or an empty one when the file is missing or damaged (first boot, power cut)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(path, data):
    """Write ``data`` atomically: a temporary file renamed over the old one, so a power cut leaves one of them."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    try:
        os.rename(tmp, path)
    except OSError:  # file systems that refuse to rename over an existing file
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)
