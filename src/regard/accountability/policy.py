"""Policy profiles: what an access key may do, and with which error rates.

Each access key names a profile (``regard keys create --profile``). Profiles live in a readable
TOML file, ``<data_dir>/policy.toml``, written with the defaults below on first use; ``regard
policy show|set`` reads and changes it and every change is audited.

With a shared PostgreSQL database (``REGARD_DATABASE_URL``, several nodes) the same TOML text is
kept in the database's append-only ``policy_documents`` table instead: each change adds the whole
new document as the next version, and the newest is the policy. A change made on any node takes
effect on every node at its next policy load (every request loads it: one query for the newest
version number, a parse only when it changed); changes from several nodes at once are serialised
by an advisory lock, so none is lost. The older versions stay as a record of what was in force.

A profile says:

``operations`` / ``collections``
    the Rekognition operations (any the API serves, see :mod:`regard.catalogue`) and the
    collection ids (shell-style patterns) it may use;
``roles``
    the key roles allowed to use it (a key's role is set at ``regard keys create --role``);
``max_fmr``
    the threshold floor of a 1:1 comparison as a false-match rate per comparison: a
    CompareFaces ``SimilarityThreshold`` (or any search threshold) whose estimated FMR is above
    it is too low;
``max_fpir``
    the threshold floor of a 1:N search as a false positive identification rate per search.
    FPIR is about gallery size x FMR, so the per-comparison rate allowed is
    ``max_fpir / gallery_size`` and the similarity floor rises as the collection grows;
``on_low_threshold``
    ``deny`` (AccessDeniedException) or ``raise`` (the threshold is raised to the floor; the
    response's ``x-regard-effective-threshold`` header and the audit record show it);
``require_purpose`` / ``require_case_reference``
    whether biometric requests must carry ``x-regard-purpose`` / ``x-regard-case-reference``;
``require_provenance``
    whether IndexFaces must carry ``x-regard-source`` and ``x-regard-legal-basis``;
``two_person_review``
    whether 1:N search results become investigative leads pending two verifiers;
``require_assessment``
    whether the profile's 1:N searches (and IndexFaces into its collections, the watch lists)
    need a current human-rights impact assessment approved by an assessor
    (:mod:`regard.accountability.assessment`; ``regard assess``);
``suspend_on_drift`` / ``drift_window`` / ``drift_alpha``
    the drift signal: when, over the last ``drift_window`` leads reviewers decided, the share
    they rejected is higher than the assessment predicted (one-sided binomial test at level
    ``drift_alpha``), an audit record says so and, with ``suspend_on_drift``, the assessment is
    suspended (the gate closes) until a new one is approved;
``rate_per_second`` / ``burst``
    a token bucket per access key (per server process); beyond it ThrottlingException.
"""

from __future__ import annotations

import fnmatch
import math
import os
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regard import datadir
from regard.catalogue import OPERATIONS_BY_NAME, served_names
from regard.errors import AccessDenied, InvalidParameter, Throttling
from regard.scoring.calibrate import similarity_from_fmr
from regard.shared_db import Cursor, SharedDb

POLICY_NAME = "policy.toml"

ROLES = ("admin", "operator", "verifier", "assessor")
ON_LOW = ("deny", "raise")


