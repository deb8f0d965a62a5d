"""Access keys shared by several nodes: two KeyStore objects are two nodes (two server processes
of one data directory in the embedded layout, two data directories on one PostgreSQL database in
the shared one); the master key check; where the master key comes from."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from regard.config import Settings
from regard.errors import InvalidParameter, ResourceNotFound
from regard.keys import MASTER_CHECK_NAME, KeyStore, KeyStoreCorrupt, load_master_key, master_key_check
from regard.shared_db import PostgresDb

LAYOUTS = ("embedded", "postgres")


class Nodes:
    """Makes KeyStores that share one key table, each with its own data directory when shared."""

    def __init__(self, layout: str, root: Path, url: str | None) -> None:
        self.layout = layout
        self.root = root
        self.url = url
        self.master = Fernet.generate_key()
        self.dbs: list[PostgresDb] = []

    def node(self, name: str, master_key: bytes | None = None) -> KeyStore:
        key = self.master if master_key is None else master_key
        if self.url is None:  # the embedded layout: every process opens the same data directory
            return KeyStore(self.root / "data", master_key=key)
        db = PostgresDb(self.url)
        self.dbs.append(db)
        return KeyStore(self.root / name, db=db, master_key=key)

    def close(self) -> None:
        for db in self.dbs:
            db.close()


@pytest.fixture(
    params=[pytest.param(x, marks=[pytest.mark.postgres] if x == "postgres" else []) for x in LAYOUTS]
)
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nodes]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    made = Nodes(str(request.param), tmp_path, url)
    try:
        yield made
    finally:
        made.close()


def test_a_key_made_on_one_node_works_on_the_other_and_revocation_reaches_it(nodes: Nodes) -> None:
    a, b = nodes.node("a"), nodes.node("b")
    key, secret = a.create("ci", role="operator", profile="verification")
    found = b.secret_for(key.access_key_id)
    assert found is not None and found == (key, secret)
    assert [k.access_key_id for k in a.list()] == [key.access_key_id]
    assert [k.access_key_id for k in b.list()] == [key.access_key_id]
    assert b.get(key.access_key_id) == key

    b.CACHE_SECONDS = 3600.0  # B's cached secret is younger than its cache time...
    revoked = a.revoke(key.access_key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert a.secret_for(key.access_key_id) is None  # the revoking node forgets it at once
    assert b.secret_for(key.access_key_id) == (key, secret)  # ...so B still serves it from memory
    b.CACHE_SECONDS = 0.0  # once B's entry is older than CACHE_SECONDS, B reads the table again
    assert b.secret_for(key.access_key_id) is None
    assert b.get(key.access_key_id).revoked_at == revoked.revoked_at
    assert [k.access_key_id for k in b.list()] == [key.access_key_id]
    assert b.list(include_revoked=False) == []


def test_list_keeps_the_order_keys_were_made_in_across_nodes(nodes: Nodes) -> None:
    a, b = nodes.node("a"), nodes.node("b")
    made = [a.create("one")[0], b.create("two")[0], a.create("three")[0], b.create("four")[0]]
    b.revoke(made[1].access_key_id)
    ids = [k.access_key_id for k in made]
    assert [k.access_key_id for k in a.list()] == ids
    assert [k.access_key_id for k in b.list()] == ids
    assert [k.access_key_id for k in a.list(include_revoked=False)] == [ids[0], ids[2], ids[3]]
    with pytest.raises(ResourceNotFound):
        b.revoke("RGRDNOSUCHKEY0000000")
    with pytest.raises(ResourceNotFound):
        a.get("RGRDNOSUCHKEY0000000")
    assert a.secret_for("RGRDNOSUCHKEY0000000") is None


def test_a_clashing_access_key_id_is_drawn_again(nodes: Nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The id is random; a clash with a stored id (the database's unique violation) draws another."""
    import secrets

    import regard.keys as keys_module

    a, b = nodes.node("a"), nodes.node("b")
    first, _ = a.create("first")
    wanted = list(first.access_key_id[len(keys_module.KEY_PREFIX) :]) + list("B" * 16)
    drawn = iter(wanted)
    real_choice = secrets.choice

    def choice(alphabet: Any) -> Any:
        return next(drawn) if alphabet == keys_module._ID_ALPHABET else real_choice(alphabet)

    monkeypatch.setattr(secrets, "choice", choice)
    second, secret = b.create("second")
    assert second.access_key_id == keys_module.KEY_PREFIX + "B" * 16
    assert [k.name for k in a.list()] == ["first", "second"]
    assert a.secret_for(second.access_key_id) == (second, secret)


