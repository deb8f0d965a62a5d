"""Tags on a collection's ARN: TagResource, UntagResource, ListTagsForResource."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from regard.errors import InvalidParameter, ResourceNotFound, ServiceQuotaExceeded
from regard.service.base import ServiceBase
from regard.service.rules import COLLECTION_ARN_RE, MAX_TAGS, TAG_KEY_RE, check, check_tags


@dataclass(frozen=True, slots=True)
class ListTagsForResourceResult:
    """ListTagsForResource: Tags (:meth:`TagOperations.list_tags_for_resource` answers the bare
    map; the API's typed call wraps it, so every operation has a result type)."""

    tags: dict[str, str]


class TagOperations(ServiceBase):
    """Rekognition's tagging operations (a collection is the only taggable resource)."""

    def tag_resource(self, resource_arn: str, tags: Mapping[str, str]) -> None:
        """TagResource on a collection ARN (at most 200 tags in all)."""
        cid = self._collection_from_arn(resource_arn)
        clean = check_tags(tags)
        if not clean:
            raise InvalidParameter("Tags must hold at least one tag")
        current = self.store.tags(cid)
        if len(set(current) | set(clean)) > MAX_TAGS:
            raise ServiceQuotaExceeded(f"a collection holds at most {MAX_TAGS} tags")
        self.store.tag(cid, clean)

    def untag_resource(self, resource_arn: str, tag_keys: Sequence[str]) -> None:
        """UntagResource."""
        cid = self._collection_from_arn(resource_arn)
        keys = list(tag_keys)
        if not (1 <= len(keys) <= MAX_TAGS):
            raise InvalidParameter(f"TagKeys must hold between 1 and {MAX_TAGS} keys")
        for k in keys:
            check(TAG_KEY_RE, k, "tag key")
        self.store.untag(cid, keys)

    def list_tags_for_resource(self, resource_arn: str) -> dict[str, str]:
        """ListTagsForResource."""
        return self.store.tags(self._collection_from_arn(resource_arn))

    def _collection_from_arn(self, arn: str) -> str:
        """The id of the collection whose ARN is ``arn``; ResourceNotFound if none has it."""
        m = COLLECTION_ARN_RE.match(arn or "")
        if m is None:
            raise InvalidParameter(f"ResourceArn {arn!r} is not a collection ARN")
        c = self.store.get_collection(m.group("id"))
        if c.arn != arn:
            raise ResourceNotFound(f"no collection has the ARN {arn}")
        return c.collection_id
