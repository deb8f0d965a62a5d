"""Access keys: encrypted at rest, listed without secrets, revocable; the `regard keys` CLI."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from regard.cli.main import cli
from regard.errors import InvalidParameter, ResourceNotFound
from regard.keys import KEY_PREFIX, KeyStore

if TYPE_CHECKING:
    from live_server import LiveServer


def test_create_returns_secret_once_and_stores_it_encrypted(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, secret = store.create("ci", role="admin", profile="reader")
    assert key.access_key_id.startswith(KEY_PREFIX) and len(key.access_key_id) == 20
    assert len(secret) == 40
    assert (key.role, key.profile, key.active) == ("admin", "reader", True)
    raw = (tmp_path / "keys.sqlite3").read_bytes()
    assert secret.encode() not in raw
    with sqlite3.connect(tmp_path / "keys.sqlite3") as db:
        blob = db.execute("SELECT secret_encrypted FROM access_keys").fetchone()[0]
    assert secret.encode() not in blob
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    # A second store on the same directory (another worker) decrypts it.
    found = KeyStore(tmp_path).secret_for(key.access_key_id)
    assert found is not None and found[1] == secret and found[0] == key


def test_list_and_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    a, _ = store.create("a")
    b, _ = store.create("b")
    assert [k.access_key_id for k in store.list()] == [a.access_key_id, b.access_key_id]
    revoked = store.revoke(a.access_key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.secret_for(a.access_key_id) is None
    assert store.secret_for(b.access_key_id) is not None
    assert [k.access_key_id for k in store.list(include_revoked=False)] == [b.access_key_id]
    with pytest.raises(ResourceNotFound):
        store.revoke("RGRDNOSUCHKEY0000000")
    with pytest.raises(InvalidParameter):
        store.create("  ")


def test_revocation_reaches_other_processes_cache(tmp_path: Path) -> None:
    server_side = KeyStore(tmp_path)
    admin_side = KeyStore(tmp_path)
    key, _ = admin_side.create("x")
    assert server_side.secret_for(key.access_key_id) is not None
    admin_side.revoke(key.access_key_id)
    server_side.CACHE_SECONDS = 0.0
    assert server_side.secret_for(key.access_key_id) is None


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        cli, ["keys", "create", "--name", "bot", "--profile", "identification", "--data-dir", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    lines = dict(line.split(" = ") for line in out.stdout.splitlines() if " = " in line)
    akid, secret = lines["aws_access_key_id"], lines["aws_secret_access_key"]
    listed = runner.invoke(cli, ["keys", "list", "--json", "--data-dir", str(tmp_path)])
    rows = json.loads(listed.stdout)
    assert (
        rows[0]["AccessKeyId"] == akid
        and rows[0]["Profile"] == "identification"
        and rows[0]["RevokedAt"] is None
    )
    assert secret not in listed.stdout
    gone = runner.invoke(cli, ["keys", "revoke", akid, "--data-dir", str(tmp_path)])
    assert gone.exit_code == 0 and "revoked" in gone.stdout
    assert KeyStore(tmp_path).secret_for(akid) is None


def test_cli_keys_are_safe_by_default(tmp_path: Path) -> None:
    """Without --profile a key gets the verification profile (FMR floor), not admin."""
    runner = CliRunner()
    out = runner.invoke(cli, ["keys", "create", "--name", "app", "--json", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    created = json.loads(out.stdout)
    (row,) = json.loads(runner.invoke(cli, ["keys", "list", "--json", "--data-dir", str(tmp_path)]).stdout)
    assert row["AccessKeyId"] == created["AccessKeyId"]
    assert row["Profile"] == "verification" and row["Role"] == "operator"


def _create_key(server: LiveServer, *args: str) -> tuple[str, str]:
    """`regard keys create` against the live server's data directory (as an operator would)."""
    made = subprocess.run(
        [str(Path(sys.executable).parent / "regard"), "keys", "create", "--json", *args],
        check=True,
        capture_output=True,
        env=server.env,
    )
    key = json.loads(made.stdout)
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server with two worker processes (each with its own key cache)."""
    from live_server import start_server, stop_server

    server = start_server(tmp_path_factory.mktemp("keys-live"), workers=2)
    try:
        yield server
    finally:
        stop_server(server)


def _served_by(server: LiveServer, response_metadata: dict[str, Any]) -> int:
    request_id = response_metadata["RequestId"]
    (line,) = [r for r in server.log_lines() if r.get("request_id") == request_id]
    return int(line["pid"])


@pytest.mark.slow
def test_revocation_stops_a_key_within_two_seconds_in_every_worker(two_workers: LiveServer) -> None:
    """docs/http-api.md: `regard keys revoke` stops a key within 2 seconds in every worker. Both
    workers first serve (and cache) the key; every request that starts 2 s or more after the
    revoke command returned is refused, by both workers."""
    from botocore.exceptions import ClientError

    key = _create_key(two_workers, "--name", "soon-revoked", "--profile", "admin", "--role", "admin")
    warm: set[int] = set()
    for _ in range(200):  # new clients open new connections, until both workers have the key cached
        client = two_workers.client(aws_access_key_id=key[0], aws_secret_access_key=key[1])
        warm.add(_served_by(two_workers, client.list_collections()["ResponseMetadata"]))
        if len(warm) == 2:
            break
    assert len(warm) == 2, warm
    subprocess.run(
        [str(Path(sys.executable).parent / "regard"), "keys", "revoke", key[0]],
        check=True,
        capture_output=True,
        env=two_workers.env,
    )
    revoked_at = time.monotonic()
    refused_by: set[int] = set()
    deadline = revoked_at + 120
    while refused_by != warm and time.monotonic() < deadline:
        client = two_workers.client(aws_access_key_id=key[0], aws_secret_access_key=key[1])
        started = time.monotonic()
        try:
            client.list_collections()
        except ClientError as refused:
            assert refused.response["Error"]["Code"] == "UnrecognizedClientException"
            refused_by.add(_served_by(two_workers, refused.response["ResponseMetadata"]))
        else:
            # Still served from a worker's cache: allowed only inside the documented 2 s.
            assert started - revoked_at < 2.0, f"served {started - revoked_at:.2f} s after revocation"
    assert refused_by == warm, (refused_by, warm)


@pytest.mark.slow
def test_the_default_verification_profile_over_http(
    two_workers: LiveServer, photos: dict[str, bytes]
) -> None:
    """A key created without --profile gets `verification`: 1:1 comparison at similarity 80 or
    stricter, no collection administration, no indexing, no 1:N search."""
    key, secret = _create_key(two_workers, "--name", "app")
    admin = two_workers.client()
    admin.create_collection(CollectionId="verification-gallery")
    admin.index_faces(CollectionId="verification-gallery", Image={"Bytes": photos["biden"]})
    rek = two_workers.client(aws_access_key_id=key, aws_secret_access_key=secret)

    same = rek.compare_faces(SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": photos["obama3"]})
    assert len(same["FaceMatches"]) == 1 and same["FaceMatches"][0]["Similarity"] >= 80
    strict = rek.compare_faces(
        SourceImage={"Bytes": photos["obama"]},
        TargetImage={"Bytes": photos["obama3"]},
        SimilarityThreshold=95,
    )
    assert strict["ResponseMetadata"]["HTTPHeaders"]["x-regard-effective-threshold"].startswith("95")
    with pytest.raises(rek.exceptions.AccessDeniedException, match="80"):
        rek.compare_faces(
            SourceImage={"Bytes": photos["obama"]},
            TargetImage={"Bytes": photos["biden"]},
            SimilarityThreshold=50,
        )
    assert len(rek.detect_faces(Image={"Bytes": photos["obama"]})["FaceDetails"]) == 1
    assert rek.describe_collection(CollectionId="verification-gallery")["FaceCount"] == 1
    refused = [
        lambda: rek.create_collection(CollectionId="mine"),
        lambda: rek.index_faces(CollectionId="verification-gallery", Image={"Bytes": photos["obama"]}),
        lambda: rek.search_faces_by_image(
            CollectionId="verification-gallery", Image={"Bytes": photos["obama"]}
        ),
        lambda: rek.list_faces(CollectionId="verification-gallery"),
        lambda: rek.delete_collection(CollectionId="verification-gallery"),
    ]
    for call in refused:
        with pytest.raises(rek.exceptions.AccessDeniedException):
            call()
    assert admin.describe_collection(CollectionId="verification-gallery")["FaceCount"] == 1
