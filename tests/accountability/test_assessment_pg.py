"""Assessments in the shared PostgreSQL database: what one node's operator creates and an assessor
approves is what another node's gate finds; the tables refuse UPDATE and DELETE."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet

from regard.accountability.guard import Caller, RequestInfo
from regard.api.rekognition import operations
from regard.api.rekognition.operations import OPERATIONS, Context
from regard.api.rekognition.s3 import S3Images
from regard.cli.main import main
from regard.config import Settings
from regard.errors import AccessDenied
from regard.face.engine import Engine
from regard.workspace import Workspace

from .helpers import evaluation_report, write_form

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INVESTIGATOR = Caller("RGKINV00000000000001", "investigator", "operator", "identification")
CASE = {"purpose": "locate a missing person", "case_reference": "CASE-17"}


def _search(ws: Workspace, engine: Engine, image: bytes) -> dict[str, object]:
    """A guarded SearchFacesByImage on ``ws`` as the investigator; its audit record."""
    service = ws.service(engine)
    try:
        guard = ws.guard(lambda: service)
        ctx = Context(engine=engine, s3=S3Images(Settings.from_env()), service_factory=lambda: service)
        op = OPERATIONS["SearchFacesByImage"]
        params = {"CollectionId": "watch", "Image": {"Bytes": image}}
        out = operations.run(guard, op, params, INVESTIGATOR, RequestInfo(str(uuid.uuid4()), **CASE), ctx)
        return dict(out.record)
    finally:
        service.close()


def test_an_assessment_approved_on_one_node_opens_the_gate_of_another(
    tmp_path: Path,
    pg_url: str,
    fr_images: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REGARD_MASTER_KEY", Fernet.generate_key().decode())
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    node_a = ["--data-dir", str(tmp_path / "a"), "--database-url", pg_url]
    photos = {p.stem: p.read_bytes() for p in fr_images.glob("*.jpg")}
    assert main(["collections", "create", "watch", *node_a]) == 0
    assert main(["index", "watch", str(fr_images / "obama.jpg"), *node_a]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "keys",
                "create",
                "--name",
                "asha",
                "--role",
                "assessor",
                "--profile",
                "assessment",
                "--json",
                *node_a,
            ]
        )
        == 0
    )
    asha = json.loads(capsys.readouterr().out)["AccessKeyId"]

    node_b = Workspace.open(data_dir=tmp_path / "b", database_url=pg_url)
    try:
        with pytest.raises(AccessDenied, match="regard assess create"):
            _search(node_b, engine, photos["obama2"])
        form = write_form(tmp_path / "form.json")
        report = evaluation_report(fr_images)
        capsys.readouterr()
        args = ["--collection", "watch", "--form", str(form), "--report", str(report), "--actor", "olga"]
        assert main(["assess", "create", *args, *node_a]) == 0
        asm = json.loads(capsys.readouterr().out)["AssessmentId"]
        assert main(["assess", "approve", asm, "--assessor-key", asha, "--note", "checked", *node_a]) == 0
        assert json.loads(capsys.readouterr().out)["Status"] == "APPROVED"

        record = _search(node_b, engine, photos["obama2"])
        assert record["outcome"] == "success" and record["assessment"] == {"id": asm, "status": "current"}
        assert node_b.assessments().get(asm).status == "APPROVED"
        assert not (tmp_path / "a" / "assessments.sqlite3").exists()
        assert not (tmp_path / "b" / "assessments.sqlite3").exists()
        assert main(["audit", "verify", *node_a]) == 0
    finally:
        node_b.close()

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for sql in (
            "UPDATE assessments SET profile = 'verification'",
            "DELETE FROM assessments",
            "UPDATE assessment_events SET kind = 'reject'",
            "DELETE FROM assessment_events",
        ):
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute(sql.encode())
        assert conn.execute(b"SELECT count(*) FROM assessment_events").fetchone() == (1,)
