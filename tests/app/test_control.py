"""Control page: operators only, setpoints validated before sending, and the device's answer shown.

The send tests go through the real Mosquitto to a small fake thermostat that answers ``cmd`` with ``cmd/ack``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
import pytest
from streamlit.testing.v1 import AppTest

from app import ui
from app.roles import ROLE_OPERATOR, ROLE_VIEWER, User
from tests.app_support import DEVICES, STALE_DEVICE, SignedInBrowser, app, recent_db, texts, use_db, visible
from thermolog import contract

ENTRA = {"entra_client_id": "thermolog-test", "entra_tenant_id": "contoso-test"}
TARGET_KEY, DEVICE_KEY, SEND_KEY = "control.target", "control.device", "control.send"
REFUSAL = "window open, heating locked"
CRAFTED_REFUSAL = "locked: [reset it here](https://evil.example/reset) ![](https://evil.example/x.png)"


def operator() -> User:
    """An operator with a name unique to the test (the command rate limit counts per user)."""
    name = f"olivia-{uuid.uuid4().hex[:6]}@example.com"
    return User(name="Olivia Operator", username=name, roles=frozenset({ROLE_OPERATOR}))


VIEWER = User(name="Victor Viewer", username="victor@example.com", roles=frozenset({ROLE_VIEWER}))


class FakeThermostats:
    """Answers commands: the first device accepts, the second refuses with a reason, any other stays silent."""

    def __init__(self, prefix: str, host: str, port: int) -> None:
        self.prefix = prefix
        self.received: list[tuple[str, contract.Command]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(client_id=f"fake-{prefix}", clean_session=True)
        self.client.on_connect = lambda c, _u, _f, _rc: c.subscribe(f"{prefix}/+/{contract.CMD}", qos=1)
        self.client.on_subscribe = lambda *_args: self.ready.set()
        self.client.on_message = self.on_command_received
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise TimeoutError("fake thermostat did not subscribe")

    def on_command_received(self, client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        device = message.topic.split("/")[1]
        command = contract.parse_command(message.payload)
        self.received.append((device, command))
        if device == DEVICES[0]:
            ack = contract.CommandAck(request_id=command.request_id, ok=True, target_temp=command.target_temp)
        elif device == DEVICES[1]:
            ack = contract.CommandAck(request_id=command.request_id, ok=False, error=CRAFTED_REFUSAL)
        else:
            return
        client.publish(contract.topic(device, contract.CMD_ACK, self.prefix), contract.dumps(ack), qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


BROWSER: list[SignedInBrowser] = []


@pytest.fixture(autouse=True)
def signed_in_browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[SignedInBrowser]:
    """This test's browser; ``control_page`` signs it in."""
    BROWSER[:] = [SignedInBrowser(monkeypatch)]
    yield BROWSER[0]
    BROWSER.clear()


