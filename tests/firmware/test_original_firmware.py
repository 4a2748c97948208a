"""The original firmware's behaviour (tests/original_firmware_mp.py) runs on real MicroPython: its commands and
its reading, through a umqtt-shaped fake client, exactly as the process in tests/ingest/test_device_kinds.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.firmware.test_micropython import ROOT, run_micropython
from thermolog import contract
from thermolog.profiles import original_profile, translate

SCRIPT = """
import json
import sys
import original_firmware_mp as fw

class FakeUmqtt:
    def __init__(self, inbox):
        self.inbox, self.sent, self.subscribed, self.cb = list(inbox), [], [], None
    def set_callback(self, cb):
        self.cb = cb
    def connect(self):
        pass
    def subscribe(self, topic, qos):
        self.subscribed.append((topic, qos))
    def check_msg(self):
        if self.inbox:
            self.cb(b"iot/esp32c3-01/cmd", self.inbox.pop(0))
    def publish(self, topic, msg):
        self.sent.append((topic, msg.decode()))
    def disconnect(self):
        pass

inbox = [b'{"cmd": "set", "value": 21.7}', b'{"cmd": "increase"}', b'{"cmd": "set", "value": 50}',
         b'{"cmd": "decrease"}', b'not json', b'{"cmd": "reboot"}', b'{"cmd": "set", "value": "x"}']
client = FakeUmqtt(inbox)
turns = []
def stop():
    turns.append(1)
    return len(turns) > 12
fw.run(client, "esp32c3-01", "iot", read_interval=0, stop=stop, clock=lambda: "2025-07-04T00:13:36Z")
print("RESULT " + json.dumps({"impl": sys.implementation.name, "subscribed": client.subscribed,
                              "sent": client.sent}))
"""


@pytest.mark.micropython
def test_original_firmware_logic_on_micropython(tmp_path: Path) -> None:
    """`set` applies int(value) within 10-35, increase/decrease step 1, anything else is ignored; each reading
    on iot/<id>/status is one the `original` profile stores."""
    script = tmp_path / "original.py"
    script.write_text(SCRIPT)
    proc = run_micropython(script, [(ROOT / "tests" / "original_firmware_mp.py", "/lib/original_firmware_mp.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["impl"] == "micropython"
    assert result["subscribed"] == [["iot/esp32c3-01/cmd", 0]]
    topics = {topic for topic, _msg in result["sent"]}
    assert topics == {"iot/esp32c3-01/status"}
    targets = [json.loads(msg)["target_temp"] for _topic, msg in result["sent"]]
    # after each command in turn: 21 (int(21.7)), 22, 35 (clamped), 34, then unchanged by the junk
    assert targets[:5] == [21, 22, 35, 34, 34] and set(targets[5:]) == {34}
    profile = original_profile()
    reading = translate(profile, "esp32c3-01", result["sent"][0][1].encode(), contract.CLOCK_FLOOR).reading
    assert (reading.device_id, reading.target_temp, reading.humidity) == ("esp32c3-01", 21.0, 44.9)
