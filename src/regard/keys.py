"""Access keys that regard manages for AWS Signature Version 4.

SigV4 needs the secret itself at verification time (the server recomputes the HMAC),
so secrets cannot be stored as one-way hashes. They are encrypted at rest with
Fernet (AES-128-CBC + HMAC-SHA256) under a master key kept in ``<data_dir>/master.key``
(mode 0600); the key table lives in ``<data_dir>/keys.sqlite3``. A secret is shown
once, when the key is created, and never logged.

Each key carries a ``role`` and a ``profile`` (both "admin" by default) that policy
code can use to restrict what the key may do.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import string
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from regard import datadir
from regard.errors import InvalidParameter, RegardError, ResourceNotFound

#: Access key ids look like AWS's (20 upper-case characters) but start with this prefix.
KEY_PREFIX = "RGRD"
_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_NAME_MAX = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_encrypted BLOB NOT NULL,
    role TEXT NOT NULL DEFAULT 'admin',
    profile TEXT NOT NULL DEFAULT 'admin',
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


class KeyStoreCorrupt(RegardError):
    """The master key cannot decrypt a stored secret (wrong or replaced master.key)."""


@dataclass(frozen=True, slots=True)
class AccessKey:
    """One access key, without its secret."""

    access_key_id: str
    name: str
    role: str
    profile: str
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``, failing if it already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class KeyStore:
    """The key table of one data directory. Safe to share between threads and processes."""

    #: Seconds a decrypted secret is kept in memory before the table is read again.
    CACHE_SECONDS = 2.0

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = datadir.private_dir(Path(data_dir))
        datadir.secure(self.data_dir)  # the start-up check of the data directory's modes
        self.db_path = datadir.private_file(self.data_dir / "keys.sqlite3")
        self.master_path = self.data_dir / "master.key"
        self._fernet = Fernet(self._master_key())
        self._cache: dict[str, tuple[float, AccessKey, str]] = {}
        self._lock = threading.Lock()
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    def _master_key(self) -> bytes:
        if not self.master_path.exists():
            with contextlib.suppress(FileExistsError):  # another process may create it first
                _write_private(self.master_path, Fernet.generate_key())
        mode = self.master_path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(self.master_path, 0o600)
        return self.master_path.read_bytes().strip()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30.0)
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    @staticmethod
    def _row(row: tuple[str, str, str, str, str, str | None]) -> AccessKey:
        return AccessKey(*row)

    def create(self, name: str, *, role: str = "admin", profile: str = "admin") -> tuple[AccessKey, str]:
        """A new key: returns it and its secret (the only time the secret is revealed)."""
        name = name.strip()
        if not name or len(name) > _NAME_MAX:
            raise InvalidParameter(f"key name must be 1-{_NAME_MAX} characters")
        if not role or not profile:
            raise InvalidParameter("role and profile must not be empty")
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        token = self._fernet.encrypt(secret.encode())
        for _ in range(5):
            akid = KEY_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
            key = AccessKey(akid, name, role, profile, _now(), None)
            try:
                with closing(self._connect()) as db, db:
                    db.execute(
                        "INSERT INTO access_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (akid, name, token, role, profile, key.created_at),
                    )
            except sqlite3.IntegrityError:
                continue
            return key, secret
        raise RegardError("could not allocate a unique access key id")

    def list(self, *, include_revoked: bool = True) -> list[AccessKey]:
        sql = "SELECT access_key_id, name, role, profile, created_at, revoked_at FROM access_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        with closing(self._connect()) as db:
            return [self._row(r) for r in db.execute(sql + " ORDER BY rowid")]

    def get(self, access_key_id: str) -> AccessKey:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT access_key_id, name, role, profile, created_at, revoked_at FROM access_keys "
                "WHERE access_key_id = ?",
                (access_key_id,),
            ).fetchone()
        if row is None:
            raise ResourceNotFound(f"access key {access_key_id} does not exist")
        return self._row(row)

    def revoke(self, access_key_id: str) -> AccessKey:
        """Revoke a key; it stops working within :attr:`CACHE_SECONDS` in every server process."""
        with closing(self._connect()) as db, db:
            cur = db.execute(
                "UPDATE access_keys SET revoked_at = ? WHERE access_key_id = ? AND revoked_at IS NULL",
                (_now(), access_key_id),
            )
            changed = cur.rowcount
        key = self.get(access_key_id)
        if not changed and key.revoked_at is None:  # pragma: no cover - raced with nothing
            raise ResourceNotFound(f"access key {access_key_id} does not exist")
        with self._lock:
            self._cache.pop(access_key_id, None)
        return key

    def secret_for(self, access_key_id: str) -> tuple[AccessKey, str] | None:
        """The active key and its secret, or ``None`` when the id is unknown or revoked."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(access_key_id)
            if hit is not None and now - hit[0] < self.CACHE_SECONDS:
                return hit[1], hit[2]
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT access_key_id, name, role, profile, created_at, revoked_at, secret_encrypted "
                "FROM access_keys WHERE access_key_id = ? AND revoked_at IS NULL",
                (access_key_id,),
            ).fetchone()
        if row is None:
            with self._lock:
                self._cache.pop(access_key_id, None)
            return None
        key = self._row(row[:6])
        try:
            secret = self._fernet.decrypt(row[6]).decode()
        except InvalidToken as exc:
            raise KeyStoreCorrupt(
                f"cannot decrypt the secret of {access_key_id} with {self.master_path}"
            ) from exc
        with self._lock:
            self._cache[access_key_id] = (now, key, secret)
        return key, secret
