"""``regard video``: faces in stored video files on this machine, and the server's video jobs.

``detect FILE`` and ``search COLLECTION FILE`` run as the API's StartFaceDetection and
StartFaceSearch do, through the accountability guard as the local operator (the Start's audit
record names the file by sha256 and duration; a search's end is recorded as FaceSearchCompleted),
but in the foreground, with a progress bar on stderr and the GetFaceDetection / GetFaceSearch
JSON on stdout. ``jobs`` lists the data directory's jobs, ``cancel JOB`` stops one (recorded).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from regard.accountability.local import local_caller, local_guard, local_principal
from regard.accountability.request import Params, RequestInfo
from regard.api.rekognition.operations import OPERATIONS
from regard.cli.common import workspace, workspace_options
from regard.cli.output import emit_json, emit_table
from regard.errors import InvalidParameter
from regard.service import Service
from regard.video.jobs import FACE_DETECTION, FACE_SEARCH, SUCCEEDED, JobRequest, VideoJobs, page
from regard.video.outcomes import StartJobResult


@contextmanager
def _jobs(*, with_service: bool = True) -> Iterator[VideoJobs]:
    ws = workspace()
    service: Service | None = ws.service() if with_service else None

    def service_factory() -> Service:
        if service is None:
            raise InvalidParameter("no collection service here")
        return service

    from regard.face.engine import Engine

    engine = service.engine if service is not None else Engine(ws.settings)
    jobs = VideoJobs(
        ws.video_jobs(),
        settings=ws.settings,
        engine=engine,
        guard=local_guard(ws, service_factory),
        service_factory=service_factory,
        inline=True,
    )
    try:
        yield jobs
    finally:
        jobs.close()
        if service is not None:
            service.close()


def _progress() -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress bar over the video's duration (seconds), on stderr."""
    bar: tqdm[Any] | None = None

    def update(done_millis: int, total_millis: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=round(total_millis / 1000, 1), unit="s", file=sys.stderr, desc="video")
        bar.n = round(min(done_millis, total_millis) / 1000, 1)
        bar.refresh()

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def _run_local(operation: str, params: Params, request: JobRequest) -> dict[str, Any]:
    """Start ``request`` under the guard as the local operator, run it here, return its results."""
    with _jobs() as jobs:
        caller = local_caller()
        info = RequestInfo(str(uuid.uuid4()))

        def call(p: Params) -> StartJobResult:
            if p.get("FaceMatchThreshold") is not None:  # the guard's floor, if it raised it
                req = JobRequest(**{**request.to_json(), "face_match_threshold": p["FaceMatchThreshold"]})
            else:
                req = request
            return jobs.prepare(req, caller, info.request_id, info.purpose, info.case_reference)

        started = jobs.guard.run(operation, params, caller, info, call).result
        update, close = _progress()
        try:
            job = jobs.run(started.job_id, progress=update)
        finally:
            close()
        key = "Faces" if job.kind == FACE_DETECTION else "Persons"
        out = OPERATIONS["GetFaceDetection" if job.kind == FACE_DETECTION else "GetFaceSearch"].render(
            page(job, None, None, "TIMESTAMP"), {}
        )
        items: list[Any] = list((job.results or {}).get(key, []))
        out[key] = items  # every item, not one page
        out.pop("NextToken", None)
        out["VideoSha256"] = job.video_sha256
        return out


def _video_request(path: Path) -> dict[str, Any]:
    return {"Path": str(path.resolve())}


@click.group("video")
def video() -> None:
    """Faces in stored video: detect or search in a local file; list or cancel video jobs."""


@video.command("detect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fps", type=float, default=None, help="Frames sampled per second (REGARD_VIDEO_SAMPLE_FPS).")
@click.option("--attributes", type=click.Choice(["DEFAULT", "ALL"]), default="DEFAULT")
@click.option("--json", "as_json", is_flag=True, help="Print GetFaceDetection's JSON.")
@workspace_options
def detect(file: Path, fps: float | None, attributes: str, as_json: bool) -> None:
    """Detect and track the faces in a video FILE."""
    params: Params = {"Video": _video_request(file), "FaceAttributes": attributes}
    request = JobRequest(FACE_DETECTION, _video_request(file), face_attributes=attributes, fps=fps)
    out = _run_local("StartFaceDetection", params, request)
    if as_json:
        emit_json(out)
        return
    _status(out)
    emit_table(
        ["TIMESTAMP (ms)", "CONFIDENCE", "LEFT", "TOP", "WIDTH", "HEIGHT"],
        [
            (
                f["Timestamp"],
                f["Face"]["Confidence"],
                f["Face"]["BoundingBox"]["Left"],
                f["Face"]["BoundingBox"]["Top"],
                f["Face"]["BoundingBox"]["Width"],
                f["Face"]["BoundingBox"]["Height"],
            )
            for f in out["Faces"]
        ],
    )


@video.command("search")
@click.argument("collection_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="FaceMatchThreshold (default 80).")
@click.option("--fps", type=float, default=None, help="Frames sampled per second (REGARD_VIDEO_SAMPLE_FPS).")
@click.option("--json", "as_json", is_flag=True, help="Print GetFaceSearch's JSON.")
@workspace_options
def search(collection_id: str, file: Path, threshold: float | None, fps: float | None, as_json: bool) -> None:
    """Search a collection for the people seen in a video FILE."""
    params: Params = {"CollectionId": collection_id, "Video": _video_request(file)}
    if threshold is not None:
        params["FaceMatchThreshold"] = threshold
    request = JobRequest(
        FACE_SEARCH,
        _video_request(file),
        collection_id=collection_id,
        face_match_threshold=threshold,
        fps=fps,
    )
    out = _run_local("StartFaceSearch", params, request)
    if as_json:
        emit_json(out)
        return
    _status(out)
    emit_table(
        ["TIMESTAMP (ms)", "PERSON", "SIMILARITY", "FACE ID", "EXTERNAL ID"],
        [
            (
                p["Timestamp"],
                p["Person"]["Index"],
                m["Similarity"],
                m["Face"]["FaceId"],
                m["Face"].get("ExternalImageId", ""),
            )
            for p in out["Persons"]
            for m in p["FaceMatches"]
        ],
    )


def _status(out: dict[str, Any]) -> None:
    if out["JobStatus"] != SUCCEEDED:
        click.echo(f"job {out['JobId']}: {out['JobStatus']}: {out.get('StatusMessage', '')}", err=True)


@video.command("jobs")
@click.option("--status", type=click.Choice(["IN_PROGRESS", "SUCCEEDED", "FAILED"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@workspace_options
def jobs_list(status: str | None, as_json: bool) -> None:
    """List the video jobs (API and command line)."""
    found = workspace().video_jobs().list(status=status, limit=1_000_000)
    if as_json:
        emit_json({"Jobs": [j.summary() for j in found]})
        return
    emit_table(
        ["JOB", "KIND", "STATUS", "CREATED", "COLLECTION", "PRINCIPAL", "MESSAGE"],
        [
            (
                j.job_id,
                j.kind,
                j.status,
                j.created_at,
                j.collection_id or "",
                j.principal or "",
                j.status_message or "",
            )
            for j in found
        ],
    )


@video.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job afterwards as JSON.")
@workspace_options
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a video job: a running server's worker stops it; one no process runs ends now."""
    with _jobs(with_service=False) as jobs:
        job = jobs.cancel(job_id, actor=local_principal())
    if as_json:
        emit_json(job.summary())
    else:
        click.echo(f"job {job.job_id}: {job.status}{': ' + job.status_message if job.status_message else ''}")


commands = [video]
