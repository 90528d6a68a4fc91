"""The scrolled copy path: the scene's scroll, shifted frames, the scroll head's targets, and a `scrolled` dynamics
that trains on references and draws its scroll before it samples a frame."""

import dataclasses

import numpy as np
import pytest
import torch

from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv
from world_model.config import ConfigError, DynamicsConfig, QuantizerConfig, TokenizerConfig, TransformerConfig
from world_model.dynamics import Dynamics
from world_model.generation import WorldModel
from world_model.optim import Optimization
from world_model.config import OptimConfig
from world_model.scroll import (Scroller, scene_scroll, scroll_targets, scrolled_references, shift_frames,
                                whole_pixel_steps)
from world_model.tokenizer import Tokenizer

torch.set_num_threads(1)
BLOCK = TransformerConfig(dim=32, depth=2, heads=4, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def coinrun_frame() -> np.ndarray:
    env = CoinRunVecEnv(1, CoinRunConfig(), seed=5)
    for _ in range(12):  # a few steps in: the agent has landed, walls and floor in view
        env.step(np.array([7]))
    return env.observe()[0]  # (64, 64, 3) uint8


def per_frame_tokenizer() -> Tokenizer:
    return Tokenizer(TokenizerConfig(patch=8, frames=4, encoder=BLOCK, decoder=BLOCK, encoder_temporal=False,
                                     quantizer=QuantizerConfig(codebook_size=32, code_dim=8))).eval()


def scrolled_dynamics(**overrides) -> Dynamics:
    values = dict(vocab_size=32, grid=8, frames=4, transformer=BLOCK, copy_bias=3.0, copy_reference="scrolled",
                  max_scroll=4)
    values.update(overrides)
    return Dynamics(DynamicsConfig(**values))


def test_shift_frames_moves_the_scene_and_repeats_the_border():
    frames = torch.arange(2 * 6 * 5 * 1).view(2, 6, 5, 1)  # (N, H, W, C)
    shifted = shift_frames(frames, torch.tensor([[2, -1], [0, 0]]))
    # scene 2 px right, 1 px up: shifted[y, x] = frame[y + 1, x - 2], clamped at the border
    for y in range(6):
        for x in range(5):
            assert shifted[0, y, x, 0] == frames[0, min(y + 1, 5), max(x - 2, 0), 0]
    assert torch.equal(shifted[1], frames[1])


def test_scene_scroll_recovers_a_known_whole_pixel_shift_of_a_real_frame(coinrun_frame):
    before = np.stack([coinrun_frame] * 3)  # (3, H, W, C)
    true = torch.tensor([[3, 0], [-2, 2], [0, -4]])
    after = shift_frames(torch.from_numpy(before), true).numpy()
    np.testing.assert_allclose(scene_scroll(before, after), true.numpy(), atol=0.3)


def test_scroll_targets_split_a_sub_pixel_scroll_between_its_two_whole_pixels():
    targets = scroll_targets(torch.tensor([[0.4, -2.75], [9.0, -9.0]]), max_scroll=4)  # (2, 2, 9)
    assert torch.allclose(targets.sum(-1), torch.ones(2, 2))
    values = torch.arange(-4, 5).float()
    expected = torch.tensor([[0.4, -2.75], [4.0, -4.0]])  # beyond max_scroll: clipped
    assert torch.allclose((targets * values).sum(-1), expected, atol=1e-6)
    assert targets[0, 0, 4] == pytest.approx(0.6) and targets[0, 0, 5] == pytest.approx(0.4)


def test_a_scrolled_dynamics_needs_a_copy_path_and_its_references():
    with pytest.raises(ConfigError, match="copy_bias"):
        DynamicsConfig(copy_reference="scrolled")
    with pytest.raises(ConfigError, match="copy_reference"):
        DynamicsConfig(copy_reference="shifted", copy_bias=3.0)
    dynamics = scrolled_dynamics()
    tokens = torch.randint(0, 32, (2, 4, 8, 8))
    with pytest.raises(ValueError, match="scrolled reference"):
        dynamics.compute_loss_on_tokens(tokens, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="Scroller"):
        dynamics.sample_next_frame(tokens[:, :3], torch.zeros(2, 3, dtype=torch.long), steps=2)


def test_the_scroll_head_learns_which_way_each_key_scrolls():
    """Keys 7 (RIGHT) and 1 (LEFT) scroll the scene 2 px left and right, key 4 (NOOP) not at all, on random tokens:
    the head has to read the key, and it must get every scroll right after a short training."""
    torch.manual_seed(0)
    dynamics = scrolled_dynamics()
    optimization = Optimization(dynamics, OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, total_steps=100))
    generator = torch.Generator().manual_seed(0)
    effect = {7: -2.0, 1: 2.0, 4: 0.0}
    for _ in range(100):
        actions = torch.tensor(list(effect))[torch.randint(0, 3, (8, 3), generator=generator)]  # (B, T-1)
        scrolls = torch.zeros(8, 4, 2)
        scrolls[:, 1:, 0] = torch.tensor([[effect[int(a)] for a in row] for row in actions])
        tokens = torch.randint(0, 32, (8, 4, 8, 8), generator=generator)
        output = dynamics.compute_loss_on_tokens(tokens, actions, generator, tokens, scrolls)
        optimization.step(output.loss)
    assert float(output.metrics["scroll_accuracy"]) == 1.0
    dynamics.eval()
    with torch.no_grad():
        keys = torch.tensor([7, 1, 4])
        logits = dynamics.scroll_logits(torch.zeros(3, 8, 8, 32), dynamics.frame_conditioning(keys[:, None], 3)[:, 1],
                                        torch.zeros(3, 2))
        assert dynamics.sample_scroll(logits, 0.0, torch.zeros(3, 2))[:, 0].tolist() == [-2, 2, 0]


