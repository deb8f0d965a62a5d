"""Batch enrolment: ``regard index`` over many images, in local threads or on a Ray cluster.

The images come as a list of :class:`Item` (a path and the ExternalImageId to index it under):
from files and folders named on the command line (:func:`items_from_paths`; a folder is walked,
hidden files left out) or from a manifest (:func:`items_from_manifest`: CSV with a ``path`` column,
or JSON lines with a ``path`` member, and optionally ``external_image_id``; relative paths are
relative to the manifest's folder, so ``../shared/datasets/*/manifest.csv`` works as it is).

Design, as settled for issue #16 (item 4):

Skip rule (resumable)
    IndexFaces records the sha256 of the encoded image on each face it stores
    (:attr:`regard.store.base.NewFace.image_sha256`, migration 7, with an index on
    ``(collection, external_image_id, image_sha256)``). An image whose ExternalImageId and sha256
    already have a face in the collection is *skipped*: reported as such, not processed, no audit
    record (nothing was asked of the service). The ExternalImageIds of each batch are looked up in
    one query before the batch is dispatched (:meth:`regard.service.Service.indexed_images`), and
    the worker compares the file's hash before decoding, so a resumed run costs one read and one
    hash per image already done. Within one run a key is claimed before it is indexed, so two
    copies of one image under one id are indexed once. An image in which no face was indexed has
    no record of its hash and is processed again on a rerun. The rule is not a database
    constraint: two runs over the same images *at the same time* may both index an image.
    IndexFaces' own API behaviour is unchanged (it records the hash and indexes as before).

Accountability on Ray: the driver stores
    Ray workers (actors, one per CPU given, each with ``num_cpus=1``) each build one
    :class:`regard.face.engine.Engine` with the driver's engine settings (secrets left out, one
    inference thread) and keep it, so models load once per worker. The driver feeds them batches
    of paths (one batch in flight per worker: the next is sent before the driver stores the last
    one's images); a worker reads each file, hashes it, decodes,
    detects, analyses and embeds it (:func:`regard.service.faces.detect_image`, the same call
    IndexFaces makes) and returns the image's bytes with what it found. The driver then stores
    each image through one guarded IndexFaces call (:meth:`regard.service.Service.index_detected`
    run by the same :class:`regard.accountability.guard.Guard` as the local path), whose parameters
    carry the image bytes, so its audit record is the local path's record: same operation, caller,
    provenance, image sha256 and size, collection state before and after, results. A worker's
    decode or detection error is replayed under the guard too, so it is recorded as the local
    path records it. The alternative, workers opening the store and guard themselves, would put
    one audit writer and one database connection on every worker and make every worker need the
    master key and the data directory; with the driver as the only writer, the workers need only
    the images and the models, and the single guarded write path stays the one the API uses.
    The cost is that image bytes travel back to the driver (the object store on one machine; on a
    cluster about 100 kB per photo, little beside the detection time), and storing is serial on
    the driver: measured at 0.11-0.14 s per image (guarded IndexFaces on PostgreSQL, loaded 2-core
    machine) while the scoring parameters' hash was recomputed four times per call; it is now
    computed once (``ScoreNormalizer.sha256``, ~22 ms a time), which removed most of that.
    The templates are IndexFaces' own: each image's faces are embedded in one batch, as
    IndexFaces does; batching chips across images was left out so a template never depends on
    which images shared its batch.

Per-file errors
    A file that cannot be read, is larger than the engine's ``max_image_bytes`` (not read at all),
    cannot be decoded or fails in the engine is reported on its own (status ``error`` with the
    Rekognition error code) and the batch goes on. Decoding and engine errors have an audit
    record (as IndexFaces on the API); unreadable and oversized files never reach the service.
    A Ray worker that dies (a crash in native code, out of memory) is replaced by a new actor; the images
    of its batch are retried one by one, and one that kills a worker again is reported as failed.

Local path
    Without Ray, ``--jobs`` threads run the guarded IndexFaces itself (:func:`enrol_local`),
    in the given order, with the same skip rule, reports and errors.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from regard.accountability.request import Params, Provenance
from regard.api.rekognition import operations
from regard.api.rekognition.operations import ApiOperation, Context
from regard.config import Settings
from regard.errors import ImageTooLarge, InvalidParameter, RegardError
from regard.service import EXTERNAL_IMAGE_ID_RE, IndexFacesResult, Service, render
from regard.service.faces import DetectedImage, detect_image

R = TypeVar("R")

#: Images whose ExternalImageIds are looked up in one query (local path), and per Ray task.
LOOKUP_CHUNK = 256
DEFAULT_BATCH_SIZE = 8
#: Code of a per-file error for a file that cannot be read.
UNREADABLE = "UnreadableFileException"

INDEXED, NO_FACE, SKIPPED, ERROR = "indexed", "no_face", "skipped", "error"


# -- what to index -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Item:
    """One image to index: where it is and the ExternalImageId its faces get."""

    path: str
    external_image_id: str


def external_id_for(relative: str) -> str:
    """The default ExternalImageId of a file: its path (relative to the folder or manifest named),
    folders joined by ``:`` (a leading ``/`` dropped), other characters Rekognition does not allow
    replaced by ``_``."""
    joined = relative.replace(os.sep, "/").lstrip("/").replace("/", ":")
    return re.sub(r"[^a-zA-Z0-9_.\-:]", "_", joined)[:255]


def items_from_paths(paths: Iterable[Path], external_id: str | None = None) -> list[Item]:
    """Files as given (ExternalImageId: the file name), folders walked in name order (the path
    under the folder); ``external_id`` instead for every image when given. Hidden entries are
    left out of walked folders."""
    found: list[Item] = []
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    full = Path(root) / name
                    ext = external_id or external_id_for(full.relative_to(p).as_posix())
                    found.append(Item(str(full), ext))
        else:
            found.append(Item(str(p), external_id or external_id_for(p.name)))
    return found


def items_from_manifest(manifest: Path, external_id: str | None = None) -> list[Item]:
    """The images a manifest lists: CSV with a header (``path``, optional ``external_image_id`` or
    ``ExternalImageId``) or, for ``.jsonl``/``.ndjson``/``.json``, one JSON object per line with the
    same members. Relative paths are relative to the manifest's folder; the default ExternalImageId
    is the path as written."""
    base = manifest.parent
    rows: list[dict[str, Any]] = []
    if manifest.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with manifest.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise InvalidParameter(f"{manifest}:{n}: each line must be a JSON object")
                    rows.append(row)
    else:
        with manifest.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    found: list[Item] = []
    for n, row in enumerate(rows, 1):
        rel = row.get("path") or row.get("Path")
        if not rel:
            raise InvalidParameter(f"{manifest}: entry {n} has no path")
        given = row.get("external_image_id") or row.get("ExternalImageId")
        ext = external_id or (str(given) if given else external_id_for(str(rel)))
        found.append(Item(str(base / str(rel)), ext))
    return found


# -- what happened to each image ----------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    """What happened to one image: indexed (at least one face stored), no face indexed, skipped
    (already indexed), or a per-file error."""

    item: Item
    status: str
    sha256: str | None = None
    result: IndexFacesResult | None = None
    error: tuple[str, str] | None = None  # (Rekognition error code, message)
    exception: RegardError | None = None  # the error itself, when this process raised it

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Image": self.item.path,
            "ExternalImageId": self.item.external_image_id,
            "Status": self.status,
        }
        if self.error is not None:
            out["Error"], out["Message"] = self.error
        if self.status == SKIPPED:
            out["Reason"] = "ALREADY_INDEXED"
        if self.result is not None:
            out["FaceRecords"] = [
                render.face(r.face, self.result.face_model_version) for r in self.result.face_records
            ]
            out["UnindexedFaces"] = [{"Reasons": u.reasons} for u in self.result.unindexed_faces]
        return out


@dataclass(slots=True)
class Summary:
    """Counts of a run (images by outcome, faces stored) and its rate."""

    images: int = 0
    indexed: int = 0
    no_face: int = 0
    skipped: int = 0
    errors: int = 0
    faces: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, out: Outcome) -> None:
        self.images += 1
        if out.status == INDEXED:
            self.indexed += 1
        elif out.status == NO_FACE:
            self.no_face += 1
        elif out.status == SKIPPED:
            self.skipped += 1
        else:
            self.errors += 1
        if out.result is not None:
            self.faces += len(out.result.face_records)

    def as_json(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        return {
            "Images": self.images,
            "Indexed": self.indexed,
            "NoFace": self.no_face,
            "Skipped": self.skipped,
            "Errors": self.errors,
            "Faces": self.faces,
            "Seconds": round(seconds, 3),
            "ImagesPerSecond": round(self.images / seconds, 3) if seconds > 0 else None,
        }


def outcome_of(item: Item, sha256: str, result: IndexFacesResult) -> Outcome:
    return Outcome(item, INDEXED if result.face_records else NO_FACE, sha256, result)


# -- the guarded store, shared by both paths ----------------------------------------------------
class Runner(Protocol):
    """Operations run as the API runs them, under the guard (the shell's ``Local``)."""

    @property
    def service(self) -> Service: ...

    def run(self, op: ApiOperation[R], params: Params, provenance: Provenance | None = None) -> R: ...


@dataclass(frozen=True, slots=True)
class Options:
    """IndexFaces' parameters for every image of a run."""

    collection_id: str
    max_faces: int | None = None
    quality_filter: str = "AUTO"
    provenance: Provenance = field(default_factory=Provenance)

    def params(self, item: Item, data: bytes) -> Params:
        """IndexFaces' request in Rekognition's names (absent options left out)."""
        params: Params = {
            "CollectionId": self.collection_id,
            "Image": {"Bytes": data},
            "ExternalImageId": item.external_image_id,
            "QualityFilter": self.quality_filter,
        }
        if self.max_faces is not None:
            params["MaxFaces"] = self.max_faces
        return params


class _Claims:
    """The (ExternalImageId, sha256) keys indexed or being indexed in this run, and those the
    store already holds: a key is claimed once, later copies are skipped."""

    def __init__(self, service: Service, collection_id: str) -> None:
        self.service = service
        self.collection_id = collection_id
        self._claimed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def known(self, items: Sequence[Item]) -> dict[str, set[str]]:
        """ExternalImageId -> hashes already indexed under it (one query per chunk of ids)."""
        ids = [i.external_image_id for i in items if EXTERNAL_IMAGE_ID_RE.match(i.external_image_id)]
        return self.service.indexed_images(self.collection_id, ids) if ids else {}

    def claim(self, external_image_id: str, sha256: str) -> bool:
        with self._lock:
            key = (external_image_id, sha256)
            if key in self._claimed:
                return False
            self._claimed.add(key)
            return True

    def release(self, external_image_id: str, sha256: str) -> None:
        """Give a key back after a failure, so a later copy of the image is tried."""
        with self._lock:
            self._claimed.discard((external_image_id, sha256))


def _too_large(path: str, limit: int) -> tuple[str, str] | None:
    """The per-file error of a file over ``limit`` bytes (not read), or an unreadable one."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return (UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}")
    if size > limit:
        return (ImageTooLarge.code, f"the image is {size} bytes; at most {limit} are accepted")
    return None


def _read(path: str, limit: int) -> bytes | tuple[str, str]:
    refused = _too_large(path, limit)
    if refused is not None:
        return refused
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        return (UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}")


def _bad_id(item: Item) -> tuple[str, str] | None:
    if EXTERNAL_IMAGE_ID_RE.match(item.external_image_id):
        return None
    return (InvalidParameter.code, f"ExternalImageId {item.external_image_id!r} does not match the pattern")


# -- local path -----------------------------------------------------------------------------------
def enrol_local(
    runner: Runner, items: Sequence[Item], options: Options, jobs: int
) -> Generator[Outcome, None, None]:
    """Each image through the guarded IndexFaces on ``jobs`` threads; outcomes in the given order.

    Closing the generator (an interrupt) cancels the images not started and waits for those
    running (each stores atomically).
    """
    claims = _Claims(runner.service, options.collection_id)
    limit = runner.service.engine.settings.max_image_bytes

    def one(item: Item, known: set[str]) -> Outcome:
        bad = _bad_id(item)
        read = _read(item.path, limit) if bad is None else bad
        if isinstance(read, tuple):
            return Outcome(item, ERROR, error=read)
        digest = hashlib.sha256(read).hexdigest()
        if digest in known or not claims.claim(item.external_image_id, digest):
            return Outcome(item, SKIPPED, digest)
        try:
            result = runner.run(operations.index_faces, options.params(item, read), options.provenance)
        except Exception as exc:  # recorded by the guard; one bad file never stops the batch
            claims.release(item.external_image_id, digest)
            return _failed(item, digest, exc)
        return outcome_of(item, digest, result)

    window = max(2, 2 * jobs)
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="regard-index")
    pending: deque[Future[Outcome]] = deque()
    try:
        for start in range(0, len(items), LOOKUP_CHUNK):
            chunk = items[start : start + LOOKUP_CHUNK]
            known = claims.known(chunk)
            for item in chunk:
                pending.append(pool.submit(one, item, known.get(item.external_image_id, set())))
                while len(pending) >= window:
                    yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


# -- Ray path ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scan:
    """A worker's answer for one image: its bytes and hash, what the engine found or the error,
    or that it was skipped (already indexed: hash among those the driver sent)."""

    item: Item
    sha256: str | None = None
    data: bytes | None = None
    detected: DetectedImage | None = None
    skipped: bool = False
    error: tuple[str, str] | None = None


class EnrolWorker:
    """A Ray actor: one engine, built once, run over batches of images."""

    def __init__(self, settings: Settings) -> None:
        from regard.face.engine import Engine

        self.engine = Engine(settings)

    def scan(self, batch: list[tuple[Item, frozenset[str]]]) -> list[Scan]:
        return [scan_image(self.engine, item, known) for item, known in batch]


def scan_image(engine: Any, item: Item, known: frozenset[str] | set[str]) -> Scan:
    """Read, hash and (unless ``known`` has the hash) run IndexFaces' engine work on one image."""
    read = _read(item.path, engine.settings.max_image_bytes)
    if isinstance(read, tuple):
        return Scan(item, error=read)
    digest = hashlib.sha256(read).hexdigest()
    if digest in known:
        return Scan(item, digest, skipped=True)
    try:
        return Scan(item, digest, read, detected=detect_image(engine, read))
    except RegardError as exc:
        return Scan(item, digest, read, error=(exc.code, exc.message))
    except Exception as exc:  # replayed under the guard as an internal error; the batch goes on
        return Scan(item, digest, read, error=("InternalServerError", type(exc).__name__))


class WorkerError(RegardError):
    """An error a worker met on one image, raised again under the guard so it is recorded."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _index_scanned(scan: Scan) -> ApiOperation[IndexFacesResult]:
    """IndexFaces whose engine work a worker has done: the store half, run under the guard."""

    def perform(ctx: Context, params: Params) -> IndexFacesResult:
        if scan.error is not None or scan.detected is None:
            code, message = scan.error or ("InternalServerError", "no engine result")
            raise WorkerError(code, message)
        return ctx.service.index_detected(
            params["CollectionId"],
            scan.detected,
            external_image_id=params.get("ExternalImageId"),
            max_faces=params.get("MaxFaces"),
            quality_filter=params.get("QualityFilter", "AUTO"),
            source_note=ctx.provenance.source_note,
            legal_basis=ctx.provenance.legal_basis,
        )

    return ApiOperation(operations.index_faces.name, perform, operations.index_faces.render)


def worker_settings(settings: Settings, threads: int = 1) -> Settings:
    """The engine settings a worker gets: the driver's, without secrets, ``threads`` for inference."""
    return replace(
        settings,
        threads=threads,
        database_url="",
        master_key="",
        s3_access_key_id="",
        s3_secret_access_key="",
    )


def _ray() -> Any:
    """The ``ray`` module (the optional extra ``regard[ray]``), typed loosely: its own hints are partial."""
    return importlib.import_module("ray")


def enrol_ray(
    runner: Runner,
    items: Sequence[Item],
    options: Options,
    *,
    address: str = "local",
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_start: Callable[[int], None] | None = None,
) -> Generator[Outcome, None, None]:
    """Each image's engine work on Ray workers, stored by this process under the guard; outcomes
    in the order workers finish. ``address`` "local" starts a Ray instance on this machine (with
    ``workers`` CPUs) unless this process already has one; any other value is passed to
    ``ray.init(address=...)``. ``on_start`` is told how many workers run.

    Closing the generator (an interrupt) stops the workers; work not yet stored is lost and done
    again on the next run.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    pool = _Workers(ray, worker_settings(runner.service.engine.settings))
    try:
        available = max(1, int(ray.available_resources().get("CPU", 1)))
        # never more workers than free CPUs: a worker waiting for a CPU would hold its batches
        pool.start(min(workers or available, available))
        if on_start is not None:
            on_start(len(pool.actors))
        yield from _drive(runner, items, options, pool, batch_size)
    finally:
        pool.stop()
        if started:
            ray.shutdown()


class _Workers:
    """The run's Ray actors. One that dies is replaced by a new one (its engine is built again);
    the batch it held is then retried image by image, so only an image that kills a worker twice
    is lost."""

    def __init__(self, ray: Any, settings: Settings) -> None:
        self.ray = ray
        self.settings = settings
        self.remote = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EnrolWorker)
        self.actors: list[Any] = []

    def start(self, count: int) -> None:
        self.actors = [self.remote.remote(self.settings) for _ in range(count)]

    def replace(self, actor: Any) -> Any:
        """A new worker in place of ``actor``, which died. Calls on a new actor wait until its
        engine is built; a restarted one (Ray's ``max_restarts``) instead refuses calls while it
        restarts, so the image retried after a crash could be reported lost though it never ran
        (seen on a loaded machine)."""
        with contextlib.suppress(Exception):
            self.ray.kill(actor, no_restart=True)
        fresh = self.remote.remote(self.settings)
        self.actors = [fresh if a is actor else a for a in self.actors]
        return fresh

    def stop(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(a)
        self.actors = []


def _drive(
    runner: Runner, items: Sequence[Item], options: Options, pool: _Workers, batch_size: int
) -> Generator[Outcome, None, None]:
    """One batch in flight per worker (the round trip is small beside a batch's engine work, and a
    worker that dies takes only its own batch with it)."""
    ray = pool.ray
    claims = _Claims(runner.service, options.collection_id)
    batches = (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    retry: deque[Item] = deque()  # images of a batch whose worker died, to run one by one
    in_flight: dict[Any, tuple[Any, list[Item], bool]] = {}  # ref -> (worker, images, a retry)
    early: list[Outcome] = []  # images refused before any work (a malformed ExternalImageId)

    def submit(actor: Any, valid: list[Item], retried: bool) -> None:
        known = claims.known(valid)
        work = [(i, frozenset(known.get(i.external_image_id, ()))) for i in valid]
        in_flight[actor.scan.remote(work)] = (actor, valid, retried)

    def feed(actor: Any) -> None:
        if retry:
            submit(actor, [retry.popleft()], True)
            return
        for batch in batches:
            valid: list[Item] = []
            for item in batch:
                bad = _bad_id(item)
                if bad is not None:
                    early.append(Outcome(item, ERROR, error=bad))
                else:
                    valid.append(item)
            if valid:
                submit(actor, valid, False)
                return

    for actor in pool.actors:
        feed(actor)
    while in_flight or early:
        while early:
            yield early.pop(0)
        if not in_flight:
            break
        done, _ = ray.wait(list(in_flight), num_returns=1)
        actor, batch, retried = in_flight.pop(done[0])
        try:
            scans: list[Scan] = ray.get(done[0])
        except Exception as exc:  # the worker died (a crash in native code, out of memory...)
            if retried:
                lost = f"the worker failed on this image twice: {type(exc).__name__}"
                early.extend(Outcome(item, ERROR, error=("InternalServerError", lost)) for item in batch)
            else:
                retry.extend(batch)
            feed(pool.replace(actor))
            continue
        feed(actor)
        for scan in scans:
            yield _store(runner, options, claims, scan)


def _store(runner: Runner, options: Options, claims: _Claims, scan: Scan) -> Outcome:
    item = scan.item
    if scan.skipped:
        return Outcome(item, SKIPPED, scan.sha256)
    if scan.data is None or scan.sha256 is None:  # unreadable or too large: never reached the service
        return Outcome(item, ERROR, error=scan.error)
    if scan.error is None and not claims.claim(item.external_image_id, scan.sha256):
        return Outcome(item, SKIPPED, scan.sha256)
    try:
        result = runner.run(_index_scanned(scan), options.params(item, scan.data), options.provenance)
    except Exception as exc:  # recorded by the guard; one bad file never stops the batch
        claims.release(item.external_image_id, scan.sha256)
        return _failed(item, scan.sha256, exc)
    return outcome_of(item, scan.sha256, result)


def _failed(item: Item, sha256: str, exc: Exception) -> Outcome:
    if isinstance(exc, RegardError):
        return Outcome(item, ERROR, sha256, error=(exc.code, exc.message), exception=exc)
    return Outcome(item, ERROR, sha256, error=("InternalServerError", type(exc).__name__))
