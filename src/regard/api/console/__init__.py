"""The reviewers' console: two-person verification in the browser, served by ``regard serve``.

``/console/login``
    access key id and secret; the page signs ``POST /console/session`` with SigV4 in the browser
    (WebCrypto, ``static/sigv4.js``), so the secret never leaves it, and the server checks the
    signature as it checks any API call (:func:`regard.api.signing.authenticate`).
``/console``
    the leads the reviewer's profile covers (pending by default), through
    :meth:`regard.accountability.reviewing.ReviewDesk.list`, so the view is scoped and audited as
    over HTTP.
``/console/leads/{id}``
    the probe crop and the candidate's enrolled crop side by side, the similarity and the
    false-match rate it stands for, the policy floor, purpose, case, requester, time, the
    decisions so far; confirm or reject with a required note
    (:meth:`~regard.accountability.reviewing.ReviewDesk.decide`, the same audit records as the
    signed HTTP endpoints). A decided lead is read-only.
``/console/crops/{id}/{probe|candidate}``
    the JPEG, for a session whose profile covers the lead; each view audited
    (``ReviewEvidenceView``, the crop's sha256, never its bytes).
``/console/audit``
    the audit chain's verification and head, the last transparency report, the assessments and
    their evaluation reports.
``/console/admin``
    keys (never secrets) and profiles, read-only, for admin keys.

Sessions and CSRF: :mod:`regard.api.console.sessions`. Every response carries a strict
Content-Security-Policy (no inline script or style, no external asset), ``nosniff``,
``no-referrer`` and ``no-store``. docs/review.md is the reviewer's guide.
"""

from __future__ import annotations

from regard.api.console.routes import SECURITY_HEADERS, console_routes

__all__ = ["SECURITY_HEADERS", "console_routes"]
