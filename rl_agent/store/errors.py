"""One exception type for every problem with a dataset on disk, so the CLI can print it and exit 1.

Defined in `genie_common.errors` (storage raises it too); this name stays for the store's readers and writers.
"""

from genie_common.errors import DatasetError

__all__ = ["DatasetError"]
