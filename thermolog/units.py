"""Numbers for people: sizes in binary units, as ``thermolog status`` and the Health page show them."""

from __future__ import annotations


def format_bytes(size: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1,024.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
