"""A child process for the durability and concurrency tests: adds batches of faces, acknowledging each.

Usage: python worker.py TARGET COLLECTION BATCHES PER_BATCH SEED
TARGET is a data directory (SQLite) or a postgresql:// URL. After each batch is stored the
worker prints the batch's ImageId on its own line and flushes.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np

from regard.store.base import NewFace
from regard.store.postgres import PostgresStore
from regard.store.sqlite import SqliteStore
from regard.types import Box


def main() -> None:
    target, collection, batches, per_batch, seed = sys.argv[1:6]
    store = PostgresStore(target) if target.startswith("postgresql://") else SqliteStore(Path(target))
    rng = np.random.default_rng(int(seed))
    for _ in range(int(batches)):
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
        store.add_faces(collection, faces)
        print(image_id, flush=True)
    store.close()


if __name__ == "__main__":
    main()
