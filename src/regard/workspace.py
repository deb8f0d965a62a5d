"""The workspace: where one regard installation keeps its state, opened the same way by the
server and by every command.

Two layouts, chosen by one setting (``REGARD_DATABASE_URL``, or ``--database-url``):

embedded (the default)
    everything in the data directory: the collection store (SQLite + its ANN index files),
    ``keys.sqlite3`` and ``master.key``, ``policy.toml``, ``audit/``, ``review.sqlite3``.
shared (a PostgreSQL URL)
    everything nodes must agree on lives in that database: collections, faces, users,
    idempotency tokens, access keys (secrets encrypted under the master key, which stays outside
    the database: ``REGARD_MASTER_KEY``, ``REGARD_MASTER_KEY_FILE`` or ``<data_dir>/master.key``),
    policy documents, the audit chain (one chain for all nodes) and the review queue. The data
    directory then holds only what is per node: the master key file when it is kept there, and
    nothing else regard needs to share.

What stays per node in both layouts: rate-limit buckets and counts of unauthenticated refusals
(in memory, per process), the model cache, and the in-flight bound. See docs/deployment.md.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from regard.config import Settings

if TYPE_CHECKING:
    from datetime import datetime

    from regard.accountability.assessment import AssessmentStore
    from regard.accountability.audit import AuditChain
    from regard.accountability.evidence import EvidenceStore
    from regard.accountability.guard import Guard
    from regard.accountability.policy import PolicyStore
    from regard.accountability.review import ReviewQueue
    from regard.face.engine import Engine
    from regard.keys import KeyStore
    from regard.service import Service
    from regard.shared_db import PostgresDb
    from regard.video.jobs import JobStore

#: The label under which the audit anchor's HMAC key is derived from the master key, so every
#: node of one database authenticates the same anchor without another secret to distribute.
ANCHOR_KEY_LABEL = b"regard audit anchor key v1"


class Workspace:
    """The state of one installation: a data directory and, when shared, a PostgreSQL database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: PostgresDb | None = None
        self._master: bytes | None = None
        self._chains: list[AuditChain] = []  # closed with the workspace (their writer locks)
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        data_dir: Path | None = None,
        database_url: str | None = None,
        settings: Settings | None = None,
    ) -> Workspace:
        """The workspace ``settings`` (default: ``REGARD_*``) name, with a data directory or
        database URL given on the command line taking precedence."""
        settings = settings or Settings.from_env()
        overrides: dict[str, object] = {}
        if data_dir is not None:
            overrides["data_dir"] = Path(data_dir).expanduser()
        if database_url:
            overrides["database_url"] = database_url
        if overrides:
            from dataclasses import replace

            settings = replace(settings, **overrides)  # type: ignore[arg-type]
        return cls(settings)

    # -- where ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def database_url(self) -> str | None:
        return self.settings.database_url or None

    @property
    def shared(self) -> bool:
        """Whether the state lives in PostgreSQL (several nodes may share it)."""
        return self.database_url is not None

    def describe(self) -> str:
        """One line naming where the state is (no password)."""
        if self.database_url is None:
            return f"embedded store in {self.data_dir}"
        from regard.shared_db import redact_url

        return f"PostgreSQL {redact_url(self.database_url)} (node files in {self.data_dir})"

    def db(self) -> PostgresDb | None:
        """The shared database (migrated on first use), or None when embedded."""
        if self.database_url is None:
            return None
        with self._lock:
            if self._db is None:
                from regard.shared_db import PostgresDb

                self._db = PostgresDb(self.database_url)
            return self._db

    def master_key(self) -> bytes:
        """The Fernet key that encrypts access keys' secrets (the same on every node)."""
        with self._lock:
            if self._master is None:
                from regard.keys import load_master_key

                self._master = load_master_key(self.settings)
            return self._master

    # -- the parts --------------------------------------------------------------------------
    def service(self, engine: Engine | None = None) -> Service:
        """The collection service on this workspace's store."""
        from regard.service import Service

        return Service.open(self.data_dir, engine=engine, database_url=self.database_url)

    def keys(self) -> KeyStore:
        from regard.keys import KeyStore

        return KeyStore(self.data_dir, db=self.db(), master_key=self.master_key())

    def policies(self) -> PolicyStore:
        from regard.accountability.policy import PolicyStore

        return PolicyStore(self.data_dir, db=self.db())

    def audit(self, retention_floor_days: int | None = None) -> AuditChain:
        """The audit chain: the data directory's file log, or the database's single chain."""
        days = (
            retention_floor_days
            if retention_floor_days is not None
            else self.policies().load().retention_floor_days
        )
        db = self.db()
        chain: AuditChain
        if db is None:
            from regard.accountability.audit import AuditLog

            chain = AuditLog(self.data_dir, retention_floor_days=days)
        else:
            from regard.accountability.audit_pg import PgAuditLog

            anchor_key = hmac.new(self.master_key(), ANCHOR_KEY_LABEL, hashlib.sha256).digest()
            chain = PgAuditLog(db, anchor_key=anchor_key, retention_floor_days=days)
        with self._lock:
            self._chains.append(chain)
        return chain

    def review(self) -> ReviewQueue:
        from regard.accountability.review import ReviewQueue

        return ReviewQueue(self.data_dir, db=self.db())

    def evidence(self) -> EvidenceStore:
        """The encrypted face crops kept for review (``evidence.sqlite3`` or the shared database)."""
        from regard.accountability.evidence import EvidenceStore

        return EvidenceStore(self.data_dir, master_key=self.master_key(), db=self.db())

    def assessments(self, clock: Callable[[], datetime] | None = None) -> AssessmentStore:
        """The human-rights impact assessments (``assessments.sqlite3`` or the shared database)."""
        from regard.accountability.assessment import AssessmentStore, system_clock

        return AssessmentStore(self.data_dir, db=self.db(), clock=clock or system_clock)

    def video_jobs(self) -> JobStore:
        """The stored-video jobs (``video_jobs.sqlite3`` or the shared database)."""
        from regard.video.jobs import JobStore

        return JobStore(self.data_dir, db=self.db())

    def guard(
        self,
        service_factory: Callable[[], Service] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Guard:
        """The guard (policy, audit, review) of this workspace's operations."""
        from regard.accountability.guard import Guard

        policies = self.policies()
        return Guard(
            self.data_dir,
            service_factory=service_factory,
            audit=self.audit(policies.load().retention_floor_days),
            policies=policies,
            review=self.review,  # opened on first use: a guard that never makes leads opens none
            assessments=self.assessments(clock),
            evidence=self.evidence,  # opened on first use
        )

    def close(self) -> None:
        """Close the audit chains opened here (releasing their writer locks) and the database."""
        with self._lock:
            for chain in self._chains:
                chain.close()
            self._chains.clear()
            if self._db is not None:
                self._db.close()
            self._db = None
