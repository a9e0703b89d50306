"""Tables: what a checkpoint's Parquet files hold, declared by the measures that write them.

Every table starts with the key columns ``seed``, ``step`` (int64) and ``epoch`` (float64); a measure declares the
columns after them (:func:`register_table`, called in each measure's module, which lists them in its ``tables``)
and the store writes, verifies, reads and compacts any declared table the same way. Schemas only grow at the end:
a file written before a column was added reads with nulls there. A reader that meets a table no imported measure
declares takes its columns from the file itself (``nnphases.analysis``, the command line and
``nnphases.read_table`` import every built-in measure first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..options import one_line
from .errors import DamagedCheckpoint
from .manifest import read_verified

KEY = [("seed", pa.int64()), ("step", pa.int64()), ("epoch", pa.float64())]
KEY_NAMES = tuple(name for name, _ in KEY)
# In nodes.parquet's schema metadata when some layers were left out (their rows are derived): a file without it
# holds every layer, and readers need nothing else.
NODES_KEY, PARTIAL = b"nnphases.nodes", b"partial"


@dataclass(frozen=True)
class TableSpec:
    """A declared table: its ``columns`` after the key columns, whether every checkpoint holds its file
    (``required``: written with no rows when no measure gave any, and listed in every manifest), and the values
    text columns may take (``choices``: column -> allowed values)."""

    name: str
    columns: pa.Schema
    required: bool = False
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(KEY + list(self.columns))


_SPECS: dict[str, TableSpec] = {}
_SCHEMAS: dict[str, pa.Schema] = {}
SCHEMAS: Mapping[str, pa.Schema] = MappingProxyType(_SCHEMAS)  # table -> full schema, key columns first


def register_table(
    name: str,
    columns: pa.Schema | Sequence[tuple[str, pa.DataType]],
    *,
    required: bool = False,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> TableSpec:
    """Declare the table ``name`` with ``columns`` (after seed, step, epoch); declaring it again alike does
    nothing, with other columns is a ValueError. See :class:`TableSpec` for ``required`` and ``choices``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a table name must be an identifier, got {name!r}")
    spec = TableSpec(
        name,
        columns if isinstance(columns, pa.Schema) else pa.schema(columns),
        required,
        tuple((c, tuple(v)) for c, v in (choices or {}).items()),
    )
    if any(n in KEY_NAMES for n in spec.columns.names):
        raise ValueError(f"table {name!r}: the key columns {KEY_NAMES} come first by themselves; declare the others")
    old = _SPECS.get(name)
    if old is not None and old != spec:
        raise ValueError(
            f"table {name!r} is already declared with other columns ({old.columns.names}, required={old.required})"
        )
    _SPECS[name] = spec
    _SCHEMAS[name] = spec.schema
    return spec


def forget_table(name: str) -> None:
    """Remove the declaration of ``name`` (nothing when there is none): a notebook or a test that redefines a
    measure with other columns declares its table again afterwards."""
    _SPECS.pop(name, None)
    _SCHEMAS.pop(name, None)


def table_spec(name: str) -> TableSpec | None:
    """The declaration of ``name``, or None when no imported measure declares it."""
    return _SPECS.get(name)


def declared() -> list[str]:
    """The declared tables, in the order they were declared."""
    return list(_SPECS)


def ordered(names: Iterable[str]) -> list[str]:
    """Table names in the order listings give them: the nodes table (the store's own, derived from the counts),
    then the required tables, then the others, each by name."""
    return sorted(set(names), key=lambda n: (n != "nodes", not (n in _SPECS and _SPECS[n].required), n))


def unknown_table(table: object, available: Iterable[str]) -> ValueError:
    return ValueError(f"table must be one of {', '.join(ordered(available))}; got {table!r}")


def required_files() -> list[str]:
    """The table files every checkpoint holds."""
    return [f"{s.name}.parquet" for s in _SPECS.values() if s.required]


TableRows: TypeAlias = pa.Table | Sequence[Mapping[str, Any]]
# What a measure hands over for one table: its rows, or a function the store calls on the writer's thread (so
# that work such as the metrics of every layer is not done on the training thread).
TableLike: TypeAlias = TableRows | Callable[[], TableRows]


