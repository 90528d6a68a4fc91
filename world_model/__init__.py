"""World model of genie-redux: ST-ViViT tokenizer, latent action model and MaskGIT dynamics.

Consumes the episode store written by `rl_agent`; never imports how it is launched or swept.

Dimension letters, one meaning each in every module's "Shapes:" legend and shape comments: B batch (windows),
T frames (Tc context, Tw the LAM's window, n generated), H x W x C frame pixels (channels last), p patch side, h x w
token grid, d model width (nh heads of width dh), V the tokenizer's vocabulary, K a quantiser's codes, D a code width
(the tokenizer's codes, the LAM's latent actions), A actions given, M masked positions, E frames of an episode, F forks
and k frames per fork (evaluation), L and S an attention sequence's length and keys (Lp cached before it), N a
flattened count of items (sequences, vectors, frames: each legend says which). Counts without a letter (workers,
features, steps) are words.
"""
