"""A batch's rows as an Arrow stream DuckDB scans (``con.register``), built with nanoarrow from Python lists.

nanoarrow costs the flusher process about 2 MiB where Polars cost about 45 (docs/performance.md); DuckDB reads the
stream through the Arrow PyCapsule interface, so neither pyarrow nor NumPy is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import nanoarrow as na

_TYPES = {"Utf8": na.string(), "Int64": na.int64(), "Float64": na.float64(), "Boolean": na.bool_(),
          "Binary": na.binary(), "Time": na.timestamp("us", timezone="UTC"), "List:Utf8": na.list_(na.string())}
"""Column kinds a sink schema names; "Time" holds epoch microseconds and reaches DuckDB as TIMESTAMPTZ."""

Columns = dict[str, list[Any]]


def columns_of(rows: Sequence[Mapping[str, Any]], names: Iterable[str]) -> Columns:
    """Row dicts as columns (a missing key is a null)."""
    return {name: [row.get(name) for row in rows] for name in names}


def _string_lists(values: list[list[str] | None]) -> Any:
    """A list<string> column: nanoarrow builds no nested array from Python objects, so its buffers are built here."""
    offsets, flat = [0], []
    for value in values:
        flat.extend(value or ())
        offsets.append(len(flat))
    validity = None if None not in values else na.c_buffer([value is not None for value in values], na.bool_())
    return na.c_array_from_buffers(_TYPES["List:Utf8"], len(values), [validity, na.c_buffer(offsets, na.int32())],
                                   children=[na.c_array(flat, na.string())])


class ArrowTable:
    """Columns of Python values with a kind each (``_TYPES``), scanned by DuckDB as an Arrow stream. DuckDB asks
    for a fresh stream on each scan, so several statements can read one registered table."""

    def __init__(self, columns: Mapping[str, list[Any]], schema: Mapping[str, str]) -> None:
        """``schema``: column name to kind, in the table's column order; every column as long as the others."""
        self.height = len(next(iter(columns.values()))) if columns else 0
        children = [_string_lists(columns[name]) if kind == "List:Utf8" else na.c_array(columns[name], _TYPES[kind])
                    for name, kind in schema.items()]
        arrow_schema = na.struct({name: _TYPES[kind] for name, kind in schema.items()})
        self._array = na.c_array_from_buffers(arrow_schema, self.height, [None], children=children)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return na.c_array_stream(self._array).__arrow_c_stream__(requested_schema)


def first_rows(columns: Columns, keys: Sequence[str], keep: str = "first") -> Columns:
    """``columns`` with one row per distinct value of ``keys`` (the first, or with ``keep="last"`` the last, of
    each), in the order of the rows kept; the same lists when no key repeats."""
    height = len(columns[keys[0]])
    key_columns = [columns[key] for key in keys]
    if len(set(zip(*key_columns, strict=True))) == height:  # the usual batch, checked without a Python loop
        return columns
    chosen: dict[Any, int] = {}
    for index, key in enumerate(zip(*key_columns, strict=True)):
        if keep == "last" or key not in chosen:
            chosen[key] = index
    rows = sorted(chosen.values())
    return {name: [values[row] for row in rows] for name, values in columns.items()}
