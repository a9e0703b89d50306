"""Typed options: one declaration per option, checked once.

An option is a field of a frozen dataclass, declared with :func:`option`: its
type (``Literal`` choices, ``int``, ``float``, ``bool``, ``str``, tuples of
these, ``X | None``), its range and its help text. :func:`check` validates
every field of an instance against that declaration (called from
``__post_init__``), so a bad value fails where it is given, with one line
naming the option and the value; the command line (:mod:`nnphases.cli`) is
generated from the same fields.

This is the package's leaf utility: it imports nothing of nnphases, so every
layer may use its one integer check (:func:`check_int`), its one parser of
command-line text (:func:`parse_text`) and its one-line error text
(:func:`one_line`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

__all__ = ["option", "check", "describe", "check_int", "parse_text", "one_line"]


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    flag: str | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
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
        return check_int(value, name)
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


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int: Python, NumPy and 0-d torch integers pass; bool, floats and strings are a
    TypeError, a value outside ``[minimum, maximum]`` a ValueError, each one line naming ``name`` and the value."""
    # operator.index takes exactly the integer types (not 2.0, not "2"); bool is an int subclass that is almost
    # always a caller's bug.
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


# How a value of each type is named in a parse error (plural: the message speaks of the values given).
_TEXT_NOUNS = {int: "integers", float: "numbers", bool: "true or false"}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_text(text: str, tp: Any, name: str) -> Any:
    """Command-line ``text`` as a value of option type ``tp``: integers, numbers, true/false, and comma-separated
    tuples of these; choices and strings stay text. ValueError names ``name`` and the text; ranges and choices
    are left to :func:`check`, which names the option as its declaration does."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (Union, types.UnionType) and len(args) == 1:
        tp = args[0]  # X | None: the text is an X
    if get_origin(tp) is tuple:
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in items):
            raise ValueError(f"{name} must be a comma-separated list, got {text!r}")
        elem = get_args(tp)[0]
        try:
            return tuple(_scalar(t, elem) for t in items)
        except ValueError:
            raise ValueError(f"{name} must be comma-separated {_TEXT_NOUNS[elem]}, got {text!r}") from None
    try:
        return _scalar(text, tp)
    except ValueError:
        raise ValueError(f"{name} must be {_TEXT_NOUNS[tp]}, got {text!r}") from None


def _scalar(text: str, tp: Any) -> Any:
    if tp is bool:
        if text.strip().lower() not in _TRUE + _FALSE:
            raise ValueError(text)
        return text.strip().lower() in _TRUE
    if tp in (int, float):
        return tp(text)
    return text


def one_line(e: BaseException, *, typed: bool = True, limit: int | None = None) -> str:
    """An exception as one line: its message with every run of whitespace (newlines too) made one space, cut to
    ``limit`` characters, after its type's name unless ``typed`` is false (an empty message: the type's name)."""
    text = " ".join(str(e).split())
    if limit is not None:
        text = text[:limit]
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text}" if typed else text


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
