"""Issue 15, finding 3 (inside the log): every string a record carries is capped and escaped in
one place, :meth:`AuditLog.append`, so no caller (a refused request's X-Amz-Target, a purpose, an
error message) can write a 14 KB record or a line that a terminal or a log reader misreads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from regard.accountability.audit import MAX_STRING, AuditLog, sanitise_text
from regard.accountability.guard import Guard
from regard.accountability.request import RequestInfo
from regard.errors import AccessDenied


def test_a_100_kb_string_with_control_characters_is_stored_capped_and_the_log_verifies(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path)
    huge = "A" * 100_000
    nasty = "ok\x00\x1b[31mred\r\nnext\u2028line\x7f\x9b"
    sealed = log.append(
        {
            "kind": "access",
            "operation": huge,
            "purpose": nasty,
            "parameters": {"list": [huge, nasty], nasty: "key with control characters"},
            "outcome": "error",
        }
    )
    raw = log.path.read_bytes()
    assert len(raw) < 5 * MAX_STRING  # three capped copies of the 100 KB string would be 300 KB
    stored = json.loads(raw)
    assert stored == sealed
    digest = hashlib.sha256(huge.encode()).hexdigest()
    assert stored["operation"] == "A" * MAX_STRING + f"...[truncated: 100000 characters, sha256 {digest}]"
    escaped = "ok\\u0000\\u001b[31mred\\u000d\\u000anext\\u2028line\\u007f\\u009b"
    assert stored["purpose"] == escaped
    assert stored["parameters"] == {
        "list": [stored["operation"], escaped],
        escaped: "key with control characters",
    }
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in raw.decode()[:-1])
    assert raw.count(b"\n") == 1
    assert log.verify().ok


def test_short_printable_strings_are_kept_as_they_are() -> None:
    for text in ("", "IndexFaces", "été – 東京 ✓", "x" * MAX_STRING, "tab\\t is text here"):
        assert sanitise_text(text) == text


def test_every_caller_goes_through_the_cap(tmp_path: Path) -> None:
    """The guard's refusal record (an unauthenticated caller chose the target) is capped too."""
    guard = Guard(tmp_path)
    target = "RekognitionService." + "X" * 20_000 + "\x1b]0;pwned\x07"
    guard.record_refusal(target, RequestInfo(request_id="r\n1"), "AKID\t", AccessDenied("bad " * 10_000))
    (record,) = AuditLog(tmp_path).records()
    assert len(record["operation"]) < MAX_STRING + 120 and record["operation"].startswith(
        "RekognitionService.X"
    )
    assert record["request_id"] == "r\\u000a1" and record["access_key_id"] == "AKID\\u0009"
    assert len(record["error"]["message"]) < MAX_STRING + 120
    assert AuditLog(tmp_path).verify().ok
