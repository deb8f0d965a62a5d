"""Validate requests against botocore's service model for Rekognition (2016-06-27).

Required members, types, ``min``/``max`` (length for strings, lists and maps, value
for numbers), ``pattern`` and ``enum`` are checked as the model defines them; the
first violation becomes an :class:`~regard.errors.InvalidParameter` whose message
follows AWS's "1 validation error detected: Value ... at '...' failed to satisfy
constraint: ..." form. Blobs arrive base64-encoded in JSON and come back decoded.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from regard.errors import ImageTooLarge, InvalidParameter

API_VERSION = "2016-06-27"


@cache
def service_model() -> ServiceModel:
    """botocore's model of Rekognition."""
    model: ServiceModel = botocore.session.get_session().get_service_model("rekognition", API_VERSION)
    return model


def operation_model(name: str) -> OperationModel:
    return service_model().operation_model(name)


#: Java's Unicode classes, which the model's patterns use, in Python ``re`` terms (inside ``[...]``).
#: ``\w`` is letters, digits and ``_`` in Unicode; every pattern that uses them already allows ``_``.
_UNICODE_CLASSES = {
    r"\p{L}": r"\w",
    r"\p{N}": r"\w",
    r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
}


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    for java, python in _UNICODE_CLASSES.items():
        pattern = pattern.replace(java, python)
    return re.compile(pattern)


def _camel(path: str) -> str:
    """AWS names members in validation messages with a lower-case first letter."""
    return ".".join(p[:1].lower() + p[1:] for p in path.split("."))


#: The longest rendering of a value in a validation message (longer ones end in "...").
MAX_SHOWN = 200


def _shown(value: Any) -> str:
    """A value as AWS's validation messages show it: ``[a, b]`` for a list, ``{k=v}`` for a map."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_shown(k)}={_shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str | int | float):
        return str(value)
    return type(value).__name__


def _fail(value: Any, path: str, constraint: str) -> InvalidParameter:
    shown = _shown(value)
    if len(shown) > MAX_SHOWN:
        shown = shown[:MAX_SHOWN] + "..."
    return InvalidParameter(
        f"1 validation error detected: Value '{shown}' at '{_camel(path)}' failed to satisfy "
        f"constraint: {constraint}"
    )


def validate(operation: str, params: Any) -> dict[str, Any]:
    """Check ``params`` against the input shape of ``operation``; return them with blobs decoded."""
    model = operation_model(operation)
    shape = model.input_shape
    if shape is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParameter("request body must be a JSON object")
    result: dict[str, Any] = _check(shape, params, "")
    return result


def _check(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            raise _fail(value, path or "request", "Member must be a structure")
        members = shape.members
        for name in shape.required_members:
            if value.get(name) is None:
                where = f"{path}.{name}" if path else name
                raise _fail("null", where, "Member must not be null")
        out: dict[str, Any] = {}
        for name, item in value.items():
            if name not in members or item is None:
                continue  # unknown members are ignored, as AWS services do
            out[name] = _check(members[name], item, f"{path}.{name}" if path else name)
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise _fail(value, path, "Member must be a list")
        _length(value, len(value), meta, path)
        member = shape.member
        return [_check(member, v, f"{path}.{i + 1}.member") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _fail(value, path, "Member must be a map")
        _length(value, len(value), meta, path)
        key_shape, value_shape = shape.key, shape.value
        return {
            _check(key_shape, k, f"{path}.key"): _check(value_shape, v, f"{path}.{k}.member")
            for k, v in value.items()
        }
    if kind == "string":
        if not isinstance(value, str):
            raise _fail(value, path, "Member must be a string")
        _length(value, len(value), meta, path)
        enum = shape.enum
        if enum and value not in enum:
            raise _fail(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = meta.get("pattern")
        if pattern and _pattern(pattern).fullmatch(value) is None:
            raise _fail(value, path, f"Member must satisfy regular expression pattern: {pattern}")
        return value
    if kind in {"integer", "long"}:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(value, path, "Member must be an integer")
        _range(value, meta, path)
        return value
    if kind in {"float", "double"}:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(value, path, "Member must be a number")
        if not math.isfinite(value):
            raise _fail(value, path, "Member must be a finite number")
        _range(value, meta, path)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _fail(value, path, "Member must be a boolean")
        return value
    if kind == "blob":
        if not isinstance(value, str):
            raise _fail(value, path, "Member must be a base64-encoded blob")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _fail("(blob)", path, "Member must be valid base64") from None
        if "max" in meta and len(data) > int(meta["max"]):
            raise ImageTooLarge(f"Image size is too large: {len(data)} bytes; the limit is {meta['max']}")
        if "min" in meta and len(data) < int(meta["min"]):
            raise _fail("(blob)", path, f"Member must have length greater than or equal to {meta['min']}")
        return data
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _fail(value, path, "Member must be a timestamp")
        return value
    return value  # pragma: no cover - Rekognition's model has no other input types


def _length(value: Any, n: int, meta: dict[str, Any], path: str) -> None:
    if "min" in meta and n < int(meta["min"]):
        raise _fail(value, path, f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and n > int(meta["max"]):
        raise _fail(value, path, f"Member must have length less than or equal to {meta['max']}")


def _range(value: float, meta: dict[str, Any], path: str) -> None:
    if "min" in meta and value < meta["min"]:
        raise _fail(value, path, f"Member must have value greater than or equal to {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise _fail(value, path, f"Member must have value less than or equal to {meta['max']}")
