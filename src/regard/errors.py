"""One error hierarchy for regard.

Every failure the library reports on purpose is a :class:`RegardError`. Each leaf
class carries a stable ``code`` that names the Amazon Rekognition exception a client
expects; only ``regard.api`` turns these into wire-format errors, and only the CLI
turns them into an exit status.

::

    RegardError
    ├── InvalidParameter              InvalidParameterException
    │   ├── FileNotFound              (a named file is missing or unreadable)
    │   ├── InvalidPaginationToken    InvalidPaginationTokenException
    │   └── IdempotentParameterMismatch
    ├── ImageError
    │   ├── InvalidImageFormat        InvalidImageFormatException
    │   └── ImageTooLarge             ImageTooLargeException
    ├── ResourceNotFound              ResourceNotFoundException
    ├── ResourceAlreadyExists         ResourceAlreadyExistsException
    ├── ResourceInUse                 ResourceInUseException
    ├── ConflictError                 ConflictException
    ├── AccessDenied                  AccessDeniedException
    ├── Throttling                    ThrottlingException
    ├── ServiceQuotaExceeded          ServiceQuotaExceededException
    ├── UnsupportedOperation          (not a Rekognition operation regard serves)
    └── ModelUnavailable              a packaged model is not installed or is corrupt
        └── ScoringMismatch           score normalizer or calibration made for another model
"""

from __future__ import annotations


class RegardError(Exception):
    """Root of every error regard raises on purpose."""

    code: str = "InternalServerError"
    http_status: int = 500
    #: True once an audit record names this error: whoever wrote that record sets it, so that an
    #: outer layer that logs refusals (the API's error handler) does not write a second one.
    audit_recorded: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(RegardError):
    """A request parameter is missing, malformed or out of range."""

    code = "InvalidParameterException"
    http_status = 400


class FileNotFound(InvalidParameter):
    """A file named on the command line (or in a manifest) does not exist or cannot be read."""


class InvalidPaginationToken(InvalidParameter):
    """A NextToken that regard did not issue, or that no longer applies."""

    code = "InvalidPaginationTokenException"


class IdempotentParameterMismatch(InvalidParameter):
    """A ClientRequestToken was reused with different parameters."""

    code = "IdempotentParameterMismatchException"


class ImageError(RegardError):
    """The input image cannot be used."""

    code = "InvalidImageFormatException"
    http_status = 400


class InvalidImageFormat(ImageError):
    """Not an image, a format regard cannot decode, or a truncated or corrupt file."""

    code = "InvalidImageFormatException"


class ImageTooLarge(ImageError):
    """The image exceeds the byte or pixel limit."""

    code = "ImageTooLargeException"


class ResourceNotFound(RegardError):
    """A collection, face, user or key that does not exist."""

    code = "ResourceNotFoundException"
    http_status = 400


class ResourceAlreadyExists(RegardError):
    """Creating something that already exists."""

    code = "ResourceAlreadyExistsException"
    http_status = 400


class ResourceInUse(RegardError):
    """The resource is busy or in a state that forbids the operation."""

    code = "ResourceInUseException"
    http_status = 400


class ConflictError(RegardError):
    """The request conflicts with the current state (for example a face owned by another user)."""

    code = "ConflictException"
    http_status = 400


class AccessDenied(RegardError):
    """The caller is not allowed to do this."""

    code = "AccessDeniedException"
    http_status = 400


class Throttling(RegardError):
    """The caller exceeded its request rate.

    Rekognition's model marks ThrottlingException a server fault, so it is sent as a 5xx (503, the
    status every SDK's standard retry backs off on), never as a client error.
    """

    code = "ThrottlingException"
    http_status = 503


class ServiceQuotaExceeded(RegardError):
    """A quota (faces per user, collections, ...) would be exceeded."""

    code = "ServiceQuotaExceededException"
    http_status = 400


class UnsupportedOperation(RegardError):
    """An operation of Rekognition's API that regard does not implement."""

    code = "UnsupportedOperationException"
    http_status = 400


class ModelUnavailable(RegardError):
    """A model package is missing or its files are unreadable."""

    code = "InternalServerError"
    http_status = 500


class ScoringMismatch(ModelUnavailable):
    """The score normalizer or calibration table was made for another embedding model."""
