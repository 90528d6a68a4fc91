"""Exploration side of genie-redux: the CoinRun environment, agents, and the episode store.

Nothing here imports the world model: exploration produces data, the world model consumes it.
The episode schema (the data contract of docs/design.md, 'The episode record') is defined once, in
`rl_agent.store.schema`.
"""
