"""Device profiles: how one kind of MQTT thermostat publishes readings and takes commands, declared as data.

A profile names its topics as patterns (``{base}`` is the profile's topic root, ``{id}`` one topic level holding
the device id, ``{name}`` one or more levels holding a display name from which the id is derived), where each
reading field comes from in the JSON payload, how a setpoint or mode command is written and how it is confirmed
(``ack``: the device answers on ``cmd/ack``; ``reading``: the next reading carries the new target).

Built in: ``native`` (thermolog's own contract, parsed by ``thermolog.contract``), ``original`` (the original
system's ESP32 firmware) and ``zigbee2mqtt``. A user adds more in ``thermolog.toml`` under ``[[device_profiles]]``
(see docs/devices.md). The ingest worker turns a matching message into a contract ``Telemetry``, so every device
is stored, validated and shown exactly like a native one.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thermolog import contract
from thermolog.contract import ContractError

NATIVE = "native"
ORIGINAL = "original"
ZIGBEE2MQTT = "zigbee2mqtt"

CONFIRM_ACK = "ack"
CONFIRM_READING = "reading"

ROLE_STATE = "state"
ROLE_AVAILABILITY = "availability"
ROLE_REGISTRY = "registry"
ROLE_IGNORED = "ignored"

_PLACEHOLDER_RE = re.compile(r"\{(base|id|name|rest)\}")
_KIND_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
MAX_CACHED_TOPICS = 10_000
"""Topic -> match results kept per profile set (cleared when full: topics come from the network)."""


class NotAThermostat(ContractError):
    """A message on a profile's state topic from a device that is no thermostat (no temperature or setpoint)."""


