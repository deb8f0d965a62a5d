"""What every resource's operations share: the store, the engine, the scoring, ARNs and model checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.scoring.calibrate import Scorer
from regard.scoring.versions import describe, face_model_version
from regard.service.rules import COLLECTION_ID_RE, check
from regard.store.base import Collection, Store
from regard.types import ModelIdentity


@dataclass(frozen=True, slots=True)
class Removal:
    """What a deletion took away: some faces and users of a collection, or the whole collection."""

    collection_id: str
    face_ids: Sequence[str] = ()
    user_ids: Sequence[str] = ()
    whole_collection: bool = False


#: Called after every committed deletion (DeleteFaces, DeleteUser, DeleteCollection) with the
#: store and what went: the layers above (the review queue) forget what they hold about it.
RemovalListener = Callable[[Store, Removal], None]
_REMOVAL_LISTENERS: list[RemovalListener] = []


def on_removal(listener: RemovalListener) -> RemovalListener:
    """Register ``listener`` for every service of this process (idempotent; usable as a decorator)."""
    if listener not in _REMOVAL_LISTENERS:
        _REMOVAL_LISTENERS.append(listener)
    return listener


class ServiceBase:
    """The state behind :class:`regard.service.Service` and the helpers its resources use."""

    def __init__(
        self,
        store: Store,
        engine: Engine | None = None,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        scorer: Scorer | None = None,
    ) -> None:
        self.store = store
        self._engine = engine
        self._scorer = scorer
        self.region = region
        self.account_id = account_id

    @property
    def engine(self) -> Engine:
        """The face engine (the process-wide default unless one was given); loads nothing by itself."""
        if self._engine is None:
            from regard.face.engine import default_engine

            self._engine = default_engine()
        return self._engine

    @property
    def scorer(self) -> Scorer:
        """Templates -> normalized score -> similarity and FMR (the engine's, unless one was given)."""
        if self._scorer is None:
            self._scorer = self.engine.scorer
        return self._scorer

    @property
    def face_model(self) -> ModelIdentity:
        """The identity of the engine's embedding model (what new collections are bound to)."""
        return self.engine.model_identity

    def model_version(self, c: Collection) -> str:
        """FaceModelVersion: a numeric string (:mod:`regard.scoring.versions`) that changes whenever
        the collection's templates' model or this service's scoring (normalizer, calibration table)
        does, since a similarity depends on both; the full identity is :meth:`model_description`."""
        return face_model_version(c.face_model, self.scorer)

    def model_description(self, c: Collection) -> dict[str, str]:
        """The full identity behind :meth:`model_version` (DescribeCollection's ``RegardFaceModel``)."""
        return describe(c.face_model, self.scorer)

    def collection_arn(self, collection_id: str) -> str:
        """The ARN a collection of this service has."""
        return f"arn:aws:rekognition:{self.region}:{self.account_id}:collection/{collection_id}"

    def _collection(self, collection_id: str) -> Collection:
        """The collection ``collection_id`` (checked against the pattern); ResourceNotFound if absent."""
        check(COLLECTION_ID_RE, collection_id, "CollectionId")
        return self.store.get_collection(collection_id)

    def _check_model(self, c: Collection) -> None:
        """InvalidParameter unless this engine makes the templates ``c`` holds."""
        mine = self.face_model
        if (mine.name, mine.version, mine.weights_sha256) != (
            c.face_model.name,
            c.face_model.version,
            c.face_model.weights_sha256,
        ):
            raise InvalidParameter(
                f"collection {c.collection_id} holds templates of {c.face_model.key}; "
                f"this engine makes {mine.key}"
            )

    def _removed(self, removal: Removal) -> None:
        """Tell the removal listeners what a committed deletion took away."""
        for listener in list(_REMOVAL_LISTENERS):
            listener(self.store, removal)
