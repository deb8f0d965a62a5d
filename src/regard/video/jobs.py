"""Stored-video jobs: StartFaceDetection and StartFaceSearch, run beside the request path.

A job is a row of ``video_jobs`` (``<data_dir>/video_jobs.sqlite3``, or the PostgreSQL table of
migration 11 when the state is shared): its id and kind (``FACE_DETECTION`` / ``FACE_SEARCH``),
status (``IN_PROGRESS``, ``SUCCEEDED``, ``FAILED``) and status message, the request (collection,
threshold, attributes, JobTag, ClientRequestToken and the sha256 of the request, for
idempotency), who asked (access key, principal, role, profile, purpose, case reference), the
video's sha256 and metadata, and, once it has run, the results as Rekognition's JSON.

The Start operation fetches the video (S3, streamed to ``<data_dir>/video/<job id>``, or a local
file from the command line), hashes and probes it, and inserts the row; the guard then writes the
Start's audit record (the video by sha256 and duration, never frames) and only then is the job
handed to the worker pool (:meth:`VideoJobs.submit`): ``video_workers`` threads (default 1) of
their own, so a long video never holds a request slot (0 pauses processing: jobs are accepted and
run after a restart with workers).

A job that ends SUCCEEDED or FAILED keeps its results; its video file is deleted. A search job's
matches (a person's track matched to a collection's face) become leads for two-person review when
the requester's profile asks for review, each with the timestamp and frame of the track's first
sighting, and one audit record (kind ``system``, operation ``FaceSearchCompleted``) names the job,
its counts and the leads. At start-up (:meth:`VideoJobs.resume`) the jobs this node left
IN_PROGRESS run again from the beginning (``video_resume``; or fail with a StatusMessage when
their video is gone or resuming is off): none is ever left unfinished. :meth:`VideoJobs.cancel`
asks a running job to stop; it ends FAILED, and the cancellation is recorded.

Erasure: deleting faces (DeleteFaces, ``regard erase``) removes them from every finished search
job's stored results (:func:`_erase_from_jobs`, a removal listener of the service).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regard import datadir
from regard.accountability.audit import now_iso
from regard.accountability.request import Caller
from regard.accountability.review import Candidate
from regard.errors import (
    IdempotentParameterMismatch,
    InvalidPaginationToken,
    InvalidParameter,
    RegardError,
    ResourceNotFound,
)
from regard.service.base import Removal, on_removal
from regard.shared_db import DURABLE_PRAGMAS, PostgresDb, SharedDb, SqliteDb
from regard.store.base import Store
from regard.store.migrations.m0011_video_jobs import VIDEO_JOBS
from regard.video.outcomes import GetJobResult, StartJobResult

if TYPE_CHECKING:
    from regard.accountability.guard import Guard
    from regard.config import Settings
    from regard.face.engine import Engine
    from regard.service import Service

log = logging.getLogger("regard.video")

FACE_DETECTION = "FACE_DETECTION"
FACE_SEARCH = "FACE_SEARCH"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
#: The file of a data directory that holds its jobs (when there is no shared database).
FILE_NAME = "video_jobs.sqlite3"
#: Where fetched videos wait for their job (deleted when it ends).
VIDEO_DIR = "video"
#: Rekognition's MaxResults for GetFaceDetection and GetFaceSearch: default and most.
MAX_RESULTS = 1000
#: The operation of the audit record a finished search job appends.
COMPLETED_OPERATION = "FaceSearchCompleted"

_COLUMNS = (
    "job_id, kind, status, status_message, created_at, finished_at, node, client_request_token, "
    "request_hash, request, collection_id, job_tag, access_key_id, principal, role, profile, purpose, "
    "case_reference, request_id, video_sha256, metadata, results, cancel_requested, runner"
)
_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))


@dataclass(frozen=True)
class JobRequest:
    """What a Start asks for; :meth:`digest` is what ClientRequestToken's idempotency compares."""

    kind: str
    video: dict[str, Any]  # {"S3Object": {...}} or {"Path": "..."} (the command line's file)
    collection_id: str | None = None
    face_match_threshold: float | None = None
    face_attributes: str = "DEFAULT"
    job_tag: str | None = None
    client_request_token: str | None = None
    fps: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "video": self.video,
            "collection_id": self.collection_id,
            "face_match_threshold": self.face_match_threshold,
            "face_attributes": self.face_attributes,
            "job_tag": self.job_tag,
            "client_request_token": self.client_request_token,
            "fps": self.fps,
        }

    def digest(self) -> str:
        """sha256 of the request without its token (same token and digest: the same job)."""
        body = {k: v for k, v in self.to_json().items() if k != "client_request_token"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """One row of ``video_jobs``, decoded."""

    job_id: str
    kind: str
    status: str
    status_message: str | None
    created_at: str
    finished_at: str | None
    node: str
    client_request_token: str | None
    request_hash: str
    request: dict[str, Any]
    collection_id: str | None
    job_tag: str | None
    access_key_id: str | None
    principal: str | None
    role: str | None
    profile: str | None
    purpose: str | None
    case_reference: str | None
    request_id: str | None
    video_sha256: str | None
    metadata: dict[str, Any] | None
    results: dict[str, Any] | None
    cancel_requested: bool
    #: The process running the job (``host:pid:token``), None before one claims it.
    runner: str | None = None

    @property
    def caller(self) -> Caller:
        return Caller(self.access_key_id, self.principal or "", self.role or "", self.profile or "")

    def summary(self) -> dict[str, Any]:
        """The job as ``regard video jobs`` lists it (no results)."""
        return {
            "JobId": self.job_id,
            "Kind": self.kind,
            "JobStatus": self.status,
            "StatusMessage": self.status_message,
            "CreatedAt": self.created_at,
            "FinishedAt": self.finished_at,
            "CollectionId": self.collection_id,
            "JobTag": self.job_tag,
            "Principal": self.principal,
            "VideoSha256": self.video_sha256,
            "DurationMillis": (self.metadata or {}).get("DurationMillis"),
        }


def _job(row: Sequence[Any]) -> Job:
    v: dict[str, Any] = dict(zip(_NAMES, row, strict=True))
    v["request"] = json.loads(v["request"])
    v["metadata"] = json.loads(v["metadata"]) if v["metadata"] else None
    v["results"] = json.loads(v["results"]) if v["results"] else None
    v["cancel_requested"] = bool(v["cancel_requested"])
    return Job(**v)


#: Tells this process from an earlier one that had the same pid (a restarted container's server).
_PROCESS_TOKEN = uuid.uuid4().hex[:12]


def runner_name() -> str:
    """This process, as a job's ``runner`` names it: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


def runner_alive(runner: str | None) -> bool:
    """Whether the process ``runner`` names may still run (another host's: assumed so)."""
    if not runner:
        return False
    try:
        host, pid_text, token = runner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return token == _PROCESS_TOKEN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_name(data_dir: Path) -> str:
    """This node: its host name and data directory (a job's video file is on its node)."""
    return f"{socket.gethostname()}:{Path(data_dir).resolve()}"


class JobStore:
    """The job table of one data directory or of the shared database; thread- and process-safe."""

    def __init__(self, data_dir: Path, *, db: SharedDb | None = None) -> None:
        self.data_dir = Path(data_dir)
        if db is None:
            db = SqliteDb(
                self.data_dir / FILE_NAME, pragmas=DURABLE_PRAGMAS, schema=VIDEO_JOBS
            )  # as migration 11 creates it
        self.db: SharedDb = db
        #: A row lock on PostgreSQL for :meth:`claim`; SQLite's BEGIN IMMEDIATE serialises writers.
        self.lock_row = " FOR UPDATE" if db.kind == "postgres" else ""
        _LIVE.add(self)

    def insert(self, job: Job) -> Job:
        """Insert ``job``; the job already started under its token when there is one (same
        request: that job; another request: IdempotentParameterMismatch)."""
        row = [getattr(job, n) for n in _NAMES]
        row[_NAMES.index("request")] = json.dumps(job.request, sort_keys=True)
        row[_NAMES.index("metadata")] = json.dumps(job.metadata) if job.metadata is not None else None
        row[_NAMES.index("results")] = None
        row[_NAMES.index("cancel_requested")] = 0
        row[_NAMES.index("runner")] = None
        try:
            with self.db.transaction() as cur:
                cur.execute(
                    f"INSERT INTO video_jobs ({_COLUMNS}) VALUES ({','.join('?' * len(_NAMES))})", row
                )
        except Exception as exc:
            if not self.db.is_unique_violation(exc) or job.client_request_token is None:
                raise
            found = self.by_token(job.kind, job.access_key_id, job.client_request_token)
            if found is None:  # pragma: no cover - the row that clashed is there
                raise
            if found.request_hash != job.request_hash:
                raise IdempotentParameterMismatch(
                    "ClientRequestToken was already used for a different request"
                ) from None
            return found
        return job

    def by_token(self, kind: str, access_key_id: str | None, token: str) -> Job | None:
        key_clause = "access_key_id IS NULL" if access_key_id is None else "access_key_id = ?"
        args: list[Any] = [kind, token] + ([] if access_key_id is None else [access_key_id])
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS} FROM video_jobs "
                f"WHERE kind = ? AND client_request_token = ? AND {key_clause}",
                args,
            ).fetchone()
        return _job(row) if row else None

    def get(self, job_id: str) -> Job:
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(f"SELECT {_COLUMNS} FROM video_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise ResourceNotFound(f"The job {job_id} does not exist")
        return _job(row)

    def list(self, *, status: str | None = None, limit: int = 1000) -> list[Job]:
        sql = f"SELECT {_COLUMNS} FROM video_jobs"
        args: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY created_at, job_id LIMIT ?"
        args.append(int(limit))
        with self.db.transaction(readonly=True) as cur:
            return [_job(r) for r in cur.execute(sql, args).fetchall()]

    def finish(
        self,
        job_id: str,
        status: str,
        message: str | None,
        *,
        metadata: dict[str, Any] | None = None,
        results: dict[str, Any] | None = None,
    ) -> bool:
        """End a job still IN_PROGRESS; False when it had already ended."""
        with self.db.transaction() as cur:
            n = cur.execute(
                "UPDATE video_jobs SET status = ?, status_message = ?, finished_at = ?, "
                "metadata = COALESCE(?, metadata), results = ? WHERE job_id = ? AND status = ?",
                (
                    status,
                    message,
                    now_iso(),
                    json.dumps(metadata) if metadata is not None else None,
                    json.dumps(results) if results is not None else None,
                    job_id,
                    IN_PROGRESS,
                ),
            ).rowcount
        return bool(n > 0)

    def claim(self, job_id: str) -> bool:
        """Make this process the job's runner, unless it has ended or a live process runs it (two
        server processes resuming the same job at start-up run it once)."""
        me = runner_name()
        with self.db.transaction() as cur:
            row = cur.execute(
                f"SELECT status, runner FROM video_jobs WHERE job_id = ?{self.lock_row}", (job_id,)
            ).fetchone()
            if row is None or row[0] != IN_PROGRESS:
                return False
            if row[1] and row[1] != me and runner_alive(row[1]):
                return False
            cur.execute("UPDATE video_jobs SET runner = ? WHERE job_id = ?", (me, job_id))
        return True

    def release(self, job_id: str) -> None:
        """This process stops running the job without ending it (the server is stopping)."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE video_jobs SET runner = NULL WHERE job_id = ? AND runner = ?", (job_id, runner_name())
            )

    def request_cancel(self, job_id: str) -> Job:
        with self.db.transaction() as cur:
            cur.execute("UPDATE video_jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                "SELECT cancel_requested FROM video_jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return bool(row and row[0])

    def erase_faces(self, collection_id: str, face_ids: Sequence[str], whole: bool) -> int:
        """Remove the faces (all of the collection's with ``whole``) from the stored results of
        the collection's finished search jobs; returns how many matches went."""
        gone = set(face_ids)
        removed = 0
        with self.db.transaction() as cur:
            rows = cur.execute(
                "SELECT job_id, results FROM video_jobs WHERE kind = ? AND collection_id = ? "
                "AND results IS NOT NULL",
                (FACE_SEARCH, collection_id),
            ).fetchall()
            for job_id, text in rows:
                results = json.loads(text)
                n = 0
                for person in results.get("Persons", []):
                    kept = [
                        m
                        for m in person.get("FaceMatches", [])
                        if not whole and m["Face"]["FaceId"] not in gone
                    ]
                    n += len(person.get("FaceMatches", [])) - len(kept)
                    person["FaceMatches"] = kept
                if n:
                    removed += n
                    cur.execute(
                        "UPDATE video_jobs SET results = ? WHERE job_id = ?", (json.dumps(results), job_id)
                    )
        if removed and isinstance(self.db, SqliteDb):
            from regard.accountability.review import _compact

            _compact(self.db)  # the erased ids leave the write-ahead log and freed pages too
        return removed


#: The job stores this process has opened (told of erasures).
_LIVE: weakref.WeakSet[JobStore] = weakref.WeakSet()


@on_removal
def _erase_from_jobs(store: Store, removal: Removal) -> None:
    """Remove deleted faces from finished search jobs' results, before the deletion returns."""
    if not removal.face_ids and not removal.whole_collection:
        return
    told: set[int] = set()
    data_dir = getattr(store, "data_dir", None)
    stores = list(_LIVE)
    own = data_dir / FILE_NAME if isinstance(data_dir, Path) else None
    if own is not None and own.exists() and not any(getattr(s.db, "path", None) == own for s in stores):
        stores.append(JobStore(own.parent))
    for s in stores:
        if s.db.closed or id(s.db) in told:
            continue
        told.add(id(s.db))
        s.erase_faces(removal.collection_id, removal.face_ids, removal.whole_collection)
    url = getattr(store, "url", None)
    if isinstance(url, str) and not any(isinstance(s.db, PostgresDb) for s in stores):
        db = PostgresDb(url)
        try:
            JobStore(Path("."), db=db).erase_faces(
                removal.collection_id, removal.face_ids, removal.whole_collection
            )
        finally:
            db.close()


# -- paging ----------------------------------------------------------------------------------------
def _token(job_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{job_id}:{offset}".encode()).decode()


def _offset(job_id: str, token: str | None) -> int:
    if not token:
        return 0
    try:
        found_id, offset = base64.urlsafe_b64decode(token.encode()).decode().rsplit(":", 1)
        value = int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidPaginationToken("Invalid pagination token") from None
    if found_id != job_id or value < 0:
        raise InvalidPaginationToken("Invalid pagination token")
    return value


def page(
    job: Job, max_results: int | None, next_token: str | None, sort_by: str | None = None
) -> GetJobResult:
    """One page of ``job``'s results (Faces or Persons), as GetFaceDetection/GetFaceSearch return it."""
    limit = MAX_RESULTS if max_results is None else max_results
    if not 1 <= limit <= MAX_RESULTS:
        raise InvalidParameter(f"MaxResults must be between 1 and {MAX_RESULTS}")
    key = "Faces" if job.kind == FACE_DETECTION else "Persons"
    items: list[dict[str, Any]] = list((job.results or {}).get(key, []))
    if job.kind == FACE_SEARCH:
        if sort_by == "INDEX":
            items.sort(key=lambda p: (p["Person"]["Index"], p["Timestamp"]))
        else:
            items.sort(key=lambda p: (p["Timestamp"], p["Person"]["Index"]))
    start = _offset(job.job_id, next_token)
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return GetJobResult(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status,
        status_message=job.status_message,
        job_tag=job.job_tag,
        video=job.request.get("video") if "S3Object" in job.request.get("video", {}) else None,
        metadata=job.metadata,
        items=chunk,
        next_token=_token(job.job_id, start + limit) if more else None,
    )


# -- running jobs ---------------------------------------------------------------------------------
def metadata_json(meta: Any) -> dict[str, Any]:
    """Rekognition's VideoMetadata from :class:`regard.video.decode.VideoMetadata`."""
    return {
        "Codec": meta.codec,
        "DurationMillis": int(meta.duration_millis),
        "Format": meta.format,
        "FrameRate": float(meta.frame_rate),
        "FrameHeight": int(meta.frame_height),
        "FrameWidth": int(meta.frame_width),
    }


class VideoJobs:
    """The jobs of one workspace and the worker pool that runs them (one per server process)."""

    def __init__(
        self,
        store: JobStore,
        *,
        settings: Settings,
        engine: Engine,
        guard: Guard,
        service_factory: Callable[[], Service],
        inline: bool = False,
    ) -> None:
        self.store = store
        #: The command line runs its jobs itself (:meth:`run`), in the foreground: none is queued.
        self.inline = inline
        self.settings = settings
        self.engine = engine
        self.guard = guard
        self.service_factory = service_factory
        self.node = node_name(settings.data_dir)
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- files ------------------------------------------------------------------------------
    def video_dir(self) -> Path:
        return datadir.private_dir(self.settings.data_dir / VIDEO_DIR)

    def video_path(self, job_id: str) -> Path:
        return self.settings.data_dir / VIDEO_DIR / job_id

    def _path_of(self, job: Job) -> Path:
        local = job.request.get("video", {}).get("Path")
        return Path(local) if isinstance(local, str) else self.video_path(job.job_id)

    # -- starting ---------------------------------------------------------------------------
    def prepare(
        self,
        request: JobRequest,
        caller: Caller,
        request_id: str,
        purpose: str | None,
        case_reference: str | None,
        fetch: Callable[[Path], None] | None = None,
    ) -> StartJobResult:
        """Fetch (``fetch`` writes the video to the path it is given; a local file is read where
        it is), hash and probe the video and insert the job; start it with the returned result's
        ``after_record`` once the Start's audit record is written. A repeated request with the same
        ClientRequestToken returns the job it started (nothing is fetched again)."""
        from regard.video.decode import probe, sha256_of

        digest = request.digest()
        if request.client_request_token:
            found = self.store.by_token(request.kind, caller.access_key_id, request.client_request_token)
            if found is not None:
                if found.request_hash != digest:
                    raise IdempotentParameterMismatch(
                        "ClientRequestToken was already used for a different request"
                    )
                return self._result(found, new=False)
        job_id = uuid.uuid4().hex
        if fetch is not None:
            path = self.video_dir() / job_id
            try:
                fetch(path)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        else:
            path = Path(request.video["Path"])
            if not path.is_file():
                raise InvalidParameter(f"{path}: no such video file")
        sha = sha256_of(path)
        status, message, meta = IN_PROGRESS, None, None
        try:
            meta = metadata_json(probe(path, self.settings))
        except RegardError as exc:  # a corrupt or unsupported video: the job fails, it is not refused
            status, message = FAILED, exc.message
        job = Job(
            job_id=job_id,
            kind=request.kind,
            status=status,
            status_message=message,
            created_at=now_iso(),
            finished_at=now_iso() if status == FAILED else None,
            node=self.node,
            client_request_token=request.client_request_token,
            request_hash=digest,
            request=request.to_json(),
            collection_id=request.collection_id,
            job_tag=request.job_tag,
            access_key_id=caller.access_key_id,
            principal=caller.principal,
            role=caller.role,
            profile=caller.profile,
            purpose=purpose,
            case_reference=case_reference,
            request_id=request_id,
            video_sha256=sha,
            metadata=meta,
            results=None,
            cancel_requested=False,
        )
        stored = self.store.insert(job)
        if stored.job_id != job_id or status == FAILED:
            if fetch is not None:
                path.unlink(missing_ok=True)
            return self._result(stored, new=stored.job_id == job_id)
        return self._result(stored, new=True)

    def _result(self, job: Job, *, new: bool) -> StartJobResult:
        def after_record(record: dict[str, Any]) -> None:
            self._started(job.job_id, record)

        return StartJobResult(
            job_id=job.job_id,
            kind=job.kind,
            video_sha256=job.video_sha256,
            duration_millis=(job.metadata or {}).get("DurationMillis"),
            status=job.status,
            new=new,
            after_record=after_record if new and job.status == IN_PROGRESS else None,
        )

    def _started(self, job_id: str, record: dict[str, Any]) -> None:
        """The Start's record is written: keep its threshold floor, then queue the job."""
        threshold = record.get("threshold") or {}
        job = self.store.get(job_id)
        request = dict(job.request)
        request["start_audit_seq"] = record.get("seq")
        if "effective" in threshold:
            request["face_match_threshold"] = threshold["effective"]
            request["floor_fmr"] = threshold.get("floor_fmr")
        with self.store.db.transaction() as cur:
            cur.execute(
                "UPDATE video_jobs SET request = ? WHERE job_id = ?",
                (json.dumps(request, sort_keys=True), job_id),
            )
        if not self.inline:
            self.submit(job_id)

    # -- the pool ---------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the video job pool is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, self.settings.video_workers), thread_name_prefix="regard-video"
                )
            return self._pool

    def submit(self, job_id: str) -> None:
        """Run the job in the worker pool. With ``video_workers`` 0 processing is paused: the job
        stays IN_PROGRESS and runs when the server starts again with workers (:meth:`resume`)."""
        if self.settings.video_workers <= 0:
            log.info("video job %s: queued; processing is paused (REGARD_VIDEO_WORKERS=0)", job_id)
            return
        future = self._executor().submit(self._run_logged, job_id)
        with self._lock:
            self._futures[job_id] = future
        future.add_done_callback(lambda f: self._futures.pop(job_id, None))

    def _run_logged(self, job_id: str) -> None:
        try:
            self.run(job_id)
        except Exception:  # run() records every failure in the job; this is a last resort
            log.exception("video job %s failed", job_id)

    def resume(self) -> list[str]:
        """At start-up: the jobs this node left IN_PROGRESS run again from the beginning (or fail
        with a StatusMessage when their video is gone, their start was never recorded, or
        ``video_resume`` is off). Returns the ids re-queued."""
        queued: list[str] = []
        for job in self.store.list(status=IN_PROGRESS, limit=1_000_000):
            if job.node != self.node:
                continue
            if "start_audit_seq" not in job.request:
                self._fail(job, "the job's start was never recorded (the server stopped first)")
            elif not self.settings.video_resume:
                self._fail(job, "the server restarted while the job ran; start it again")
            elif not self._path_of(job).is_file():
                self._fail(job, "the server restarted while the job ran and its video is gone")
            else:
                log.info("video job %s: resumed from the beginning after a restart", job.job_id)
                self.submit(job.job_id)
                queued.append(job.job_id)
        return queued

    def cancel(self, job_id: str, *, actor: str, access_key_id: str | None = None) -> Job:
        """Ask a running job to stop (it ends FAILED, "cancelled"); recorded in the audit chain."""
        from regard.accountability.records import admin_record

        job = self.store.get(job_id)
        outcome = "success"
        if job.status == IN_PROGRESS:
            job = self.store.request_cancel(job_id)
            if job_id not in self._futures and job.node == self.node:
                # not running in this process (a CLI cancel, or a job queued elsewhere): the
                # worker that runs it sees the flag; none runs it here, so end it now
                self._end_cancelled(job)
        else:
            outcome = "error"
        admin_record(
            self.guard.audit,
            "CancelVideoJob",
            principal=actor,
            access_key_id=access_key_id,
            collection=job.collection_id,
            parameters={"JobId": job_id},
            results={"job_status": job.status},
            outcome=outcome,
            error=None
            if outcome == "success"
            else {"code": "ConflictException", "message": f"job is {job.status}"},
        )
        return self.store.get(job_id)

    def _end_cancelled(self, job: Job) -> None:
        """End a cancelled job now unless a worker (here, or another process of this node: a
        server beside the command line) runs it and will see the flag."""
        if job.job_id in self._futures or self._running_elsewhere(job):
            return
        self._fail(job, "cancelled by request")

    @staticmethod
    def _running_elsewhere(job: Job) -> bool:
        return job.runner is not None and job.runner != runner_name() and runner_alive(job.runner)

    def close(self, wait: bool = False) -> None:
        """Stop taking jobs; running ones are asked to stop without being failed (a restart
        resumes them)."""
        with self._lock:
            self._closed = True
            pool = self._pool
            self._pool = None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    # -- one job ------------------------------------------------------------------------------
    def _fail(self, job: Job, message: str) -> None:
        if self.store.finish(job.job_id, FAILED, message):
            self._forget_video(job)
            if job.kind == FACE_SEARCH:
                self._completed_record(job, outcome="error", error={"code": "JobFailed", "message": message})

    def _forget_video(self, job: Job) -> None:
        if "Path" in job.request.get("video", {}):
            return  # the operator's own file
        self.video_path(job.job_id).unlink(missing_ok=True)

    def run(self, job_id: str, progress: Callable[[int, int], None] | None = None) -> Job:
        """Run one job to its end here (the pool's workers, or the command line in the foreground)."""
        from regard.video.analyze import analyze
        from regard.video.decode import VideoCancelled

        job = self.store.get(job_id)
        if job.status != IN_PROGRESS:
            return job
        if job.cancel_requested:
            self._fail(job, "cancelled by request")
            return self.store.get(job_id)
        if not self.store.claim(job_id):  # ended meanwhile, or another live process runs it
            return self.store.get(job_id)

        def cancelled() -> bool:
            with self._lock:
                closing = self._closed
            return closing or self.store.cancel_requested(job_id)

        try:
            analysis = analyze(
                self.engine,
                self._path_of(job),
                fps=job.request.get("fps"),
                settings=self.settings,
                progress=progress,
                cancelled=cancelled,
            )
            if job.kind == FACE_DETECTION:
                results, counts = self._detection_results(job, analysis), None
            else:
                results, counts = self._search_results(job, analysis)
        except VideoCancelled:
            if self.store.cancel_requested(job_id):
                self._fail(job, "cancelled by request")
            else:  # the server is stopping: the job stays IN_PROGRESS and resumes at the next start
                self.store.release(job_id)
            return self.store.get(job_id)
        except RegardError as exc:
            self._fail(job, exc.message)
            return self.store.get(job_id)
        except Exception as exc:
            log.exception("video job %s failed", job_id)
            self._fail(job, f"internal error ({type(exc).__name__})")
            return self.store.get(job_id)
        meta = metadata_json(analysis.metadata)
        if self.store.finish(job_id, SUCCEEDED, None, metadata=meta, results=results):
            self._forget_video(job)
            if counts is not None:
                self._completed_record(job, outcome="success", results=counts)
        return self.store.get(job_id)

    def _detection_results(self, job: Job, analysis: Any) -> dict[str, Any]:
        from regard.service.render import face_detail

        attributes = [job.request.get("face_attributes") or "DEFAULT"]
        return {
            "Faces": [
                {"Timestamp": int(f.timestamp_millis), "Face": face_detail(f.detail, attributes)}
                for f in analysis.faces
            ]
        }

    def _search_results(self, job: Job, analysis: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Persons at each sampled timestamp, each with the collection's faces its track matched;
        leads for review; the completion record's counts."""
        from regard.service.render import bounding_box, face_detail, face_match
        from regard.video.analyze import track_templates

        collection = str(job.collection_id)
        service = self.service_factory()
        threshold = job.request.get("face_match_threshold")
        floor_fmr = job.request.get("floor_fmr")
        version = service.describe_collection(collection).face_model_version
        best: dict[int, dict[str, Any]] = {}  # track -> face id -> best match
        for track_id, templates in track_templates(analysis).items():
            found: dict[str, Any] = {}
            for t in templates:
                for m in service.search_faces_by_vector(
                    collection, t, max_faces=10, face_match_threshold=threshold
                ):
                    if floor_fmr is not None and float(m.fmr) > float(floor_fmr) * (1 + 1e-9):
                        continue
                    if m.face.face_id not in found or m.similarity > found[m.face.face_id].similarity:
                        found[m.face.face_id] = m
            if found:
                best[track_id] = found
        first: dict[int, Any] = {}
        for f in analysis.faces:
            if f.track_id not in first or f.timestamp_millis < first[f.track_id].timestamp_millis:
                first[f.track_id] = f
        # leads, when the requester's profile asks for two-person review
        leads: dict[tuple[int, str], str] = {}
        review = self._reviewed(job)
        if review and best:
            pairs = [
                (track_id, m)
                for track_id, found in sorted(best.items())
                for m in sorted(found.values(), key=lambda m: -m.similarity)
            ]
            candidates = [
                Candidate(
                    m.face.face_id,
                    m.face.user_id,
                    m.face.external_image_id,
                    m.similarity,
                    m.fmr,
                    video_timestamp_millis=int(first[t].timestamp_millis),
                    video_frame_index=int(first[t].frame_index),
                )
                for t, m in pairs
            ]
            ids = self.guard.review.add(
                request_id=job.request_id or job.job_id,
                requester_key=job.access_key_id,
                requester_principal=job.principal,
                collection_id=collection,
                operation="StartFaceSearch",
                candidates=candidates,
                purpose=job.purpose,
                case_reference=job.case_reference,
            )
            leads = {(t, m.face.face_id): lead for (t, m), lead in zip(pairs, ids, strict=True)}
        persons = []
        for f in analysis.faces:
            matches = []
            for m in sorted(best.get(f.track_id, {}).values(), key=lambda m: -m.similarity):
                rendered = face_match(m, version)
                lead = leads.get((f.track_id, m.face.face_id))
                if lead is not None:
                    rendered["RegardLeadId"] = lead
                matches.append(rendered)
            persons.append(
                {
                    "Timestamp": int(f.timestamp_millis),
                    "Person": {
                        "Index": int(f.track_id),
                        "BoundingBox": bounding_box(f.detail.bounding_box),
                        "Face": face_detail(f.detail, ["DEFAULT"]),
                    },
                    "FaceMatches": matches,
                }
            )
        counts = {
            "job_id": job.job_id,
            "frames_sampled": int(analysis.frames_sampled),
            "faces": len(analysis.faces),
            "tracks": len({f.track_id for f in analysis.faces}),
            "matched_tracks": len(best),
            "match_count": sum(len(v) for v in best.values()),
            "matches": [
                {
                    "track": t,
                    "face_id": m.face.face_id,
                    "similarity": m.similarity,
                    "fmr": m.fmr,
                    "timestamp_millis": int(first[t].timestamp_millis),
                    "frame_index": int(first[t].frame_index),
                    **({"lead_id": leads[(t, fid)]} if (t, fid) in leads else {}),
                }
                for t, found in sorted(best.items())
                for fid, m in found.items()
            ],
            "lead_ids": list(leads.values()),
        }
        if leads:
            counts["evidence"] = self._keep_evidence(collection, analysis, leads)
        return {"Persons": persons}, counts

    def _keep_evidence(
        self, collection: str, analysis: Any, leads: dict[tuple[int, str], str]
    ) -> dict[str, Any]:
        """For reviewers (docs/review.md): each lead's probe crop (the track's best face, from the
        video) and the candidate's enrolled crop. A failure is reported in the completion record
        and does not fail the job."""
        store = self.guard.evidence
        if store is None:
            return {"lead_crops": 0}
        crops = {int(t.track_id): bytes(t.best_crop) for t in analysis.tracks}
        kept = 0
        try:
            for (track_id, face_id), lead_id in leads.items():
                probe = crops.get(track_id) or None
                candidate = store.enrolled(collection, face_id)
                store.put_lead(
                    lead_id, collection, probe=probe, candidate_face_id=face_id, candidate=candidate
                )
                kept += (probe is not None) + (candidate is not None)
        except Exception as exc:
            return {"lead_crops": kept, "error": f"{type(exc).__name__}: {exc}"}
        return {"lead_crops": kept}

    def _reviewed(self, job: Job) -> bool:
        """Whether the requester's profile puts matches to two-person review."""
        try:
            return bool(self.guard.profile_of(job.caller).two_person_review)
        except RegardError:  # the profile is gone from policy.toml: review, to be safe
            return True

    def _completed_record(
        self,
        job: Job,
        *,
        outcome: str,
        results: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> None:
        """The search job's end in the audit chain (kind ``system``, FaceSearchCompleted)."""
        record: dict[str, Any] = {
            "kind": "system",
            "request_id": job.request_id,
            "access_key_id": job.access_key_id,
            "principal": job.principal,
            "role": job.role,
            "profile": job.profile,
            "operation": COMPLETED_OPERATION,
            "collection": job.collection_id,
            "purpose": job.purpose,
            "case_reference": job.case_reference,
            "parameters": {
                "JobId": job.job_id,
                "start_audit_seq": job.request.get("start_audit_seq"),
                "Video": {
                    "sha256": job.video_sha256,
                    "duration_millis": (job.metadata or {}).get("DurationMillis"),
                },
            },
            "results": results or {"job_id": job.job_id},
            "outcome": outcome,
        }
        if error:
            record["error"] = error
        self.guard.audit.append(record)
