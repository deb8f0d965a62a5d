"""Policy documents shared by several nodes (PolicyStore on PostgreSQL): a change on one node is
the next load on another, concurrent changes from two processes are all kept, and the newest
document is parsed once per version."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from regard.accountability.policy import (
    PolicyConfig,
    PolicyStore,
    config_from_dict,
    to_toml,
)
from regard.errors import InvalidParameter
from regard.shared_db import PostgresDb, SqliteDb

pytestmark = pytest.mark.postgres


@pytest.fixture
def dbs(pg_url: str) -> Iterator[list[PostgresDb]]:
    """Two connections to one fresh database: two nodes."""
    made = [PostgresDb(pg_url), PostgresDb(pg_url)]
    try:
        yield made
    finally:
        for db in made:
            db.close()


def _documents(db: PostgresDb) -> list[tuple[int, str]]:
    with db.transaction() as cur:
        rows = cur.execute("SELECT version, toml FROM policy_documents ORDER BY version").fetchall()
    return [(int(v), str(t)) for v, t in rows]


def test_the_first_load_writes_the_defaults_as_version_1(dbs: list[PostgresDb], tmp_path: Path) -> None:
    a = PolicyStore(tmp_path / "a", db=dbs[0])
    assert a.load() == PolicyConfig()
    assert PolicyStore(tmp_path / "b", db=dbs[1]).load() == PolicyConfig()
    assert _documents(dbs[0]) == [(1, to_toml(PolicyConfig()))]  # written once, by the first node
    assert not a.path.exists() and not (tmp_path / "a").exists()  # no policy file on the nodes
    assert a.describe().startswith("policy documents in PostgreSQL postgresql://")


def test_a_change_on_one_node_is_the_next_load_on_the_other(dbs: list[PostgresDb], tmp_path: Path) -> None:
    a = PolicyStore(tmp_path / "a", db=dbs[0])
    b = PolicyStore(tmp_path / "b", db=dbs[1])
    before = b.load()
    assert before.profiles["verification"].burst == 40
    assert a.set("verification", "burst", "41") == (40, 41)
    assert b.load().profiles["verification"].burst == 41
    assert b.set("kiosk", "operations", "DetectFaces,CompareFaces") == ((), ("DetectFaces", "CompareFaces"))
    assert a.set("audit", "retention_floor_days", "400") == (183, 400)
    for node in (a, b):
        config = node.load()
        assert config.profiles["verification"].burst == 41
        assert config.profiles["kiosk"].operations == ("DetectFaces", "CompareFaces")
        assert config.retention_floor_days == 400
    # Append-only: every change is a new version; the older ones stay as they were written.
    docs = _documents(dbs[0])
    assert [v for v, _ in docs] == [1, 2, 3, 4]
    assert docs[0][1] == to_toml(PolicyConfig())
    assert config_from_dict(tomllib.loads(docs[1][1])).profiles["verification"].burst == 41
    assert "kiosk" not in config_from_dict(tomllib.loads(docs[1][1])).profiles


def test_a_refused_change_writes_nothing(dbs: list[PostgresDb], tmp_path: Path) -> None:
    a = PolicyStore(tmp_path / "a", db=dbs[0])
    a.load()
    with pytest.raises(InvalidParameter, match="unknown setting"):
        a.set("verification", "no_such_setting", "1")
    with pytest.raises(InvalidParameter, match="max_fmr"):
        a.set("verification", "max_fmr", "2")
    with pytest.raises(InvalidParameter, match="retention_floor_days"):
        a.set("audit", "burst", "1")
    assert [v for v, _ in _documents(dbs[0])] == [1]
    assert a.load() == PolicyConfig()


def test_load_parses_a_document_once_per_version(
    dbs: list[PostgresDb], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import regard.accountability.policy as policy_module

    a = PolicyStore(tmp_path / "a", db=dbs[0])
    b = PolicyStore(tmp_path / "b", db=dbs[1])
    a.load()
    parsed: list[int] = []
    real = policy_module.config_from_dict

    def counting(data: object) -> PolicyConfig:
        parsed.append(1)
        return real(data)  # type: ignore[arg-type]

    monkeypatch.setattr(policy_module, "config_from_dict", counting)
    first = b.load()
    assert b.load() is first and len(parsed) == 1  # same version: the cached object
    a.set("verification", "burst", "7")
    assert len(parsed) == 1  # a's own change is cached as written
    changed = b.load()
    assert changed is not first and changed.profiles["verification"].burst == 7 and len(parsed) == 2
    assert b.load() is changed and a.load().profiles["verification"].burst == 7 and len(parsed) == 2


def test_an_unreadable_document_names_its_version(dbs: list[PostgresDb], tmp_path: Path) -> None:
    a = PolicyStore(tmp_path / "a", db=dbs[0])
    a.load()
    with dbs[1].transaction() as cur:
        cur.execute(
            "INSERT INTO policy_documents (toml, written_at) VALUES (?, ?)",
            ("[audit\n", "2026-01-01T00:00:00Z"),
        )
    with pytest.raises(InvalidParameter, match="policy document version 2"):
        a.load()


def test_a_policy_store_takes_no_sqlite_database(tmp_path: Path) -> None:
    """The embedded layout keeps policy.toml; a SQLite SharedDb is refused rather than half used."""
    with pytest.raises(ValueError, match="PostgreSQL"):
        PolicyStore(tmp_path, db=SqliteDb(tmp_path / "x.sqlite3"))


#: The first burst value the children write (above every default, so a default is never a new value).
FIRST = 1001

#: A child process: a node that sets one profile's burst to FIRST, FIRST + 1, ..., one change at a
#: time. It says "ready" once its store is open and starts when the test writes a line to its
#: stdin, so that the two children's changes overlap.
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from regard.accountability.policy import PolicyStore
    from regard.shared_db import PostgresDb

    url, data_dir, profile, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    FIRST = int(sys.argv[5])
    db = PostgresDb(url)
    store = PolicyStore(data_dir, db=db)
    store.load()
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        store.set(profile, "burst", str(FIRST + i))
    db.close()
    print("done", flush=True)
    """
)


def test_concurrent_changes_from_two_processes_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    count = 40
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, pg_url, str(tmp_path / profile), profile, str(count), str(FIRST)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for profile in ("verification", "identification")
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outs = [child.communicate(timeout=300)[0] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0, 0] and outs == ["done\n", "done\n"]

    db = PostgresDb(pg_url)
    try:
        final = PolicyStore(tmp_path / "reader", db=db).load()
        docs = _documents(db)
    finally:
        db.close()
    assert final.profiles["verification"].burst == FIRST + count - 1
    assert final.profiles["identification"].burst == FIRST + count - 1
    # Every change is a version of its own, made from the version before it: each document
    # differs from the one before in exactly one profile's burst, by one step (a lost update would
    # put the other profile's older value back).
    assert len(docs) == 1 + 2 * count
    defaults = PolicyConfig().profiles
    previous = {name: defaults[name].burst for name in ("verification", "identification")}
    for version, text in docs[1:]:
        config = config_from_dict(tomllib.loads(text))
        now = {name: config.profiles[name].burst for name in previous}
        steps = {
            name: now[name] - (previous[name] if previous[name] >= FIRST else FIRST - 1)
            for name in previous
            if now[name] != previous[name]
        }
        assert list(steps.values()) == [1], (version, previous, now)
        previous = now
    assert previous == {"verification": FIRST + count - 1, "identification": FIRST + count - 1}