def test_a_relative_scroll_head_keeps_a_speed_it_never_saw():
    """scroll_relative: the head picks the change from the scroll before. Trained on windows that scroll at a
    constant -1, 0 or +1 px a frame, it continues a 3 px a frame scroll (change 0); a head that picks the scroll
    itself, trained the same, does not. Frame 1's change is not scored (the scroll into frame 0 is unknown)."""
    heads = {}
    for relative in (True, False):
        torch.manual_seed(0)
        dynamics = scrolled_dynamics(scroll_relative=relative)
        optimization = Optimization(dynamics, OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, total_steps=100))
        generator = torch.Generator().manual_seed(0)
        for _ in range(100):
            speed = torch.randint(-1, 2, (8, 1), generator=generator).float()  # (B, 1) px a frame
            scrolls = torch.zeros(8, 4, 2)
            scrolls[:, 1:, 0] = speed  # (B, T, 2): frame 0's unknown (0), as training registers it
            tokens = torch.randint(0, 32, (8, 4, 8, 8), generator=generator)
            output = dynamics.compute_loss_on_tokens(tokens, torch.full((8, 3), 4), generator, tokens, scrolls)
            optimization.step(output.loss)
        dynamics.eval()
        with torch.no_grad():
            previous = torch.tensor([[3.0, 0.0]])
            logits = dynamics.scroll_logits(torch.zeros(1, 8, 8, 32),
                                            dynamics.frame_conditioning(torch.tensor([[4]]), 1)[:, 1], previous)
            heads[relative] = dynamics.most_likely_scroll(logits, previous)[0].tolist()
    assert heads[True] == [3.0, 0.0] and heads[False][0] != 3.0, heads
    targets, counts = scrolled_dynamics(scroll_relative=True).scroll_choice_targets(
        torch.tensor([[[0.0, 0.0], [2.0, 0.0], [2.5, 1.0], [1.5, 1.0]]]))
    assert counts.tolist() == [[False, True, True]]  # frame 1's change from an unknown scroll is not scored
    assert targets[0, 1, 0, 4:6].tolist() == [0.5, 0.5] and targets[0, 2, 0, 3].item() == 1.0  # +0.5 px, -1 px


