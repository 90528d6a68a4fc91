"""One exception type for every problem with a dataset on disk, so the CLI can print it and exit 1."""


class DatasetError(Exception):
    """A dataset is missing, damaged or inconsistent. The message names the file and what to do."""
