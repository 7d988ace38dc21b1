"""JSON as Canopy's plugins read and write it.

`parse_json` reads JSON text strictly (no `NaN` or `Infinity`, which Python's `json` would
accept) and keeps every number exactly as written: an integer is a Python `int` (exact at any
size), any other number a `JsonFloat`, a `float` that remembers its text. `to_json` writes
compact JSON (no spaces, non-ASCII as is) and writes a parsed number back as it was sent, so
a value passed through a plugin is not altered (`89.990` stays `89.990`, `1e2` stays `1e2`),
as the Rust SDK does. Object keys keep their order.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Union

#: A JSON value: what events and settings carry.
Json = Union[None, bool, int, float, str, list, dict]


class JsonFloat(float):
    """A number parsed from JSON text that is not an integer; `text` is how it was written."""

    __slots__ = ("text",)

    text: str

    def __new__(cls, text: str) -> JsonFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


#: How deeply arrays and objects may nest, as serde_json allows (and so the host's events).
MAX_DEPTH = 128

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _check_depth(text: str) -> None:
    # Deeper nesting would exhaust the component's stack (a trap, not an exception).
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        else:
            depth -= 1


def parse_json(text: str | bytes) -> Json:
    """Parses JSON text (bytes as UTF-8); raises `ValueError` naming what is wrong."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"not UTF-8: {error}") from None
    _check_depth(text)
    try:
        return json.loads(text, parse_float=JsonFloat, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None


# Code points JSON.stringify writes as escapes and Python's encoder leaves as they are: lone
# surrogates (a pair is one code point in a Python string).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _string(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    if _LONE_SURROGATE.search(quoted):
        quoted = _LONE_SURROGATE.sub(lambda m: "\\u%04x" % ord(m.group()), quoted)
    return quoted


def _number(value: int | float) -> str:
    if isinstance(value, JsonFloat):
        return value.text
    if isinstance(value, int):
        return int.__repr__(value)
    if math.isfinite(value):
        return float.__repr__(value)
    # As JSON.stringify and serde_json write a non-finite number.
    return "null"


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if key is True:
        return "true"
    if key is False:
        return "false"
    if isinstance(key, (int, float)):
        return _number(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (int, float)):
        out.append(_number(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_string(_key(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        to_json_value = getattr(value, "to_json_value", None)
        if to_json_value is None:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        _write(to_json_value(), out)


def to_json(value: Any) -> str:
    """Compact JSON text of `value` (dicts, lists, tuples, strings, numbers, booleans, None,
    and the SDK's `Event` and `Customer`)."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)
