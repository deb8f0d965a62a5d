"""A guarded, in-process Rekognition endpoint for accountability tests (real service, engine, files)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regard.accountability.guard import Caller, Guard, RequestInfo
from regard.api.rekognition import operations
from regard.api.rekognition.operations import OPERATIONS, Context
from regard.api.rekognition.s3 import S3Images
from regard.config import Settings
from regard.face.engine import Engine
from regard.service import Service

ADMIN = Caller("RGKADMIN000000000001", "operator-admin", "admin", "admin")
INVESTIGATOR = Caller("RGKINV00000000000001", "investigator", "operator", "identification")
VERIFIER_1 = Caller("RGKVER00000000000001", "vera", "verifier", "identification")
VERIFIER_2 = Caller("RGKVER00000000000002", "victor", "verifier", "identification")
CLERK = Caller("RGKVRF00000000000001", "clerk", "operator", "verification")
CASE = {"purpose": "locate a missing person", "case_reference": "CASE-2026-001"}
PROVENANCE = {"source_note": "passport photo supplied by the family", "legal_basis": "GDPR art. 9(2)(c)"}


@dataclass
class Answer:
    """A guarded operation as the API answers it: the rendered response, headers, audit record."""

    result: dict[str, Any]
    headers: dict[str, str]
    record: dict[str, Any]


@dataclass
class Endpoint:
    data_dir: Path
    service: Service
    guard: Guard
    ctx: Context

    def call(self, operation: str, caller: Caller = ADMIN, **params: Any) -> Answer:
        info_fields = {
            k: params.pop(k)
            for k in ("purpose", "case_reference", "source_note", "legal_basis")
            if k in params
        }
        info = RequestInfo(request_id=str(uuid.uuid4()), **info_fields)
        op = OPERATIONS[operation]
        out = operations.run(self.guard, op, params, caller, info, self.ctx)
        return Answer(operations.respond(op, out, params), out.headers, out.record)


def endpoint(data_dir: Path, engine: Engine) -> Endpoint:
    service = Service.open(data_dir, engine=engine)
    guard = Guard(data_dir, service_factory=lambda: service)
    ctx = Context(
        engine=engine,
        s3=S3Images(Settings.from_env(data_dir=data_dir)),
        service_factory=lambda: service,
    )
    return Endpoint(data_dir, service, guard, ctx)
