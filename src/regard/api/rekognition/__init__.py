"""Rekognition's protocol: signatures, request validation, operations and error encoding."""