def test_describe_names_where_the_keys_live(nodes: Nodes) -> None:
    store = nodes.node("a")
    if nodes.url is None:
        assert store.describe() == f"SQLite file {nodes.root / 'data' / 'keys.sqlite3'}"
        assert store.db_path == nodes.root / "data" / "keys.sqlite3"
    else:
        described = store.describe()
        assert described.startswith("PostgreSQL postgresql://")
        assert store.db_path is None
        assert not (nodes.root / "a" / "keys.sqlite3").exists()  # nothing shared stays on the node
        assert not (nodes.root / "a" / "master.key").exists()  # the key was given


# -- the master key on a shared database ------------------------------------------------------


@pytest.mark.postgres
def test_a_node_with_another_master_key_fails_at_open(pg_url: str, tmp_path: Path) -> None:
    nodes = Nodes("postgres", tmp_path, pg_url)
    try:
        a = nodes.node("a")
        key, secret = a.create("ci")
        other = Fernet.generate_key()
        with pytest.raises(KeyStoreCorrupt) as refused:
            nodes.node("b", master_key=other)
        message = str(refused.value)
        assert "master key is not the one the shared database's keys were encrypted with" in message
        assert "REGARD_MASTER_KEY" in message
        assert other.decode() not in message and nodes.master.decode() not in message
        # The first node's check value stays; a node with the right key still opens and verifies.
        c = nodes.node("c")
        assert c.secret_for(key.access_key_id) == (key, secret)
        with nodes.dbs[0].transaction() as cur:
            rows = cur.execute("SELECT name, value FROM shared_settings").fetchall()
        assert [tuple(r) for r in rows] == [(MASTER_CHECK_NAME, master_key_check(nodes.master))]
    finally:
        nodes.close()


@pytest.mark.postgres
def test_the_check_value_is_stored_by_the_first_node_even_without_keys(pg_url: str, tmp_path: Path) -> None:
    """A node that opens an empty database claims it for its master key: a second node with another
    key cannot start, before anyone made a key it could not read."""
    nodes = Nodes("postgres", tmp_path, pg_url)
    try:
        nodes.node("a")
        with pytest.raises(KeyStoreCorrupt):
            nodes.node("b", master_key=Fernet.generate_key())
        assert nodes.node("c").list() == []
    finally:
        nodes.close()


