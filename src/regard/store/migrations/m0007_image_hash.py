"""The sha256 of the image each face was indexed from, and an index to find a collection's faces by
ExternalImageId and image hash: batch enrolment (:mod:`regard.enrol`) skips an image whose
ExternalImageId and bytes already have a face in the collection. Faces indexed before this step (and
templates imported without an image) have no hash."""

SQLITE = """
ALTER TABLE faces ADD COLUMN image_sha256 TEXT;
CREATE INDEX faces_by_image ON faces (collection, external_image_id, image_sha256)
"""

POSTGRES = """
ALTER TABLE faces ADD COLUMN image_sha256 TEXT;
CREATE INDEX faces_by_image ON faces (collection, external_image_id, image_sha256)
"""
