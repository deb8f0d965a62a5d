"""The typed results of the stored-video operations, as the guard and the audit record read them.

Kept apart from :mod:`regard.video.jobs` (which runs the jobs) so that the accountability layer
(:mod:`regard.accountability.results`) can summarise them without importing the decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StartJobResult:
    """A Start operation's result: the job's id and the video it reads (by sha256 and duration).

    ``after_record`` (None for a repeated request, whose job already runs) starts the job once the
    guard has written the Start's audit record: nothing is analysed before it is accounted for.
    """

    job_id: str
    kind: str
    video_sha256: str | None
    duration_millis: int | None
    status: str
    #: False when ClientRequestToken named a job already started with the same request.
    new: bool = True
    after_record: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GetJobResult:
    """A Get operation's result: one page of a job's results, as Rekognition's JSON."""

    job_id: str
    kind: str
    status: str
    status_message: str | None
    job_tag: str | None
    video: dict[str, Any] | None
    metadata: dict[str, Any] | None
    items: list[dict[str, Any]]
    next_token: str | None
