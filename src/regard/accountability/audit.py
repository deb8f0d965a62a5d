"""An append-only, hash-chained audit log that is durable before an operation is acknowledged.

The log is one JSON-lines file, ``<data_dir>/audit/audit.jsonl``. Each line is one record
serialised canonically (keys sorted, no insignificant whitespace, UTF-8) and carries:

``seq``
    1, 2, 3, ... without gaps.
``time``
    UTC, ISO 8601 with microseconds.
``prev_hash``
    the ``hash`` of the record before it (:data:`GENESIS` for the first record).
``hash``
    sha256 of the canonical serialisation of the record without its ``hash`` field.

plus the event's own fields (request id, access key and principal, operation, collection,
parameters, purpose, case reference, collection state, results, outcome...). Templates and
image bytes cannot be written: :func:`canonical` refuses ``bytes`` and numpy arrays, and the
guard references a probe image by its sha256 only.

Appends are serialised across threads and processes with ``flock`` on a lock file and the
file is ``fsync``'ed before :meth:`AuditLog.append` returns, so an acknowledged operation is
on disk; the directory entries that name the log (and the ``audit`` folder, when it is
created) are synced when the log is opened. A crash in the middle of a write can leave a torn
last line; the next append cuts it off and records that repair (with the torn bytes' hash) as
a record of its own, so nothing disappears silently.

:meth:`AuditLog.verify` re-derives every hash and names the first record that does not
check out. Records older than the retention floor (default 183 days) can never be pruned;
pruning older ones leaves an anchor (the last pruned record's seq and hash) that the chain
continues from, and is itself recorded.

The anchor is authenticated: it carries an HMAC-SHA256 under a key the log writer keeps in
``audit/audit.key`` (0600), so a hand-written anchor (records deleted from the start of the log,
the anchor rewritten to hide it) fails verification. Someone who can read that key and write the
data directory can still forge an anchor, or rewrite the whole chain; against them, record heads
outside regard (``regard audit head --append-to FILE``) and check them with
``regard audit verify --expect SEQ:HASH`` or ``--expect-from FILE``.

Every string an event carries is capped and escaped in :meth:`AuditLog.append` (:func:`sanitise`):
control characters become ``\\uXXXX`` text and a string longer than :data:`MAX_STRING` characters
is cut, with a marker giving its length and the sha256 of the whole.

State-changing operations write an ``intent`` record (synced) before they run and their outcome
record (``intent_seq`` names the intent) after; :meth:`AuditLog.orphan_intents` finds the intents of
writers that died before their outcome, which the guard records as ``outcome: unknown``.

What does not depend on where the records are kept (sanitising and sealing a record, the verify
walk over the records' exact canonical text, the anchor's MAC, select and export) is
:class:`AuditChain`'s; :class:`AuditLog` keeps the chain in the data directory's files and
:class:`regard.accountability.audit_pg.PgAuditLog` in the PostgreSQL database every node shares.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import hmac
import io
import json
import os
import secrets
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from regard import datadir
from regard.errors import AccessDenied, InvalidParameter, RegardError

GENESIS = "0" * 64
DEFAULT_RETENTION_FLOOR_DAYS = 183
LOG_NAME = "audit.jsonl"
ANCHOR_NAME = "anchor.json"
LOCK_NAME = "audit.lock"
KEY_NAME = "audit.key"
WRITERS_DIR = "writers"
#: The longest string a record keeps whole; longer ones are cut with a marker and their sha256.
MAX_STRING = 1024
#: The kind of the record written before a state-changing operation runs.
INTENT_KIND = "intent"
#: Fields every record has, in the order exports list them.
CSV_FIELDS = (
    "seq",
    "time",
    "kind",
    "request_id",
    "access_key_id",
    "principal",
    "role",
    "profile",
    "operation",
    "collection",
    "purpose",
    "case_reference",
    "outcome",
    "error",
    "collection_state",
    "probe_sha256",
    "parameters",
    "results",
    "prev_hash",
    "hash",
)
_RESERVED = ("seq", "time", "prev_hash", "hash")


class AuditError(RegardError):
    """The audit log cannot be written or read; operations fail closed."""

    code = "InternalServerError"
    http_status = 500


def _default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray):
        raise TypeError("biometric templates and image bytes never go into the audit log")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} to the audit log")


def canonical(record: Mapping[str, Any]) -> str:
    """The one serialisation a record is hashed and stored in."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    )


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


