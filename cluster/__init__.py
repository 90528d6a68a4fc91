"""The user-facing layer: the `genie` CLI, local/cluster Ray sessions, and (later) the pipeline and jobs."""
