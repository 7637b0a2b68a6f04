"""The project's own exception types.

Every failure a user can cause (an unreadable upload, a missing model) is raised as a subclass of
:class:`PneumoniaError`, so callers (the app, the CLI) can show its message and carry on, while
programming errors still surface as ordinary exceptions.
"""


class PneumoniaError(Exception):
    """Base class for errors whose message is meant for a person."""


class InvalidImageError(PneumoniaError, ValueError):
    """The input cannot be read as a chest X-ray image (broken, empty, wrong shape or format)."""


class ModelLoadError(PneumoniaError, RuntimeError):
    """The model file or its metadata is missing, corrupt, or they do not match each other."""
