# The original system's thermostat firmware, as issue 14 and the seed's README describe it, in MicroPython: the
# seed ships only its README, so this re-creates its MQTT behaviour for the tests. It runs unchanged on real
# MicroPython (tests/firmware/test_original_firmware.py) and, with firmware.host_run's umqtt stand-in, as a
# process under CPython (tests/original_firmware.py).
#
# - every read_interval seconds: {"device_id", "timestamp" (whole seconds, Z), "temperature", "humidity",
#   "heating": "ON"/"OFF", "target_temp"} on topic_status (iot/<id>/status), QoS 0, no last will;
# - on topic_cmd (iot/<id>/cmd) exactly {"cmd": "set", "value": v} (int(v) within min/max, default 10-35),
#   {"cmd": "increase"} and {"cmd": "decrease"} (+-1); it answers nothing.
import json
import time


class OriginalThermostat:
    def __init__(self, device_id, target=25, min_temp=10, max_temp=35, temperature=20.0):
        self.device_id = device_id
        self.target = target
        self.min_temp = min_temp
        self.max_temp = max_temp
        self.temperature = temperature

    def on_message(self, topic, msg):
        # umqtt's callback signature; anything it does not understand is ignored silently, as the original does.
        try:
            data = json.loads(msg)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        cmd = data.get("cmd")
        if cmd == "set":
            try:
                value = int(data.get("value"))
            except (TypeError, ValueError):
                return
            self.target = max(self.min_temp, min(self.max_temp, value))
        elif cmd == "increase":
            self.target = min(self.max_temp, self.target + 1)
        elif cmd == "decrease":
            self.target = max(self.min_temp, self.target - 1)

    def reading(self, timestamp):
        heating = self.temperature < self.target
        self.temperature += 0.1 if heating else -0.1
        return json.dumps({
            "device_id": self.device_id, "timestamp": timestamp, "temperature": round(self.temperature, 1),
            "humidity": 44.9, "heating": "ON" if heating else "OFF", "target_temp": self.target,
        })


def iso_now():
    # The board's NTP-set RTC, in whole seconds with a trailing Z.
    t = time.gmtime()
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % t[:6]


def run(client, device_id, prefix="iot", read_interval=5, stop=lambda: False, clock=iso_now):
    thermostat = OriginalThermostat(device_id)
    client.set_callback(thermostat.on_message)
    client.connect()
    client.subscribe("%s/%s/cmd" % (prefix, device_id), 0)
    status_topic = "%s/%s/status" % (prefix, device_id)
    next_reading = time.time()
    try:
        while not stop():
            client.check_msg()
            if time.time() >= next_reading:
                client.publish(status_topic, thermostat.reading(clock()).encode())
                next_reading += read_interval
            time.sleep(0.02)
    finally:
        client.disconnect()
