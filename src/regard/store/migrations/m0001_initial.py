"""Collections, faces (templates inline), users, tags, idempotency tokens and the change log."""

SQLITE = """
CREATE TABLE collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL,
    face_model TEXT NOT NULL,
    created_at REAL NOT NULL,
    face_count INTEGER NOT NULL DEFAULT 0,
    user_count INTEGER NOT NULL DEFAULT 0,
    content_version INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT NOT NULL
);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    face_id TEXT NOT NULL,
    image_id TEXT NOT NULL,
    external_image_id TEXT,
    box_left REAL NOT NULL,
    box_top REAL NOT NULL,
    box_width REAL NOT NULL,
    box_height REAL NOT NULL,
    confidence REAL NOT NULL,
    brightness REAL,
    sharpness REAL,
    embedding BLOB NOT NULL,
    user_id TEXT,
    indexed_at REAL NOT NULL,
    UNIQUE (collection, face_id)
);
CREATE INDEX faces_by_user ON faces (collection, user_id);
CREATE TABLE users (
    collection INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    face_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, user_id)
);
CREATE TABLE tags (
    collection INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE requests (
    collection INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    operation TEXT NOT NULL,
    token TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (collection, operation, token)
);
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection INTEGER NOT NULL,
    face_key INTEGER NOT NULL,
    op TEXT NOT NULL
);
CREATE INDEX changes_by_collection ON changes (collection, seq)
"""

POSTGRES = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE collections (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL,
    face_model TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    face_count BIGINT NOT NULL DEFAULT 0,
    user_count BIGINT NOT NULL DEFAULT 0,
    content_version BIGINT NOT NULL DEFAULT 0,
    content_hash TEXT NOT NULL
);
CREATE TABLE faces (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    face_id TEXT NOT NULL,
    image_id TEXT NOT NULL,
    external_image_id TEXT,
    box_left DOUBLE PRECISION NOT NULL,
    box_top DOUBLE PRECISION NOT NULL,
    box_width DOUBLE PRECISION NOT NULL,
    box_height DOUBLE PRECISION NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    brightness DOUBLE PRECISION,
    sharpness DOUBLE PRECISION,
    embedding vector(128) NOT NULL,
    user_id TEXT,
    indexed_at DOUBLE PRECISION NOT NULL,
    UNIQUE (collection, face_id)
);
CREATE INDEX faces_by_user ON faces (collection, user_id);
CREATE TABLE users (
    collection BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    face_count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, user_id)
);
CREATE TABLE tags (
    collection BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE requests (
    collection BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    operation TEXT NOT NULL,
    token TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (collection, operation, token)
);
CREATE TABLE changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection BIGINT NOT NULL,
    face_key BIGINT NOT NULL,
    op TEXT NOT NULL
);
CREATE INDEX changes_by_collection ON changes (collection, seq)
"""
