"""Access keys that regard manages for AWS Signature Version 4.

SigV4 needs the secret itself at verification time (the server recomputes the HMAC),
so secrets cannot be stored as one-way hashes. They are encrypted at rest with
Fernet (AES-128-CBC + HMAC-SHA256) under a master key (:func:`load_master_key`:
``REGARD_MASTER_KEY``, else ``REGARD_MASTER_KEY_FILE``, else ``<data_dir>/master.key``,
made 0600 on first use). A secret is shown once, when the key is created, and never logged.

Where the key table lives:

embedded (one node, the default)
    ``<data_dir>/keys.sqlite3``; every server process of the node reads it.
shared (``REGARD_DATABASE_URL``, several nodes)
    the ``access_keys`` table of the PostgreSQL database every node shares. Only the
    Fernet-encrypted secret is stored there; the master key stays outside the database, and every
    node must have the same one. The database keeps a check value of it (an HMAC-SHA256 of a fixed
    label under the master key, which reveals nothing of the key) in ``shared_settings``: the first
    node to open the database stores it, and a node opening it with another master key fails at
    once with :class:`KeyStoreCorrupt` instead of refusing every signature later.

Across processes and nodes: a key created anywhere is usable everywhere at once (a secret that is
not cached is read from the table). A revoked key stops working everywhere within
:attr:`KeyStore.CACHE_SECONDS` (2 s), the longest a process keeps a decrypted secret before it
reads the table again; the process that revokes it forgets it at once.

Each key carries a ``role`` and a ``profile`` (both "admin" by default) that policy
code can use to restrict what the key may do.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from regard import datadir
from regard.config import Settings
from regard.errors import InvalidParameter, RegardError, ResourceNotFound
from regard.shared_db import SharedDb, SqliteDb

#: Access key ids look like AWS's (20 upper-case characters) but start with this prefix.
KEY_PREFIX = "RGRD"
_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_NAME_MAX = 128

#: The key table of the embedded layout (``keys.sqlite3``); the shared layout's table is made by
#: migration m0004 (the same columns plus ``seq``, the order keys were created in).
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

#: The ``shared_settings`` row holding the master key's check value.
MASTER_CHECK_NAME = "master_key_check"
_MASTER_CHECK_LABEL = b"regard master key check v1"

_COLUMNS = "access_key_id, name, role, profile, created_at, revoked_at"


class KeyStoreCorrupt(RegardError):
    """The master key cannot decrypt a stored secret (wrong or replaced master key)."""


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


def _read_key_file(path: Path, *, create: bool) -> bytes:
    """The key in ``path`` (made 0600 if it is more open); a new key is written first when
    ``create`` and the file is absent."""
    if create and not path.exists():
        with contextlib.suppress(FileExistsError):  # another process may create it first
            _write_private(path, Fernet.generate_key())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)
    return path.read_bytes().strip()


def _fernet(key: bytes, source: str) -> Fernet:
    """A Fernet for ``key``, or InvalidParameter naming ``source`` (never the key)."""
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise InvalidParameter(
            f"the master key from {source} is not a valid Fernet key (32 url-safe base64-encoded "
            "bytes, as `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'` makes)"
        ) from None


def master_key_check(master_key: bytes) -> str:
    """The check value of ``master_key`` stored in a shared database: HMAC-SHA256 of a fixed label
    under the key's 32 bytes, hex. It tells whether two nodes have the same key, and nothing more."""
    raw = base64.urlsafe_b64decode(master_key)
    return hmac.new(raw, _MASTER_CHECK_LABEL, hashlib.sha256).hexdigest()


def load_master_key(settings: Settings) -> bytes:
    """The master key ``settings`` name: ``master_key`` (``REGARD_MASTER_KEY``) when set; else the
    file ``master_key_file`` (``REGARD_MASTER_KEY_FILE``), which must exist; else
    ``<data_dir>/master.key``, made with a new key on first use. A key file is made 0600 when it
    is more open. Raises :class:`InvalidParameter` when the key is missing or not a Fernet key."""
    if settings.master_key:
        key = settings.master_key.strip().encode()
        source = "REGARD_MASTER_KEY"
    elif settings.master_key_file:
        path = Path(settings.master_key_file).expanduser()
        source = f"the master key file {path} (REGARD_MASTER_KEY_FILE)"
        if not path.is_file():
            raise InvalidParameter(f"{source} does not exist")
        key = _read_key_file(path, create=False)
    else:
        path = datadir.private_dir(Path(settings.data_dir)) / "master.key"
        source = f"the master key file {path}"
        key = _read_key_file(path, create=True)
    _fernet(key, source)
    return key