@dataclass(frozen=True, slots=True)
class Profile:
    """One policy profile (see the module docstring for each field)."""

    name: str
    description: str = ""
    operations: tuple[str, ...] = ()
    collections: tuple[str, ...] = ("*",)
    roles: tuple[str, ...] = ("admin", "operator", "verifier")
    max_fmr: float = 1e-4
    max_fpir: float = 0.0  # 0: no FPIR floor (max_fmr alone applies to searches too)
    on_low_threshold: str = "deny"
    require_purpose: bool = False
    require_case_reference: bool = False
    require_provenance: bool = False
    two_person_review: bool = False
    require_assessment: bool = False
    suspend_on_drift: bool = False
    drift_window: int = 50
    drift_alpha: float = 0.01
    rate_per_second: float = 20.0
    burst: int = 40

    def allows_operation(self, operation: str) -> bool:
        return "*" in self.operations or operation in self.operations

    def allows_collection(self, collection_id: str) -> bool:
        return any(fnmatch.fnmatchcase(collection_id, p) for p in self.collections)

    def floor_fmr(self, operation: str, gallery_size: int | None) -> float:
        """The largest per-comparison FMR a threshold of ``operation`` may stand for."""
        fmr = self.max_fmr if self.max_fmr > 0 else 1.0
        op = OPERATIONS_BY_NAME.get(operation)
        if op is not None and op.identification and self.max_fpir > 0:
            fmr = min(fmr, self.max_fpir / max(1, gallery_size or 0))
        return fmr

    def floor_similarity(self, operation: str, gallery_size: int | None) -> float:
        return similarity_from_fmr(self.floor_fmr(operation, gallery_size))

    def validate(self) -> Profile:
        served = served_names()
        for op in self.operations:
            if op != "*" and op not in served:
                raise InvalidParameter(f"profile {self.name}: unknown operation {op!r}")
        if self.on_low_threshold not in ON_LOW:
            raise InvalidParameter(f"profile {self.name}: on_low_threshold must be deny or raise")
        for r in self.roles:
            if r not in ROLES:
                raise InvalidParameter(f"profile {self.name}: unknown role {r!r} (roles: {', '.join(ROLES)})")
        if not (0.0 <= self.max_fmr <= 1.0) or not (0.0 <= self.max_fpir <= 1.0):
            raise InvalidParameter(f"profile {self.name}: max_fmr and max_fpir are rates between 0 and 1")
        if self.drift_window < 1 or not (0.0 < self.drift_alpha < 1.0):
            raise InvalidParameter(f"profile {self.name}: drift_window >= 1 and 0 < drift_alpha < 1")
        if self.rate_per_second < 0 or self.burst < 0:
            raise InvalidParameter(f"profile {self.name}: rate_per_second and burst must be >= 0")
        return self


_BIOMETRIC_READS = (
    "DetectFaces",
    "CompareFaces",
    "DescribeCollection",
    "ListCollections",
    "ListTagsForResource",
    "StartFaceDetection",
    "GetFaceDetection",
)

DEFAULT_PROFILES: dict[str, Profile] = {
    "verification": Profile(
        name="verification",
        description="1:1 verification: compare a probe with a claimed identity's reference image.",
        operations=_BIOMETRIC_READS,
        roles=("operator", "verifier", "admin"),
        max_fmr=1e-4,
        on_low_threshold="deny",
        rate_per_second=20.0,
        burst=40,
    ),
    "identification": Profile(
        name="identification",
        description=(
            "1:N identification against a watch-list: purpose and case reference required, "
            "FPIR floor that rises with the gallery, two-person verification of every candidate."
        ),
        operations=(
            "DetectFaces",
            "CompareFaces",
            "DescribeCollection",
            "ListCollections",
            "ListFaces",
            "ListUsers",
            "IndexFaces",
            "DeleteFaces",
            "CreateUser",
            "DeleteUser",
            "AssociateFaces",
            "DisassociateFaces",
            "SearchFaces",
            "SearchFacesByImage",
            "SearchUsers",
            "SearchUsersByImage",
            "ListTagsForResource",
            "StartFaceDetection",
            "GetFaceDetection",
            "StartFaceSearch",
            "GetFaceSearch",
        ),
        roles=("operator", "verifier", "admin"),
        max_fmr=1e-4,
        max_fpir=1e-3,
        on_low_threshold="deny",
        require_purpose=True,
        require_case_reference=True,
        require_provenance=True,
        two_person_review=True,
        require_assessment=True,
        suspend_on_drift=True,
        rate_per_second=5.0,
        burst=10,
    ),
    "assessment": Profile(
        name="assessment",
        description=(
            "Independent assessors: approve or reject human-rights impact assessments "
            "(/regard/assessments, regard assess approve|reject); no biometric operation."
        ),
        operations=(),
        roles=("assessor",),
        rate_per_second=5.0,
        burst=10,
    ),
    "admin": Profile(
        name="admin",
        description=(
            "Administration and testing by the operator: every operation, no threshold floor "
            "(still audited and rate-limited). Give people doing biometric work another profile."
        ),
        operations=("*",),
        roles=("admin",),
        max_fmr=1.0,
        on_low_threshold="deny",
        rate_per_second=100.0,
        burst=200,
    ),
}


