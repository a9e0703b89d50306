"""Typed options: one declaration per option, checked once.

An option is a field of a frozen dataclass, declared with :func:`option`: its
type (``Literal`` choices, ``int``, ``float``, ``bool``, ``str``, tuples of
these, ``X | None``), its range and its help text. :func:`check` validates
every field of an instance against that declaration (called from
``__post_init__``), so a bad value fails where it is given, with one line
naming the option and the value; the command line (:mod:`nnphases.cli`) is
generated from the same fields.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

__all__ = ["option", "check", "describe"]


def option(default: Any = dataclasses.MISSING, *, help: str = "", min: float | None = None,
           max: float | None = None, above: float | None = None, flag: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its range (``min``/``max`` inclusive, ``above`` exclusive), its help text and,
    optionally, its command-line name (default: the field name with dashes)."""
    meta = {"help": help, "min": min, "max": max, "above": above, "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"a sequence of {_type_name(get_args(tp)[0])}"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` as type ``tp`` (tuples from lists, ints where a float is asked), or TypeError/ValueError."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except (TypeError, ValueError) as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise TypeError(f"{name} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp) or isinstance(value, bool) != any(isinstance(a, bool) for a in get_args(tp)):
            raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in get_args(tp))}; got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a sequence of {_type_name(get_args(tp)[0])}, got {value!r}")
        return tuple(_coerce(v, get_args(tp)[0], f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return v
    if tp is str:
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty string, got {value!r}")
        return value
    if callable(tp) and tp is not Any and isinstance(tp, type):
        if not isinstance(value, tp):
            raise TypeError(f"{name} must be {tp.__name__}, got {type(value).__name__}")
        return value
    return value  # Any, Callable: checked by the owner


def _check_range(value: Any, meta: typing.Mapping[str, Any], name: str) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
        if lo is not None and v < lo:
            raise ValueError(f"{name} must be >= {lo:g}, got {v!r}")
        if hi is not None and v > hi:
            raise ValueError(f"{name} must be <= {hi:g}, got {v!r}")
        if above is not None and v <= above:
            raise ValueError(f"{name} must be > {above:g}, got {v!r}")


def check(obj: Any, prefix: str = "") -> None:
    """Validate and normalise every field of the dataclass instance ``obj`` in place (frozen or not)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        flag = f.metadata.get("flag")
        name = f"{prefix}{f.name}" + (f" (--{flag})" if flag and flag != f.name.replace("_", "-") else "")
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            continue  # nested groups check themselves
        v = _coerce(value, hints[f.name], name)
        _check_range(v, f.metadata, name)
        object.__setattr__(obj, f.name, v)


def describe(obj: Any) -> Any:
    """A JSON-ready view of options: dataclasses as dicts, tuples as lists, callables by qualified name."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: describe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v) for k, v in obj.items()}
    if callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
    return obj