def float_value(value: object, name: str) -> float:
    # None stands for "not measured" and becomes NaN, like an undefined metric.
    if value is None:
        return math.nan
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]  # any object: TypeError (caught) for a non-number
    except TypeError:
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def finished(name: str, rows: TableLike, *, seed: int, step: int, epoch: float) -> pa.Table:
    """A measure's rows of table ``name`` for one checkpoint as a table of its declared schema, the key columns
    put in front; ValueError or TypeError naming the table and what is wrong."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(
            f"tables: {name!r} is not a declared table ({', '.join(_SPECS)}); a measure declares its "
            "tables in its `tables` attribute"
        )
    if callable(rows):
        rows = rows()
    n = len(rows)
    keys = {
        "seed": np.full(n, seed, np.int64),
        "step": np.full(n, step, np.int64),
        "epoch": np.full(n, epoch, np.float64),
    }
    if isinstance(rows, pa.Table):
        metadata = rows.schema.metadata
        extra = [c for c in rows.column_names if c not in spec.columns.names]
        missing = [c for c in spec.columns.names if c not in rows.column_names]
        if extra or missing:
            raise ValueError(f"{name} table: columns {rows.column_names} are not the declared {spec.columns.names}")
        cols = {**keys, **{c: rows.column(c) for c in spec.columns.names}}
    else:
        metadata = None
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise TypeError(f"{name}[{i}] must be a dict, got {type(r).__name__}")
            if set(r) != set(spec.columns.names):
                raise ValueError(
                    f"{name}[{i}] must have exactly the keys {', '.join(spec.columns.names)}; got {sorted(r)}"
                )
        cols = {**keys}
        for field in spec.columns:
            values = [r[field.name] for r in rows]
            if pa.types.is_floating(field.type):
                values = [float_value(v, f"{name}[{i}][{field.name!r}]") for i, v in enumerate(values)]
            cols[field.name] = values
    try:
        table = pa.table(cols, schema=spec.schema)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise type(e)(f"{name} table does not fit its declared columns ({one_line(e, limit=200)})") from None
    for column, allowed in spec.choices:
        for i, v in enumerate(table.column(column).to_pylist()):
            if v not in allowed:
                raise ValueError(f"{name}[{i}][{column!r}] must be one of {allowed}, got {v!r}")
    return table.replace_schema_metadata(metadata)


def conform(t: pa.Table, folder: Path, name: str, table: str, step: int) -> pa.Table:
    """A table as read from a file, checked against its declared schema (or, undeclared, its own key columns) and
    the checkpoint's step; columns added to the end of the schema after the file was written are read as nulls."""
    schema = _SCHEMAS.get(table)
    partial = table == "nodes" and (t.schema.metadata or {}).get(NODES_KEY) == PARTIAL
    if schema is None:
        schema = pa.schema(KEY + [f for f in t.schema if f.name not in KEY_NAMES])
        if t.column_names[:3] != list(KEY_NAMES):
            raise DamagedCheckpoint(folder, name, f"lacks the key columns {list(KEY_NAMES)} first")
    # Schemas only grow at the end, so a file may lack a tail of columns; any other gap is damage.
    present = [n for n in schema.names if n in t.column_names]
    if len(present) <= 3 or present != schema.names[: len(present)]:
        missing = [n for n in schema.names if n not in t.column_names]
        raise DamagedCheckpoint(folder, name, f"lacks the {table} columns {missing}")
    for field in schema:
        if field.name not in t.column_names:
            t = t.append_column(field, pa.nulls(len(t), field.type))
    try:
        t = t.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise DamagedCheckpoint(folder, name, f"does not match the {table} schema ({one_line(e, limit=200)})") from None
    steps = t.column("step")
    if steps.null_count or (len(t) and not (steps.to_numpy() == step).all()):
        others = sorted({s for s in steps.to_pylist() if s != step}, key=str)[:3]
        raise DamagedCheckpoint(folder, name, f"holds rows of step {others}, not of its checkpoint's step {step}")
    return t.replace_schema_metadata({NODES_KEY: PARTIAL} if partial else None)


def empty(table: str) -> pa.Table:
    """No rows of ``table``: its declared columns, or the key columns alone when it is not declared."""
    schema = _SCHEMAS.get(table)
    return (schema if schema is not None else pa.schema(KEY)).empty_table()


def arrow_owned(data: bytes) -> pa.Buffer:
    """``data`` copied into memory Arrow owns. Parquet read from Python bytes keeps them through a buffer whose
    release takes the GIL; when a failed read's last reference is dropped on one of Arrow's threads while the
    interpreter exits, taking the GIL ends that thread by a forced unwind through a noexcept destructor: std::terminate
    ("terminate called without an active exception") after the command's own error. Arrow's own memory needs no GIL."""
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


def read_parquet(ckpt: Path, step: int, table: str, manifest: Mapping[str, Mapping[str, Any]] | None) -> pa.Table:
    """One checkpoint's own file of ``table``, verified and checked."""
    name = f"{table}.parquet"
    data = read_verified(ckpt, name, manifest)
    try:
        t = pq.read_table(pa.BufferReader(arrow_owned(data)))
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for bytes that are not Parquet
        raise DamagedCheckpoint(ckpt, name, f"is not a readable Parquet file ({one_line(e, limit=200)})") from None
    return conform(t, ckpt, name, table, step)


def repeated_columns(schema: pa.Schema) -> list[str]:
    # Dictionary pages only for the columns that repeat (keys, names): on float metrics they cost time and grew
    # the file (131,072 node rows: 58 ms and 6.1 MB with every column, 30 ms and 5.2 MB like this).
    return [f.name for f in schema if f.name in ("seed", "step", "epoch") or f.type == pa.string()]


def write_parquet(t: pa.Table, where: Any) -> None:
    pq.write_table(t, where, use_dictionary=repeated_columns(t.schema))


def same_rows(a: pa.Table | None, b: pa.Table | None) -> bool:
    """Equal tables, NaN equal to NaN of the same bits (Arrow's equality holds NaN unequal to itself)."""
    if a is None or b is None:
        return a is None and b is None
    if a.schema != b.schema or a.schema.metadata != b.schema.metadata or len(a) != len(b):
        return False
    for x, y in zip(a.columns, b.columns, strict=True):  # equal schemas: as many columns
        x, y = x.combine_chunks(), y.combine_chunks()
        if pa.types.is_floating(x.type):
            if not x.is_null().equals(y.is_null()):
                return False
            xbits, ybits = (np.asarray(v.fill_null(0.0)).view(np.uint64) for v in (x, y))
            if not np.array_equal(xbits, ybits):
                return False
        elif not x.equals(y):
            return False
    return True
