"""Audit records for collection work done locally (``regard collections|index|search|users``).

The command line runs with the data directory's own rights (an operator's), so no policy
profile applies, but every change and every search is still recorded, with the principal
``local:<os user>``. :func:`audited_service` wraps a :class:`regard.service.Service` so that each
call of a method the catalogue names (:attr:`regard.catalogue.Operation.local_method`: every
change and every search) appends one record under that operation's name (parameters without
images: a probe image appears as the sha256 of its bytes; results as ids, similarities and FMRs).
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from regard.accountability.audit import AuditLog
from regard.catalogue import Kind, Operation, by_local_method
from regard.errors import RegardError
from regard.service import Service


def local_principal() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def _param(value: Any) -> Any:
    """A parameter as the log may hold it: images and vectors become their sha256."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest(), "bytes": len(value)}
    if isinstance(value, np.ndarray):
        return {
            "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(),
            "shape": list(value.shape),
        }
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return sorted(value)  # tag keys, not values
    return type(value).__name__


def _result(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if hasattr(result, "face_records"):
        out["indexed_face_ids"] = [r.face.face_id for r in result.face_records]
        out["unindexed_count"] = len(result.unindexed_faces)
    matches = getattr(result, "face_matches", None)
    if matches is None and isinstance(result, list) and result and hasattr(result[0], "face"):
        matches = result
    if matches is not None:
        out["matches"] = [
            {
                "face_id": m.face.face_id,
                "external_image_id": m.face.external_image_id,
                "similarity": m.similarity,
                "fmr": m.fmr,
            }
            for m in matches
        ]
    if hasattr(result, "user_matches"):
        out["matches"] = [
            {"user_id": m.user.user_id, "similarity": m.similarity, "fmr": m.fmr} for m in result.user_matches
        ]
    for name in ("deleted_faces", "associated_faces", "disassociated_faces"):
        if hasattr(result, name):
            out[name] = list(getattr(result, name))
    if isinstance(result, list) and result and hasattr(result[0], "face_id"):
        out["stored_face_ids"] = [f.face_id for f in result]
    return out


class _AuditedService:
    def __init__(self, service: Service, audit: AuditLog, principal: str) -> None:
        self._service = service
        self._audit = audit
        self._principal = principal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._service, name)
        operation = by_local_method(name)
        if operation is None or not callable(attr):
            return attr
        return self._wrap(operation, attr)

    def __enter__(self) -> _AuditedService:
        return self

    def __exit__(self, *exc: object) -> None:
        self._service.close()

    def _state(self, collection: str | None) -> dict[str, Any] | None:
        if collection is None:
            return None
        try:
            d = self._service.describe_collection(collection)
        except RegardError:
            return None
        return {
            "content_version": d.content_version,
            "content_hash": d.content_hash,
            "face_count": d.face_count,
        }

    def _wrap(self, operation: Operation, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            collection = args[0] if args and isinstance(args[0], str) else None
            if operation.kind is Kind.TAGS and collection and ":collection/" in collection:
                collection = collection.rsplit("/", 1)[-1]
            params: dict[str, Any] = {f"arg{i}": _param(a) for i, a in enumerate(args[1:], start=1)}
            params.update({k: _param(v) for k, v in kwargs.items()})
            record: dict[str, Any] = {
                "kind": "biometric" if operation.biometric else "admin",
                "operation": operation.name,
                "principal": self._principal,
                "access_key_id": None,
                "collection": collection,
                "parameters": params,
                "collection_state": {"before": self._state(collection)},
            }
            try:
                result = fn(*args, **kwargs)
            except RegardError as exc:
                record["outcome"] = "error"
                record["error"] = {"code": exc.code, "message": exc.message}
                self._audit.append(record)
                raise
            record["collection_state"]["after"] = self._state(collection)
            record["results"] = _result(result)
            record["outcome"] = "success"
            self._audit.append(record)
            return result

        return call


def audited_service(service: Service, audit: AuditLog, principal: str | None = None) -> Service:
    """``service`` with each change and search recorded in ``audit`` (for local, CLI use)."""
    return cast(Service, _AuditedService(service, audit, principal or local_principal()))