def test_a_rollout_copies_the_last_frame_shifted_by_the_drawn_scroll(coinrun_frame):
    """A head that always draws a 3 px scroll to the right and a copy path that always wins: each dreamt frame's
    tokens are the frame before (as decoded) shifted 3 px right and tokenized, through WorldModel.generate."""
    torch.manual_seed(0)
    tokenizer = per_frame_tokenizer()
    dynamics = scrolled_dynamics(copy_bias=50.0, sampling_steps=2).eval()
    with torch.no_grad():
        last = dynamics.scroll_head[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[4 + 3] = 100.0  # x: +3 px
        last.bias[9 + 4] = 100.0  # y: 0
    world = WorldModel(tokenizer, dynamics)
    context = np.stack([coinrun_frame, coinrun_frame])[None]  # (1, 2, H, W, C)
    actions = np.array([[4, 7, 7]])
    generated = dynamics.generate_tokens(tokenizer.tokenize(context), world.action_inputs(actions), 2,
                                         scroller=world.scroller(context, tokenizer.tokenize(context)))
    frames = torch.from_numpy(context[:, -1]).float() / 255  # (1, H, W, C)
    expected = tokenizer.encode(shift_frames(frames, torch.tensor([[3, 0]]))[:, None]).ids[:, 0]
    assert torch.equal(generated[:, 0], expected)
    decoded = world.decode_windows(torch.cat([tokenizer.tokenize(context), generated[:, :1]], 1), 2)[:, 0]
    expected = tokenizer.encode(shift_frames(decoded, torch.tensor([[3, 0]]))[:, None]).ids[:, 0]
    assert torch.equal(generated[:, 1], expected)
    # the frames it shows: through generate, the same seed twice gives the same dream
    first = world.generate(context, actions, 2, generator=torch.Generator().manual_seed(1))
    again = world.generate(context, actions, 2, generator=torch.Generator().manual_seed(1))
    assert first.shape == (1, 2, 64, 64, 3) and torch.equal(first, again)


def test_scrolled_references_are_the_frame_before_shifted_by_the_rounded_scroll(coinrun_frame):
    tokenizer = per_frame_tokenizer()
    frames = np.stack([coinrun_frame, coinrun_frame, coinrun_frame])  # (3, H, W, C)
    scrolls = np.array([[0, 0], [1.4, -0.6], [-9.0, 0.2]], np.float32)
    references = scrolled_references(tokenizer, frames, scrolls, max_scroll=4)  # (3, h, w)
    assert references.dtype == np.int16 and (references[0] == 32).all()  # frame 0: none (the "masked" id)
    unit = torch.from_numpy(frames[:2]).float() / 255
    expected = tokenizer.encode(shift_frames(unit, torch.tensor([[1, -1], [-4, 0]]))[:, None]).ids[:, 0]
    assert np.array_equal(references[1:], expected.numpy())
    temporal = Tokenizer(dataclasses.replace(tokenizer.config, encoder_temporal=True))
    with pytest.raises(ValueError, match="encoder_temporal"):
        scrolled_references(temporal, frames, scrolls, max_scroll=4)


def test_advancing_a_scroller_before_drawing_a_scroll_is_refused():
    scroller = Scroller(per_frame_tokenizer(), torch.zeros(1, 64, 64, 3), torch.zeros(1, 2), lambda tokens: None)
    with pytest.raises(RuntimeError, match="reference"):
        scroller.advance(torch.zeros(1, 3, 8, 8, dtype=torch.long))


def test_a_sub_pixel_scroll_accumulates_into_whole_pixel_steps():
    steps, position = [], torch.zeros(1, 2)
    for _ in range(10):  # 0.4 px a step sideways, -1.5 px a step vertically
        scroll = torch.tensor([[0.4, -1.5]])
        steps.append(whole_pixel_steps(position, scroll))
        position = position + scroll
    steps = torch.cat(steps)  # (10, 2)
    assert steps[:5, 0].tolist() == [0, 1, 0, 1, 0]  # a pixel every 2-3 steps, never rounded away
    assert steps[:, 0].sum() == 4 and steps[:, 1].sum() == -15  # the dream has moved as far as the camera
    whole = torch.tensor([[3.0, -2.0]])
    assert torch.equal(whole_pixel_steps(torch.tensor([[2.0, -5.0]]), whole), whole)  # whole draws: unchanged


def test_the_expected_scroll_draw_moves_a_rollout_by_the_pixels_its_camera_crosses(coinrun_frame):
    """scroll_draw 'expected': the head's mean scroll (0.6 of 0 px, 0.4 of +1 px -> 0.4 px), carried as a sub-pixel
    position: the references shift by 0, 1, 0, 1, 0 px and the head reads back 0.4 px, what it was trained on."""
    dynamics = scrolled_dynamics(scroll_draw="expected")
    logits = torch.full((1, 2, 9), -1e4)
    logits[0, 0, 4], logits[0, 0, 5] = np.log(0.6), np.log(0.4)  # x: 0 px or +1 px
    logits[0, 1, 4] = 0.0  # y: 0 px
    drawn = dynamics.sample_scroll(logits, 1.0, torch.zeros(1, 2))  # (1, 2)
    assert torch.allclose(drawn, torch.tensor([[0.4, 0.0]]), atol=1e-5)
    tokenizer = per_frame_tokenizer()
    frame = torch.from_numpy(coinrun_frame).float()[None] / 255  # (1, H, W, C)
    scroller = Scroller(tokenizer, frame, torch.zeros(1, 2), lambda tokens: frame)
    for px in [0, 1, 0, 1, 0]:
        expected = tokenizer.encode(shift_frames(frame, torch.tensor([[px, 0]]))[:, None]).ids[:, 0]
        assert torch.equal(scroller.reference(drawn), expected)
        scroller.advance(torch.zeros(1, 3, 8, 8, dtype=torch.long))
        assert torch.allclose(scroller.previous_scroll, drawn)
    with pytest.raises(ConfigError, match="scroll_draw"):
        DynamicsConfig(copy_bias=3.0, copy_reference="scrolled", scroll_draw="mean")


# ---- the paths a scrolled dynamics takes: training, teacher forcing, counterfactuals, play ----------------------
@pytest.fixture(scope="module")
def coinrun_clip() -> tuple[np.ndarray, np.ndarray]:
    """8 real frames of one game (B=2 copies) and the 7 actions between them: RIGHT, RIGHT+UP, LEFT, ..."""
    env = CoinRunVecEnv(1, CoinRunConfig(), seed=7)
    actions = np.array([7, 7, 8, 7, 1, 1, 4])
    frames = [env.observe()[0]]
    for action in actions:
        env.step(np.array([action]))
        frames.append(env.observe()[0])
    return np.stack([np.stack(frames)] * 2), np.stack([actions] * 2)  # (2, 8, H, W, C), (2, 7)


def forced_right(dynamics: Dynamics, px: int = 3) -> Dynamics:
    """A scroll head that always draws `px` px to the right and 0 down (and a copy path that always wins)."""
    s = dynamics.config.max_scroll
    with torch.no_grad():
        last = dynamics.scroll_head[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[s + px] = 100.0
        last.bias[2 * s + 1 + s] = 100.0
    return dynamics


def test_a_scrolled_dynamics_trains_and_validates_from_frames_and_refuses_tokens_without_its_references(
        coinrun_clip):
    from world_model.steps import DynamicsTrainee, TokenBatch, eval_step, train_step
    frames, actions = coinrun_clip
    trainee = DynamicsTrainee(scrolled_dynamics(), per_frame_tokenizer())
    optimization = Optimization(trainee, OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, total_steps=5))
    metrics = train_step(trainee, optimization, (frames[:, :4], actions[:, :3]))
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > metrics["token_loss"] > 0 and metrics["scroll_loss"] > 0
    validated = eval_step(trainee, (frames[:, :4], actions[:, :3]), decode=True)
    assert 0 <= validated["teacher_forced_accuracy"] <= 1 and "teacher_forced_psnr" in validated
    references, scrolls = trainee.scrolled_inputs((frames[:, :4], actions[:, :3]))  # (B, T, h, w), (B, T, 2)
    assert references.shape == (2, 4, 8, 8) and (references[:, 0] == 32).all() and (scrolls[:, 0] == 0).all()
    np.testing.assert_allclose(scrolls[0, 1:].numpy(), scene_scroll(frames[0, :3], frames[0, 1:4]))
    with pytest.raises(ValueError, match="max_scroll"):  # a cache of the plain copy path: no scroll columns
        trainee.compute_loss(TokenBatch(torch.zeros(2, 4, 8, 8, dtype=torch.long), actions[:, :3]))
    temporal = Tokenizer(dataclasses.replace(per_frame_tokenizer().config, encoder_temporal=True))
    with pytest.raises(ValueError, match="encoder_temporal"):
        DynamicsTrainee(scrolled_dynamics(), temporal)
    with pytest.raises(ValueError, match="encoder_temporal"):
        WorldModel(temporal, scrolled_dynamics())


def test_teacher_forcing_copies_the_real_frame_before_shifted_by_the_heads_scroll(coinrun_clip):
    from world_model.evaluation.rollouts import teacher_forced
    torch.manual_seed(0)
    frames, actions = coinrun_clip
    tokenizer = per_frame_tokenizer()
    world = WorldModel(tokenizer, forced_right(scrolled_dynamics(copy_bias=50.0))).eval()
    predicted = teacher_forced(world, frames, torch.as_tensor(actions), context=2, horizon=3)  # (B, 3, H, W, C)
    for j, k in enumerate(range(2, 5)):
        before = torch.from_numpy(frames[:, k - 1]).float() / 255  # (B, H, W, C)
        ids = tokenizer.encode(shift_frames(before, torch.tensor([[3, 0]] * 2))[:, None]).ids  # (B, 1, h, w)
        lo = max(0, k - 3)  # teacher forcing tokenizes the dynamics' window (4 frames) ending at k, on its own
        expected = tokenizer.detokenize(torch.cat([tokenizer.tokenize(frames[:, lo: k]), ids], 1))[:, -1]
        assert torch.allclose(predicted[:, j], expected, atol=1e-6)


@pytest.mark.parametrize("t", [1, 3])
def test_counterfactual_branches_of_a_scrolled_dynamics_equal_whole_rollouts(coinrun_clip, t):
    """The scroller's state (the last frame, its scroll) is part of the branch point: a counterfactual branched off
    the factual rollout at frame t is the frame a whole rollout with the changed action dreams."""
    from world_model.evaluation.rollouts import (autoregressive, autoregressive_with_counterfactuals,
                                                 counterfactual_frame)
    torch.manual_seed(0)
    frames, actions = coinrun_clip
    dynamics = scrolled_dynamics(sampling_steps=3, temperature=2.0)
    torch.nn.init.normal_(dynamics.action_embedding.weight)  # untrained, yet its scroll must depend on the key
    world = WorldModel(per_frame_tokenizer(), dynamics).eval()
    ids = torch.as_tensor(actions[:, :5])
    reference = [counterfactual_frame(world, frames[:, :6], ids, 2, t, 3, 2.0, 11, np.random.default_rng(s), True)
                 for s in (1, 3)]
    factual, branches = autoregressive_with_counterfactuals(world, frames[:, :6], ids, [c for _, c in reference], 2,
                                                            4, t, 3, 2.0, 11)
    assert torch.equal(factual, autoregressive(world, frames[:, :6], ids, 2, 4, 3, 2.0, 11))
    for (expected, _), branch in zip(reference, branches):
        assert torch.allclose(branch, expected, atol=1e-6)


def test_play_steps_a_scrolled_dynamics_from_its_tokens(coinrun_clip):
    from cluster.play.stepper import Stepper, StepInput
    torch.manual_seed(0)
    frames, _ = coinrun_clip
    tokenizer = per_frame_tokenizer()
    world = WorldModel(tokenizer, forced_right(scrolled_dynamics(copy_bias=50.0))).eval()
    stepper = Stepper(world, bf16=False)
    tokens = stepper.encode(frames[0, :3])  # (3, h, w)
    out = stepper.step([StepInput(tokens, np.array([7, 7, 7]), steps=2, temperature=1.0, seed=0)])[0]
    last = world.decode_windows(torch.as_tensor(tokens.astype(np.int64))[None], 2)[:, 0]  # (1, H, W, C)
    expected = tokenizer.encode(shift_frames(last, torch.tensor([[3, 0]]))[:, None]).ids[0, 0]
    assert np.array_equal(out.tokens, expected.numpy())


@pytest.mark.parametrize("head", [{}, {"scroll_relative": True}, {"scroll_draw": "expected"}])
def test_a_scrolled_rollout_shows_the_frames_its_scroller_decoded(coinrun_clip, head):
    """generate() reuses the scroller's decodes: they must be what decoding the rollout's tokens again gives (with
    each way of choosing the scroll: whole pixels, a change of the sub-pixel scroll before, the expected scroll)."""
    torch.manual_seed(0)
    frames, actions = coinrun_clip
    world = WorldModel(per_frame_tokenizer(), scrolled_dynamics(sampling_steps=2, **head)).eval()
    shown = world.generate(frames[:, :2], actions[:, :4], 3, generator=torch.Generator().manual_seed(0))
    context = world.tokenizer.tokenize(frames[:, :2])
    generated = world.dynamics.generate_tokens(context, world.action_inputs(actions[:, :4]), 3,
                                               generator=torch.Generator().manual_seed(0),
                                               scroller=world.scroller(frames[:, :2], context))
    assert torch.equal(shown, world.show(frames[:, :2], context, generated))


def test_the_scroll_temperature_sharpens_the_draw_and_only_a_scrolled_dynamics_takes_one():
    dynamics = scrolled_dynamics()
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0]] * 2] * 500)  # (500, 2, 9): 0 px most likely
    drawn = dynamics.sample_scroll(logits, 1.0, torch.zeros(500, 2), torch.Generator().manual_seed(0))  # (500, 2)
    assert (drawn != 0).float().mean() > 0.4  # at temperature 1 a third-likely-or-less scroll is often drawn
    dynamics.config = dataclasses.replace(dynamics.config, scroll_temperature=0.0)
    assert (dynamics.sample_scroll(logits, 1.0, torch.zeros(500, 2), torch.Generator().manual_seed(0)) == 0).all()
    with pytest.raises(ConfigError, match="scroll_temperature"):
        DynamicsConfig(copy_bias=3.0, copy_reference="scrolled", scroll_temperature=-1.0)
    world = WorldModel(per_frame_tokenizer(), Dynamics(DynamicsConfig(vocab_size=32, grid=8, frames=4,
                                                                      transformer=BLOCK)))
    with pytest.raises(ConfigError, match="copy_reference 'scrolled'"):
        world.use_scroll(0.5)
    world.use_scroll(None)  # the model's own: nothing to refuse
    with pytest.raises(ConfigError, match="copy_reference 'scrolled'"):
        world.use_scroll(draw="expected")


