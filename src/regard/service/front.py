"""The :class:`Service` front: every resource's operations on one object, opened on a data directory."""

from __future__ import annotations

from pathlib import Path

from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.scoring.calibrate import Scorer
from regard.service.collections import CollectionOperations
from regard.service.compare import CompareFacesResult, compare_faces
from regard.service.detection import DetectFacesResult, detect_faces
from regard.service.faces import FaceOperations
from regard.service.images import ImageInput
from regard.service.tags import TagOperations
from regard.service.users import UserOperations
from regard.store.base import Store


class Service(CollectionOperations, FaceOperations, UserOperations, TagOperations):
    """Rekognition's collection, face, user and tag operations over a store and a face engine.

    Each resource's operations live in their own module (:mod:`regard.service.collections`,
    ``faces``, ``users``, ``tags``); this class joins them and adds opening, closing and the
    image-only operations (DetectFaces, CompareFaces), which need no store.
    """

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        engine: Engine | None = None,
        database_url: str | None = None,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        scorer: Scorer | None = None,
    ) -> Service:
        """Open (creating if needed) the collections under ``data_dir``.

        ``database_url`` ``postgresql://...`` keeps everything in PostgreSQL + pgvector
        instead of the embedded SQLite database ``data_dir/regard.db`` and its index files.
        ``scorer`` overrides the engine's scoring (normalizer and calibration table; tests, re-calibration).
        """
        store: Store
        if database_url:
            if not database_url.startswith(("postgresql://", "postgres://")):
                raise InvalidParameter("database_url must start with postgresql://")
            from regard.store.postgres import PostgresStore

            store = PostgresStore(database_url)
        else:
            from regard.store.sqlite import SqliteStore

            store = SqliteStore(Path(data_dir))
        return cls(store, engine, region=region, account_id=account_id, scorer=scorer)

    def close(self) -> None:
        """Close the store (the engine is left to whoever made it)."""
        self.store.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def compact(self) -> None:
        """Make erasure physical (checkpoint + VACUUM, index files rewritten without removed vectors)."""
        self.store.compact()

    def detect_faces(self, image: ImageInput) -> DetectFacesResult:
        """DetectFaces (:func:`regard.service.detection.detect_faces`) with this service's engine."""
        return detect_faces(self.engine, image)

    def compare_faces(
        self,
        source: ImageInput,
        target: ImageInput,
        *,
        similarity_threshold: float | None = None,
        quality_filter: str = "NONE",
    ) -> CompareFacesResult:
        """CompareFaces (:func:`regard.service.compare.compare_faces`) with this engine and scoring."""
        return compare_faces(
            self.engine,
            source,
            target,
            similarity_threshold=similarity_threshold,
            quality_filter=quality_filter,
            scorer=self.scorer,
        )
