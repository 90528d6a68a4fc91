"""The bottom floor of genie-redux: what every package shares, importing none of them.

The floors, top to bottom: `cluster` -> `tuning` -> `world_model` -> `rl_agent` -> `genie_common`; a module
imports only from its own floor or lower ones (`tests/test_layering.py` checks it).

`errors`: the exception types every floor raises; `atomic`: write-to-temp-then-rename and the temp-file names;
`storage`: local paths and storage URIs behind one interface (pyarrow's filesystems); `config`: dicts to typed
configs; `presets`: the preset files read and `--set` overrides applied (their sections are checked by the
floors that own the typed configs).
"""
