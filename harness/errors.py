"""Errors the CLI reports as one clear line (exit code 2) instead of a traceback."""


class HarnessError(Exception):
    """Base class: a problem with the user's input or environment, stated in the message."""


class ConfigError(HarnessError):
    """A model config, profile or flag is invalid."""


class DataError(HarnessError):
    """A prompt, artifact or benchmark file is missing, malformed or fails its checksum."""


class DataUnavailable(DataError):
    """An official file is in neither the mirror nor the cache, and cannot be downloaded here."""


class RunStateError(HarnessError):
    """A run directory is locked, incompatible or inconsistent."""
