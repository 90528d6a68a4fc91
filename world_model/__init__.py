"""World model of genie-redux: ST-ViViT tokenizer, latent action model and MaskGIT dynamics.

Consumes the episode store written by `rl_agent`; never imports how it is launched or swept.
"""
