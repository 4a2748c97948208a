"""Property-based fuzzing of the contract's topic and payload parsers (hypothesis, fixed seed, >= 10,000 cases).

Every parser (topic, telemetry, system, command, ack, refusal, status, state) either returns a model that obeys
the contract or raises ContractError with a short, non-empty reason: never another exception. Inputs: arbitrary
text and bytes (binary, unicode, control characters), arbitrary JSON, the seed payloads with fields replaced,
removed or added, and oversized payloads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SEED_SYSTEM, SEED_TELEMETRY
from thermolog import contract

pytestmark = pytest.mark.slow

MAX_REASON_CHARS = 400
"""Reasons land in ``rejected.reason`` and in logs: they must stay short whatever the input."""
DEVICE_ID_FULL = re.compile(r"[A-Za-z0-9_-]{1,64}")
KINDS = (contract.TELEMETRY, contract.STATUS, contract.STATE, contract.CMD, contract.CMD_ACK)
SEED_COMMAND = {"request_id": "3f2a9c", "target_temp": 21.5, "issued_by": "operator@example.com"}
SEED_ACK = {"request_id": "3f2a9c", "ok": True, "target_temp": 21.5}
SEED_REFUSAL = {"request_id": "3f2a9c", "target_temp": 99, "issued_by": "op@example.com", "error": "outside 5-35"}

CASES: dict[str, int] = {}
"""Examples each fuzz test ran (the figures in docs/reliability.md come from these budgets)."""


# --- strategies ----------------------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
timestamps = (
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | st.datetimes().map(lambda d: d.isoformat() + "Z")
    | st.datetimes().map(lambda d: d.isoformat())  # naive: must be refused
    | st.text(max_size=40)
    | json_scalars
)
device_ids = (
    st.from_regex(DEVICE_ID_FULL, fullmatch=True)
    | st.text(max_size=80)
    | st.sampled_from(["a\n", "dev-1\n", "x/y", "+", "#", "", "é", "١٢٣", "a b", "' OR 1=1 --", "dev\x00"])
)
numbers = (
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([-60, 120, -60.0001, 120.0001, 0, 100, 100.0001, True, False]) | st.text(max_size=10)
)
FIELD_VALUES = {
    "temperature": numbers, "target_temp": numbers, "humidity": numbers | st.none(), "timestamp": timestamps,
    "device_id": device_ids, "heating": st.sampled_from(["ON", "OFF", "on", "", "HEAT"]) | json_scalars,
    "cpu_usage": numbers, "memory_usage": numbers, "disk_usage": numbers,
    "net_bytes_sent": numbers, "net_bytes_recv": numbers,
    "request_id": st.text(max_size=70) | json_scalars, "ok": st.booleans() | json_scalars,
    "issued_by": st.text(max_size=300) | json_scalars, "error": st.text(max_size=80) | json_scalars,
}


def mutated(seed: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """The seed object with some fields replaced by hostile values, some removed, maybe one extra added."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        obj = dict(seed)
        for key in list(obj):
            action = draw(st.sampled_from(["keep", "keep", "replace", "drop"]))
            if action == "replace":
                obj[key] = draw(FIELD_VALUES.get(key, json_values))
            elif action == "drop":
                del obj[key]
        if draw(st.booleans()) and draw(st.booleans()):
            obj[draw(st.text(max_size=12))] = draw(json_values)
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits: send the text form
            return repr(obj).encode()

    return build()


