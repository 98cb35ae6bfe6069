"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UnividError(Exception):
    """Base class of user-facing errors."""


class ConfigError(UnividError):
    """An invalid configuration key, value or combination."""


class InputError(UnividError):
    """A bad argument: missing file, unwritable path, empty prompt, ..."""


class CorruptFileError(InputError):
    """A file that exists but cannot be read as what it claims to be (truncated, bad header)."""


class TrainingAborted(UnividError):
    """Training stopped on purpose (e.g. too many non-finite steps); checkpoints are intact."""
