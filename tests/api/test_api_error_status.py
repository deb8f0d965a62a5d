"""Issue 19, item 9: every error regard can send goes out with the HTTP status class Rekognition's
botocore model gives its shape.

The model (``botocore/data/rekognition/*/service-2.json``) gives each exception shape an
``error.httpStatusCode`` where it fixes one, and marks server faults (``fault: true``:
InternalServerError, ThrottlingException); SDKs choose their retry behaviour from these. Errors
outside Rekognition's model are AWS's common protocol errors, each with the status AWS sends.
"""

from __future__ import annotations

import importlib
import pkgutil

import botocore.session

import regard
from regard.errors import RegardError

#: Errors of the AWS JSON protocol and SigV4 that are not Rekognition shapes, with AWS's status
#: (ClientDisconnected is nginx's 499, logged only: nobody reads it).
COMMON: dict[str, set[int]] = {
    "MissingAuthenticationTokenException": {403},
    "UnrecognizedClientException": {400},
    "InvalidSignatureException": {400, 403},
    "IncompleteSignatureException": {400},
    "UnknownOperationException": {400},
    "SerializationException": {400},
    "RequestEntityTooLargeException": {413},
    "RequestTimeoutException": {408},
    "UnsupportedOperationException": {400},
    "ClientDisconnected": {499},
}


def _all_error_classes() -> list[type[RegardError]]:
    for module in pkgutil.walk_packages(regard.__path__, "regard."):
        if ".console" in module.name or module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)
    seen: list[type[RegardError]] = []
    todo: list[type[RegardError]] = [RegardError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def test_every_error_status_matches_the_botocore_model() -> None:
    model = botocore.session.get_session().get_service_model("rekognition")
    shapes = {name: model.shape_for(name) for name in model.shape_names}
    checked: dict[str, set[int]] = {}
    for cls in _all_error_classes():
        checked.setdefault(cls.code, set()).add(cls.http_status)
        shape = shapes.get(cls.code)
        if shape is None:
            assert cls.code in COMMON or cls is RegardError, f"{cls.__name__}: {cls.code} is in no model"
            if cls is not RegardError:
                assert cls.http_status in COMMON[cls.code], (cls.__name__, cls.http_status)
            continue
        meta = shape._shape_model  # botocore's Shape.metadata leaves out "fault"
        assert meta.get("exception"), cls.code
        wanted = meta.get("error", {}).get("httpStatusCode")
        if wanted is not None:
            assert cls.http_status == wanted, (cls.__name__, cls.http_status, wanted)
        if meta.get("fault"):
            assert 500 <= cls.http_status < 600, (cls.__name__, cls.code, cls.http_status)
        else:
            assert 400 <= cls.http_status < 500, (cls.__name__, cls.code, cls.http_status)
    # the test saw the errors that matter for retries
    assert checked["ThrottlingException"] == {503}
    assert checked["InternalServerError"] == {500}
    assert checked["ProvisionedThroughputExceededException"] == {400}
    assert checked["InvalidParameterException"] == {400}