_CONTROL = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def sanitise_text(text: str) -> str:
    """``text`` with control characters escaped as ``\\uXXXX`` and, when longer than
    :data:`MAX_STRING` characters, cut with a marker naming its length and the whole's sha256."""
    escaped = text.translate(_CONTROL)
    if len(escaped) <= MAX_STRING:
        return escaped
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{escaped[:MAX_STRING]}...[truncated: {len(text)} characters, sha256 {digest}]"


def sanitise(value: Any) -> Any:
    """``value`` with every string in it (dictionary keys too) passed through :func:`sanitise_text`."""
    if isinstance(value, str):
        return sanitise_text(value)
    if isinstance(value, Mapping):
        return {sanitise_text(str(k)) if isinstance(k, str) else k: sanitise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitise(v) for v in value]
    return value


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    """An ISO 8601 date or time (``2026-11-29``, ``2026-11-29T12:00:00Z``); naive means UTC."""
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidParameter(f"not an ISO 8601 date or time: {value!r}") from exc
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :meth:`AuditChain.verify` found: ``ok`` or the first broken record and why.

    ``broken_line`` is where the broken record is stored: its line in the log file, or its row
    (1 for the oldest kept) in the database; ``position`` says which."""

    ok: bool
    records: int
    head_hash: str
    broken_seq: int | None = None
    broken_line: int | None = None
    reason: str | None = None
    position: str = "line"

    def describe(self) -> str:
        if self.ok:
            return f"audit log OK: {self.records} records, head {self.head_hash}"
        return (
            f"audit log BROKEN at record seq {self.broken_seq} ({self.position} {self.broken_line}): "
            f"{self.reason}; {self.records} records before it check out"
        )


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as stored: its exact bytes (ending in the newline a line has), where it is
    (a line or row number) and, where the store indexes records, its index columns' values
    (which must be :func:`index_columns` of the record)."""

    position: int
    raw: bytes
    columns: Mapping[str, Any] | None = None


class ChainSnapshot(Protocol):
    """What :meth:`AuditChain.verify` walks: one view of the anchor and the records."""

    def anchor(self) -> tuple[int, str]:
        """(seq, hash) the first kept record continues from: (0, :data:`GENESIS`) before any prune."""
        ...

    def anchor_problem(self) -> str | None:
        """Why the anchor is not one regard's prune wrote, or None (also when there is none)."""
        ...

    def stored(self) -> Iterator[StoredRecord]:
        """Every kept record in order, as stored."""
        ...


