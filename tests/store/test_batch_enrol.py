"""Batch enrolment (``regard index`` over folders and manifests, locally and on Ray): the skip rule
that makes a run resumable, per-file errors, audit records, and an interrupted run resumed.

Ray runs on a local instance of two CPUs (``ray.init(num_cpus=2)``) started once for the module;
``regard index --ray local`` uses it. The store is the test PostgreSQL (a fresh database per test).
The interruption is deterministic: the hidden ``--stop-after N`` interrupts the run as an
operator's ^C would, after N images have been reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from regard.accountability.request import Provenance
from regard.api.rekognition.operations import Context
from regard.cli.main import main
from regard.enrol import (
    EnrolWorker,
    Item,
    Options,
    Scan,
    _drive,
    _Workers,
    external_id_for,
    items_from_manifest,
    items_from_paths,
    scan_image,
    worker_settings,
)
from regard.errors import ImageTooLarge
from regard.service import Service

PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
#: celeba_dev photos the dataset test indexes (in manifest order): a few hundred, not thousands.
DATASET_IMAGES = 240
#: Images reported before the dataset run is interrupted.
INTERRUPT_AFTER = 90


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray instance with two CPUs for the module's tests."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def shared(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """``--data-dir`` arguments for a workspace whose store is the test PostgreSQL (the URL comes
    from REGARD_DATABASE_URL, which every command reads)."""
    monkeypatch.setenv("REGARD_DATABASE_URL", pg_url)
    return ("--data-dir", str(tmp_path / "data"))


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> tuple[list[dict[str, Any]], str]:
    """``regard *argv`` with ``--jsonl``: the per-image lines and the summary (last line)."""
    rc = main([*argv, "--jsonl"])
    out = capsys.readouterr()
    assert rc == code, out.err
    lines = [json.loads(line) for line in out.out.splitlines() if line.strip()]
    assert "Summary" in lines[-1], out.out
    return lines, out.err


def summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = lines[-1]["Summary"]
    return found


def faces_per_image(pg_url: str) -> dict[str, int]:
    """ExternalImageId -> faces stored under it (every collection of the database)."""
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT external_image_id, count(*) FROM faces GROUP BY external_image_id")
        return {str(r[0]): int(r[1]) for r in rows}


def audit_records(data: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["audit", "export", *data]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def index_records(records: list[dict[str, Any]], collection: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r.get("operation") == "IndexFaces" and r.get("collection") == collection and r["kind"] != "intent"
    ]


# -- always run: the packaged portraits --------------------------------------------------------------
@pytest.mark.postgres
def test_ray_indexes_portraits_once_and_skips_them_on_a_second_run(
    local_ray: Any,
    fr_images: Path,
    shared: tuple[str, ...],
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "portraits"
    folder.mkdir()
    for name in PORTRAITS:
        shutil.copy(fr_images / name, folder / name)
    assert main(["collections", "create", "people", *shared]) == 0
    assert main(["collections", "create", "locally", *shared]) == 0
    capsys.readouterr()

    first, err = run(capsys, "index", "people", str(folder), "--ray", "local", *shared)
    assert sorted(r["ExternalImageId"] for r in first[:-1]) == sorted(PORTRAITS)
    assert {r["Status"] for r in first[:-1]} == {"indexed"}
    assert all(len(r["FaceRecords"]) == 1 for r in first[:-1])
    assert summary(first)["Indexed"] == 4 and summary(first)["Faces"] == 4
    assert "4 indexed" in err
    assert faces_per_image(pg_url) == dict.fromkeys(PORTRAITS, 1)

    again, err = run(capsys, "index", "people", str(folder), "--ray", "local", *shared)
    assert [r["Status"] for r in again[:-1]] == ["skipped"] * 4
    assert all(r["Reason"] == "ALREADY_INDEXED" for r in again[:-1])
    assert summary(again)["Skipped"] == 4 and summary(again)["Faces"] == 0
    assert faces_per_image(pg_url) == dict.fromkeys(PORTRAITS, 1)

    # Accountability: each image stored on Ray has the audit record the local path gives it.
    run(capsys, "index", "locally", str(folder / "obama.jpg"), *shared)
    records = audit_records(shared, capsys)
    on_ray = {r["parameters"]["ExternalImageId"]: r for r in index_records(records, "people")}
    assert sorted(on_ray) == sorted(PORTRAITS)  # the skipped second run asked nothing of the service
    local = index_records(records, "locally")[0]
    ray_obama = on_ray["obama.jpg"]
    assert set(ray_obama) == set(local)
    assert ray_obama["parameters"] == local["parameters"]  # same image, same options
    assert (
        ray_obama["parameters"]["Image"]["sha256"]
        == hashlib.sha256((fr_images / "obama.jpg").read_bytes()).hexdigest()
    )
    assert ray_obama["principal"] == local["principal"] and ray_obama["outcome"] == "success"
    face_ids = {r["ExternalImageId"]: r["FaceRecords"][0]["FaceId"] for r in first[:-1]}
    for name, record in on_ray.items():
        assert record["results"]["indexed_face_ids"] == [face_ids[name]]
        assert record["intent_seq"] < record["seq"]


@pytest.mark.postgres
def test_ray_reports_a_corrupt_file_and_indexes_the_others(
    local_ray: Any,
    fr_images: Path,
    shared: tuple[str, ...],
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(fr_images / "obama.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not an image at all")
    shutil.copy(fr_images / "biden.jpg", folder / "c.jpg")
    assert main(["collections", "create", "people", *shared]) == 0
    capsys.readouterr()

    lines, err = run(capsys, "index", "people", str(folder), "--ray", "local", *shared, code=1)
    by_id = {r["ExternalImageId"]: r for r in lines[:-1]}
    assert by_id["b.jpg"]["Status"] == "error"
    assert by_id["b.jpg"]["Error"] == "InvalidImageFormatException"
    assert by_id["a.jpg"]["Status"] == by_id["c.jpg"]["Status"] == "indexed"
    assert "1 of 3 images failed" in err
    assert faces_per_image(pg_url) == {"a.jpg": 1, "c.jpg": 1}
    # The worker's error is recorded under the guard as IndexFaces on the API records it.
    (failed,) = [r for r in index_records(audit_records(shared, capsys), "people") if r["outcome"] == "error"]
    assert failed["error"]["code"] == "InvalidImageFormatException"
    assert failed["parameters"]["Image"]["sha256"] == hashlib.sha256(b"not an image at all").hexdigest()


# -- the dataset: a few hundred portraits, interrupted and resumed ------------------------------
@pytest.mark.dataset
@pytest.mark.slow
@pytest.mark.postgres
def test_ray_enrolment_of_a_dataset_interrupted_and_resumed_ends_with_one_face_per_image(
    local_ray: Any,
    datasets: Path,
    shared: tuple[str, ...],
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = datasets / "recognition" / "celeba_dev"
    with (folder / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:DATASET_IMAGES]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:  # absolute paths, explicit ExternalImageIds
        w = csv.writer(fh)
        w.writerow(["path", "external_image_id"])
        for r in rows:
            w.writerow([str(folder / r["path"]), Path(r["path"]).stem])
    names = {Path(r["path"]).stem for r in rows}
    assert len(names) == DATASET_IMAGES
    assert main(["collections", "create", "celebs", *shared]) == 0
    capsys.readouterr()
    # One face per photo (the largest), whatever its quality: each photo is one enrolment.
    argv = ("index", "celebs", "--manifest", str(manifest), "--ray", "local", "--max-faces", "1")
    argv += ("--quality-filter", "NONE", *shared)

    first, err = run(capsys, *argv, "--stop-after", str(INTERRUPT_AFTER), code=130)
    assert len(first) - 1 == INTERRUPT_AFTER and summary(first)["Interrupted"] is True
    assert "interrupted" in err
    indexed_first = {r["ExternalImageId"] for r in first[:-1] if r["Status"] == "indexed"}
    # Exactly the images reported were stored: in-flight work was dropped, not half-stored.
    assert faces_per_image(pg_url) == dict.fromkeys(indexed_first, 1)
    assert len(indexed_first) > INTERRUPT_AFTER // 2

    resumed, _ = run(capsys, *argv)
    assert len(resumed) - 1 == DATASET_IMAGES and summary(resumed)["Interrupted"] is False
    skipped = {r["ExternalImageId"] for r in resumed[:-1] if r["Status"] == "skipped"}
    assert skipped == indexed_first
    indexed_then = {r["ExternalImageId"] for r in resumed[:-1] if r["Status"] == "indexed"}
    no_face = {r["ExternalImageId"] for r in resumed[:-1] if r["Status"] == "no_face"}
    assert not indexed_then & indexed_first
    assert indexed_first | indexed_then | no_face == names
    assert summary(resumed)["Errors"] == 0
    assert len(no_face) <= DATASET_IMAGES // 20  # MTCNN + fallback miss ~1% of celeba_dev

    stored = faces_per_image(pg_url)
    assert stored == dict.fromkeys(indexed_first | indexed_then, 1)  # exactly one face per image
    assert main(["collections", "describe", "celebs", *shared, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["FaceCount"] == len(stored)


# -- the local path: the same skip rule ---------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_local_jobs_path_applies_the_same_skip_rule(
    backend: str,
    fr_images: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data: tuple[str, ...] = ("--data-dir", str(tmp_path / "data"))
    if backend == "postgres":
        data = request.getfixturevalue("shared")
    folder = tmp_path / "portraits"
    folder.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(fr_images / name, folder / name)
    assert main(["collections", "create", "people", *data]) == 0
    capsys.readouterr()

    first, _ = run(capsys, "index", "people", str(folder), "--jobs", "2", *data)
    assert [r["Status"] for r in first[:-1]] == ["indexed", "indexed"]  # the given (name) order
    again, _ = run(capsys, "index", "people", str(folder), "--jobs", "2", *data)
    assert [r["Status"] for r in again[:-1]] == ["skipped", "skipped"]

    # Another image under an indexed ExternalImageId is indexed; two copies of one image under
    # one id in one run are indexed once.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(fr_images / "obama2.jpg", other / "obama.jpg")
    shutil.copy(fr_images / "obama3.jpg", other / "x.jpg")
    shutil.copy(fr_images / "obama3.jpg", other / "y.jpg")
    mixed, _ = run(capsys, "index", "people", str(other), "--external-id", "obama.jpg", *data)
    assert sorted(r["Status"] for r in mixed[:-1]) == ["indexed", "indexed", "skipped"]

    listed = main(["collections", "describe", "people", *data, "--json"])
    assert listed == 0 and json.loads(capsys.readouterr().out)["FaceCount"] == 4
    # The service tells which images (by hash) each ExternalImageId already has.
    from regard.service import Service

    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    svc = Service.open(tmp_path / "data", database_url=url)
    try:
        known = svc.indexed_images("people", ["obama.jpg", "biden.jpg", "nobody"])
    finally:
        svc.close()
    digest = {n: hashlib.sha256((fr_images / n).read_bytes()).hexdigest() for n in PORTRAITS}
    assert known == {
        "obama.jpg": {digest["obama.jpg"], digest["obama2.jpg"], digest["obama3.jpg"]},
        "biden.jpg": {digest["biden.jpg"]},
    }


# -- inputs ---------------------------------------------------------------------------------------
def test_folders_files_and_manifests_name_their_images(tmp_path: Path) -> None:
    (tmp_path / "set" / "sub").mkdir(parents=True)
    for rel in ("b.jpg", "a b.png", "sub/c.jpg", ".hidden.jpg"):
        (tmp_path / "set" / rel).write_bytes(b"x")
    found = items_from_paths([tmp_path / "set", tmp_path / "set" / "b.jpg"])
    assert [i.external_image_id for i in found] == ["a_b.png", "b.jpg", "sub:c.jpg", "b.jpg"]
    assert found[2].path == str(tmp_path / "set" / "sub" / "c.jpg")
    assert {i.external_image_id for i in items_from_paths([tmp_path / "set"], "one")} == {"one"}
    assert external_id_for("images/Celeb 1.jpg") == "images:Celeb_1.jpg"

    (tmp_path / "m.csv").write_text("path,external_image_id\nset/b.jpg,bee\nset/sub/c.jpg,\n")
    assert items_from_manifest(tmp_path / "m.csv") == [
        Item(str(tmp_path / "set" / "b.jpg"), "bee"),
        Item(str(tmp_path / "set" / "sub" / "c.jpg"), "set:sub:c.jpg"),
    ]
    lines = [{"path": "set/b.jpg", "ExternalImageId": "bee"}, {"path": "/abs/x.jpg"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert items_from_manifest(tmp_path / "m.jsonl") == [
        Item(str(tmp_path / "set" / "b.jpg"), "bee"),
        Item("/abs/x.jpg", "abs:x.jpg"),
    ]


class CrashingWorker(EnrolWorker):
    """A worker that dies, as a crash in native code would, on an image whose name says so."""

    def scan(self, batch: list[tuple[Item, frozenset[str]]]) -> list[Scan]:
        if any("crash" in Path(item.path).name for item, _ in batch):
            os._exit(1)
        return super().scan(batch)


@dataclass
class Unguarded:
    """A runner that performs operations on the service directly (the driver's logic alone)."""

    service: Service

    def run(self, op: Any, params: dict[str, Any], provenance: Provenance | None = None) -> Any:
        ctx = Context(
            engine=self.service.engine,
            s3=None,  # type: ignore[arg-type]
            service_factory=lambda: self.service,
            provenance=provenance or Provenance(),
        )
        return op.perform(ctx, params)


def test_a_worker_that_dies_loses_only_the_image_that_kills_it(
    local_ray: Any, fr_images: Path, tmp_path: Path
) -> None:
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this class
    folder = tmp_path / "set"
    folder.mkdir()
    shutil.copy(fr_images / "obama.jpg", folder / "a.jpg")
    shutil.copy(fr_images / "biden.jpg", folder / "b-crash.jpg")
    shutil.copy(fr_images / "obama2.jpg", folder / "c.jpg")
    service = Service.open(tmp_path / "data")
    try:
        service.create_collection("people")
        pool = _Workers(local_ray, worker_settings(service.engine.settings))
        pool.remote = local_ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(CrashingWorker)
        pool.start(1)
        try:  # one batch of three: the worker dies on it, then each image is retried alone
            outs = list(_drive(Unguarded(service), items_from_paths([folder]), Options("people"), pool, 3))
        finally:
            pool.stop()
        status = {o.item.external_image_id: o.status for o in outs}
        assert status == {"a.jpg": "indexed", "b-crash.jpg": "error", "c.jpg": "indexed"}
        (crashed,) = [o for o in outs if o.status == "error"]
        assert crashed.error is not None and "twice" in crashed.error[1]
        assert service.describe_collection("people").face_count == 2
    finally:
        service.close()


def test_a_worker_reports_oversized_and_missing_files_without_reading_them(tmp_path: Path) -> None:
    engine = SimpleNamespace(settings=SimpleNamespace(max_image_bytes=10))
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 11)
    found = scan_image(engine, Item(str(big), "big"), frozenset())
    assert found.error is not None and found.error[0] == ImageTooLarge.code and found.data is None
    gone = scan_image(engine, Item(str(tmp_path / "gone.jpg"), "gone"), frozenset())
    assert gone.error is not None and gone.error[0] == "UnreadableFileException"
    small = tmp_path / "small.jpg"
    small.write_bytes(b"tiny")
    known = frozenset({hashlib.sha256(b"tiny").hexdigest()})
    skipped = scan_image(engine, Item(str(small), "small"), known)
    assert skipped.skipped and skipped.data is None and skipped.error is None
