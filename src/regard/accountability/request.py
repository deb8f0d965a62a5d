"""Who asks and why: an operation's caller, and the request's accountability fields.

:class:`Caller` is whoever performs an operation: an access key's holder (API, review CLI), or
the operator at the command line working on the data directory (no access key).
:class:`RequestInfo` is a request's id and the fields the ``x-regard-*`` headers carry: purpose,
case reference and the images' :class:`Provenance`. Request parameters travel as
:data:`Params`, in Rekognition's names. Nothing here knows HTTP: headers arrive as a plain mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regard.errors import InvalidParameter

#: Validated request parameters in Rekognition's names (JSON values, image bytes decoded).
Params = dict[str, Any]

#: Request headers carrying the accountability fields (case-insensitive).
HEADER_PURPOSE = "x-regard-purpose"
HEADER_CASE_REFERENCE = "x-regard-case-reference"
HEADER_SOURCE = "x-regard-source"
HEADER_LEGAL_BASIS = "x-regard-legal-basis"
#: Response headers the guard adds.
HEADER_EFFECTIVE_THRESHOLD = "x-regard-effective-threshold"
HEADER_THRESHOLD_FMR = "x-regard-threshold-fmr"
HEADER_REVIEW = "x-regard-review"
HEADER_AUDIT_SEQ = "x-regard-audit-seq"
MAX_FIELD = 1024
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]*$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an access key (None for local CLI use), its name, role and profile."""

    access_key_id: str | None
    principal: str
    role: str
    profile: str

    @property
    def local(self) -> bool:
        """The operator at the command line, with the data directory's own rights (no access key)."""
        return self.access_key_id is None


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where indexed images come from and the legal basis for processing them (IndexFaces)."""

    source_note: str | None = None
    legal_basis: str | None = None

    @property
    def complete(self) -> bool:
        """Both a source note and a legal basis are given."""
        return bool(self.source_note and self.legal_basis)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request's id and its accountability fields."""

    request_id: str
    purpose: str | None = None
    case_reference: str | None = None
    source_note: str | None = None
    legal_basis: str | None = None

    @property
    def provenance(self) -> Provenance:
        """The images' provenance as the request gives it."""
        return Provenance(self.source_note, self.legal_basis)

    @classmethod
    def from_headers(cls, request_id: str, headers: Mapping[str, str]) -> RequestInfo:
        """The fields of the ``x-regard-*`` headers; InvalidParameter for a value over
        :data:`MAX_FIELD` characters or with control characters."""
        low = {k.lower(): v for k, v in headers.items()}

        def get(name: str) -> str | None:
            value = low.get(name)
            if value is None or not value.strip():
                return None
            value = value.strip()
            if len(value) > MAX_FIELD or not _PRINTABLE.match(value):
                raise InvalidParameter(f"header {name} must be at most {MAX_FIELD} printable characters")
            return value

        return cls(
            request_id=request_id,
            purpose=get(HEADER_PURPOSE),
            case_reference=get(HEADER_CASE_REFERENCE),
            source_note=get(HEADER_SOURCE),
            legal_basis=get(HEADER_LEGAL_BASIS),
        )