def index_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a store indexes a record by (``seq``, ``kind``, ``intent_seq``), as stored."""
    kind = record.get("kind")
    intent = record.get("intent_seq")
    return {
        "seq": record.get("seq"),
        "kind": kind if isinstance(kind, str) else None,
        "intent_seq": int(intent) if isinstance(intent, int) else None,
    }


class AuditChain(ABC):
    """A hash chain of audit records, wherever it is kept: the part that does not depend on where."""

    retention_floor_days: int
    #: What :attr:`VerifyResult.broken_line` counts: lines of a file or rows of a table.
    position_name = "line"

    # -- writing ----------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record for ``event``; returns it (with seq, time and hashes) once it is
        durable (synced to disk, or committed)."""
        clash = [k for k in _RESERVED if k in event]
        if clash:
            raise InvalidParameter(f"audit events may not set {', '.join(clash)}")
        canonical(event)  # refuse bytes/arrays before taking the lock
        return self._append_sanitised(sanitise(event))  # capped, escaped strings: no 14 KB value

    @abstractmethod
    def _append_sanitised(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Seal and store ``event`` (checked and sanitised) as the next record."""

    def _seal(self, event: Mapping[str, Any], seq: int, prev: str, time: str | None = None) -> dict[str, Any]:
        """``event`` as record ``seq`` following ``prev``, stamped ``time`` (default: now)."""
        record: dict[str, Any] = dict(event)
        record["seq"] = seq
        record["time"] = time or now_iso()
        record["prev_hash"] = prev
        record["hash"] = record_hash(record)
        return record

    @staticmethod
    def _anchor_mac(key: bytes, seq: int, digest: str, pruned_at: str) -> str:
        body = canonical({"seq": seq, "hash": digest, "pruned_at": pruned_at})
        return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- where it lives ---------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> str:
        """Where the chain is kept, for logs and command output (never a password)."""

    @abstractmethod
    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record in order (use :meth:`verify` to check them)."""

    @abstractmethod
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record (the anchor's when none is kept)."""

    @abstractmethod
    def _snapshot(self) -> contextlib.AbstractContextManager[ChainSnapshot]:
        """The anchor and the records as :meth:`verify` walks them."""

    # -- intents ----------------------------------------------------------------------------
    @abstractmethod
    def writer_token(self) -> str:
        """This log object's writer token, alive while this object (and its process) is."""

    @abstractmethod
    def close(self) -> None:
        """End this writer: its intents without an outcome become orphans."""

    @abstractmethod
    def orphan_intents(self) -> list[dict[str, Any]]:
        """Intent records without an outcome record whose writer is gone, oldest first."""

    @abstractmethod
    def reconcile(self, outcome: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append, for each intent seq of ``outcome``, its record (``intent_seq`` set) unless one
        is recorded already; returns the records appended."""

    # -- retention --------------------------------------------------------------------------
    @abstractmethod
    def prune(self, before: datetime, *, actor: str, now: datetime | None = None) -> int:
        """Delete records older than ``before``; refused inside the retention floor."""

    def _check_floor(self, before: datetime, now: datetime | None) -> None:
        """Refuse a prune that reaches inside the retention floor, or of a broken chain."""
        current = now or datetime.now(UTC)
        limit = current - timedelta(days=self.retention_floor_days)
        if before > limit:
            raise AccessDenied(
                f"audit records younger than the retention floor of {self.retention_floor_days} days "
                f"(before {limit.isoformat()}) cannot be deleted"
            )
        check = self.verify()
        if not check.ok:
            raise AuditError(f"refusing to prune a broken log: {check.describe()}")

    def _prune_event(self, before: datetime, actor: str, pruned: int) -> dict[str, Any]:
        """The record a prune leaves."""
        return {
            "kind": "admin",
            "operation": "AuditPrune",
            "principal": actor,
            "parameters": {
                "before": before.isoformat(),
                "retention_floor_days": self.retention_floor_days,
            },
            "results": {"pruned": pruned},
            "outcome": "success",
        }

    # -- reading ----------------------------------------------------------------------------
    def verify(self, expect: Iterable[tuple[int, str]] = ()) -> VerifyResult:
        """Walk the whole chain; the first record whose bytes, seq, link or hash is wrong fails it,
        as does an anchor regard's prune did not write, or a head in ``expect`` (seq, hash),
        recorded earlier, that is no longer in the log as it was."""
        with self._snapshot() as snap:
            return self._verify(snap, dict(expect))

    def _verify(self, snap: ChainSnapshot, wanted: dict[int, str]) -> VerifyResult:
        unit = self.position_name
        try:
            expected_seq, prev = snap.anchor()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            return VerifyResult(False, 0, GENESIS, 1, 0, f"anchor unreadable: {exc}", unit)
        anchor_problem = snap.anchor_problem()
        if anchor_problem is not None:
            return VerifyResult(False, 0, prev, expected_seq, 0, anchor_problem, unit)
        anchor_seq, anchor_hash = expected_seq, prev
        seen: dict[int, str] = {}
        count = 0
        for item in snap.stored():
            seq = expected_seq + 1
            reason = self._check_line(item.raw, seq, prev)
            if reason is None and item.columns is not None:
                reason = self._check_columns(json.loads(item.raw), item.columns)
            if reason is not None:
                return VerifyResult(False, count, prev, seq, item.position, reason, unit)
            prev = str(json.loads(item.raw)["hash"])
            if seq in wanted:
                seen[seq] = prev
            expected_seq = seq
            count += 1
        for seq, digest in sorted(wanted.items()):
            if seq == anchor_seq and anchor_seq > 0:
                found: str | None = anchor_hash
            else:
                found = seen.get(seq)
            if found is None:
                where = (
                    f"pruned (the anchor is at seq {anchor_seq})"
                    if 0 < seq < anchor_seq
                    else "not in the log"
                )
                reason = f"expected head {seq}:{digest} is {where}"
                return VerifyResult(False, count, prev, seq, None, reason, unit)
            if found != digest:
                reason = f"expected head {seq}:{digest} does not match: the record's hash is {found}"
                return VerifyResult(False, count, prev, seq, None, reason, unit)
        return VerifyResult(True, count, prev, position=unit)

    @staticmethod
    def _check_line(raw: bytes, seq: int, prev: str) -> str | None:
        """Why one line is not the record ``seq`` following ``prev``, or None if it is."""
        if not raw.endswith(b"\n"):
            return "incomplete last line (no newline)"
        try:
            text = raw[:-1].decode("utf-8")
            rec = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            return "not valid UTF-8 JSON"
        if not isinstance(rec, dict):
            return "not a JSON object"
        try:
            ok_bytes = canonical(rec) == text
        except (TypeError, ValueError):
            ok_bytes = False
        if not ok_bytes:
            return "bytes differ from the record's canonical form"
        if rec.get("seq") != seq:
            return f"seq is {rec.get('seq')!r}, expected {seq}"
        if rec.get("prev_hash") != prev:
            return "prev_hash does not match the previous record's hash"
        if rec.get("hash") != record_hash(rec):
            return "hash does not match the record's content"
        return None

    @staticmethod
    def _check_columns(rec: Mapping[str, Any], columns: Mapping[str, Any]) -> str | None:
        """Why a store's index columns do not say what the record says, or None."""
        expected = index_columns(rec)
        for name, value in columns.items():
            if expected.get(name) != value:
                return (
                    f"the stored {name} column ({value!r}) does not match the record's "
                    f"({expected.get(name)!r})"
                )
        return None

    def select(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Records with ``since <= time < until``."""
        for rec in self.records():
            t = parse_time(str(rec.get("time", "")))
            if since is not None and t < since:
                continue
            if until is not None and t >= until:
                continue
            yield rec

    def export(
        self,
        out: TextIO,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        fmt: str = "jsonl",
    ) -> int:
        """Write the selected records to ``out`` as JSON lines or CSV; returns how many."""
        n = 0
        if fmt == "jsonl":
            for rec in self.select(since, until):
                out.write(canonical(rec) + "\n")
                n += 1
            return n
        if fmt != "csv":
            raise InvalidParameter("format must be jsonl or csv")
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        for rec in self.select(since, until):
            writer.writerow([_csv_cell(rec.get(name)) for name in CSV_FIELDS])
            n += 1
        return n


class AuditLog(AuditChain):
    """The audit log of one data directory."""

    def __init__(self, data_dir: Path, *, retention_floor_days: int = DEFAULT_RETENTION_FLOOR_DAYS) -> None:
        self.dir = Path(data_dir) / "audit"
        _make_dirs(self.dir)
        self.path = self.dir / LOG_NAME
        self.anchor_path = self.dir / ANCHOR_NAME
        self.lock_path = self.dir / LOCK_NAME
        self.key_path = self.dir / KEY_NAME
        self.writers_dir = self.dir / WRITERS_DIR
        self._writer: tuple[str, int] | None = None  # (token, fd holding its flock) once it intends
        self.retention_floor_days = retention_floor_days
        self._thread_lock = threading.Lock()
        if not self.path.exists():  # create it once
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        # Its directory entry on disk before this process appends: synced by whoever opens the
        # log, not only by its creator, which may not have synced yet when another process appends.
        _fsync_dir(self.dir)

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def describe(self) -> str:
        return f"file {self.path}"

    def _append_sanitised(self, event: Mapping[str, Any]) -> dict[str, Any]:
        try:
            with self._locked():
                return self._append_locked(event)
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc}") from exc

    def _append_locked(self, event: Mapping[str, Any]) -> dict[str, Any]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            seq, prev = self._tail(fd)
            lines: list[str] = []
            if seq < 0:  # torn tail: cut it off and say so
                torn = self._cut_torn_tail(fd)
                seq, prev = self._tail(fd)
                repair = {
                    "kind": "system",
                    "operation": "AuditLogRepair",
                    "outcome": "success",
                    "results": {"torn_bytes": len(torn), "torn_sha256": hashlib.sha256(torn).hexdigest()},
                }
                rec = self._seal(repair, seq + 1, prev)
                lines.append(canonical(rec))
                seq, prev = rec["seq"], rec["hash"]
            record = self._seal(event, seq + 1, prev)
            lines.append(canonical(record))
            data = ("\n".join(lines) + "\n").encode("utf-8")
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fdatasync(fd)  # data and file size on disk before the caller is answered
            return record
        finally:
            os.close(fd)

    def _anchor(self) -> tuple[int, str]:
        if not self.anchor_path.exists():
            return 0, GENESIS
        data = json.loads(self.anchor_path.read_text())
        return int(data["seq"]), str(data["hash"])

    # -- the anchor's key -------------------------------------------------------------------
    def _key(self, *, create: bool) -> bytes | None:
        """The anchor's HMAC key (32 random bytes, 0600); made on first use by the writer."""
        try:
            return self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                return None
        key = secrets.token_bytes(32)
        tmp = self.key_path.with_suffix(".tmp")
        fd = datadir.open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.key_path)
        _fsync_dir(self.dir)
        return key

    def _check_anchor(self) -> str | None:
        """Why the anchor file is not one this log's writer made, or None (or no anchor)."""
        if not self.anchor_path.exists():
            return None
        try:
            data = json.loads(self.anchor_path.read_text())
            seq, digest, pruned_at, mac = (
                int(data["seq"]),
                str(data["hash"]),
                str(data["pruned_at"]),
                data["mac"],
            )
        except (ValueError, KeyError, TypeError, OSError) as exc:
            return f"anchor file {ANCHOR_NAME} unreadable or incomplete: {exc!r}"
        key = self._key(create=False)
        if key is None:
            return f"anchor file {ANCHOR_NAME} cannot be authenticated: the key {KEY_NAME} is missing"
        if not isinstance(mac, str) or not hmac.compare_digest(
            mac, self._anchor_mac(key, seq, digest, pruned_at)
        ):
            return (
                f"anchor file {ANCHOR_NAME} is not authentic (its MAC does not match): "
                "regard's prune did not write it"
            )
        return None

    # -- intents ----------------------------------------------------------------------------
    def writer_token(self) -> str:
        """This log object's writer token; the first call takes an exclusive ``flock`` on
        ``audit/writers/<token>.lock`` that only this process's end (or :meth:`close`) releases,
        so that an intent whose writer's lock is free belongs to a writer that is gone."""
        if self._writer is None:
            if not self.writers_dir.exists():
                _make_dirs(self.writers_dir)
            token = uuid.uuid4().hex
            # locked before it appears under its name, so a visible lock file free to take is a
            # dead writer's (and may be swept), never one about to be locked
            tmp = self.writers_dir / f"{token}.new"
            fd = datadir.open_private(tmp, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.replace(tmp, self.writers_dir / f"{token}.lock")
            self._writer = (token, fd)
        return self._writer[0]

    def close(self) -> None:
        """Release this writer's lock (what the process's end does): its intents without an
        outcome are then orphans that the next :meth:`orphan_intents` reports."""
        if self._writer is not None:
            token, fd = self._writer
            self._writer = None
            with contextlib.suppress(OSError):
                (self.writers_dir / f"{token}.lock").unlink()
            os.close(fd)

    def _writer_gone(self, token: str) -> bool:
        if self._writer is not None and self._writer[0] == token:
            return False
        path = self.writers_dir / f"{token}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True  # closed, or its lock file removed after reconciliation
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def orphan_intents(self) -> list[dict[str, Any]]:
        """Intent records without an outcome record whose writer is gone (crashed, killed, or
        failed to write the outcome and ended), oldest first."""
        open_intents: dict[int, dict[str, Any]] = {}
        for rec in self.records():
            if rec.get("kind") == INTENT_KIND:
                open_intents[int(rec["seq"])] = rec
            elif isinstance(rec.get("intent_seq"), int):
                open_intents.pop(rec["intent_seq"], None)
        return [rec for rec in open_intents.values() if self._writer_gone(str(rec.get("writer", "")))]

    def reconcile(self, outcome: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append, for each intent seq of ``outcome``, its record (``intent_seq`` set), unless
        another process recorded one meanwhile; returns the records appended."""
        try:
            with self._locked():
                done = {r.get("intent_seq") for r in self.records() if r.get("kind") != INTENT_KIND}
                out = []
                for seq, event in sorted(outcome.items()):
                    if seq in done:
                        continue
                    out.append(self._append_locked(sanitise({**event, "intent_seq": seq})))
                self._sweep_writers()
                return out
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc}") from exc

    def _sweep_writers(self) -> None:
        """Remove the lock files of writers that are gone (their open intents are recorded by
        now: call under the log lock, after reconciling)."""
        if not self.writers_dir.exists():
            return
        for path in self.writers_dir.glob("*.lock"):
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()  # while holding its lock: its writer is gone
                finally:
                    os.close(fd)

    def _tail(self, fd: int) -> tuple[int, str]:
        """(seq, hash) of the last complete record; seq -1 when the file ends in a torn line."""
        size = os.fstat(fd).st_size
        if size == 0:
            return self._anchor()
        last = os.pread(fd, 1, size - 1)
        if last != b"\n":
            return -1, ""
        block = 4096
        end = size - 1
        buf = b""
        while True:
            start = max(0, end - block)
            buf = os.pread(fd, end - start, start) + buf
            cut = buf.rfind(b"\n")
            if cut >= 0 or start == 0:
                line = buf[cut + 1 :] if cut >= 0 else buf
                break
            end = start
            block *= 2
        try:
            rec = json.loads(line)
            return int(rec["seq"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(
                f"the last record of {self.path} is unreadable; run `regard audit verify`"
            ) from exc

    def _cut_torn_tail(self, fd: int) -> bytes:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        cut = data.rfind(b"\n") + 1
        os.ftruncate(fd, cut)
        os.fsync(fd)
        return data[cut:]

    # -- reading ----------------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete, parseable record in order (use :meth:`verify` to check them)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    return
                with contextlib.suppress(ValueError):
                    yield json.loads(raw)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record."""
        with self._locked():
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o600)
            try:
                seq, h = self._tail(fd)
            finally:
                os.close(fd)
        if seq < 0:
            raise AuditError("the audit log ends in a torn record")
        return seq, h

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[ChainSnapshot]:
        yield _FileSnapshot(self)

    # -- retention --------------------------------------------------------------------------
    def prune(self, before: datetime, *, actor: str, now: datetime | None = None) -> int:
        """Delete records older than ``before``; refused if that reaches inside the retention floor.

        The chain stays verifiable: the last pruned record's seq and hash become the anchor the
        remaining records continue from. The pruning is itself recorded.
        """
        self._check_floor(before, now)
        with self._locked():
            kept: list[bytes] = []
            last: tuple[int, str] | None = None
            with self.path.open("rb") as f:
                for raw in f:
                    rec = json.loads(raw)
                    if parse_time(rec["time"]) < before and not kept:
                        last = (int(rec["seq"]), str(rec["hash"]))
                    else:
                        kept.append(raw)
            if last is None:
                pruned = 0
            else:
                pruned = last[0] - self._anchor()[0]
                tmp_anchor = self.anchor_path.with_suffix(".tmp")
                pruned_at = now_iso()
                mac = self._anchor_mac(self._key(create=True) or b"", last[0], last[1], pruned_at)
                anchor = json.dumps({"seq": last[0], "hash": last[1], "pruned_at": pruned_at, "mac": mac})
                with os.fdopen(datadir.open_private(tmp_anchor, os.O_WRONLY | os.O_TRUNC), "w") as f:
                    f.write(anchor)
                tmp_log = self.path.with_suffix(".tmp")
                with os.fdopen(datadir.open_private(tmp_log, os.O_WRONLY | os.O_TRUNC), "wb") as f:
                    f.writelines(kept)
                    f.flush()
                    os.fsync(f.fileno())
                with tmp_anchor.open("rb") as f:
                    os.fsync(f.fileno())
                # the anchor first: a crash in between leaves a log whose first record names its
                # predecessor in the anchor (old records then fail to link: verify reports it)
                os.replace(tmp_anchor, self.anchor_path)
                os.replace(tmp_log, self.path)
                _fsync_dir(self.dir)
        self.append(self._prune_event(before, actor, pruned))
        return pruned


class _FileSnapshot:
    """The log file and its anchor file as :meth:`AuditChain.verify` walks them."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def anchor(self) -> tuple[int, str]:
        return self.log._anchor()

    def anchor_problem(self) -> str | None:
        return self.log._check_anchor()

    def stored(self) -> Iterator[StoredRecord]:
        if not self.log.path.exists():
            return
        with self.log.path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                yield StoredRecord(line_no, raw)


#: A spreadsheet reads a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(text: str) -> str:
    """``text`` as a spreadsheet shows it but never evaluates it: a leading quote when it could
    start a formula (a value such as an unauthenticated request's X-Amz-Target reaches the log)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise_cell(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(value)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` that also puts each directory it creates on disk (its parent is synced)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        datadir.private_dir(folder)  # 0700 whatever the umask
        _fsync_dir(folder.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_text(log: AuditChain, fmt: str = "jsonl") -> str:
    """The whole log as text (a convenience for tests and small exports)."""
    buf = io.StringIO()
    log.export(buf, fmt=fmt)
    return buf.getvalue()
