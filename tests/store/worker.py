"""A child process for the durability and concurrency tests: adds batches of faces, acknowledging each.

Usage: python worker.py TARGET COLLECTION BATCHES PER_BATCH SEED [HOLD_AT]

TARGET is a data directory (SQLite) or a postgresql:// URL. After each batch is stored the
worker prints the batch's ImageId on its own line and flushes.

With HOLD_AT (1-based), batch HOLD_AT stops inside its write transaction, after every statement
of the batch and before COMMIT: the worker checks that its transaction sees the batch's
PER_BATCH rows, prints ``inside <ImageId> <rows>`` and waits for a line on stdin before it
commits. A test reads that line to know, not hope, that a kill -9 lands mid-batch, or that a
search runs while a batch is half written. (The hook wraps ``_bump``, the store's last statement
in ``add_faces``' transaction; the worker is the only writer in its process.)
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from regard.store.base import NewFace
from regard.store.postgres import PostgresStore
from regard.store.sql import SqlStore, Tx
from regard.store.sqlite import SqliteStore
from regard.types import Box


def hold_inside(store: SqlStore, image_id: str) -> None:
    """Make the next ``add_faces`` of ``image_id`` announce itself and wait inside its transaction."""
    bump = store._bump

    def held(tx: Tx, *args: Any, **kwargs: Any) -> Any:
        out = bump(tx, *args, **kwargs)
        (rows,) = tx.one("SELECT count(*) FROM faces WHERE image_id = ?", (image_id,))
        print("inside", image_id, rows, flush=True)
        sys.stdin.readline()  # the test kills us here, or lets the batch commit
        return out

    store._bump = held  # type: ignore[method-assign]


def main() -> None:
    target, collection, batches, per_batch, seed = sys.argv[1:6]
    hold_at = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    store = PostgresStore(target) if target.startswith("postgresql://") else SqliteStore(Path(target))
    rng = np.random.default_rng(int(seed))
    for batch in range(1, int(batches) + 1):
        image_id = str(uuid.uuid4())
        faces = [
            NewFace(
                face_id=str(uuid.uuid4()),
                image_id=image_id,
                external_image_id=f"w{seed}",
                bounding_box=Box(0.1, 0.1, 0.5, 0.5),
                confidence=99.0,
                embedding=rng.normal(size=128).astype(np.float32),
            )
            for _ in range(int(per_batch))
        ]
        if batch == hold_at:
            hold_inside(store, image_id)
        store.add_faces(collection, faces)
        if batch == hold_at:
            del store._bump  # back to the class's method
        print(image_id, flush=True)
    store.close()


if __name__ == "__main__":
    main()
