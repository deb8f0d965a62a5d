"""Vector indexes over one collection's templates: an exact numpy oracle and an ANN index (faiss HNSW)."""

from regard.index.exact import ExactIndex, VectorIndex

__all__ = ["ExactIndex", "VectorIndex"]
