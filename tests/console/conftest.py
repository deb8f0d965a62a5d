"""One live ``regard serve`` for the console's tests, with the people of a two-person review and
two pending leads raised by a real 1:N search under the identification profile."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from accountability.helpers import open_gate
from live_server import KeyedServer, start_keyed

CASE = {"x-regard-purpose": "locate a missing person", "x-regard-case-reference": "CASE-18"}
PROVENANCE = {"x-regard-source": "photo handed in by the family", "x-regard-legal-basis": "consent"}
PEOPLE = {
    "admin": ("admin", "admin"),
    "investigator": ("operator", "identification"),  # not a verifier, may not read the queue
    "rhea": ("verifier", "identification"),  # runs the searches: the requester
    "vera": ("verifier", "identification"),
    "victor": ("verifier", "identification"),
    "sam": ("admin", "identification"),  # a supervisor: reads the queue, is no verifier
    "otto": ("verifier", "verification"),  # a verifier whose profile covers no lead
}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cookies(self) -> list[str]:
        return self.headers.get_all("set-cookie") or []


@dataclass
class Scenario:
    server: KeyedServer
    face_id: str
    #: Confirmed by the two verifiers in the browser test.
    lead_to_confirm: str
    #: Left pending: the refusals are tried on it.
    lead_pending: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def request(
        self,
        method: str,
        path: str,
        *,
        cookie: str | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One HTTP request (no redirect followed)."""
        parts = urlsplit(self.endpoint)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        try:
            sent = dict(headers or {})
            if cookie is not None:
                sent["Cookie"] = f"regard_console={cookie}"
            conn.request(method, path, body=body if method == "POST" else None, headers=sent)
            r = conn.getresponse()
            return Answer(r.status, r.headers, r.read())
        finally:
            conn.close()

    def sign_in(self, who: str, secret: str | None = None) -> Answer:
        """``POST /console/session`` signed as ``who`` (with ``secret`` instead of theirs, if given)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        akid, real = self.server.keys[who]
        req = AWSRequest(method="POST", url=self.endpoint + "/console/session", data=b"")
        SigV4Auth(Credentials(akid, secret or real), "rekognition", "us-east-1").add_auth(req)
        return self.request("POST", "/console/session", headers=dict(req.headers.items()))

    def session(self, who: str) -> str:
        """A new session's token (the cookie's value) for ``who``."""
        answer = self.sign_in(who)
        assert answer.status == 200, answer.text
        (cookie,) = answer.cookies()
        return cookie.split(";")[0].split("=", 1)[1]

    def csrf(self, cookie: str, path: str = "/console") -> str:
        page = self.request("GET", path, cookie=cookie)
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def post_form(
        self, path: str, cookie: str | None, fields: dict[str, str], headers: dict[str, str] | None = None
    ) -> Answer:
        return self.request(
            "POST",
            path,
            cookie=cookie,
            body=urlencode(fields).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )

    def lead(self, lead_id: str) -> dict[str, Any]:
        """The lead as the signed HTTP review endpoint reports it."""
        status, body = self.server.signed("vera", "GET", "/regard/review/leads?status=ALL")
        assert status == 200, body
        found: dict[str, Any] = next(x for x in body["Leads"] if x["LeadId"] == lead_id)
        return found

    def audit(self) -> list[dict[str, Any]]:
        return self.server.audit()


def _search(server: KeyedServer, who: str, image: bytes) -> str:
    found = server.client(who, CASE).search_faces_by_image(CollectionId="watch", Image={"Bytes": image})
    assert found["ResponseMetadata"]["HTTPHeaders"]["x-regard-review"] == "PENDING_VERIFICATION"
    return str(found["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"])


@pytest.fixture(scope="package")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, fr_images: Path, photos: dict[str, bytes]
) -> Iterator[Scenario]:
    data = tmp_path_factory.mktemp("console") / "data"
    data.mkdir()
    open_gate(data, ["watch"], fr_images)  # identification needs an approved assessment
    server = start_keyed(data, PEOPLE)
    try:
        admin = server.client("admin", {**CASE, **PROVENANCE})
        admin.create_collection(CollectionId="watch")
        face_id = admin.index_faces(CollectionId="watch", Image={"Bytes": photos["obama"]})["FaceRecords"][0][
            "Face"
        ]["FaceId"]
        _search(server, "rhea", photos["obama2"])
        _search(server, "rhea", photos["obama3"])
        status, body = server.signed("vera", "GET", "/regard/review/leads")
        assert status == 200, body
        leads = sorted(body["Leads"], key=lambda x: x["CreatedAt"])
        assert len(leads) == 2 and all(x["FaceId"] == face_id for x in leads)
        yield Scenario(server, face_id, leads[0]["LeadId"], leads[1]["LeadId"])
    finally:
        server.stop()


def audit_text(data_dir: Path) -> str:
    """Every audit record as JSON text (to look for what must never be there)."""
    from regard.accountability.audit import AuditLog

    return "\n".join(json.dumps(r) for r in AuditLog(data_dir).records())
