"""Play a world model: a Ray Serve app with a browser page (`genie play`) and offline dreams (`genie dream`).

Modules, one job each:
  actions   key/letter -> action maps for GenieRedux-G (CoinRun actions) and GenieRedux (latent actions)
  stepper   one autoregressive step of the world model on token contexts, batched over sessions (torch only)
  starts    where a game starts: a test-set episode, a chosen episode or a fresh Procgen level; the real game
  session   per-player state (tokens, frames, actions, recording) with limits and expiry
  media     frames <-> PNG / GIF / base64 for the page
  access    who may talk to the server: the token off loopback, loopback Host names on it, JSON POSTs only
  server    the Ray Serve deployments: a batched model and a FastAPI ingress holding the sessions
  page      the self-contained HTML/JS page
  dream     `genie dream`: a scripted rollout written to a GIF
  config    the settings of both (PlayConfig, DreamConfig), whose documented fields are their commands' options
"""
