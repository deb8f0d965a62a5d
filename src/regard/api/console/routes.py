"""The console's routes (see :mod:`regard.api.console`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from regard.accountability.audit import AuditChain
from regard.accountability.evidence import LeadEvidence
from regard.accountability.guard import Guard
from regard.accountability.records import append_failure
from regard.accountability.request import Caller, RequestInfo
from regard.accountability.review import PENDING, STATUSES
from regard.accountability.reviewing import READERS, ReviewDesk, covers
from regard.api.accountability import note_refusal, refuse_unauthenticated, review_desk
from regard.api.console import pages
from regard.api.console.sessions import Session, SessionStore, csrf_of
from regard.api.refusals import RefusalLedger
from regard.api.signing import authenticate, read_body
from regard.config import Settings
from regard.errors import AccessDenied, ConflictError, RegardError, ResourceNotFound
from regard.keys import KeyStore
from regard.workspace import Workspace

COOKIE = "regard_console"
#: Every console response carries these.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: The static files (name -> media type); nothing else under static/ is served.
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "sigv4.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
}
MAX_SIGN_IN_BODY = 1024
MAX_FORM_BODY = 16 * 1024
MAX_NOTE = 1000
CROPS = ("probe", "candidate")

Handler = Callable[[Request], Awaitable[Response]]


def secured(handler: Handler) -> Handler:
    """``handler`` with :data:`SECURITY_HEADERS` on each of its responses."""

    async def wrapped(request: Request) -> Response:
        response = await handler(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response

    return wrapped


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8")


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def same_origin(request: Request) -> bool:
    """Whether the request comes from the console's own pages, as far as the browser says:
    ``Sec-Fetch-Site`` (when sent) is ``same-origin``, and ``Origin`` (when sent, and not the
    ``null`` a browser sends under ``Referrer-Policy: no-referrer``) is this server's: the scheme
    the request came in with (or https, behind a proxy that ends TLS) and its Host. The CSRF token
    is checked whatever this says."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return bool(host) and parts.netloc == host and parts.scheme in {request.url.scheme, "https"}


@dataclass
class Signed:
    """A request's session, the caller it stands for and its CSRF token."""

    session: Session
    caller: Caller
    csrf: str

    @property
    def who(self) -> dict[str, str]:
        return {"principal": self.caller.principal, "role": self.caller.role, "profile": self.caller.profile}


