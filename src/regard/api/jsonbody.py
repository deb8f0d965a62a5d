"""A request body as JSON, parsed as AWS's JSON 1.1 protocol would accept it, or refused.

AWS refuses what is not JSON (``SerializationException``), and so does regard, for every body:

- a body that is not UTF-8 (UTF-16 or UTF-32, with or without a byte-order mark; Python's
  ``json.loads`` would guess those encodings from bytes);
- ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, though Python's parser takes them) and numbers
  that overflow a double (``1e999``);
- a string holding a lone UTF-16 surrogate (``"\\ud800"`` sent as an escape): not Unicode text,
  and it could be neither validated nor written to the audit log;
- nesting deeper than :data:`MAX_DEPTH` (the parser would otherwise hit Python's recursion limit).
"""

from __future__ import annotations

import json
import math
from typing import Any

from regard.api.rekognition.errors import SerializationError

#: Deepest nesting of arrays and objects accepted (Rekognition's deepest input shape is 5 levels).
MAX_DEPTH = 64


def _no_constants(name: str) -> Any:
    raise SerializationError(f"Request body is not valid JSON: {name} is not a JSON number")


def parse(body: bytes) -> Any:
    """``body`` (empty: ``{}``) as JSON, or :class:`SerializationError` saying why not."""
    try:
        text = (body or b"{}").decode("utf-8")
    except UnicodeDecodeError:
        raise SerializationError("Request body is not UTF-8 encoded JSON") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise SerializationError(f"Request body nests JSON deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise SerializationError("Request body is not valid JSON") from None
    _check(value)
    return value


def _check(root: Any) -> None:
    """Refuse nesting beyond :data:`MAX_DEPTH`, non-finite numbers and strings that are not Unicode."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise SerializationError(f"Request body nests JSON deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                _text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise SerializationError(f"Request body nests JSON deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise SerializationError("Request body is not valid JSON: a number is out of range")


def _text(value: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SerializationError("Request body is not valid JSON: a string holds a lone surrogate") from None
