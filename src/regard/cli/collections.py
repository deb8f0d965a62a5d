"""``regard collections|index|search|users``: face collections from the shell.

Every change and every search runs as the API runs it (:mod:`regard.api.rekognition.operations`):
the command builds the request parameters in Rekognition's names and runs the operation's typed
call through the accountability guard, as the local operator (:mod:`regard.accountability.local`),
so its audit record has the API's fields. Listings and descriptions read the service directly
and are not recorded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from tqdm import tqdm

from regard.accountability.guard import Guard
from regard.accountability.local import local_caller, local_guard
from regard.accountability.request import Caller, Params, Provenance, RequestInfo
from regard.api.rekognition import operations
from regard.api.rekognition.operations import ApiOperation, Context
from regard.api.rekognition.s3 import S3Images
from regard.cli.common import workspace, workspace_options
from regard.cli.output import emit_json, emit_table
from regard.enrol import (
    DEFAULT_BATCH_SIZE,
    SKIPPED,
    Options,
    Outcome,
    Summary,
    enrol_local,
    enrol_ray,
    items_from_manifest,
    items_from_paths,
)
from regard.service import Service, render

R = TypeVar("R")


def common(f: Any) -> Any:
    """``--data-dir``, ``--database-url`` (:func:`regard.cli.common.workspace_options`) and ``--json``."""
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)
    return workspace_options(f)


@dataclass
class Local:
    """The shell's work on one data directory: the service, and operations run as the API runs
    them, under the guard, as the local operator."""

    service: Service
    guard: Guard
    ctx: Context
    caller: Caller

    def run(self, op: ApiOperation[R], params: Params, provenance: Provenance | None = None) -> R:
        """``op``'s typed call on ``params`` (Rekognition's names) under the guard; its typed result."""
        given = provenance or Provenance()
        info = RequestInfo(str(uuid.uuid4()), source_note=given.source_note, legal_basis=given.legal_basis)
        return operations.run(self.guard, op, params, self.caller, info, self.ctx).result


@contextmanager
def _service() -> Iterator[Local]:
    """The command's workspace (:func:`regard.cli.common.workspace`) as the local operator."""
    ws = workspace()
    service = ws.service()

    def service_factory() -> Service:
        return service

    try:
        ctx = Context(engine=service.engine, s3=S3Images(ws.settings), service_factory=service_factory)
        # every change and search made from the shell goes to the audit log (regard.accountability)
        yield Local(service, local_guard(ws, service_factory), ctx, local_caller())
    finally:
        service.close()


def _given(**params: Any) -> Params:
    """Request parameters without the options left out (as an SDK leaves out absent members)."""
    return {k: v for k, v in params.items() if v is not None}


def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"tag {v!r} is not KEY=VALUE", param_hint="--tag")
        k, _, val = v.partition("=")
        tags[k] = val
    return tags


# -- collections ----------------------------------------------------------------------------------
@click.group("collections")
def collections() -> None:
    """Create, list, describe and delete face collections."""


