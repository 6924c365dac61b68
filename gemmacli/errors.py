"""Errors a user can act on. Each message is one readable line, without paths to our own code.

The CLI prints them as `error: <message>`; the server maps each class to an HTTP status.
"""


class GemmacliError(Exception):
    """Base class: something the user can fix (bad input, missing model, offline...)."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class ModelNotFoundError(GemmacliError):
    """The name is not a catalog alias, a cached model, a local folder or a reachable Hub repo."""

    code = "model_not_found"


class ModelUnavailableError(GemmacliError):
    """The model exists but cannot be fetched now: offline, gated, or missing the demo extra."""

    code = "model_unavailable"


class MediaError(GemmacliError):
    """An image or audio file that cannot be decoded, or breaks a size limit."""

    code = "invalid_media"


class InvalidParamError(GemmacliError):
    """A parameter outside what the model or runner accepts."""

    code = "invalid_parameter"


class ContextLengthError(InvalidParamError):
    """The prompt plus the tokens asked for do not fit in the model's context window."""

    code = "context_length_exceeded"


class UnsupportedInputError(GemmacliError):
    """The input kind (image, audio, translation...) is not something this model can do."""

    code = "unsupported_input"
