"""The operator at the command line (``regard collections|index|search|users``) as a caller.

The command line runs an operation as the API does: the same request parameters in
Rekognition's names, the same typed call, through the same :class:`Guard`, so its audit record
has the same fields as the API's. Only the caller differs: :func:`local_caller` has no access
key, the principal ``local:<os user>`` and the data directory's own rights
(:data:`regard.accountability.policy.LOCAL_PROFILE`: no policy profile of policy.toml applies).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable

from regard.accountability.audit import DEFAULT_RETENTION_FLOOR_DAYS
from regard.accountability.guard import Guard
from regard.accountability.policy import LOCAL_PROFILE
from regard.accountability.request import Caller
from regard.service import Service
from regard.workspace import Workspace

#: The role the local operator holds (the local profile admits it alone).
LOCAL_ROLE = "admin"


def local_principal() -> str:
    """``local:<os user>`` (``local:unknown`` when the user cannot be told)."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def local_caller(principal: str | None = None) -> Caller:
    """The operator at the command line: no access key, the local profile."""
    return Caller(None, principal or local_principal(), LOCAL_ROLE, LOCAL_PROFILE.name)


def local_guard(workspace: Workspace, service_factory: Callable[[], Service]) -> Guard:
    """The guard of the command line's work on ``workspace``: it reads no policy and opens no
    review queue (the local profile needs neither), so a data directory used only from the shell
    gains neither file. Its audit records go to the workspace's chain (the shared one on
    PostgreSQL), under the default retention floor (pruning is ``regard audit prune``'s)."""
    return Guard(
        workspace.data_dir,
        service_factory=service_factory,
        audit=workspace.audit(DEFAULT_RETENTION_FLOOR_DAYS),
        policies=workspace.policies(),
        review=workspace.review,
        assessments=workspace.assessments(),
        evidence=workspace.evidence,  # crops of faces enrolled into collections under review
    )
