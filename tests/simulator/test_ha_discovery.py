"""Simulated thermostats publish Home Assistant discovery from the firmware's code and obey HA's mode commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from tests.broker_support import Inbox, close, subscribe
from thermolog import contract


def _render(template: str, value: str) -> str:
    """What Home Assistant renders from a discovery command template (its two Jinja expressions)."""
    stamp = str(int(time.time() * 1_000_000))
    return template.replace("{{ (as_timestamp(now()) * 1000000) | int }}", stamp).replace("{{ value }}", value)


@pytest.mark.parametrize(("flag", "setting"), [(["--ha-discovery"], {}),
                                               ([], {"THERMOLOG_SIM_HA_DISCOVERY": "true"})])
def test_simulator_discovery_and_a_home_assistant_mode_command(thermolog_env: dict[str, str], topic_prefix: str,
                                                               flag: list[str], setting: dict[str, str]) -> None:
    """`simulate --ha-discovery` (or THERMOLOG_SIM_HA_DISCOVERY): a retained climate config whose topics are the
    device's; the mode command HA renders from it (`{"request_id": "ha-mode-...", "mode": "off"}`) is acked and
    shows in the retained state."""
    discovery_prefix = f"ha{topic_prefix}"
    env = {**os.environ, **thermolog_env, "THERMOLOG_HA_DISCOVERY_PREFIX": discovery_prefix}
    proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "simulate", "--devices", "1", "--interval", "1",
                             *flag], env={**env, **setting}, stderr=subprocess.PIPE, text=True)
    client = mqtt.Client(client_id=f"ha-{topic_prefix}", clean_session=True)
    inbox = Inbox(client)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        subscribe(client, f"{discovery_prefix}/climate/+/config")
        subscribe(client, f"{topic_prefix}/sim-01/#")
        assert inbox.wait_for(lambda ms: any(t.startswith(discovery_prefix) for t, _ in ms), 30)
        topic, payload = next((t, p) for t, p in inbox.messages if t.startswith(discovery_prefix))
        assert topic == f"{discovery_prefix}/climate/sim-01/config"
        config = json.loads(payload)
        assert config["mode_command_topic"] == contract.topic("sim-01", contract.CMD, topic_prefix)
        assert config["availability_topic"] == contract.topic("sim-01", contract.STATUS, topic_prefix)
        assert (config["min_temp"], config["max_temp"], config["temp_step"]) == (5.0, 35.0, 0.5)
        command = _render(config["mode_command_template"], "off")
        request_id = json.loads(command)["request_id"]
        assert request_id.startswith("ha-mode-")
        client.publish(config["mode_command_topic"], command.encode(), qos=1)
        ack_topic = contract.topic("sim-01", contract.CMD_ACK, topic_prefix)
        state_topic = contract.topic("sim-01", contract.STATE, topic_prefix)
        assert inbox.wait_for(lambda ms: any(t == ack_topic and json.loads(p)["request_id"] == request_id
                                             for t, p in ms), 10)
        ack = next(json.loads(p) for t, p in inbox.messages if t == ack_topic)
        assert ack["ok"] is True
        assert inbox.wait_for(lambda ms: any(t == state_topic and json.loads(p)["mode"] == "off" for t, p in ms), 10)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        client.publish(f"{discovery_prefix}/climate/sim-01/config", b"", qos=1, retain=True).wait_for_publish(5)
        close(client)