class Profile(BaseModel):
    """One kind of MQTT thermostat. Keys are lists where a device family spells a field several ways: the first
    key present in a payload wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Kind of device, stored with each device (`[a-z0-9_-]`, at most 32).")
    base: str = Field("", description="Topic root substituted for `{base}` in the patterns.")
    state_topic: str = Field(description="Where readings arrive, e.g. `tele/{id}/SENSOR` or `{base}/{name}`.")
    availability_topic: str | None = Field(None, description="Online/offline topic (none: staleness only).")
    online_values: tuple[str, ...] = ("online",)
    ignore_topics: tuple[str, ...] = Field((), description="Known topics below the root that carry no readings.")
    registry_topic: str | None = Field(None, description="Zigbee2MQTT's device list (built-in parser only).")
    id_prefix: str = Field("", description="Prefix of ids derived from `{name}`.")
    payload_id: str | None = Field(None, description="Payload key that must equal the id in the topic.")
    temperature: tuple[str, ...]
    target_temp: tuple[str, ...]
    humidity: tuple[str, ...] = ()
    heating: tuple[str, ...] = ()
    heating_on: tuple[str, ...] = ("ON",)
    """Values of the heating field meaning the heater runs (case-insensitive); JSON true and numbers above 0 (a
    duty cycle) also count."""
    mode: tuple[str, ...] = ()
    mode_map: dict[str, str] = Field(default_factory=dict, description="Device mode value -> `heat` or `off`.")
    timestamp: tuple[str, ...] = Field((), description="ISO-8601 time keys; none: readings stamped at receipt.")
    non_thermostat: Literal["ignore", "reject"] = "reject"
    command_topic: str | None = Field(None, description="Where commands go (none: the device takes none).")
    setpoint_payload: str | None = Field(None, description="JSON template with `{value}` (and `{target_key}`).")
    mode_payloads: dict[str, str] = Field(default_factory=dict, description="`heat`/`off` -> JSON payload.")
    setpoint_step: float | None = Field(None, gt=0, description="The device's own setpoint step (1: whole °C).")
    setpoint_min: float | None = None
    setpoint_max: float | None = None
    confirm: Literal["ack", "reading"] = CONFIRM_READING
    min_confirm_s: float = Field(0.0, ge=0, description="Least time to wait for the confirming state (s).")
    command_qos: int = Field(1, ge=0, le=2)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _KIND_RE.fullmatch(value):
            raise ValueError("a profile name is 1-32 characters of a-z 0-9 _ -")
        return value

    @model_validator(mode="after")
    def _check_patterns(self) -> Profile:
        for label, pattern in (("state_topic", self.state_topic), ("availability_topic", self.availability_topic),
                               ("command_topic", self.command_topic)):
            if pattern is None:
                continue
            holders = [m.group(1) for m in _PLACEHOLDER_RE.finditer(pattern)]
            if "+" in pattern or "#" in pattern:
                raise ValueError(f"{label} {pattern!r}: write {{id}} or {{name}} instead of MQTT wildcards")
            if ("id" in holders) == ("name" in holders):
                raise ValueError(f"{label} {pattern!r} needs exactly one of {{id}} or {{name}}")
        if self.setpoint_payload is not None:
            render_payload(self.setpoint_payload, {"value": 20.0, "target_key": self.target_temp[0]})
        for mode, template in self.mode_payloads.items():
            if mode not in contract.MODES:
                raise ValueError(f"mode_payloads key {mode!r} must be one of {', '.join(contract.MODES)}")
            render_payload(template, {})
        return self

    # --- topics -------------------------------------------------------------------------------------------
    def topic_for(self, pattern: str, address: str) -> str:
        """Fill a topic pattern for the device whose address (``{id}`` or ``{name}`` value) is ``address``."""
        return pattern.replace("{base}", self.base).replace("{id}", address).replace("{name}", address)

    def subscriptions(self) -> list[str]:
        """MQTT topic filters that cover every topic of this profile (``{name}`` and ``{rest}`` become ``#``)."""
        filters: list[str] = []
        for pattern in (self.state_topic, self.availability_topic, self.registry_topic):
            if pattern:
                filters.append(_topic_filter(self.topic_for_base(pattern)))
        wide = [f[:-1] for f in filters if f.endswith("#")]
        kept = [f for f in filters if f.endswith("#") or not any(f.startswith(w) for w in wide)]
        return sorted(set(kept))

    def topic_for_base(self, pattern: str) -> str:
        """A pattern with ``{base}`` filled in (the device placeholders left for matching)."""
        return pattern.replace("{base}", self.base)


@dataclass(frozen=True)
class TopicMatch:
    """A topic recognised by a profile: its role and the device's address in it (id or friendly name)."""

    profile: Profile
    role: str
    address: str = ""

    @property
    def device_id(self) -> str:
        """The thermolog device id of the address (checked for ``{id}``, derived for ``{name}``)."""
        return device_id_for(self.profile, self.address)


@dataclass(frozen=True)
class ProfileReading:
    """A message translated into the contract: the reading and what the device reported about its settings."""

    device_id: str
    reading: contract.Telemetry
    mode: str | None
    target_key: str


def derive_id(prefix: str, name: str) -> str:
    """The device id of a friendly name: ``prefix`` + the name in lower case with every run of characters other
    than a-z and 0-9 turned into ``-``; when that changed the name (spaces, ``/``, capitals), 6 hex characters
    of the name's SHA-1 follow, so two names differing only there keep distinct ids."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48]
    if slug and slug == name:
        return prefix + slug
    digest = hashlib.sha1(name.encode("utf-8", errors="surrogateescape")).hexdigest()[:6]
    return f"{prefix}{slug}-{digest}" if slug else f"{prefix}{digest}"


def device_id_for(profile: Profile, address: str) -> str:
    """The device id for an address in ``profile``'s topics."""
    if "{name}" in profile.state_topic:
        return derive_id(profile.id_prefix, address)
    return contract.check_device_id(address)


def render_payload(template: str, values: dict[str, Any]) -> bytes:
    """Fill ``{value}``/``{target_key}`` in a JSON command template and check that the result is JSON."""
    text = template
    for key, value in values.items():
        text = text.replace("{" + key + "}", _json_number(value) if isinstance(value, float) else str(value))
    try:
        contract.load_json(text.encode())
    except ContractError as exc:
        raise ValueError(f"command template {template!r} does not give JSON: {exc.reason}") from None
    return text.encode()


def _json_number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _topic_filter(pattern: str) -> str:
    parts = []
    for part in pattern.split("/"):
        if part in ("{name}", "{rest}"):
            parts.append("#")
            break
        parts.append("+" if part == "{id}" else part)
    return "/".join(parts)


def _topic_regex(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PLACEHOLDER_RE.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append({"id": r"(?P<address>[^/]+)", "name": r"(?P<address>.+)", "rest": r".+"}.get(m.group(1), ""))
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _lookup(data: Any, key: str) -> Any:
    """``data[key]``; a dotted key (``DS18B20.Temperature``) reads nested objects. None when absent."""
    if isinstance(data, dict) and key in data:
        return data[key]
    head, dot, rest = key.partition(".")
    if dot and isinstance(data, dict) and isinstance(data.get(head), dict):
        return _lookup(data[head], rest)
    return None


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    for key in keys:
        value = _lookup(data, key)
        if value is not None:
            return key, value
    return None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ContractError(f"{name}: {value!r} is not a number")
    return float(value)


def translate(profile: Profile, address: str, payload: bytes, received_at: datetime) -> ProfileReading:
    """Turn a state payload into a contract reading; raises NotAThermostat or ContractError with a reason."""
    data = contract.load_json(payload)
    if not isinstance(data, dict):
        raise ContractError(f"payload must be a JSON object, got {type(data).__name__}")
    device_id = device_id_for(profile, address)
    temperature, target = _first(data, profile.temperature), _first(data, profile.target_temp)
    if temperature is None or target is None:
        missing = " and ".join(k for k, v in (("temperature", temperature), ("target", target)) if v is None)
        raise NotAThermostat(f"{profile.name}: no {missing} ({' / '.join(profile.temperature)}; "
                             f"{' / '.join(profile.target_temp)})")
    if profile.payload_id is not None and _lookup(data, profile.payload_id) != address:
        raise ContractError(f"{profile.payload_id} {_lookup(data, profile.payload_id)!r} in payload does not match "
                            f"{address!r} in topic")
    heating = _first(data, profile.heating)
    on = heating is not None and _heating_on(profile, heating[1])
    humidity = _first(data, profile.humidity)
    stamp = _first(data, profile.timestamp)
    mode_value = _first(data, profile.mode)
    mode = profile.mode_map.get(str(mode_value[1]), None) if mode_value else None
    try:
        reading = contract.Telemetry(
            temperature=_number("temperature", temperature[1]),
            timestamp=stamp[1] if stamp else received_at,
            humidity=None if humidity is None else _number("humidity", humidity[1]),
            target_temp=_number("target_temp", target[1]),
            device_id=device_id,
            heating=contract.HEATING_ON if on else contract.HEATING_OFF,
        )
    except ValidationError as exc:
        raise ContractError(f"{profile.name}: {contract.describe_errors(exc)}") from None
    return ProfileReading(device_id, reading, mode, target[0])


def _heating_on(profile: Profile, value: Any) -> bool:
    """A heating value means ON: JSON true, a number above 0 (a duty cycle) or one of ``heating_on``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0
    return isinstance(value, str) and value.lower() in {v.lower() for v in profile.heating_on}


def parse_availability(profile: Profile, payload: bytes) -> str:
    """``online``/``offline`` from plain text or Zigbee2MQTT's ``{"state": "online"}``."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        data = contract.load_json(payload)
        text = str(data.get("state", "")) if isinstance(data, dict) else ""
    if text in profile.online_values:
        return contract.STATUS_ONLINE
    if text in ("offline",):
        return contract.STATUS_OFFLINE
    raise ContractError(f"{profile.name}: availability must be online or offline, got {text[:40]!r}")


@dataclass(frozen=True)
class RegistryEntry:
    """A thermostat listed in Zigbee2MQTT's ``bridge/devices``."""

    device_id: str
    name: str
    details: dict[str, Any]


def parse_zigbee2mqtt_devices(profile: Profile, payload: bytes) -> list[RegistryEntry]:
    """The thermostats in a retained ``bridge/devices`` list: devices whose definition exposes a ``climate``
    feature; the others (lights, sensors, the coordinator) are left out."""
    data = contract.load_json(payload)
    if not isinstance(data, list):
        raise ContractError("bridge/devices must be a JSON list")
    entries = []
    for device in data:
        if not isinstance(device, dict) or not isinstance(device.get("friendly_name"), str):
            continue
        definition = device.get("definition") or {}
        climate = [e for e in definition.get("exposes") or [] if isinstance(e, dict) and e.get("type") == "climate"]
        if not climate:
            continue
        features = {f.get("property"): f for f in climate[0].get("features") or [] if isinstance(f, dict)}
        details: dict[str, Any] = {"ieee_address": device.get("ieee_address"), "model": definition.get("model"),
                                   "vendor": definition.get("vendor")}
        for key in profile.target_temp:
            if key in features:
                feature = features[key]
                details.update(target_key=key, setpoint_min=feature.get("value_min"),
                               setpoint_max=feature.get("value_max"), setpoint_step=feature.get("value_step"))
                break
        if "system_mode" in features:
            details["modes"] = features["system_mode"].get("values")
        name = device["friendly_name"]
        entries.append(RegistryEntry(derive_id(profile.id_prefix, name), name, details))
    return entries


class ProfileSet:
    """The profiles one process uses, with topic matching cached per topic."""

    def __init__(self, profiles: list[Profile]) -> None:
        self.profiles = profiles
        self._compiled = []
        for profile in profiles:
            roles = [(ROLE_REGISTRY, profile.registry_topic), (ROLE_AVAILABILITY, profile.availability_topic)]
            roles += [(ROLE_IGNORED, pattern) for pattern in profile.ignore_topics]
            roles.append((ROLE_STATE, profile.state_topic))
            self._compiled.append((profile, [(role, _topic_regex(profile.topic_for_base(p))) for role, p in roles
                                             if p]))
        self._cache: dict[str, TopicMatch | None] = {}
        self.known: set[str] = set()
        """Ids of thermostats of a profile seen so far (the ingest worker seeds it from its ``devices`` table)."""
        self.pending: dict[str, tuple[int, str]] = {}
        """Availability of a device not yet known to be a thermostat: (received_us, status) until it is."""

    def hold_availability(self, device_id: str, received_us: int, status: str) -> None:
        """Keep the newest availability of a device not known yet (bounded: names come from the network)."""
        if len(self.pending) >= MAX_CACHED_TOPICS and device_id not in self.pending:
            self.pending.clear()
        self.pending[device_id] = (received_us, status)

    def by_name(self, name: str) -> Profile | None:
        """The profile called ``name`` (None when unknown or disabled)."""
        return next((p for p in self.profiles if p.name == name), None)

    def subscriptions(self) -> list[str]:
        """Every topic filter the ingest worker subscribes to for these profiles."""
        return sorted({f for p in self.profiles for f in p.subscriptions()})

    def match(self, topic: str) -> TopicMatch | None:
        """The first profile role whose pattern the topic matches, else None."""
        if topic in self._cache:
            return self._cache[topic]
        found = None
        for profile, patterns in self._compiled:
            for role, regex in patterns:
                m = regex.match(topic)
                if m:
                    found = TopicMatch(profile, role, m.groupdict().get("address") or "")
                    break
            if found:
                break
        if len(self._cache) >= MAX_CACHED_TOPICS:
            self._cache.clear()
        self._cache[topic] = found
        return found


def original_profile(prefix: str = "iot") -> Profile:
    """The original system's ESP32 firmware: ``iot/<id>/status`` readings, ``{"cmd": "set", "value": 22}``
    commands applied as ``int(value)`` (whole degrees, default 10-35 °C), no ack, no last will."""
    return Profile(
        name=ORIGINAL, base=prefix, state_topic="{base}/{id}/status", payload_id="device_id",
        temperature=("temperature",), target_temp=("target_temp",), humidity=("humidity",), heating=("heating",),
        timestamp=("timestamp",), command_topic="{base}/{id}/cmd", setpoint_payload='{"cmd": "set", "value": {value}}',
        setpoint_step=1.0, setpoint_min=10.0, setpoint_max=35.0, confirm=CONFIRM_READING, command_qos=0,
        min_confirm_s=20.0,  # it reports every read_interval (5-15 s); its next reading is the only confirmation
    )


def zigbee2mqtt_profile(base: str = "zigbee2mqtt") -> Profile:
    """Zigbee2MQTT thermostats and radiator valves (devices exposing ``climate``)."""
    return Profile(
        name=ZIGBEE2MQTT, base=base, state_topic="{base}/{name}", availability_topic="{base}/{name}/availability",
        registry_topic="{base}/bridge/devices",
        ignore_topics=("{base}/bridge/{rest}", "{base}/{name}/set", "{base}/{name}/set/{rest}", "{base}/{name}/get",
                       "{base}/{name}/get/{rest}"),
        id_prefix="z2m-", temperature=("local_temperature",),
        target_temp=("occupied_heating_setpoint", "current_heating_setpoint"), heating=("running_state",),
        heating_on=("heat", "heating"), mode=("system_mode",),
        mode_map={"heat": "heat", "auto": "heat", "off": "off"}, non_thermostat="ignore",
        command_topic="{base}/{name}/set", setpoint_payload='{"{target_key}": {value}}',
        mode_payloads={"heat": '{"system_mode": "heat"}', "off": '{"system_mode": "off"}'},
        confirm=CONFIRM_READING,
    )


def native_profile(prefix: str = contract.DEFAULT_TOPIC_PREFIX) -> Profile:
    """thermolog's own contract as a profile (ingest parses it with ``thermolog.contract`` directly)."""
    return Profile(
        name=NATIVE, base=prefix, state_topic="{base}/{id}/telemetry", availability_topic="{base}/{id}/status",
        payload_id="device_id", temperature=("temperature",), target_temp=("target_temp",), humidity=("humidity",),
        heating=("heating",), timestamp=("timestamp",), command_topic="{base}/{id}/cmd", confirm=CONFIRM_ACK,
    )


def load_profiles(original_prefix: str, zigbee2mqtt_base: str, user: list[dict[str, Any]]) -> ProfileSet:
    """The built-in profiles that are switched on (an empty prefix turns one off) followed by the user's."""
    profiles = []
    if original_prefix:
        profiles.append(original_profile(original_prefix))
    if zigbee2mqtt_base:
        profiles.append(zigbee2mqtt_profile(zigbee2mqtt_base))
    names = {NATIVE, ORIGINAL, ZIGBEE2MQTT}  # reserved even when switched off: stored kinds keep one meaning
    for number, spec in enumerate(user, 1):
        try:
            profile = Profile.model_validate(spec)
        except ValidationError as exc:
            raise ValueError(f"device profile #{number} in thermolog.toml: {contract.describe_errors(exc)}") from None
        if profile.name in names:
            raise ValueError(f"device profile #{number}: the name {profile.name!r} is taken")
        if profile.confirm != CONFIRM_READING:
            raise ValueError(f"device profile #{number} ({profile.name}): a device of your own is confirmed by its "
                             "next reading; confirm must be 'reading'")
        names.add(profile.name)
        profiles.append(profile)
    return ProfileSet(profiles)


def profiles_from_settings(settings: Any) -> ProfileSet:
    """The profile set the settings ask for (``original_topic_prefix``, ``zigbee2mqtt_base_topic``,
    ``device_profiles``)."""
    return load_profiles(settings.original_topic_prefix, settings.zigbee2mqtt_base_topic, settings.device_profiles)


def utc_from_us(received_us: int) -> datetime:
    """A receipt time in epoch microseconds as an aware datetime."""
    return datetime.fromtimestamp(received_us / 1e6, UTC)
