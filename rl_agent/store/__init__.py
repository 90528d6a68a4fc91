"""The episode store: Arrow shards plus a manifest (docs/design.md, 'The episode record').

`schema` defines the record once; `writer` commits shards atomically; `manifest` lists them;
`reader` serves T-frame windows; `verify` and `stats` check and describe a dataset.
"""

from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import Manifest
from rl_agent.store.reader import EpisodeStore

__all__ = ["DatasetError", "EpisodeStore", "Manifest"]
