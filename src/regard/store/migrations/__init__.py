"""Numbered schema migrations, applied in order when a store opens.

Each ``mNNNN_*.py`` module holds the SQL of one step for both backends (``SQLITE`` and
``POSTGRES``). A database remembers the steps it has in ``schema_migrations``; opening
an older database applies the missing ones, never edits an applied one.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres: str


def all_migrations() -> list[Migration]:
    """Every migration, lowest version first."""
    found: list[Migration] = []
    for info in pkgutil.iter_modules(__path__):
        if not (info.name.startswith("m") and info.name[1:5].isdigit()):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(
            Migration(
                version=int(info.name[1:5]),
                name=info.name[6:],
                sqlite=str(module.SQLITE),
                postgres=str(module.POSTGRES),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n: {versions}")
    return found


def statements(script: str) -> list[str]:
    """A script split into statements at its semicolons, except those inside a dollar-quoted
    ``$f$ ... $f$`` function body (no other semicolons inside our statements)."""
    out: list[str] = []
    current = ""
    for i, part in enumerate(script.split("$f$")):
        if i % 2:  # inside a function body: kept whole
            current += "$f$" + part + "$f$"
            continue
        pieces = part.split(";")
        current += pieces[0]
        for piece in pieces[1:]:
            out.append(current)
            current = piece
    out.append(current)
    return [s.strip() for s in out if s.strip()]
