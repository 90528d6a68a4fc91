"""MaskGIT's context cache: running the context once per generated frame must not change a single sample.

Tiny random-weight dynamics, with the PEG's convolution randomised (it starts at zero, which would
hide a wrong PEG window) and a non-zero "no action" vector (frame 0's conditioning).
"""

import pytest
import torch

from world_model.config import DynamicsConfig, TransformerConfig
from world_model.dynamics import Dynamics
from world_model.st_transformer import PositionalEncodingGenerator

torch.set_num_threads(1)
CONDITIONINGS = ["ground_truth", "latent"]


def random_dynamics(conditioning, seed=0, frames=4, action_conditioning="input"):
    torch.manual_seed(seed)
    config = DynamicsConfig(vocab_size=32, grid=8, frames=frames,
                            transformer=TransformerConfig(dim=32, depth=2, heads=4, mlp_ratio=2.0),
                            conditioning=conditioning, latent_action_dim=8, sampling_steps=4,
                            action_conditioning=action_conditioning)
    model = Dynamics(config).eval()
    for module in model.modules():
        if isinstance(module, PositionalEncodingGenerator):
            torch.nn.init.normal_(module.conv.weight, std=0.3)
            torch.nn.init.normal_(module.conv.bias, std=0.3)
    for block in model.transformer.blocks:  # adaLN starts at zero, which would hide a misplaced modulation
        if hasattr(block, "modulation"):
            torch.nn.init.normal_(block.modulation.weight, std=0.3)
    torch.nn.init.normal_(model.no_action)
    return model


def random_actions(conditioning, batch, count, seed=1):
    generator = torch.Generator().manual_seed(seed)
    if conditioning == "ground_truth":
        return torch.randint(0, 15, (batch, count), generator=generator)  # (B, A) ids
    return torch.randn(batch, count, 8, generator=generator)  # (B, A, D) latent codes


def random_tokens(batch, frames, seed=2):
    return torch.randint(0, 32, (batch, frames, 8, 8), generator=torch.Generator().manual_seed(seed))  # (B, T, h, w)


@pytest.mark.parametrize("action_conditioning", ["input", "adaptive_norm"])
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("context", [1, 2, 3])
def test_cached_logits_equal_the_whole_window_recomputed(conditioning, context, action_conditioning):
    model = random_dynamics(conditioning, action_conditioning=action_conditioning)
    tokens = random_tokens(2, context)  # (B, Tc, h, w)
    actions = random_actions(conditioning, 2, context)  # (B, Tc[, D])
    frame = random_tokens(2, 1, seed=3)  # (B, 1, h, w): a half-filled new frame
    frame[:, :, ::2] = model.mask_id
    with torch.no_grad():
        cached = model.cached_new_frame_logits(tokens, actions)(frame)  # (B, h, w, V)
        whole = model(torch.cat([tokens, frame], dim=1), actions)[:, -1]  # (B, h, w, V)
        recomputed = model.recomputed_new_frame_logits(tokens, actions)(frame)
    assert torch.equal(whole, recomputed)
    assert torch.allclose(cached, whole, atol=1e-5, rtol=1e-5)
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 32  # the oldest context frame
    with torch.no_grad():
        assert not torch.allclose(cached, model.cached_new_frame_logits(changed, actions)(frame), atol=1e-4), \
            "the oldest context frame must reach the new frame's logits through the cache"