@pytest.fixture
def db(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recent readings at the test's database path; sign-in configured so the session's user counts."""
    path = recent_db(Path(thermolog_env["THERMOLOG_DB_PATH"]))
    use_db(monkeypatch, path, command_timeout_s="1.5", **ENTRA)
    return path


@pytest.fixture
def devices(db: Path, thermolog_env: dict[str, str], system_broker: tuple[str, int]) -> Iterator[FakeThermostats]:
    """Fake thermostats on the system broker under the test's topic prefix."""
    fake = FakeThermostats(thermolog_env["THERMOLOG_TOPIC_PREFIX"], *system_broker)
    yield fake
    fake.stop()


def test_viewer_cannot_see_or_send(db: Path) -> None:
    """A viewer gets an explanation and the audit, but no target input and no Send button."""
    at = control_page(VIEWER)
    assert not at.exception
    assert any("Only operators can change setpoints" in i for i in texts(at.info))
    assert not [w for w in at.text_input if w.key == TARGET_KEY]
    assert not [b for b in at.button if b.key == SEND_KEY]
    audit = at.dataframe[0].value
    assert set(audit["who"]) == {"alice@example.com", "bob@example.com"}
    assert set(audit["outcome"]) == {"ok", "refused"}
    assert REFUSAL in set(audit["reason"])


@pytest.mark.parametrize(("typed", "message"), [
    ("4.5", "outside 5.0..35.0"),
    ("35.5", "outside 5.0..35.0"),
    ("21.3", "not a multiple of 0.5"),
    ("warm", "'warm' is not a number"),
    ("", None),
])
def test_setpoint_validation_messages(db: Path, typed: str, message: str | None) -> None:
    """Below/above the range, off-step and not-a-number are explained, and Send stays disabled."""
    at = control_page(operator())
    at.text_input(key=TARGET_KEY).set_value(typed).run()
    assert not at.exception
    errors = texts(at.error)
    if message is None:
        assert errors == []
    else:
        assert len(errors) == 1 and message in visible(errors[0]) and "Enter a number in 5–35 °C" in errors[0]
    assert at.button(key=SEND_KEY).disabled


def test_device_panel_shows_current_target_temperature_and_heating(db: Path) -> None:
    """Beside the input: the chosen device's current target, temperature and heater."""
    at = control_page(operator())
    at.selectbox(key=DEVICE_KEY).set_value(DEVICES[1]).run()
    metrics = dict((m.label, m.value) for m in at.metric)
    assert metrics["Current target"] == "19.0 °C"
    assert metrics["Heating"] in ("ON", "OFF") and metrics["Status"] == "online"


def control_page(user: User, session: dict | None = None) -> AppTest:
    """The Control page in a browser signed in as ``user`` (``session``: session-state values set first)."""
    BROWSER[0].sign_in(user)
    return app("control", session=session)


def send(at, device: str, target: str):
    """Pick the device, type the target, press Send."""
    at.selectbox(key=DEVICE_KEY).set_value(device).run()
    at.text_input(key=TARGET_KEY).set_value(target).run()
    assert not at.button(key=SEND_KEY).disabled
    return at.button(key=SEND_KEY).click().run()


def test_send_accepted_with_the_users_identity(devices: FakeThermostats) -> None:
    """The device acks ok: success shown, and the command carried the signed-in user's name."""
    user = operator()
    at = send(control_page(user), DEVICES[0], "22.5")
    assert not at.exception
    assert any(f"{DEVICES[0]} accepted the new target 22.5 °C" in visible(s) for s in texts(at.success))
    [(device, command)] = devices.received
    assert (device, command.target_temp, command.issued_by) == (DEVICES[0], 22.5, user.username)


def test_send_refused_shows_the_devices_reason_as_text(devices: FakeThermostats) -> None:
    """The device refuses: its reason is shown, as the characters it sent (no link, no image)."""
    at = send(control_page(operator()), DEVICES[1], "23")
    errors = [e for e in texts(at.error) if "refused 23 °C" in e]
    assert [visible(e) for e in errors] == [f"{DEVICES[1]} refused 23 °C: {CRAFTED_REFUSAL}"]
    assert "](" not in errors[0]


def test_audit_times_are_in_the_chosen_zone(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The audit's times use the sidebar's time zone (computed on the script thread, not a Polars worker)."""
    at = control_page(VIEWER, session={ui.TZ_KEY: "Asia/Tokyo"})
    assert not at.exception
    when = at.dataframe[0].value["when"].to_list()
    assert len(when) == 2 and all(text.endswith(" JST") for text in when), when
    off_thread = [r.getMessage() for r in caplog.records if "missing ScriptRunContext" in r.getMessage()
                  and "Thread 'MainThread'" not in r.getMessage()]  # AppTest's own set-up warns on MainThread
    assert off_thread == []


def test_send_timeout_is_explained(devices: FakeThermostats) -> None:
    """No answer within the command timeout: a timeout warning says what to check."""
    at = send(control_page(operator()), STALE_DEVICE, "20")
    assert len(devices.received) == 1
    assert any(w.startswith("Timeout: no answer from attic") and "online" in w for w in texts(at.warning))


def test_original_firmware_device_is_marked_and_half_degrees_are_not_sent(devices: FakeThermostats,
                                                                          db: Path) -> None:
    """A device of the original firmware's kind is labelled as such, and 22.5 °C is refused before sending with
    the reason (it would apply int(22.5) = 22); nothing reaches the bus."""
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO devices VALUES (?, 'original', NULL, ?, NULL, now(), now())", [DEVICES[1], DEVICES[1]])
    con.close()
    at = send(control_page(operator()), DEVICES[1], "22.5")
    assert not at.exception
    assert any("original firmware: whole degrees only" in visible(c) for c in texts(at.caption))
    assert any("Not sent" in visible(e) and "whole degrees" in visible(e) and "int(value)" in visible(e)
               for e in texts(at.error))
    assert devices.received == []


def test_plus_and_minus_step_the_target_by_the_setpoint_step(db: Path) -> None:
    """+ from the current target (21.0) gives 21.5; − twice from there gives 20.5; the range bounds hold."""
    at = control_page(operator())
    at.selectbox(key=DEVICE_KEY).set_value(DEVICES[0]).run()
    at.button(key="control.plus").click().run()
    assert at.text_input(key=TARGET_KEY).value == "21.5"
    at.button(key="control.minus").click().run()
    at.button(key="control.minus").click().run()
    assert at.text_input(key=TARGET_KEY).value == "20.5"
    at.text_input(key=TARGET_KEY).set_value("35").run()
    at.button(key="control.plus").click().run()
    assert at.text_input(key=TARGET_KEY).value == "35"
    assert not at.button(key=SEND_KEY).disabled


def test_one_target_to_several_thermostats_shows_each_outcome(devices: FakeThermostats) -> None:
    """Sent to three: the first accepts, the second refuses with its reason, the third times out; each is shown."""
    at = control_page(operator())
    at.selectbox(key=DEVICE_KEY).set_value(DEVICES[0]).run()
    at.multiselect(key="control.also").set_value([DEVICES[1], STALE_DEVICE]).run()
    at.text_input(key=TARGET_KEY).set_value("22").run()
    assert at.button(key=SEND_KEY).label == "Send to 3 thermostats"
    at.button(key=SEND_KEY).click().run()
    assert not at.exception
    assert sorted(d for d, _ in devices.received) == sorted([DEVICES[0], DEVICES[1], STALE_DEVICE])
    assert any(f"{DEVICES[0]} accepted the new target 22 °C" in visible(s) for s in texts(at.success))
    assert any(f"{DEVICES[1]} refused 22 °C: {CRAFTED_REFUSAL}" in visible(e) for e in texts(at.error))
    assert any(w.startswith(f"Timeout: no answer from {STALE_DEVICE}") for w in texts(at.warning))


def test_mode_off_to_several_goes_only_to_devices_that_take_modes(devices: FakeThermostats, db: Path) -> None:
    """Mode off to a native device is sent and confirmed; one of the original firmware's kind (no modes) is
    refused with the reason and never sees a command."""
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO devices VALUES (?, 'original', NULL, ?, NULL, now(), now())", [STALE_DEVICE, STALE_DEVICE])
    con.close()
    user = operator()
    at = control_page(user)
    at.selectbox(key=DEVICE_KEY).set_value(DEVICES[0]).run()
    at.multiselect(key="control.also").set_value([STALE_DEVICE]).run()
    at.button_group(key="control.mode").set_value("off").run()
    at.button(key="control.set_mode").click().run()
    assert not at.exception
    [(device, command)] = devices.received
    assert (device, command.mode, command.target_temp, command.issued_by) == (DEVICES[0], "off", None, user.username)
    assert any(f"{DEVICES[0]} accepted mode off" in visible(s) for s in texts(at.success))
    assert any(f"Not sent to {STALE_DEVICE} (mode off)" in visible(e) and "takes no mode commands" in visible(e)
               for e in texts(at.error))