@collections.command("create")
@click.argument("collection_id")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE (repeatable).")
@common
def create(collection_id: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Create a collection."""
    params = _given(CollectionId=collection_id, Tags=_parse_tags(tags) or None)
    with _service() as local:
        out = local.run(operations.create_collection, params)
    if as_json:
        emit_json(operations.create_collection.render(out, params))
    else:
        click.echo(out.collection_arn)


@collections.command("list")
@common
def list_(as_json: bool) -> None:
    """List every collection."""
    rows: list[tuple[str, str]] = []
    with _service() as local:
        token: str | None = None
        while True:
            page = local.service.list_collections(max_results=1000, next_token=token)
            rows.extend(zip(page.collection_ids, page.face_model_versions, strict=True))
            token = page.next_token
            if token is None:
                break
    if as_json:
        emit_json({"CollectionIds": [r[0] for r in rows], "FaceModelVersions": [r[1] for r in rows]})
    else:
        emit_table(["COLLECTION", "FACE MODEL"], rows)


@collections.command("describe")
@click.argument("collection_id")
@common
def describe(collection_id: str, as_json: bool) -> None:
    """Faces, users, model and content version of a collection."""
    with _service() as local:
        d = local.service.describe_collection(collection_id)
    data = {
        "CollectionARN": d.collection_arn,
        "FaceCount": d.face_count,
        "UserCount": d.user_count,
        "FaceModelVersion": d.face_model_version,
        "CreationTimestamp": d.created_at,
        "ContentVersion": d.content_version,
        "ContentHash": d.content_hash,
    }
    if as_json:
        emit_json(data)
    else:
        emit_table(["FIELD", "VALUE"], list(data.items()))


@collections.command("delete")
@click.argument("collection_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def delete(collection_id: str, yes: bool, as_json: bool) -> None:
    """Delete a collection with all of its faces, templates and users."""
    if not yes and not as_json:
        click.confirm(f"Delete collection {collection_id} and every face in it?", abort=True)
    params = {"CollectionId": collection_id}
    with _service() as local:
        out = local.run(operations.delete_collection, params)
    if as_json:
        emit_json(operations.delete_collection.render(out, params))
    else:
        click.echo(f"deleted {collection_id}")


# -- index and search ----------------------------------------------------------------------------
@click.command("index")
@click.argument("collection_id")
@click.argument("images", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV (path[,external_image_id]) or JSON lines file listing images, paths relative to it.",
)
@click.option(
    "--external-id",
    default=None,
    help="ExternalImageId for every face (default: the file name; in a folder or manifest, its path "
    "with ':' between folders).",
)
@click.option("--max-faces", type=int, default=None, help="Index at most this many faces per image.")
@click.option(
    "--quality-filter",
    type=click.Choice(["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]),
    default="AUTO",
    show_default=True,
)
@click.option("--source-note", default=None, help="Provenance note stored with each face.")
@click.option("--legal-basis", default=None, help="Legal basis for processing, stored with each face.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Images processed at once (default: one per CPU core); with --ray, the Ray workers "
    "(default: one per CPU of the cluster).",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help='Run detection and embedding on Ray workers (needs regard[ray]): "local" starts Ray on '
    "this machine, anything else is a cluster address for ray.init (e.g. auto, ray://head:10001).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Images per Ray task.",
)
@click.option("--jsonl", is_flag=True, help="One JSON line per image as it finishes, then a summary line.")
@click.option("--stop-after", type=click.IntRange(min=1), default=None, hidden=True)
@common
def index(
    collection_id: str,
    images: tuple[Path, ...],
    manifest: Path | None,
    external_id: str | None,
    max_faces: int | None,
    quality_filter: str,
    source_note: str | None,
    legal_basis: str | None,
    jobs: int | None,
    ray_address: str | None,
    batch_size: int,
    jsonl: bool,
    stop_after: int | None,
    as_json: bool,
) -> None:
    """Index the faces in images, folders of images or a manifest's images into a collection.

    An image whose ExternalImageId and content (sha256) already have a face in the collection is
    skipped, so an interrupted run resumes where it stopped. Errors are reported per image and
    never stop the others. Several images are processed at once (--jobs), or on Ray workers
    (--ray), which load the models once and send back what they found; this process stores every
    image through IndexFaces under the guard, so each gets its audit record (design notes: the
    regard.enrol module).
    """
    if not images and manifest is None:
        raise click.UsageError("give IMAGES (files or folders) or --manifest")
    items = items_from_paths(images, external_id)
    if manifest is not None:
        items += items_from_manifest(manifest, external_id)
    if ray_address is not None and importlib.util.find_spec("ray") is None:
        raise click.ClickException("--ray needs Ray: pip install 'regard[ray]'")
    options = Options(collection_id, max_faces, quality_filter, Provenance(source_note, legal_basis))
    summary = Summary()
    results: list[Outcome] = []
    interrupted = False
    with _service() as local:
        if ray_address is not None:
            outcomes = enrol_ray(
                local, items, options, address=ray_address, workers=jobs, batch_size=batch_size
            )
        else:
            workers = max(1, min(len(items), jobs or os.cpu_count() or 1))
            outcomes = enrol_local(local, items, options, workers)
        bar = tqdm(total=len(items), desc="indexing", unit="image", disable=len(items) < 2, leave=False)
        try:
            for out in outcomes:
                summary.add(out)
                bar.update()
                if jsonl:
                    click.echo(json.dumps(out.as_json()))
                else:
                    results.append(out)
                if stop_after is not None and summary.images >= stop_after:
                    raise KeyboardInterrupt  # as an operator's ^C: the test hook of an interruption
        except KeyboardInterrupt:
            interrupted = True
        finally:
            outcomes.close()
            bar.close()
    _report(summary, results, as_json=as_json, jsonl=jsonl, interrupted=interrupted)
    if len(items) == 1 and results and results[0].error is not None:  # one image: its error
        if results[0].exception is not None:
            raise results[0].exception
        code, message = results[0].error
        raise click.ClickException(f"{code}: {message}")
    if interrupted:
        click.echo("regard: interrupted; run the same command again to resume", err=True)
        raise click.exceptions.Exit(130)
    if summary.errors:
        raise click.ClickException(f"{summary.errors} of {len(items)} images failed")


def _report(
    summary: Summary, results: list[Outcome], *, as_json: bool, jsonl: bool, interrupted: bool
) -> None:
    totals = {**summary.as_json(), "Interrupted": interrupted}
    if jsonl:
        click.echo(json.dumps({"Summary": totals}))
    elif as_json:
        emit_json({"Results": [r.as_json() for r in results], "Summary": totals})
    else:
        rows: list[tuple[str, str, str]] = []
        for r in results:
            path = r.item.path
            if r.error is not None:
                rows.append((path, "-", f"{r.error[0]}: {r.error[1]}"))
            elif r.status == SKIPPED:
                rows.append((path, "-", "skipped: already indexed"))
            elif r.result is not None:
                rows.extend((path, f.face.face_id, "indexed") for f in r.result.face_records)
                rows.extend((path, "-", "skipped: " + ",".join(u.reasons)) for u in r.result.unindexed_faces)
                if not r.result.face_records and not r.result.unindexed_faces:
                    rows.append((path, "-", "no face"))
        emit_table(["IMAGE", "FACE ID", "RESULT"], rows)
    if summary.images > 1 or interrupted:
        click.echo(
            f"regard: {summary.images} images: {summary.indexed} indexed ({summary.faces} faces), "
            f"{summary.no_face} without a face indexed, {summary.skipped} skipped (already indexed), "
            f"{summary.errors} failed; {totals['ImagesPerSecond']} images/s",
            err=True,
        )


@click.command("search")
@click.argument("collection_id")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=80.0, show_default=True, help="FaceMatchThreshold (0-100).")
@click.option("--max-faces", type=int, default=10, show_default=True, help="Most matches to return (1-4096).")
@common
def search(
    collection_id: str,
    image: Path,
    threshold: float,
    max_faces: int,
    as_json: bool,
) -> None:
    """Search a collection for the largest face in IMAGE."""
    params = {
        "CollectionId": collection_id,
        "Image": {"Bytes": image.read_bytes()},
        "MaxFaces": max_faces,
        "FaceMatchThreshold": threshold,
    }
    with _service() as local:
        out = local.run(operations.search_faces_by_image, params)
    if as_json:
        emit_json(operations.search_faces_by_image.render(out, params))
    else:
        emit_table(
            ["SIMILARITY", "EST. FMR", "FACE ID", "EXTERNAL ID", "USER"],
            [
                (m.similarity, m.fmr, m.face.face_id, m.face.external_image_id or "", m.face.user_id or "")
                for m in out.face_matches
            ],
        )


# -- users --------------------------------------------------------------------------------------
@click.group("users")
def users() -> None:
    """Users: named groups of one person's faces in a collection."""


@users.command("create")
@click.argument("collection_id")
@click.argument("user_id")
@common
def user_create(collection_id: str, user_id: str, as_json: bool) -> None:
    """Create a user."""
    with _service() as local:
        local.run(operations.create_user, {"CollectionId": collection_id, "UserId": user_id})
    emit_json({}) if as_json else click.echo(f"created user {user_id}")


@users.command("delete")
@click.argument("collection_id")
@click.argument("user_id")
@common
def user_delete(collection_id: str, user_id: str, as_json: bool) -> None:
    """Delete a user (its faces stay in the collection)."""
    with _service() as local:
        local.run(operations.delete_user, {"CollectionId": collection_id, "UserId": user_id})
    emit_json({}) if as_json else click.echo(f"deleted user {user_id}")


@users.command("list")
@click.argument("collection_id")
@common
def user_list(collection_id: str, as_json: bool) -> None:
    """List a collection's users."""
    found = []
    with _service() as local:
        token: str | None = None
        while True:
            page = local.service.list_users(collection_id, next_token=token)
            found.extend(page.users)
            token = page.next_token
            if token is None:
                break
    if as_json:
        emit_json({"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in found]})
    else:
        emit_table(["USER", "STATUS", "FACES"], [(u.user_id, u.status, u.face_count) for u in found])


@users.command("associate")
@click.argument("collection_id")
@click.argument("user_id")
@click.argument("face_ids", nargs=-1, required=True)
@click.option("--threshold", type=float, default=75.0, show_default=True, help="UserMatchThreshold (0-100).")
@common
def user_associate(
    collection_id: str,
    user_id: str,
    face_ids: tuple[str, ...],
    threshold: float,
    as_json: bool,
) -> None:
    """Associate faces with a user."""
    params = {
        "CollectionId": collection_id,
        "UserId": user_id,
        "FaceIds": list(face_ids),
        "UserMatchThreshold": threshold,
    }
    with _service() as local:
        out = local.run(operations.associate_faces, params)
    unsuccessful = render.unsuccessful_faces(out.unsuccessful, with_confidence=True)
    if as_json:
        emit_json(operations.associate_faces.render(out, params))
    else:
        rows = [(f, "associated") for f in out.associated_faces]
        rows += [(u["FaceId"], ",".join(u["Reasons"])) for u in unsuccessful]
        emit_table(["FACE ID", "RESULT"], rows)


@users.command("disassociate")
@click.argument("collection_id")
@click.argument("user_id")
@click.argument("face_ids", nargs=-1, required=True)
@common
def user_disassociate(
    collection_id: str,
    user_id: str,
    face_ids: tuple[str, ...],
    as_json: bool,
) -> None:
    """Disassociate faces from a user."""
    params = {"CollectionId": collection_id, "UserId": user_id, "FaceIds": list(face_ids)}
    with _service() as local:
        out = local.run(operations.disassociate_faces, params)
    if as_json:
        emit_json(operations.disassociate_faces.render(out, params))
    else:
        rows = [(f, "disassociated") for f in out.disassociated_faces]
        rows += [(u.face_id, ",".join(u.reasons)) for u in out.unsuccessful]
        emit_table(["FACE ID", "RESULT"], rows)


@users.command("search")
@click.argument("collection_id")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--user-id", default=None)
@click.option("--face-id", default=None)
@click.option("--threshold", type=float, default=80.0, show_default=True, help="UserMatchThreshold (0-100).")
@click.option("--max-users", type=int, default=10, show_default=True)
@common
def user_search(
    collection_id: str,
    image: Path | None,
    user_id: str | None,
    face_id: str | None,
    threshold: float,
    max_users: int,
    as_json: bool,
) -> None:
    """Find users like an image's largest face, a user or a face (give exactly one)."""
    if sum(x is not None for x in (image, user_id, face_id)) != 1:
        raise click.UsageError("give exactly one of --image, --user-id and --face-id")
    limits = {"CollectionId": collection_id, "UserMatchThreshold": threshold, "MaxUsers": max_users}
    with _service() as local:
        if image is not None:
            by_image = {**limits, "Image": {"Bytes": image.read_bytes()}}
            matches = local.run(operations.search_users_by_image, by_image).user_matches
        else:
            by_id = _given(**limits, UserId=user_id, FaceId=face_id)
            matches = local.run(operations.search_users, by_id).user_matches
    if as_json:
        emit_json({"UserMatches": [render.user_match(m) for m in matches]})
    else:
        emit_table(
            ["SIMILARITY", "EST. FMR", "USER"], [(m.similarity, m.fmr, m.user.user_id) for m in matches]
        )


commands = [collections, index, search, users]