#: The rights of the operator at the command line (``regard index|search|users|collections``),
#: who works on the data directory directly: every operation and collection, no threshold floor,
#: no rate limit, no purpose, case reference, provenance or review required. It is not in
#: policy.toml and cannot be changed there: whoever runs the command line on the data directory
#: can rewrite that file anyway. Every operation is still recorded.
LOCAL_PROFILE = Profile(
    name="local",
    description="The operator at the command line, with the data directory's own rights.",
    operations=("*",),
    roles=("admin",),
    max_fmr=1.0,
    rate_per_second=0.0,
    burst=0,
)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The whole policy file: audit retention plus the profiles."""

    retention_floor_days: int = 183
    profiles: dict[str, Profile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise AccessDenied(f"policy profile {name!r} does not exist") from None


_PROFILE_FIELDS = {f.name: f for f in fields(Profile) if f.name != "name"}


def _coerce(name: str, value: Any, profile: str) -> Any:
    default = getattr(Profile(name="x"), name)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidParameter(f"profile {profile}: {name} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameter(f"profile {profile}: {name} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidParameter(f"profile {profile}: {name} must be a number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidParameter(f"profile {profile}: {name} must be a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        raise InvalidParameter(f"profile {profile}: {name} must be a string")
    return value


def config_from_dict(data: Mapping[str, Any]) -> PolicyConfig:
    audit = data.get("audit", {})
    retention = audit.get("retention_floor_days", 183)
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 0:
        raise InvalidParameter("audit.retention_floor_days must be a non-negative integer")
    profiles: dict[str, Profile] = {}
    for name, body in (data.get("profiles") or {}).items():
        if not isinstance(body, dict):
            raise InvalidParameter(f"profiles.{name} must be a table")
        unknown = set(body) - set(_PROFILE_FIELDS)
        if unknown:
            raise InvalidParameter(f"profile {name}: unknown settings {', '.join(sorted(unknown))}")
        values = {k: _coerce(k, v, name) for k, v in body.items()}
        profiles[name] = Profile(name=name, **values).validate()
    return PolicyConfig(retention_floor_days=retention, profiles=profiles)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(config: PolicyConfig) -> str:
    """The policy file's text (a small writer for this file's fixed shape)."""
    lines = [
        "# regard policy profiles. Change with `regard policy set PROFILE SETTING VALUE` so that the",
        "# change is audited; see docs/accountability.md for what each setting means.",
        "",
        "[audit]",
        f"retention_floor_days = {config.retention_floor_days}",
    ]
    for name, p in config.profiles.items():
        lines += ["", f"[profiles.{name}]"]
        for key, value in asdict(p).items():
            if key != "name":
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


#: The advisory lock (a fixed 64-bit number, "regardPo") that serialises every node's policy
#: changes on a shared database, so that two concurrent ``set`` calls never lose an update.
POLICY_LOCK = 0x7265_6761_7264_506F


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_setting(
    config: PolicyConfig, profile: str, setting: str, value: str
) -> tuple[PolicyConfig, Any, Any]:
    """``config`` with one setting changed from its text form: (new config, old value, new value).
    ``profile`` ``audit`` sets ``retention_floor_days``; a new profile name starts from the
    defaults."""
    if profile == "audit":
        if setting != "retention_floor_days":
            raise InvalidParameter("the audit table has only retention_floor_days")
        new_days = _parse_setting("retention_floor_days", value, 0)
        return replace(config, retention_floor_days=new_days), config.retention_floor_days, new_days
    if setting not in _PROFILE_FIELDS:
        raise InvalidParameter(f"unknown setting {setting!r}; one of {', '.join(_PROFILE_FIELDS)}")
    current = config.profiles.get(profile, Profile(name=profile))
    old = getattr(current, setting)
    new = _coerce(setting, _parse_setting(setting, value, old), profile)
    updated = replace(current, **{setting: new}).validate()
    profiles = dict(config.profiles)
    profiles[profile] = updated
    return replace(config, profiles=profiles), old, new


class PolicyStore:
    """The policy: ``<data_dir>/policy.toml`` (read again when it changes, written atomically), or,
    with ``db`` the PostgreSQL database several nodes share, that database's append-only
    ``policy_documents`` table (the newest version is the policy; ``path`` is then unused).

    Across nodes: a change made on one node is what every node's next :meth:`load` returns (each
    load asks the database for the newest version number, and parses a document only when that
    number changed). Changes are serialised by an advisory lock (:data:`POLICY_LOCK`), so
    concurrent ``set`` calls on any nodes each see the others' changes and none is lost.
    """

    def __init__(self, data_dir: Path, *, db: SharedDb | None = None) -> None:
        if db is not None and db.kind != "postgres":
            raise ValueError("policy documents live in a database only when it is PostgreSQL")
        self.path = Path(data_dir) / POLICY_NAME
        self.db = db
        self._lock = threading.Lock()
        self._cached: tuple[object, PolicyConfig] | None = None

    def describe(self) -> str:
        """Where the policy lives (never a password)."""
        if self.db is None:
            return f"policy file {self.path}"
        return f"policy documents in {self.db.describe()}"

    def load(self) -> PolicyConfig:
        if self.db is not None:
            return self._load_db()
        with self._lock:
            if not self.path.exists():
                self._write(PolicyConfig())
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)  # os.replace makes a new inode
            if self._cached and self._cached[0] == stamp:
                return self._cached[1]
            try:
                data = tomllib.loads(self.path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise InvalidParameter(f"{self.path}: {exc}") from exc
            config = config_from_dict(data)
            self._cached = (stamp, config)
            return config

    def _write(self, config: PolicyConfig) -> None:
        datadir.private_dir(self.path.parent)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = datadir.open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(to_toml(config))
        os.replace(tmp, self.path)
        self._cached = None

    def set(self, profile: str, setting: str, value: str) -> tuple[Any, Any]:
        """Change one setting from its text form; returns (old, new). ``profile`` ``audit`` sets
        ``retention_floor_days``. A new profile name creates a profile from the defaults."""
        if self.db is not None:
            return self._set_db(profile, setting, value)
        config = self.load()
        updated, old, new = apply_setting(config, profile, setting, value)
        with self._lock:
            self._write(updated)
        return old, new

    # -- the shared database ---------------------------------------------------------------
    def _parse_document(self, version: int, text: str) -> PolicyConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidParameter(f"policy document version {version}: {exc}") from exc
        return config_from_dict(data)

    def _newest(self, cur: Cursor) -> tuple[int, PolicyConfig] | None:
        """The newest document (None when there is none): one query for its version number, a
        second one and a parse only when it is not the version cached."""
        (newest,) = cur.execute("SELECT max(version) FROM policy_documents").fetchone()
        if newest is None:
            return None
        version = int(newest)
        with self._lock:
            if self._cached and self._cached[0] == version:
                return version, self._cached[1]
        (text,) = cur.execute("SELECT toml FROM policy_documents WHERE version = ?", (version,)).fetchone()
        config = self._parse_document(version, str(text))
        with self._lock:
            self._cached = (version, config)
        return version, config

    def _append(self, cur: Cursor, config: PolicyConfig) -> tuple[int, PolicyConfig]:
        """Write ``config`` as the next version (inside a transaction holding :data:`POLICY_LOCK`)."""
        (version,) = cur.execute(
            "INSERT INTO policy_documents (toml, written_at) VALUES (?, ?) RETURNING version",
            (to_toml(config), _now()),
        ).fetchone()
        return int(version), config

    def _load_db(self) -> PolicyConfig:
        assert self.db is not None
        with self.db.transaction(readonly=True) as cur:
            found = self._newest(cur)
        if found is None:  # an empty table: the first node writes the defaults, under the lock
            with self.db.transaction(lock=POLICY_LOCK) as cur:
                found = self._newest(cur) or self._append(cur, PolicyConfig())
            with self._lock:
                self._cached = found
        return found[1]

    def _set_db(self, profile: str, setting: str, value: str) -> tuple[Any, Any]:
        assert self.db is not None
        # Read, change and write under the lock: every node's set() sees the one before it.
        with self.db.transaction(lock=POLICY_LOCK) as cur:
            _, config = self._newest(cur) or self._append(cur, PolicyConfig())
            updated, old, new = apply_setting(config, profile, setting, value)
            written = self._append(cur, updated)
        with self._lock:
            self._cached = written
        return old, new


def _parse_setting(name: str, text: str, like: Any) -> Any:
    if isinstance(like, bool):
        low = text.strip().lower()
        if low not in {"true", "false", "yes", "no", "1", "0", "on", "off"}:
            raise InvalidParameter(f"{name} takes true or false")
        return low in {"true", "yes", "1", "on"}
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise InvalidParameter(f"{name} takes an integer") from None
    if isinstance(like, float):
        try:
            return float(text)
        except ValueError:
            raise InvalidParameter(f"{name} takes a number such as 1e-4") from None
    if isinstance(like, tuple):
        return [s.strip() for s in text.split(",") if s.strip()]
    return text


class RateLimiter:
    """Token buckets per access key (in this process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate: float, burst: int) -> None:
        """Spend one token or raise :class:`Throttling`. ``rate`` 0 means unlimited."""
        if rate <= 0:
            return
        now = time.monotonic()
        capacity = float(max(1, burst))
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise Throttling(f"Rate exceeded: the profile allows {rate:g} requests per second")
            self._buckets[key] = (tokens - 1.0, now)