#: A child process: a node opening the shared key table with the master key it is given. It says
#: "ready" once its database connection is open and opens the key store when the test writes a
#: line to its stdin, so that two children race to claim an empty database.
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from regard.keys import KeyStore, KeyStoreCorrupt
    from regard.shared_db import PostgresDb

    db = PostgresDb(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        KeyStore(Path(sys.argv[2]), db=db, master_key=sys.argv[3].encode())
    except KeyStoreCorrupt:
        print("refused", flush=True)
    else:
        print("opened", flush=True)
    db.close()
    """
)


@pytest.mark.postgres
def test_two_nodes_with_different_master_keys_racing_for_an_empty_database(
    pg_url: str, tmp_path: Path
) -> None:
    """Whichever node stores its check value first owns the database; the other is refused."""
    masters = [Fernet.generate_key(), Fernet.generate_key()]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, pg_url, str(tmp_path / f"node{i}"), master.decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, master in enumerate(masters)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outs = [child.communicate(timeout=120)[0].strip() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert sorted(outs) == ["opened", "refused"], outs
    winner = masters[outs.index("opened")]
    db = PostgresDb(pg_url)
    try:
        with db.transaction() as cur:
            (value,) = cur.execute(
                "SELECT value FROM shared_settings WHERE name = ?", (MASTER_CHECK_NAME,)
            ).fetchone()
        assert value == master_key_check(winner)
        assert KeyStore(tmp_path / "later", db=db, master_key=winner).list() == []  # the winner opens it
    finally:
        db.close()


def _table_text(url: str) -> str:
    """Every column of every row of every table of the database, as text."""
    import psycopg

    out: list[str] = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (table,) in tables:
            columns = [
                c
                for (c,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = %s",
                    (table,),
                ).fetchall()
            ]
            select = ", ".join(f'"{c}"::text' for c in columns)
            for row in conn.execute(f'SELECT {select} FROM "{table}"'.encode()).fetchall():
                out.extend(f"{table}.{c}={v}" for c, v in zip(columns, row, strict=True))
    return "\n".join(out)


@pytest.mark.postgres
def test_the_database_holds_no_secret_and_no_master_key(pg_url: str, tmp_path: Path) -> None:
    nodes = Nodes("postgres", tmp_path, pg_url)
    try:
        a = nodes.node("a")
        key, secret = a.create("ci")
        assert a.secret_for(key.access_key_id) == (key, secret)
        text = _table_text(pg_url)
        assert key.access_key_id in text and "access_keys.secret_encrypted=\\x" in text  # read it all
        for needle in (secret, secret.encode().hex(), nodes.master.decode(), nodes.master.hex()):
            assert needle not in text
    finally:
        nodes.close()


# -- where the master key comes from ----------------------------------------------------------


def test_load_master_key_prefers_the_environment_then_the_file_then_the_data_directory(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    from_env, from_file = Fernet.generate_key(), Fernet.generate_key()
    key_file = tmp_path / "node.key"
    key_file.write_bytes(from_file + b"\n")
    os.chmod(key_file, 0o600)

    settings = Settings.from_env(
        {"REGARD_MASTER_KEY": from_env.decode() + "\n", "REGARD_MASTER_KEY_FILE": str(key_file)},
        data_dir=data,
    )
    assert load_master_key(settings) == from_env
    assert not (data / "master.key").exists()
    assert load_master_key(Settings(data_dir=data, master_key_file=str(key_file))) == from_file
    assert not (data / "master.key").exists()
    made = load_master_key(Settings(data_dir=data))
    assert made not in (from_env, from_file)
    assert (data / "master.key").read_bytes() == made
    assert stat.S_IMODE((data / "master.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert load_master_key(Settings(data_dir=data)) == made  # made once, then read
    # The embedded KeyStore without a master key reads the same file.
    store = KeyStore(data)
    key, secret = store.create("x")
    assert KeyStore(data, master_key=made).secret_for(key.access_key_id) == (key, secret)


def test_a_master_key_file_more_open_than_0600_is_made_private(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    key = Fernet.generate_key()
    key_file.write_bytes(key)
    os.chmod(key_file, 0o644)
    assert load_master_key(Settings(data_dir=tmp_path / "data", master_key_file=str(key_file))) == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_missing_master_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    missing = tmp_path / "absent.key"
    with pytest.raises(InvalidParameter) as refused:
        load_master_key(Settings(data_dir=tmp_path / "data", master_key_file=str(missing)))
    assert str(refused.value) == f"the master key file {missing} (REGARD_MASTER_KEY_FILE) does not exist"
    assert not missing.exists()


@pytest.mark.parametrize("where", ["env", "file", "data_dir"])
def test_an_invalid_master_key_names_its_source_and_not_the_key(tmp_path: Path, where: str) -> None:
    bad = "not-a-fernet-key-but-a-secret-all-the-same"
    data = tmp_path / "data"
    if where == "env":
        settings = Settings.from_env({"REGARD_MASTER_KEY": bad}, data_dir=data)
        source = "REGARD_MASTER_KEY"
    elif where == "file":
        (tmp_path / "node.key").write_text(bad)
        settings = Settings(data_dir=data, master_key_file=str(tmp_path / "node.key"))
        source = str(tmp_path / "node.key")
    else:
        data.mkdir(mode=0o700)
        (data / "master.key").write_text(bad)
        settings = Settings(data_dir=data)
        source = str(data / "master.key")
    with pytest.raises(InvalidParameter) as refused:
        load_master_key(settings)
    message = str(refused.value)
    assert source in message and "not a valid Fernet key" in message
    assert bad not in message and refused.value.__cause__ is None


def test_a_key_store_given_an_invalid_master_key_refuses_to_open(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="not a valid Fernet key"):
        KeyStore(tmp_path, master_key=b"short")
    assert not (tmp_path / "master.key").exists()


def test_a_replaced_master_key_is_reported_when_a_secret_is_read(tmp_path: Path) -> None:
    """Embedded layout (no check value): a secret the master key cannot decrypt is KeyStoreCorrupt
    naming the key's source, as before."""
    key, _ = KeyStore(tmp_path).create("x")
    with pytest.raises(KeyStoreCorrupt, match="this node's master key"):
        KeyStore(tmp_path, master_key=Fernet.generate_key()).secret_for(key.access_key_id)
    (tmp_path / "master.key").unlink()
    with pytest.raises(KeyStoreCorrupt) as refused:
        KeyStore(tmp_path).secret_for(key.access_key_id)
    assert str(refused.value).endswith(f"with {tmp_path / 'master.key'}")