class KeyStore:
    """The key table: ``<data_dir>/keys.sqlite3``, or the shared database's ``access_keys`` when
    ``db`` is the PostgreSQL database of several nodes. Safe to share between threads and
    processes. ``master_key`` (see :func:`load_master_key`) defaults to ``<data_dir>/master.key``."""

    #: Seconds a decrypted secret is kept in memory before the table is read again.
    CACHE_SECONDS = 2.0

    def __init__(
        self, data_dir: Path, *, db: SharedDb | None = None, master_key: bytes | None = None
    ) -> None:
        self.data_dir = datadir.private_dir(Path(data_dir))
        datadir.secure(self.data_dir)  # the start-up check of the data directory's modes
        self.master_path = self.data_dir / "master.key"
        if master_key is None:
            master_key = _read_key_file(self.master_path, create=True)
            self._master_source = str(self.master_path)
        else:
            self._master_source = "this node's master key"
        self._fernet = _fernet(master_key, self._master_source)
        self._cache: dict[str, tuple[float, AccessKey, str]] = {}
        self._lock = threading.Lock()
        if db is None:
            db = SqliteDb(self.data_dir / "keys.sqlite3", schema=_SCHEMA)
        elif db.kind == "sqlite":
            with db.transaction() as cur:
                cur.execute(_SCHEMA)
        self.db = db
        #: The embedded key file (None when the keys live in PostgreSQL).
        self.db_path: Path | None = db.path if isinstance(db, SqliteDb) else None
        # SQLite's implicit rowid is the order keys were made in; PostgreSQL's table has ``seq``.
        self._order = "seq" if db.kind == "postgres" else "rowid"
        if db.kind == "postgres":
            self._check_master_key(master_key)

    def _check_master_key(self, master_key: bytes) -> None:
        """Store this master key's check value if the database has none; fail if it has another."""
        mine = master_key_check(master_key)
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO shared_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (MASTER_CHECK_NAME, mine),
            )
            row = cur.execute(
                "SELECT value FROM shared_settings WHERE name = ?", (MASTER_CHECK_NAME,)
            ).fetchone()
        if row is None or not hmac.compare_digest(str(row[0]), mine):
            raise KeyStoreCorrupt(
                "this node's master key is not the one the shared database's keys were encrypted with; "
                "give every node the same REGARD_MASTER_KEY or master key file"
            )

    def describe(self) -> str:
        """Where the keys live (never a password)."""
        return self.db.describe()

    @staticmethod
    def _row(row: Any) -> AccessKey:
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
                with self.db.transaction() as cur:
                    cur.execute(
                        "INSERT INTO access_keys "
                        "(access_key_id, name, secret_encrypted, role, profile, created_at, revoked_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (akid, name, token, role, profile, key.created_at),
                    )
            except Exception as exc:
                if self.db.is_unique_violation(exc):
                    continue
                raise
            return key, secret
        raise RegardError("could not allocate a unique access key id")

    def list(self, *, include_revoked: bool = True) -> list[AccessKey]:
        sql = f"SELECT {_COLUMNS} FROM access_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        with self.db.transaction(readonly=True) as cur:
            rows = cur.execute(f"{sql} ORDER BY {self._order}").fetchall()
        return [self._row(r) for r in rows]

    def get(self, access_key_id: str) -> AccessKey:
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS} FROM access_keys WHERE access_key_id = ?", (access_key_id,)
            ).fetchone()
        if row is None:
            raise ResourceNotFound(f"access key {access_key_id} does not exist")
        return self._row(row)

    def revoke(self, access_key_id: str) -> AccessKey:
        """Revoke a key; it stops working within :attr:`CACHE_SECONDS` in every server process
        (of every node sharing the database), at once in this one."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE access_keys SET revoked_at = ? WHERE access_key_id = ? AND revoked_at IS NULL",
                (_now(), access_key_id),
            )
            row = cur.execute(
                f"SELECT {_COLUMNS} FROM access_keys WHERE access_key_id = ?", (access_key_id,)
            ).fetchone()
        if row is None:
            raise ResourceNotFound(f"access key {access_key_id} does not exist")
        with self._lock:
            self._cache.pop(access_key_id, None)
        return self._row(row)

    def secret_for(self, access_key_id: str) -> tuple[AccessKey, str] | None:
        """The active key and its secret, or ``None`` when the id is unknown or revoked."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(access_key_id)
            if hit is not None and now - hit[0] < self.CACHE_SECONDS:
                return hit[1], hit[2]
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS}, secret_encrypted FROM access_keys "
                "WHERE access_key_id = ? AND revoked_at IS NULL",
                (access_key_id,),
            ).fetchone()
        if row is None:
            with self._lock:
                self._cache.pop(access_key_id, None)
            return None
        key = self._row(row[:6])
        try:
            secret = self._fernet.decrypt(bytes(row[6])).decode()
        except InvalidToken as exc:
            raise KeyStoreCorrupt(
                f"cannot decrypt the secret of {access_key_id} with {self._master_source}"
            ) from exc
        with self._lock:
            self._cache[access_key_id] = (now, key, secret)
        return key, secret
