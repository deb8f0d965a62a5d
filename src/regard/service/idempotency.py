"""ClientRequestToken: a repeated request with the same token gets the first response, not a second run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from regard.errors import IdempotentParameterMismatch
from regard.service.rules import CLIENT_TOKEN_RE, check
from regard.store.base import Store, StoredResponse


def params_hash(params: Mapping[str, Any]) -> str:
    """The digest a token's parameters are remembered by."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def idempotent(
    store: Store,
    collection_id: str,
    operation: str,
    token: str | None,
    params: Mapping[str, Any],
    run: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """``run()``'s response, or the one remembered for ``token`` when it was seen before.

    Without a token the operation simply runs. IdempotentParameterMismatch when the token was used
    with other parameters.
    """
    if token is None:
        return run()
    check(CLIENT_TOKEN_RE, token, "ClientRequestToken")
    digest = params_hash(params)
    previous = store.recall_request(collection_id, operation, token)
    if previous is not None:
        if previous.params_hash != digest:
            raise IdempotentParameterMismatch(
                f"ClientRequestToken {token!r} was used with different parameters"
            )
        return previous.response
    response = run()
    store.remember_request(collection_id, operation, token, StoredResponse(digest, response))
    return response
