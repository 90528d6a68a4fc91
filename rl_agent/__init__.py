"""Exploration side of genie-redux: the CoinRun environment, agents, and the episode store.

Nothing here imports the world model: exploration produces data, the world model consumes it.
The episode schema (the data contract of DESIGN §2) is defined once, in `rl_agent.store.schema`.
"""