def test_an_attention_pooled_scroll_head_starts_as_the_mean_and_finds_the_position_that_decides():
    """scroll_pool "attention": the key's weighted sums over frame t-1's positions. It starts as the plain mean (query
    and position bias at 0). Trained on hidden states whose scroll is decided by one position (a wall beside the
    agent, say), it learns to read that position, where the mean over 64 positions, trained the same, does not."""
    from world_model.dynamics import KeyedAttentionPool

    pool = KeyedAttentionPool(dim=32, grid=8, heads=2)
    hidden, key = torch.randn(3, 8, 8, 32), torch.randn(3, 32)
    assert torch.allclose(pool(hidden, key), hidden.mean((1, 2)).repeat(1, 2), atol=1e-6)
    with pytest.raises(ConfigError, match="scroll_pool"):
        scrolled_dynamics(scroll_pool="max")
    accuracy = {}
    for pooling in ("attention", "mean"):
        torch.manual_seed(0)
        dynamics = scrolled_dynamics(scroll_pool=pooling)
        optimizer = torch.optim.Adam(dynamics.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)

        def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = torch.randn(size, 8, 8, 32, generator=generator)  # (B, h, w, d)
            right = torch.rand(size, generator=generator) < 0.5  # (B,): what the one position says
            hidden[:, 2, 5, 0] = torch.where(right, 3.0, -3.0)
            return hidden, torch.where(right, 2, -2)  # the x scroll it decides, px

        for _ in range(200):
            keys = dynamics.frame_conditioning(torch.full((64, 1), 7), 64)[:, 1]  # (B, d): the same key throughout
            hidden, scroll = batch(64)
            logits = dynamics.scroll_logits(hidden, keys, torch.zeros(64, 2))  # (B, 2, 2S+1)
            loss = torch.nn.functional.cross_entropy(logits[:, 0], scroll + 4)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            hidden, scroll = batch(256)
            logits = dynamics.scroll_logits(hidden, keys[:1].expand(256, -1), torch.zeros(256, 2))
            drawn = dynamics.most_likely_scroll(logits, torch.zeros(256, 2))[:, 0]  # (B,) px
            accuracy[pooling] = (drawn == scroll).float().mean().item()
    assert accuracy["attention"] > 0.9 and accuracy["mean"] < 0.75, accuracy