def payloads(seed: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Seed mutations, arbitrary JSON, arbitrary bytes and arbitrary (unicode) text."""
    return (
        mutated(seed)
        | json_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS) if _encodable(v) else b"[]")
        | st.binary(max_size=600)
        | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
    )


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


topics = (
    st.text(max_size=200)
    | st.lists(
        st.sampled_from(["thermostats", "edge", "telemetry", "status", "state", "cmd", "ack", "system", "", "+", "#"])
        | device_ids,
        min_size=1, max_size=5,
    ).map("/".join)
    | st.tuples(device_ids, st.sampled_from(KINDS)).map(lambda p: f"thermostats/{p[0]}/{p[1]}")
)


# --- the harness ---------------------------------------------------------------------------------------------


def fuzz(name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int) -> None:
    """Run ``check`` on ``examples`` generated inputs (fixed seed) and assert that many really ran."""
    ran = [0]

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(strategy)
    def prop(value: Any) -> None:
        ran[0] += 1
        check(value)

    prop()
    CASES[name] = ran[0]
    assert ran[0] >= examples, f"{name}: only {ran[0]} of {examples} cases ran"


def expect_valid_or_reason(parse: Callable[[], Any]) -> Any:
    """Call ``parse``; a ContractError must carry a short non-empty reason; any other exception fails the test."""
    try:
        return parse()
    except contract.ContractError as exc:
        assert exc.reason and exc.reason.strip(), "rejection without a reason"
        assert str(exc) == exc.reason
        assert len(exc.reason) <= MAX_REASON_CHARS, f"reason of {len(exc.reason)} chars"
        return None


def _finite_in(value: float | None, low: float, high: float) -> bool:
    return value is not None and math.isfinite(value) and low <= value <= high


# --- properties ----------------------------------------------------------------------------------------------


def test_fuzz_check_device_id() -> None:
    def check(value: Any) -> None:
        result = expect_valid_or_reason(lambda: contract.check_device_id(value))
        if result is not None:
            assert result == value and DEVICE_ID_FULL.fullmatch(result)

    fuzz("check_device_id", device_ids | st.integers() | st.none() | st.binary(max_size=10), check, 1000)


def test_fuzz_parse_topic() -> None:
    def check(name: str) -> None:
        parsed = expect_valid_or_reason(lambda: contract.parse_topic(name))
        if parsed is not None:
            device_id, kind = parsed
            assert DEVICE_ID_FULL.fullmatch(device_id)
            rebuilt = contract.system_topic(device_id) if kind == contract.SYSTEM else contract.topic(device_id, kind)
            assert rebuilt == name, "a topic was accepted that the contract would not produce"

    fuzz("parse_topic", topics, check, 2000)


def test_fuzz_parse_telemetry() -> None:
    seed = orjson.loads(SEED_TELEMETRY)

    def check(case: tuple[bytes, str | None]) -> None:
        payload, topic_id = case
        reading = expect_valid_or_reason(lambda: contract.parse_telemetry(payload, topic_id))
        if reading is not None:
            assert DEVICE_ID_FULL.fullmatch(reading.device_id)
            assert topic_id is None or reading.device_id == topic_id
            assert _finite_in(reading.temperature, -60, 120) and _finite_in(reading.target_temp, -60, 120)
            assert reading.humidity is None or _finite_in(reading.humidity, 0, 100)
            assert reading.heating in ("ON", "OFF")
            assert reading.timestamp.tzinfo is not None and reading.timestamp.utcoffset().total_seconds() == 0
            assert reading.timestamp.tzinfo == UTC

    fuzz("parse_telemetry", st.tuples(payloads(seed), st.none() | st.just("esp32c3-01") | device_ids), check, 3000)


def test_fuzz_parse_system() -> None:
    def check(payload: bytes) -> None:
        metrics = expect_valid_or_reason(lambda: contract.parse_system(payload))
        if metrics is not None:
            for value in (metrics.cpu_usage, metrics.memory_usage, metrics.disk_usage):
                assert _finite_in(value, 0, 100)
            assert metrics.timestamp.tzinfo == UTC

    fuzz("parse_system", payloads(orjson.loads(SEED_SYSTEM)), check, 1500)


def test_fuzz_parse_command() -> None:
    def check(payload: bytes) -> None:
        command = expect_valid_or_reason(lambda: contract.parse_command(payload))
        if command is not None:
            assert 1 <= len(command.request_id) <= 64 and math.isfinite(command.target_temp)
            assert command.issued_by is None or len(command.issued_by) <= 256

    fuzz("parse_command", payloads(SEED_COMMAND), check, 1000)


def test_fuzz_parse_ack() -> None:
    def check(payload: bytes) -> None:
        ack = expect_valid_or_reason(lambda: contract.parse_ack(payload))
        if ack is not None:
            assert 1 <= len(ack.request_id) <= 64 and isinstance(ack.ok, bool)

    fuzz("parse_ack", payloads(SEED_ACK), check, 1000)


def test_fuzz_parse_refusal() -> None:
    def check(payload: bytes) -> None:
        refusal = expect_valid_or_reason(lambda: contract.parse_refusal(payload))
        if refusal is not None:
            assert 1 <= len(refusal.request_id) <= 64 and 1 <= len(refusal.error) <= 500
            assert refusal.target_temp is None or math.isfinite(refusal.target_temp)

    fuzz("parse_refusal", payloads(SEED_REFUSAL), check, 500)


def test_fuzz_parse_status_and_state() -> None:
    def check(payload: bytes) -> None:
        status = expect_valid_or_reason(lambda: contract.parse_status(payload))
        assert status in (None, contract.STATUS_ONLINE, contract.STATUS_OFFLINE)
        expect_valid_or_reason(lambda: contract.parse_state(payload))

    statuses = st.sampled_from([b"online", b"offline", b" online\n", b"ONLINE", b"\xff\xfe", b""]) | payloads({})
    fuzz("parse_status+parse_state", statuses, check, 1000)


# --- oversized, binary and unicode: explicit cases ------------------------------------------------------------

OVERSIZED = [
    b" " * (contract.MAX_PAYLOAD_BYTES + 1),
    b'{"device_id": "' + b"a" * contract.MAX_PAYLOAD_BYTES + b'"}',
    b"[" * 100_000,  # deep nesting just under and over the size limit
    b"[" * (contract.MAX_PAYLOAD_BYTES - 10),
]


@pytest.mark.parametrize("payload", OVERSIZED, ids=["spaces", "long-string", "deep-100k", "deep-64k"])
@pytest.mark.parametrize("parse", [contract.parse_telemetry, contract.parse_system, contract.parse_command,
                                   contract.parse_ack, contract.parse_refusal, contract.parse_state,
                                   contract.parse_status])
def test_oversized_payloads_are_refused_with_a_reason(parse: Callable[[bytes], Any], payload: bytes) -> None:
    result = expect_valid_or_reason(lambda: parse(payload))
    assert result is None


@pytest.mark.parametrize("payload", [
    b"\x00" * 64, b"\xff\xfe\x00{", bytes(range(256)), "ü".encode("latin-1"),
    '{"device_id": "\udcff"}'.encode("utf-8", "surrogatepass"), b'{"device_id": "\\ud800"}',
    "{\"temperature\": 21, \"device_id\": \"温度計\"}".encode(), SEED_TELEMETRY.replace(b"esp32c3-01", "é".encode()),
    SEED_TELEMETRY.replace(b"2025-07-04T00:13:36Z", b"9999-12-31T23:59:59-14:00"),
    SEED_TELEMETRY.replace(b"2025-07-04T00:13:36Z", b"0001-01-01T00:00:00+14:00"),
])
def test_binary_and_unicode_payloads_are_refused_with_a_reason(payload: bytes) -> None:
    assert expect_valid_or_reason(lambda: contract.parse_telemetry(payload)) is None


def test_device_id_with_a_trailing_newline_is_refused() -> None:
    """``$`` in a regex matches before a final newline; the contract must not."""
    with pytest.raises(contract.ContractError):
        contract.check_device_id("dev-1\n")
    with pytest.raises(contract.ContractError):
        contract.parse_topic("thermostats/dev-1\n/telemetry")


def test_long_topics_get_a_short_reason() -> None:
    """MQTT allows 64 KiB topic names; the reason quotes only their start."""
    for name in ("x" * 65_000, "thermostats/" + "a" * 65_000 + "/telemetry", "edge/" + "b" * 70 + "/system"):
        assert expect_valid_or_reason(lambda n=name: contract.parse_topic(n)) is None