def console_routes(
    workspace: Workspace,
    keys: KeyStore,
    guard_of: Callable[[], Guard],
    settings: Settings,
    refusals: RefusalLedger | None = None,
) -> list[Route]:
    """The console's routes, for the API app (:func:`regard.api.app.create_app`)."""
    region = settings.region or "us-east-1"
    opened: dict[str, Any] = {}  # the session and evidence stores, opened on first use
    lock = threading.Lock()

    def sessions() -> SessionStore:
        with lock:
            if "sessions" not in opened:
                opened["sessions"] = SessionStore(
                    workspace.data_dir,
                    db=workspace.db(),
                    idle_timeout=settings.console_idle_timeout,
                    lifetime=settings.console_session_lifetime,
                )
            store: SessionStore = opened["sessions"]
            return store

    def kept(lead_id: str) -> LeadEvidence | None:
        """The lead's crops, from the guard's evidence store (None: none kept)."""
        store = guard_of().evidence
        return None if store is None else store.lead(lead_id)

    def desk() -> ReviewDesk:
        """The desk as the signed HTTP endpoints make it (same audit records, same evidence sweep)."""
        return review_desk(guard_of(), settings.evidence_retention_days)

    def audit() -> AuditChain:
        return guard_of().audit

    def current(request: Request) -> Signed | None:
        """The request's open session (its key still active), or None."""
        token = request.cookies.get(COOKIE)
        session = sessions().lookup(token)
        if session is None or token is None:
            return None
        try:
            key = keys.get(session.access_key_id)
        except RegardError:
            key = None
        if key is None or not key.active:
            sessions().end(session.session_hash)
            return None
        caller = Caller(session.access_key_id, session.principal, session.role, session.profile)
        return Signed(session, caller, csrf_of(token))

    def record(
        signed: Signed | None, operation: str, kind: str, request_id: str, **fields: Any
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "kind": kind,
            "request_id": request_id,
            "access_key_id": signed.caller.access_key_id if signed else None,
            "principal": signed.caller.principal if signed else None,
            "role": signed.caller.role if signed else None,
            "profile": signed.caller.profile if signed else None,
            "operation": operation,
            "parameters": {"via": "console", **fields},
        }
        return rec

    def write(rec: dict[str, Any], exc: RegardError | None = None) -> None:
        if exc is None:
            rec["outcome"] = "success"
            audit().append(rec)
        else:
            append_failure(audit(), rec, exc)

    def login_redirect() -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console", secure=True, httponly=True, samesite="strict")
        return response

    def refused(status: int, title: str, message: str, signed: Signed | None) -> Response:
        chrome: dict[str, Any] = {"who": signed.who, "csrf": signed.csrf} if signed else {}
        link = ("/console", "Back to the leads") if signed else ("/console/login", "Sign in")
        return _html(pages.message_page(title, message, link=link, **chrome), status)

    async def form_of(request: Request) -> dict[str, str]:
        from urllib.parse import parse_qs

        body = await read_body(request, MAX_FORM_BODY, settings.api_body_timeout)
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            return {}
        parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=10)
        return {k: v[0] for k, v in parsed.items()}

    async def checked_post(request: Request) -> tuple[Signed | None, dict[str, str], Response | None]:
        """A state-changing POST's session, form and, when it is refused, the response (401 without a
        session, 403 for a foreign Origin or a missing or wrong CSRF token)."""
        form = await form_of(request)
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return None, form, refused(401, "Signed out", "Your session has ended: sign in again.", None)
        if not same_origin(request):
            return signed, form, refused(403, "Refused", "This form was sent from another site.", signed)
        if not signed.session.csrf_ok(form.get("csrf")):
            return signed, form, refused(403, "Refused", "The form's CSRF token is missing or wrong.", signed)
        return signed, form, None

    # -- sign-in and sign-out ---------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        if await run_in_threadpool(current, request) is not None:
            return RedirectResponse("/console", status_code=303)
        return _html(pages.login(region))

    async def sign_in(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        guard = guard_of()
        try:
            if not same_origin(request):
                raise AccessDenied("sign-in from another site")
            body = await read_body(request, MAX_SIGN_IN_BODY, settings.api_body_timeout)
            key = await authenticate(keys, request, body, region)
        except RegardError as exc:
            if refusals is not None:
                exc = await refuse_unauthenticated(
                    guard, refusals, _source(request), "ConsoleSignIn", request_id, exc
                )
            else:
                await run_in_threadpool(
                    note_refusal, guard, "ConsoleSignIn", request_id, None, exc, _source(request)
                )
            status = exc.http_status if exc.http_status in (408, 413, 429) else 403
            return JSONResponse({"error": exc.code, "message": exc.message}, status_code=status)
        token, session = await run_in_threadpool(lambda: sessions().open(key))
        caller = Caller(key.access_key_id, key.name, key.role, key.profile)
        rec = record(Signed(session, caller, ""), "ConsoleSignIn", "access", request_id)
        rec["source"] = _source(request)
        rec["results"] = {
            "idle_timeout": settings.console_idle_timeout,
            "lifetime": settings.console_session_lifetime,
        }
        await run_in_threadpool(write, rec)
        response = JSONResponse({"signed_in": key.name, "next": "/console"})
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(settings.console_session_lifetime),
            path="/console",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_out(request: Request) -> Response:
        signed, _, refusal = await checked_post(request)
        if refusal is not None or signed is None:
            return refusal or login_redirect()
        ended = signed.session.session_hash
        await run_in_threadpool(lambda: sessions().end(ended))
        rec = record(signed, "ConsoleSignOut", "access", str(uuid.uuid4()))
        rec["source"] = _source(request)
        await run_in_threadpool(write, rec)
        return login_redirect()

    # -- the leads ---------------------------------------------------------------------------
    async def lead_list(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return login_redirect()
        status = request.query_params.get("status", PENDING).upper()
        if status != "ALL" and status not in STATUSES:
            status = PENDING
        leads: list[dict[str, Any]] | None = None
        error = None
        try:
            leads = await run_in_threadpool(
                desk().list,
                signed.caller,
                RequestInfo(str(uuid.uuid4())),
                None if status == "ALL" else status,
            )
        except RegardError as exc:
            error = exc.message
        body = pages.lead_list(leads, status, error)
        title = "Pending leads" if status == PENDING else "Leads"
        return _html(pages.page(title, body, who=signed.who, csrf=signed.csrf), 200 if error is None else 403)

    def view_lead(
        signed: Signed, lead_id: str, operation: str = "ReviewLeadView"
    ) -> tuple[dict[str, Any], Any]:
        """The lead as the reviewer may see it (role, profile's scope), the access logged;
        with the reviewer's profile."""
        the_desk = desk()
        rec = record(signed, operation, "review", str(uuid.uuid4()), lead_id=lead_id)
        try:
            if signed.caller.role not in READERS:
                raise AccessDenied("only verifier and admin keys may read the review queue")
            profile = the_desk.profile(signed.caller)
            lead = the_desk.queue.get(lead_id)
            if not covers(profile, lead):
                raise AccessDenied(f"lead {lead_id} is outside profile {profile.name}")
        except RegardError as exc:
            append_failure(the_desk.audit, rec, exc)
            raise
        rec["collection"] = lead.collection_id
        rec["case_reference"] = lead.case_reference
        rec["results"] = {"lead_status": lead.status}
        rec["outcome"] = "success"
        the_desk.audit.append(rec)
        return lead.to_json(), profile

    def render_lead(signed: Signed, lead_id: str, **extra: Any) -> str:
        lead, profile = view_lead(signed, lead_id)
        crops = kept(lead_id)
        floor = {"profile": profile.name, "max_fmr": profile.max_fmr, "max_fpir": profile.max_fpir}
        body = pages.lead_page(
            lead,
            probe=crops is not None and crops.probe is not None,
            candidate=crops is not None and crops.candidate is not None,
            floor=floor,
            viewer=signed.who,
            csrf=signed.csrf,
            **extra,
        )
        return pages.page(f"Lead {lead_id}", body, who=signed.who, csrf=signed.csrf)

    def lead_error(signed: Signed, exc: RegardError) -> Response:
        status = 404 if isinstance(exc, ResourceNotFound) else 403
        return refused(status, "Lead not shown", exc.message, signed)

    async def lead_page(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return login_redirect()
        lead_id = request.path_params["lead_id"]
        done = request.query_params.get("done")
        message = {"confirm": "Your confirmation is recorded.", "reject": "Your rejection is recorded."}.get(
            done or ""
        )
        try:
            text = await run_in_threadpool(render_lead, signed, lead_id, done=message)
        except RegardError as exc:
            return lead_error(signed, exc)
        return _html(text)

    async def decide(request: Request) -> Response:
        signed, form, refusal = await checked_post(request)
        if refusal is not None or signed is None:
            return refusal or login_redirect()
        lead_id = request.path_params["lead_id"]
        decision = form.get("decision", "")
        note = form.get("note", "").strip()
        error: str | None = None
        status = 200
        if decision not in ("confirm", "reject"):
            error, status = "Choose Confirm or Reject.", 400
        elif not note:
            error, status = "A note is required: say what you compared and why you decide so.", 400
        elif len(note) > MAX_NOTE:
            error, status = f"The note is longer than {MAX_NOTE} characters.", 400
        else:
            try:
                await run_in_threadpool(
                    desk().decide, lead_id, decision, signed.caller, RequestInfo(str(uuid.uuid4())), note
                )
            except RegardError as exc:
                error = exc.message
                status = (
                    409
                    if isinstance(exc, ConflictError)
                    else 404
                    if isinstance(exc, ResourceNotFound)
                    else 403
                )
            else:
                return RedirectResponse(f"/console/leads/{lead_id}?done={decision}", status_code=303)
        try:
            text = await run_in_threadpool(render_lead, signed, lead_id, error=error, note=note)
        except RegardError as exc:
            return lead_error(signed, exc)
        return _html(text, status)

    # -- the crops ----------------------------------------------------------------------------
    def read_crop(signed: Signed, lead_id: str, which: str) -> bytes | None:
        """The crop, its view logged (``ReviewEvidenceView``: its sha256, never its bytes)."""
        view_lead_rec = record(
            signed, "ReviewEvidenceView", "review", str(uuid.uuid4()), lead_id=lead_id, crop=which
        )
        the_desk = desk()
        try:
            if signed.caller.role not in READERS:
                raise AccessDenied("only verifier and admin keys may see the evidence of leads")
            lead = the_desk.queue.get(lead_id)
            if not covers(the_desk.profile(signed.caller), lead):
                raise AccessDenied(f"lead {lead_id} is outside profile {signed.caller.profile}")
            crops = kept(lead_id)
            crop = None if crops is None else getattr(crops, which)
            if crop is None:
                raise ResourceNotFound(f"no {which} crop is kept for lead {lead_id}")
        except RegardError as exc:
            append_failure(the_desk.audit, view_lead_rec, exc)
            raise
        view_lead_rec["collection"] = lead.collection_id
        view_lead_rec["case_reference"] = lead.case_reference
        view_lead_rec["results"] = {"sha256": hashlib.sha256(crop).hexdigest(), "bytes": len(crop)}
        view_lead_rec["outcome"] = "success"
        the_desk.audit.append(view_lead_rec)
        return bytes(crop)

    async def crop(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        which = request.path_params["which"]
        if which not in CROPS:
            return Response("no such crop", status_code=404, media_type="text/plain")
        try:
            data = await run_in_threadpool(read_crop, signed, request.path_params["lead_id"], which)
        except ResourceNotFound as exc:
            return Response(exc.message, status_code=404, media_type="text/plain")
        except RegardError as exc:
            return Response(exc.message, status_code=403, media_type="text/plain")
        return Response(data, media_type="image/jpeg")

    # -- the audit log, keys and profiles ----------------------------------------------------------
    def audit_status() -> str:
        chain = audit()
        check = chain.verify()
        head = chain.head()
        latest: dict[str, Any] | None = None
        for rec in chain.records():
            if rec.get("operation") == "TransparencyReport" and rec.get("outcome") == "success":
                latest = rec
        trans = None
        if latest is not None:
            out = str((latest.get("parameters") or {}).get("out", ""))
            trans = {
                "time": latest.get("time"),
                "principal": latest.get("principal"),
                "head_seq": (latest.get("results") or {}).get("head_seq"),
                "out": out,
                "available": bool(out) and (Path(out) / "transparency.json").is_file(),
            }
        found = []
        store = guard_of().assessments
        for a in store.list():
            found.append(
                {
                    "id": a.assessment_id,
                    "status": a.status,
                    "profile": a.profile,
                    "collections": list(a.collections),
                    "reports": list(a.record.get("reports") or []),
                }
            )
        verify = {"ok": check.ok, "describe": check.describe()}
        return pages.audit_page(verify, head, trans, found)

    async def audit_page(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return login_redirect()
        if signed.caller.role not in READERS:
            return refused(403, "Refused", "Only verifier and admin keys see the audit log's status.", signed)
        text = await run_in_threadpool(audit_status)
        return _html(pages.page("Audit log", text, who=signed.who, csrf=signed.csrf))

    def latest_transparency() -> Path | None:
        found = None
        for rec in audit().records():
            if rec.get("operation") == "TransparencyReport" and rec.get("outcome") == "success":
                found = (rec.get("parameters") or {}).get("out")
        path = Path(str(found)) / "transparency.json" if found else None
        return path if path is not None and path.is_file() else None

    async def transparency(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return login_redirect()
        if signed.caller.role not in READERS:
            return refused(403, "Refused", "Only verifier and admin keys see the reports.", signed)
        path = await run_in_threadpool(latest_transparency)
        if path is None:
            return refused(404, "No report", "No transparency report is available.", signed)
        data = json.loads(path.read_text(encoding="utf-8"))
        return JSONResponse(data)

    def admin_view(signed: Signed) -> str:
        rec = record(signed, "ConsoleAdminView", "access", str(uuid.uuid4()))
        with contextlib.suppress(RegardError):
            write(rec)
        rows = [
            {
                "id": k.access_key_id,
                "name": k.name,
                "role": k.role,
                "profile": k.profile,
                "created": k.created_at,
                "revoked": k.revoked_at,
            }
            for k in keys.list()
        ]
        profiles = [
            {
                "name": p.name,
                "roles": list(p.roles),
                "collections": list(p.collections),
                "max_fmr": p.max_fmr,
                "max_fpir": p.max_fpir,
                "two_person_review": p.two_person_review,
                "require_assessment": p.require_assessment,
                "description": p.description,
            }
            for p in guard_of().policies.load().profiles.values()
        ]
        return pages.admin_page(rows, profiles)

    async def admin_page(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        if signed is None:
            return login_redirect()
        if signed.caller.role != "admin":
            return refused(403, "Refused", "Keys and profiles are shown to admin keys only.", signed)
        text = await run_in_threadpool(admin_view, signed)
        return _html(pages.page("Keys and profiles", text, who=signed.who, csrf=signed.csrf))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        media = STATIC.get(name)
        if media is None:
            return Response("not found", status_code=404, media_type="text/plain")
        data = resources.files("regard.api.console").joinpath("static", name).read_bytes()
        return Response(data, media_type=media)

    async def not_found(request: Request) -> Response:
        return Response("not found", status_code=404, media_type="text/plain")

    routes = [
        Route("/console", lead_list, methods=["GET"]),
        Route("/console/", lead_list, methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/session", sign_in, methods=["POST"]),
        Route("/console/logout", sign_out, methods=["POST"]),
        Route("/console/leads/{lead_id}", lead_page, methods=["GET"]),
        Route("/console/leads/{lead_id}/decide", decide, methods=["POST"]),
        Route("/console/crops/{lead_id}/{which}", crop, methods=["GET"]),
        Route("/console/audit", audit_page, methods=["GET"]),
        Route("/console/reports/transparency", transparency, methods=["GET"]),
        Route("/console/admin", admin_page, methods=["GET"]),
        Route("/console/static/{name}", static, methods=["GET"]),
        Route("/console/{rest:path}", not_found),
    ]
    return [Route(r.path, secured(r.endpoint), methods=r.methods, name=r.name) for r in routes]
