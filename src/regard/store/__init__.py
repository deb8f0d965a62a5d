"""Storage backends for face collections: SQLite + vector index (embedded) and PostgreSQL + pgvector."""

from regard.store.base import Collection, FaceRecord, NewFace, Page, Store, User

__all__ = ["Collection", "FaceRecord", "NewFace", "Page", "Store", "User"]
