"""An AWS CLI (v1) plugin that adds regard's ``x-regard-*`` request headers from the environment.

The AWS CLI has no option for extra request headers; regard's policy profiles read some (the
purpose and case reference of a 1:N search, the provenance of indexed images). Enable the plugin
once (``aws configure set plugins.regard regard.awscli_headers``; the CLI must run on a Python
that can import regard, e.g. ``pip install awscli`` next to it), then set any of

====================================  ==============================
environment variable                  header sent
====================================  ==============================
``X_REGARD_PURPOSE``                  ``x-regard-purpose``
``X_REGARD_CASE_REFERENCE``           ``x-regard-case-reference``
``X_REGARD_SOURCE``                   ``x-regard-source``
``X_REGARD_LEGAL_BASIS``              ``x-regard-legal-basis``
====================================  ==============================

and every ``aws rekognition`` request carries them, signed with the rest of the request.
"""

from __future__ import annotations

import os
from typing import Any

from regard.accountability.request import (
    HEADER_CASE_REFERENCE,
    HEADER_LEGAL_BASIS,
    HEADER_PURPOSE,
    HEADER_SOURCE,
)

HEADERS = (HEADER_PURPOSE, HEADER_CASE_REFERENCE, HEADER_SOURCE, HEADER_LEGAL_BASIS)


def env_name(header: str) -> str:
    """The environment variable a header's value comes from: ``x-regard-purpose`` -> ``X_REGARD_PURPOSE``."""
    return header.upper().replace("-", "_")


def add_headers(request: Any, **_: Any) -> None:
    """botocore ``before-sign`` handler: the headers whose variables are set, before signing."""
    for header in HEADERS:
        value = os.environ.get(env_name(header))
        if value:
            request.headers[header] = value


def awscli_initialize(event_hooks: Any) -> None:
    """The AWS CLI's plugin entry point."""
    event_hooks.register("before-sign.rekognition", add_headers)
