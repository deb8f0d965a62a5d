"""The audit record of an operation, built in one place for the API and the command line.

:func:`operation_record` starts the record of an operation from its name, its request parameters
(in Rekognition's names, whoever sent them), its caller and the request's fields; the guard then
adds the collection's state, the threshold and the results, summarised from the typed result
(:func:`regard.accountability.results.summarize`). :func:`append_failure` ends a record with its
error; :func:`admin_record` is the record of an administrative change (policy, keys, erasure).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from regard.accountability.audit import AuditChain
from regard.accountability.request import Caller, Params, RequestInfo
from regard.catalogue import OPERATIONS_BY_NAME
from regard.errors import RegardError

#: An audit record: a JSON object (never bytes or arrays: the log's serialiser refuses them).
Record = dict[str, Any]

_ARN_COLLECTION = re.compile(r":collection/(?P<id>[a-zA-Z0-9_.\-]{1,255})$")


def image_reference(image: object) -> Record | None:
    """How the log refers to an Image parameter: the sha256 of its bytes, or its S3 location."""
    if not isinstance(image, Mapping):
        return None
    if "Bytes" in image:
        data = image["Bytes"]
        digest = (
            hashlib.sha256(bytes(data)).hexdigest()
            if isinstance(data, bytes | bytearray | memoryview)
            else None
        )
        return {"sha256": digest, "bytes": len(data)}
    if "S3Object" in image and isinstance(image["S3Object"], Mapping):
        s3 = image["S3Object"]
        return {"s3": {k: s3[k] for k in ("Bucket", "Name", "Version") if k in s3}}
    return None


def collection_of(params: Mapping[str, object]) -> str | None:
    """The collection a request names: its CollectionId, or the id in its collection ARN."""
    collection_id = params.get("CollectionId")
    if isinstance(collection_id, str):
        return collection_id
    arn = params.get("ResourceArn")
    if isinstance(arn, str):
        m = _ARN_COLLECTION.search(arn)
        if m:
            return m.group("id")
    return None


def recorded_parameters(operation: str, params: Mapping[str, Any]) -> Record:
    """What an audit record keeps of ``operation``'s request (the catalogue says which parameters)."""
    op = OPERATIONS_BY_NAME.get(operation)
    if op is None:
        return {}
    out: Record = {k: params[k] for k in op.recorded if k in params}
    if op.tag_keys_of_tags and isinstance(params.get("Tags"), Mapping):
        out["TagKeys"] = sorted(params["Tags"])
    for name in op.images:
        ref = image_reference(params.get(name))
        if ref is not None:
            out[name] = ref
    return out


def operation_record(operation: str, params: Params, caller: Caller, info: RequestInfo) -> Record:
    """The start of an operation's record: who, what, where, why, and the parameters that matter."""
    op = OPERATIONS_BY_NAME.get(operation)
    record: Record = {
        "kind": "biometric" if op is not None and op.biometric else "admin",
        "request_id": info.request_id,
        "access_key_id": caller.access_key_id,
        "principal": caller.principal,
        "role": caller.role,
        "profile": caller.profile,
        "operation": operation,
        "collection": collection_of(params),
        "purpose": info.purpose,
        "case_reference": info.case_reference,
        "parameters": recorded_parameters(operation, params),
    }
    probe = record["parameters"].get("Image") or record["parameters"].get("SourceImage")
    if isinstance(probe, Mapping) and probe.get("sha256"):
        record["probe_sha256"] = probe["sha256"]
    return record


def caller_record(
    kind: str, caller: Caller, info: RequestInfo, operation: str, parameters: dict[str, Any]
) -> Record:
    """The start of a record outside the guard (a review or an assessment decision, a view):
    its kind, who asked (key, principal, role) and for what."""
    return {
        "kind": kind,
        "request_id": info.request_id,
        "access_key_id": caller.access_key_id,
        "principal": caller.principal,
        "role": caller.role,
        "operation": operation,
        "parameters": parameters,
    }


def failure(exc: BaseException) -> dict[str, str]:
    """The audit record's error field: a RegardError's code and message, else only the type's name."""
    if isinstance(exc, RegardError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "InternalServerError", "message": type(exc).__name__}


def append_failure(audit: AuditChain, record: Record, exc: BaseException) -> None:
    """Append ``record`` as a failed operation and mark ``exc`` as recorded, so that an outer
    layer that logs refusals (the API's error handler) does not write a second record."""
    record["outcome"] = "error"
    record["error"] = failure(exc)
    audit.append(record)
    if isinstance(exc, RegardError):
        exc.audit_recorded = True


def admin_record(
    audit: AuditChain,
    operation: str,
    *,
    principal: str,
    parameters: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    collection: str | None = None,
    access_key_id: str | None = None,
    outcome: str = "success",
    error: Mapping[str, Any] | None = None,
) -> Record:
    """Append one record of an administrative change (policy, keys, erasure...)."""
    rec: Record = {
        "kind": "admin",
        "operation": operation,
        "principal": principal,
        "access_key_id": access_key_id,
        "collection": collection,
        "parameters": dict(parameters or {}),
        "results": dict(results or {}),
        "outcome": outcome,
    }
    if error:
        rec["error"] = dict(error)
    return audit.append(rec)