def test_the_camera_locked_box_keeps_its_pixels_and_the_agent_where_coinrun_keeps_it():
    """camera_locked_box: the scrolled reference shifts the level but not the box the camera follows. On real
    CoinRun frames that scroll by 2 px or more, that box of the reference matches the next frame far better than
    the shifted box does (the agent stays put on screen), while the whole shifted frame still beats the unshifted
    one (the level scrolls)."""
    box = (24, 38, 29, 35)
    frames = torch.rand(3, 64, 64, 3)
    scroll = torch.tensor([[3, -2], [0, 0], [-5, 4]])
    plain, kept = shift_frames(frames, scroll), shift_frames(frames, scroll, box)
    assert torch.equal(kept[:, 24:38, 29:35], frames[:, 24:38, 29:35])
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[24:38, 29:35] = False
    assert torch.equal(kept[:, outside], plain[:, outside])
    with pytest.raises(ConfigError, match="camera_locked_box"):
        scrolled_dynamics(camera_locked_box=[24, 38, 35, 29])
    with pytest.raises(ConfigError, match="needs copy_reference 'scrolled'"):
        DynamicsConfig(vocab_size=32, grid=8, frames=4, transformer=BLOCK, camera_locked_box=(24, 38, 29, 35))
    assert scrolled_dynamics(camera_locked_box=[24, 38, 29, 35]).config.camera_locked_box == box

    env = CoinRunVecEnv(8, CoinRunConfig(), seed=11)
    rng = np.random.default_rng(0)
    video = [env.observe()]
    for _ in range(60):
        env.step(rng.choice([5, 6, 7, 8], size=8))  # mostly running and jumping: the camera moves
        video.append(env.observe())
    video = np.stack(video, axis=1)  # (8, 61, H, W, C)
    before, after = video[:, :-1].reshape(-1, 64, 64, 3), video[:, 1:].reshape(-1, 64, 64, 3)
    whole = np.round(scene_scroll(before, after))  # (N, 2)
    moving = np.abs(whole).max(1) >= 2
    assert moving.sum() >= 30, "too few frames scroll to test anything"
    previous = torch.from_numpy(before[moving]).float()
    following = torch.from_numpy(after[moving]).float()
    steps = torch.from_numpy(whole[moving])
    plain, kept = shift_frames(previous, steps), shift_frames(previous, steps, box)

    def error(a: torch.Tensor, region=(slice(None), slice(None))) -> float:
        return float((following[:, region[0], region[1]] - a[:, region[0], region[1]]).abs().mean())

    agent = (slice(24, 38), slice(29, 35))
    assert error(kept, agent) < 0.5 * error(plain, agent), (error(kept, agent), error(plain, agent))
    assert error(plain) < error(previous) and error(kept) < error(previous)
