"""Which thermostats can switch modes: those whose retained ``state`` reports one (our firmware, the simulator,
Zigbee2MQTT-style valves bridged to the contract). The original firmware sends no ``state`` at all, so a mode
command to it is refused with that reason instead of waiting for an answer that never comes."""

from __future__ import annotations

from pathlib import Path

from thermolog.reader import query


def mode_support(device_ids: list[str], db_path: Path | str | None = None) -> dict[str, bool]:
    """``device_id -> True`` when the device's retained state reports a mode; False for unknown devices."""
    if not device_ids:
        return {}
    frame = query("SELECT device_id, mode FROM device_state WHERE device_id IN (SELECT unnest(?))",
                  [list(device_ids)], db_path)
    known = {row["device_id"]: row["mode"] is not None for row in frame.iter_rows(named=True)}
    return {device_id: known.get(device_id, False) for device_id in device_ids}