@pytest.mark.parametrize("action_conditioning", ["input", "adaptive_norm"])
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("context", [1, 2, 3])
@pytest.mark.parametrize("temperature", [0.0, 2.0])
def test_cached_sampling_gives_the_same_tokens(conditioning, context, temperature, action_conditioning):
    model = random_dynamics(conditioning, action_conditioning=action_conditioning)
    tokens, actions = random_tokens(3, context), random_actions(conditioning, 3, context)
    samples = [
        model.sample_next_frame(tokens, actions, steps=4, temperature=temperature,
                                generator=torch.Generator().manual_seed(7), context_cache=cache)  # (B, h, w)
        for cache in (True, False)
    ]
    assert torch.equal(samples[0], samples[1])
    other = model.sample_next_frame(tokens, random_actions(conditioning, 3, context, seed=9), steps=4,
                                    temperature=temperature, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(samples[0], other), "the action into the new frame must reach the cached pass"


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_rollout_past_the_training_window_is_the_same_with_and_without_the_cache(conditioning):
    """frames=4: from frame 4 on the context slides (the oldest frame drops), so each frame builds a new cache."""
    model = random_dynamics(conditioning)
    tokens, horizon = random_tokens(2, 2), 7
    actions = random_actions(conditioning, 2, 1 + horizon)  # (B, Tc-1+horizon[, D])
    rollouts = [
        model.generate_tokens(tokens, actions, horizon, steps=3, temperature=1.5,
                              generator=torch.Generator().manual_seed(11), context_cache=cache)  # (B, horizon, h, w)
        for cache in (True, False)
    ]
    assert torch.equal(rollouts[0], rollouts[1])


def test_the_instance_switch_selects_the_path():
    """Dynamics.context_cache (per instance) is what WorldModel.generate and the play server get by default."""
    model = random_dynamics("ground_truth")
    prefills = []
    prefill = model.transformer.prefill
    model.transformer.prefill = lambda context, *rest: prefills.append(context.shape[1]) or prefill(context, *rest)
    tokens, actions = random_tokens(1, 2), random_actions("ground_truth", 1, 1 + 3)
    model.generate_tokens(tokens, actions, 3, steps=2)
    assert prefills == [2, 3, 3], "one context run per generated frame, over the (sliding) context"
    model.context_cache = False
    model.generate_tokens(tokens, actions, 3, steps=2)
    assert prefills == [2, 3, 3]


def test_cached_sampling_runs_under_bf16_autocast():
    model = random_dynamics("ground_truth")
    tokens, actions = random_tokens(2, 3), random_actions("ground_truth", 2, 3)
    frame = torch.full((2, 1, 8, 8), model.mask_id)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cached = model.cached_new_frame_logits(tokens, actions)(frame)  # (B, h, w, V)
        whole = model.recomputed_new_frame_logits(tokens, actions)(frame)
        sample = model.sample_next_frame(tokens, actions, steps=4, temperature=1.0,
                                         generator=torch.Generator().manual_seed(0))
    assert cached.dtype == whole.dtype == torch.bfloat16
    assert torch.allclose(cached.float(), whole.float(), atol=0.1)
    assert sample.shape == (2, 8, 8) and ((sample >= 0) & (sample < 32)).all()


def test_adaptive_norm_starts_as_input_conditioning_and_then_uses_the_action_in_every_block():
    """Zero-initialised adaLN is exactly input-only conditioning; once trained (here: randomised) the action
    changes every block's normalised inputs, so it reaches the logits through more than the input sum."""
    plain = random_dynamics("ground_truth", action_conditioning="input")
    adaptive = random_dynamics("ground_truth", action_conditioning="adaptive_norm")
    for block in adaptive.transformer.blocks:
        torch.nn.init.zeros_(block.modulation.weight)
    adaptive.load_state_dict({**plain.state_dict(),
                              **{k: v for k, v in adaptive.state_dict().items() if "modulation" in k}})
    tokens, actions = random_tokens(2, 3), random_actions("ground_truth", 2, 2)
    with torch.no_grad():
        assert torch.allclose(plain(tokens, actions), adaptive(tokens, actions), atol=1e-6)
        torch.nn.init.normal_(adaptive.transformer.blocks[-1].modulation.weight, std=0.3)
        assert not torch.allclose(plain(tokens, actions), adaptive(tokens, actions), atol=1e-3)
    with pytest.raises(Exception, match="action_conditioning"):
        DynamicsConfig(action_conditioning="cross_attention")


def guided(model, scale, dropout=0.1):
    import dataclasses
    model.config = dataclasses.replace(model.config, action_dropout=dropout, guidance=scale)
    return model


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("context", [1, 3])
def test_guided_sampling_is_the_same_with_and_without_the_context_cache(conditioning, context):
    model = guided(random_dynamics(conditioning), 3.0)
    tokens, actions = random_tokens(3, context), random_actions(conditioning, 3, context)
    samples = [model.sample_next_frame(tokens, actions, steps=4, temperature=1.0,
                                       generator=torch.Generator().manual_seed(7), context_cache=cache)
               for cache in (True, False)]  # (B, h, w) each
    assert torch.equal(samples[0], samples[1])


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_guidance_contrasts_the_new_frame_with_and_without_its_key(conditioning):
    """l_none + g (l_key - l_none), where l_none is the window with only the new frame's action replaced by
    "no action"; g = 0 samples as if the key were unknown, g = 1 as plain MaskGIT."""
    model = random_dynamics(conditioning)
    tokens, actions = random_tokens(2, 2), random_actions(conditioning, 2, 2)
    keyless_actions = actions.clone()
    with torch.no_grad():
        frame = torch.full((2, 1, 8, 8), model.mask_id)
        keyed = model(torch.cat([tokens, frame], 1), actions)[:, -1]  # (B, h, w, V)
        dropped = torch.tensor([[False, True]]).expand(2, 2)  # (B, Tc): the new frame's key only
        none = model.readout(model.hidden_states(torch.cat([tokens, frame], 1), keyless_actions, dropped)[:, -1],
                             tokens[:, -1])
    assert not torch.allclose(keyed, none, atol=1e-4), "the key must reach the new frame"
    draws = {}
    for scale, logits in ((0.0, none), (1.0, keyed), (2.5, none + 2.5 * (keyed - none))):
        guided(model, scale)
        draws[scale] = model.sample_next_frame(tokens, actions, steps=1, temperature=0.0)  # (B, h, w): argmax
        assert torch.equal(draws[scale], logits.argmax(-1)), scale


def test_action_dropout_trains_some_transitions_without_their_key():
    model = guided(random_dynamics("ground_truth"), 1.0, dropout=0.5).train()
    drop = model.random_action_drop(64, 3, torch.device("cpu"), torch.Generator().manual_seed(0))  # (B, T-1)
    assert 0.35 < drop.float().mean() < 0.65
    tokens, actions = random_tokens(4, 4), random_actions("ground_truth", 4, 3)
    with torch.no_grad():  # the same generator: the same mask; only the dropped keys differ
        with_drop = model.compute_loss_on_tokens(tokens, actions, torch.Generator().manual_seed(0)).loss
        guided(model, 1.0, dropout=0.0)
        assert model.random_action_drop(64, 3, torch.device("cpu")) is None
        without = model.compute_loss_on_tokens(tokens, actions, torch.Generator().manual_seed(0)).loss
    assert not torch.isclose(with_drop, without)


def test_guidance_without_action_dropout_is_refused():
    from rl_agent.coinrun_env import ConfigError
    with pytest.raises(ConfigError, match="action_dropout"):
        DynamicsConfig(guidance=2.0)


def test_a_world_model_refuses_a_guidance_scale_its_dynamics_never_learnt():
    from rl_agent.coinrun_env import ConfigError
    from world_model.generation import WorldModel

    model = random_dynamics("ground_truth")  # action_dropout 0
    world = WorldModel.__new__(WorldModel)
    torch.nn.Module.__init__(world)
    world.dynamics = model
    world.use_guidance(None)
    world.use_guidance(1.0)
    with pytest.raises(ConfigError, match="action_dropout"):
        world.use_guidance(2.0)
    guided(model, 1.0)  # trained with action_dropout 0.1
    world.use_guidance(2.0)
    assert model.config.guidance == 2.0
