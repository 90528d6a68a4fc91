"""The exception types of the whole project, so every floor raises them and the CLI catches each once."""


class ConfigError(ValueError):
    """A user-supplied option is invalid; the message says which and what to do."""


class DatasetError(Exception):
    """A dataset is missing, damaged or inconsistent. The message names the file and what to do."""


class StorageError(RuntimeError):
    """A path or URI cannot be read or written; the message names it and says what to check."""
