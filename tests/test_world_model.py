"""World model units: causality, MaskGIT sampling, action conditioning, VQ, checkpoints, optimiser, presets."""

import dataclasses

import numpy as np
import pytest
import torch

from world_model.attention import MultiHeadAttention, causal_alibi_bias, alibi_slopes
from world_model.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from world_model.config import (
    ConfigError, DynamicsConfig, QuantizerConfig, TokenizerConfig, TransformerConfig, load_preset,
)
from world_model.dynamics import Dynamics, previous_frames
from world_model.generation import WorldModel
from world_model.lam import LatentActionModel
from world_model.optim import Optimization, learning_rate, parameter_groups
from world_model.steps import DynamicsTrainee, eval_step, train_step
from world_model.tokenizer import Tokenizer
from world_model.vq import VectorQuantizer, codebook_usage

torch.set_num_threads(1)
BLOCK = TransformerConfig(dim=32, depth=2, heads=4, mlp_ratio=2.0)


def tiny_tokenizer():
    config = TokenizerConfig(patch=8, frames=4, encoder=BLOCK, decoder=BLOCK,
                             quantizer=QuantizerConfig(codebook_size=32, code_dim=8))
    return Tokenizer(config)


def tiny_dynamics(conditioning="ground_truth", steps=25):
    config = DynamicsConfig(vocab_size=32, grid=8, frames=4, transformer=BLOCK, conditioning=conditioning,
                            latent_action_dim=8, sampling_steps=steps)
    return Dynamics(config)


def random_video(batch=2, frames=4, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (batch, frames, 64, 64, 3), dtype=np.uint8)  # (B, T, H, W, C)
    return video, rng.integers(0, 15, (batch, frames - 1)).astype(np.int8)  # actions (B, T-1)


# ---- causality ----------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 1, 2])
def test_tokenizer_tokens_and_reconstruction_of_frames_up_to_t_ignore_frame_t_plus_1(t):
    torch.manual_seed(0)
    model = tiny_tokenizer().eval()
    video, _ = random_video()
    changed = video.copy()
    changed[:, t + 1] = 255 - changed[:, t + 1]
    a, b = model.tokenize(video), model.tokenize(changed)  # (B, T, h, w)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.equal(a[:, t + 1], b[:, t + 1]), "the changed frame itself should get other tokens"
    with torch.no_grad():
        ra, _ = model(torch.as_tensor(video).float() / 255)
        rb, _ = model(torch.as_tensor(changed).float() / 255)
    assert torch.equal(ra[:, : t + 1], rb[:, : t + 1])


@pytest.mark.parametrize("t", [0, 1, 2])
def test_dynamics_logits_of_frames_up_to_t_ignore_frame_t_plus_1(t):
    torch.manual_seed(0)
    model = tiny_dynamics().eval()
    tokens = torch.randint(0, 32, (2, 4, 8, 8))
    actions = torch.randint(0, 15, (2, 3))
    changed = tokens.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 1) % 32
    with torch.no_grad():
        a, b = model(tokens, actions), model(changed, actions)  # (B, T, h, w, V)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.equal(a[:, t + 1], b[:, t + 1])


def test_lam_action_t_ignores_frames_after_t_plus_1():
    torch.manual_seed(0)
    config = dataclasses.replace(load_preset("tiny").lam, encoder=BLOCK, decoder=BLOCK)
    model = LatentActionModel(config).eval()
    video, _ = random_video(frames=4)
    changed = video.copy()
    changed[:, 3] = 0
    with torch.no_grad():
        a = model.encode_actions(torch.as_tensor(video).float() / 255).quantized  # (B, 3, D)
        b = model.encode_actions(torch.as_tensor(changed).float() / 255).quantized
    assert torch.equal(a[:, :2], b[:, :2])


def test_sdpa_and_naive_attention_agree_with_alibi_causal_bias():
    torch.manual_seed(0)
    attention = MultiHeadAttention(32, 4)
    x = torch.randn(3, 5, 32)
    bias = causal_alibi_bias(5, alibi_slopes(4))
    fused = attention(x, bias)
    attention.implementation = "naive"
    assert torch.allclose(fused, attention(x, bias), atol=1e-5)
    assert bias[0, 0, 1] == float("-inf") and bias[0, 1, 0] < 0 and bias[0, 2, 2] == 0


# ---- MaskGIT -------------------------------------------------------------------------------------
class PassCounter:
    """Counts MaskGIT passes, with or without the context cache: each pass runs the transformer once on the window
    (forward) or on the new frame over the cached context (forward_new_frame); the cache's prefill is not a pass."""

    def __init__(self, model):
        self.frames = []  # per pass, how many frames the transformer ran (1 with the context cache)
        transformer = model.transformer
        for name in ("forward", "forward_new_frame"):
            method = getattr(transformer, name)

            def counting(x, *args, _method=method, **kwargs):
                self.frames.append(x.shape[1])  # x: (B, T, h, w, d)
                return _method(x, *args, **kwargs)
            setattr(transformer, name, counting)

    @property
    def calls(self):
        return len(self.frames)


@pytest.mark.parametrize("context_cache", [True, False])
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_maskgit_runs_the_steps_asked_for_and_fills_every_token(steps, context_cache):
    torch.manual_seed(0)
    model = tiny_dynamics(steps=steps).eval()
    counter = PassCounter(model)
    context = torch.randint(0, 32, (2, 2, 8, 8))
    actions = torch.randint(0, 15, (2, 1 + 3))
    generated = model.generate_tokens(context, actions, horizon=3, context_cache=context_cache)  # (B, 3, h, w)
    assert counter.calls == steps * 3
    # with the cache each pass runs the new frame alone; without it, the context (2, then 3 frames) too
    assert counter.frames == ([1] * (steps * 3) if context_cache else [3] * steps + [4] * (steps * 2))
    assert generated.shape == (2, 3, 8, 8)
    assert ((generated >= 0) & (generated < 32)).all(), "every masked token must be filled with a real code"


def test_maskgit_default_is_25_steps_and_steps_can_be_overridden():
    model = tiny_dynamics().eval()
    counter = PassCounter(model)
    context, actions = torch.randint(0, 32, (1, 1, 8, 8)), torch.randint(0, 15, (1, 1))
    model.generate_tokens(context, actions, horizon=1)
    assert counter.calls == 25
    model.generate_tokens(context, actions, horizon=1, steps=7)
    assert counter.calls == 25 + 7


@pytest.mark.parametrize("context_cache", [True, False])
def test_maskgit_unmasks_progressively_on_a_cosine_schedule(context_cache):
    """The number of filled tokens of the new frame at each pass must grow as 1 - cos."""
    model = tiny_dynamics(steps=5).eval()
    seen = []
    embed = model.embed

    def record(tokens, conditioning):
        if (tokens[:, -1] == model.mask_id).any():  # the frame being filled (a context frame has no mask)
            seen.append(int((tokens[:, -1] != model.mask_id).sum()))
        return embed(tokens, conditioning)
    model.embed = record
    model.generate_tokens(torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long), 1,
                          context_cache=context_cache)
    n = 64
    expected = [0] + [n - int(np.floor(n * np.cos(np.pi / 2 * s / 5))) for s in range(1, 5)]
    assert seen == expected


def test_temperature_zero_is_deterministic_and_temperature_one_is_not():
    torch.manual_seed(0)
    model = tiny_dynamics(steps=4).eval()
    context, actions = torch.randint(0, 32, (2, 2, 8, 8)), torch.randint(0, 15, (2, 3))
    a = model.generate_tokens(context, actions, 2, temperature=0.0, generator=torch.Generator().manual_seed(1))
    b = model.generate_tokens(context, actions, 2, temperature=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = model.generate_tokens(context, actions, 2, temperature=3.0, generator=torch.Generator().manual_seed(1))
    d = model.generate_tokens(context, actions, 2, temperature=3.0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)


def test_rollout_longer_than_the_training_window_keeps_running():
    model = tiny_dynamics(steps=2).eval()
    out = model.generate_tokens(torch.randint(0, 32, (1, 3, 8, 8)), torch.randint(0, 15, (1, 2 + 6)), horizon=6)
    assert out.shape == (1, 6, 8, 8)


def test_teacher_forced_one_pass_equals_one_step_sampling_at_temperature_zero():
    torch.manual_seed(0)
    model = tiny_dynamics(steps=1).eval()
    tokens, actions = torch.randint(0, 32, (2, 4, 8, 8)), torch.randint(0, 15, (2, 3))
    logits = model.teacher_forced_logits(tokens, actions)  # (B, 3, h, w, V)
    for k in range(1, 4):
        one_step = model.sample_next_frame(tokens[:, :k], actions[:, :k], steps=1, temperature=0.0)
        assert torch.equal(logits[:, k - 1].argmax(-1), one_step)


@pytest.mark.parametrize("tied_with_copy_gate", [False, True])
def test_the_loss_and_teacher_forcing_read_out_only_what_they_score_and_equal_the_whole_readout(tied_with_copy_gate):
    """Training reads out the masked positions alone and teacher forcing the predicted frame alone (the (.., V)
    logits are most of a tiny step): both must equal slicing the logits of the whole window."""
    torch.manual_seed(0)
    extra = {"tie_embeddings": True, "copy_bias": 3.0} if tied_with_copy_gate else {}
    model = Dynamics(DynamicsConfig(vocab_size=32, grid=8, frames=4, transformer=BLOCK, **extra)).eval()
    tokens, actions = torch.randint(0, 32, (2, 4, 8, 8)), torch.randint(0, 15, (2, 3))
    loss = model.compute_loss_on_tokens(tokens, actions, torch.Generator().manual_seed(1)).loss
    mask = model.random_mask(tokens, torch.Generator().manual_seed(1))  # (B, T, h, w): the same draw
    # (B, T, h, w, V)
    whole = model(tokens.masked_fill(mask, model.mask_id), actions, previous_frames(tokens, model.mask_id))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(whole[mask], tokens[mask]))
    teacher_forced = model.teacher_forced_logits(tokens, actions)  # (B, T-1, h, w, V)
    for k in range(1, 4):
        masked_k = tokens.clone()
        masked_k[:, k] = model.mask_id
        torch.testing.assert_close(teacher_forced[:, k - 1], model(masked_k, actions)[:, k])


def test_maskgit_draws_tokens_from_the_softmax_of_the_logits():
    """The sampler's inverse-CDF draw: frequencies over 40k draws (fixed seed) match softmax(logits), every id
    reachable, none out of range, and a near-certain id is (nearly) always drawn."""
    from world_model.dynamics import _sample_categorical

    logits = torch.tensor([2.0, 0.0, -1.0, 1.0, -30.0, 0.5])  # (V,)
    ids = _sample_categorical(logits.expand(40_000, -1), torch.Generator().manual_seed(0))  # (40000,)
    assert ids.min() >= 0 and ids.max() < 6
    frequencies = torch.bincount(ids, minlength=6).float() / ids.numel()
    torch.testing.assert_close(frequencies, logits.softmax(-1), atol=0.01, rtol=0.0)
    certain = _sample_categorical(torch.tensor([[0.0, 40.0, 0.0]]).expand(1000, -1), torch.Generator().manual_seed(1))
    assert (certain == 1).all()


# ---- conditioning --------------------------------------------------------------------------------
def test_genie_redux_g_prediction_depends_on_the_action():
    torch.manual_seed(0)
    model = tiny_dynamics().eval()
    tokens = torch.randint(0, 32, (1, 2, 8, 8))
    with torch.no_grad():
        left = model(tokens, torch.tensor([[1]]))[:, 1]
        right = model(tokens, torch.tensor([[7]]))[:, 1]
        assert not torch.allclose(left, right)
        assert torch.equal(model(tokens, torch.tensor([[1]]))[:, 0], model(tokens, torch.tensor([[7]]))[:, 0])
    a = model.generate_tokens(tokens[:, :1], torch.tensor([[1]]), 1, temperature=0.0)
    b = model.generate_tokens(tokens[:, :1], torch.tensor([[7]]), 1, temperature=0.0)
    assert not torch.equal(a, b)


def test_genie_redux_dynamics_loss_sends_no_gradient_into_the_lam():
    torch.manual_seed(0)
    lam = LatentActionModel(dataclasses.replace(load_preset("tiny").lam, encoder=BLOCK, decoder=BLOCK,
                                                quantizer=QuantizerConfig(codebook_size=7, code_dim=8))).train()
    dynamics = tiny_dynamics("latent")
    video, _ = random_video()
    codes = lam.encode_actions(torch.as_tensor(video).float() / 255).quantized  # (B, T-1, D), with grad
    assert codes.requires_grad
    tokens = torch.randint(0, 32, (2, 4, 8, 8))
    dynamics.compute_loss_on_tokens(tokens, codes).loss.backward()
    assert all(p.grad is None for p in lam.parameters()), "dynamics loss reached the LAM"
    assert dynamics.action_embedding.weight.grad is not None and dynamics.action_embedding.weight.grad.abs().sum() > 0


def test_dynamics_trainee_trains_only_the_dynamics():
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    lam = LatentActionModel(dataclasses.replace(load_preset("tiny").lam, encoder=BLOCK, decoder=BLOCK,
                                                quantizer=QuantizerConfig(codebook_size=7, code_dim=8)))
    trainee = DynamicsTrainee(tiny_dynamics("latent"), tokenizer, lam)
    frozen = {**tokenizer.state_dict(), **{f"lam.{k}": v for k, v in lam.state_dict().items()}}
    before = {k: v.clone() for k, v in frozen.items()}
    optimization = Optimization(trainee, load_preset("tiny").optim)
    metrics = train_step(trainee, optimization, random_video())
    after = {**tokenizer.state_dict(), **{f"lam.{k}": v for k, v in lam.state_dict().items()}}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.isfinite(metrics["loss"]) and 0.5 <= metrics["mask_fraction"] <= 1.0
    assert "teacher_forced_accuracy" in eval_step(trainee, random_video())


def test_validation_decodes_the_teacher_forced_pass_it_scores():
    """eval_step(decode=True): accuracy and PSNR from one teacher-forced pass, equal to decoding it separately."""
    from world_model.frames import psnr, to_unit_float

    torch.manual_seed(0)
    trainee = DynamicsTrainee(tiny_dynamics(), tiny_tokenizer()).eval()
    video = random_video()
    metrics = eval_step(trainee, video, decode=True)
    tokens, actions = trainee.inputs(video)
    predicted = trainee.dynamics.teacher_forced_logits(tokens, actions).argmax(-1)  # (B, T-1, h, w)
    expected = psnr(trainee.tokenizer.detokenize(predicted).float(), to_unit_float(video[0][:, 1:], predicted.device))
    assert metrics["teacher_forced_psnr"] == pytest.approx(float(expected), rel=1e-5)
    assert "teacher_forced_psnr" not in eval_step(trainee, video)


def test_mask_ratio_lies_in_half_to_one_and_frame_zero_is_never_masked():
    model = tiny_dynamics()
    mask = model.random_mask(torch.zeros(64, 4, 8, 8, dtype=torch.long), torch.Generator().manual_seed(0))
    assert not mask[:, 0].any()
    ratios = mask[:, 1:].float().mean(dim=(2, 3))  # (B, T-1)
    assert ratios.min() >= 0.5 and ratios.max() <= 1.0 and ratios.std() > 0.05


# ---- vector quantiser ----------------------------------------------------------------------------
def test_straight_through_gradient_reaches_the_tokenizer_encoder():
    torch.manual_seed(0)
    model = tiny_tokenizer().train()
    model.compute_loss(random_video()).loss.backward()
    for module in (model.patch_embedding, model.encoder, model.to_code):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_straight_through_output_is_the_code_with_the_input_gradient():
    vq = VectorQuantizer(QuantizerConfig(codebook_size=4, code_dim=2, restart_dead_codes=False)).eval()
    vq.codebook.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    x = torch.tensor([[2.0, 0.1], [0.1, -3.0]], requires_grad=True)
    out = vq(x)
    assert out.ids.tolist() == [0, 3]
    assert torch.allclose(out.quantized, torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    out.quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_codebook_usage_and_perplexity_on_a_constructed_case():
    usage, perplexity = codebook_usage(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 8)
    assert usage == pytest.approx(0.5) and perplexity == pytest.approx(4.0)
    usage, perplexity = codebook_usage(torch.tensor([5] * 10), 8)
    assert usage == pytest.approx(1 / 8) and perplexity == pytest.approx(1.0)


def test_dead_codes_are_restarted_from_batch_vectors_only_when_enabled():
    for restart in (True, False):
        torch.manual_seed(0)
        config = QuantizerConfig(codebook_size=8, code_dim=4, restart_dead_codes=restart, dead_code_window=3)
        vq = VectorQuantizer(config).train()
        data = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1).repeat(16, 1)  # only 2 distinct vectors
        usages = [float(vq(data + 0.001 * torch.randn_like(data)).usage) for _ in range(10)]
        codes = vq.normalized_codebook()
        near_data = (codes @ data[:2].t()).max(dim=1).values > 0.99  # (K,) codes sitting on a data vector
        if restart:
            assert near_data.all(), "dead codes should have been moved onto batch vectors"
        else:
            assert usages[-1] <= 2 / 8


def test_code_ids_under_bf16_autocast_equal_the_fp32_ids():
    """Training under bf16 autocast and evaluation in fp32 must pick the same codes (issue 15.12)."""
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=512, code_dim=8)).eval()
    inputs = torch.randn(4096, 8)
    plain = vq(inputs).ids
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = vq(inputs).ids
    assert torch.equal(plain, autocast)


def test_the_on_device_restart_moves_exactly_the_dead_codes_onto_batch_vectors():
    """The accelerator's restart (no read-back of which codes are dead) follows the CPU path's rule."""
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=8, code_dim=4, dead_code_window=3)).train()
    data = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)  # (N, D)
    vq.steps_unused.copy_(torch.tensor([0, 3, 1, 5, 2, 3, 0, 0]))
    before = vq.codebook.detach().clone()
    vq._restart_dead_codes_on_device(data)
    dead = torch.tensor([False, True, False, True, False, True, False, False])
    assert torch.equal(vq.codebook.detach()[~dead], before[~dead]), "live codes must not move"
    moved = torch.nn.functional.normalize(vq.codebook.detach()[dead], dim=-1)
    assert ((moved @ data.t()).max(dim=1).values > 0.99).all(), "dead codes go onto batch vectors"
    assert vq.steps_unused[dead].eq(0).all() and int(vq.restarted_codes) == 3


def test_training_metrics_stay_on_the_device_until_read_once():
    """compute_loss and the optimiser hand back unread tensors (a float() per metric per step waits for a GPU);
    read_metrics turns them into floats with one transfer, and the public train_step still returns floats."""
    from world_model.outputs import mean_metrics, read_metrics

    for model in (tiny_tokenizer(),):
        output = model.compute_loss(random_video())
        tensors = [key for key, value in output.metrics.items() if isinstance(value, torch.Tensor)]
        assert {"loss", "mse", "psnr", "codebook_usage"} <= set(tensors)
        assert all(not output.metrics[key].requires_grad for key in tensors)
        read = read_metrics(output.metrics)
        assert list(read) == list(output.metrics) and all(isinstance(v, float) for v in read.values())
    from world_model.config import OptimConfig

    optimization = Optimization(model, OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, total_steps=10))
    update = optimization.step(model.compute_loss(random_video()).loss)
    assert isinstance(update["grad_norm"], torch.Tensor) and isinstance(update["lr"], float)
    assert mean_metrics({"a": [torch.tensor(1.0), torch.tensor(3.0)], "lr": [0.5, 1.5]}) == {"a": 2.0, "lr": 1.0}
    assert all(isinstance(v, float) for v in train_step(model, optimization, random_video()).values())



def test_the_training_loops_step_in_micro_batches_equals_train_step_on_the_whole_batch():
    """The Ray Train loop and train_step (tests, benchmarks) run one step function, `accumulated_step`: two
    micro batches of 2 move the weights as one pass over the 4 windows does, and the loop's step hands back
    unread tensors where train_step hands back floats."""
    import copy

    from world_model.config import OptimConfig
    from world_model.outputs import read_metrics
    from world_model.steps import TraineeLoss, accumulated_step
    from world_model.training.loop import train_loop_per_worker

    assert "accumulated_step" in train_loop_per_worker.__code__.co_names, "the training loop runs its own step"
    torch.manual_seed(0)
    config = tiny_tokenizer().config
    config = dataclasses.replace(config, quantizer=dataclasses.replace(config.quantizer, restart_dead_codes=False))
    whole = Tokenizer(config).train()
    with torch.no_grad():  # seed the codebook from data once: no step then depends on which windows it sees
        whole(torch.rand(2, 4, 64, 64, 3))
    split, start = copy.deepcopy(whole), copy.deepcopy(whole.state_dict())
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, total_steps=10)
    frames, actions = random_video(batch=4)  # (4, 4, 64, 64, 3) uint8, (4, 3) int8
    read = train_step(whole, Optimization(whole, optim), (frames, actions))
    unread = accumulated_step(TraineeLoss(split), Optimization(split, optim), torch.from_numpy(frames),
                              torch.from_numpy(actions), accumulation=2)
    assert all(isinstance(v, float) for v in read.values())
    assert isinstance(unread["loss"], torch.Tensor) and isinstance(unread["grad_norm"], torch.Tensor)
    assert list(unread) == list(read)
    for key in ("loss", "mse", "grad_norm", "lr"):
        assert read_metrics(unread)[key] == pytest.approx(read[key], rel=1e-5)
    after = split.state_dict()
    moved = max(float((value - start[key]).abs().max()) for key, value in after.items() if value.is_floating_point())
    assert moved > 1e-4, "the step must change the weights for the comparison to mean anything"
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(after[key], value, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="equal micro batches"):
        accumulated_step(TraineeLoss(split), Optimization(split, optim), torch.from_numpy(frames),
                         torch.from_numpy(actions), accumulation=3)


# ---- checkpoints, optimiser, presets -------------------------------------------------------------
def test_checkpoint_round_trip_rebuilds_the_model_without_its_config(tmp_path):
    torch.manual_seed(0)
    model = tiny_tokenizer().eval()
    path = save_checkpoint(tmp_path / "tok.pt", model, preset="custom", step=12)
    loaded = load_model(path, "tokenizer")
    assert loaded.config == model.config
    video, _ = random_video()
    assert torch.equal(loaded.tokenize(video), model.tokenize(video))
    checkpoint = load_checkpoint(path, "tokenizer")
    assert checkpoint.preset == "custom" and checkpoint.step == 12 and checkpoint.stage == "tokenizer"


def test_dynamics_checkpoint_keeps_its_conditioning(tmp_path):
    model = tiny_dynamics("latent")
    loaded = load_model(save_checkpoint(tmp_path / "d.pt", model, "tiny"), "dynamics")
    assert loaded.config.conditioning == "latent" and loaded.config.sampling_steps == 25


def test_wrong_stage_checkpoint_is_refused_with_the_command_that_makes_the_right_one(tmp_path):
    path = save_checkpoint(tmp_path / "tok.pt", tiny_tokenizer(), "tiny")
    with pytest.raises(CheckpointError, match=r"'tokenizer' checkpoint.*'dynamics'.*genie train dynamics"):
        load_checkpoint(path, "dynamics")
    with pytest.raises(CheckpointError, match="genie train lam"):
        load_checkpoint(tmp_path / "missing.pt", "lam")


def test_lr_warms_up_then_decays_to_min_lr_exactly_at_the_last_step():
    config = load_preset("paper").optim
    config = dataclasses.replace(config, warmup_steps=10, total_steps=200)
    lrs = [learning_rate(s, config) for s in range(config.total_steps + 5)]
    assert lrs[9] == pytest.approx(config.lr)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    decay = lrs[10 : config.total_steps]
    assert all(a >= b for a, b in zip(decay, decay[1:])), "the LR must never rise again after warmup"
    assert lrs[config.total_steps - 1] == pytest.approx(5e-5) and lrs[config.total_steps - 2] > 5e-5
    assert all(lr == pytest.approx(5e-5) for lr in lrs[config.total_steps :])


def test_weight_decay_applies_to_matrices_only_and_clip_is_10():
    model = tiny_tokenizer()
    decayed, plain = parameter_groups(model, 1e-4)
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])
    assert plain["weight_decay"] == 0 and decayed["weight_decay"] == 1e-4
    optim = load_preset("paper").optim
    assert (optim.lr, optim.betas, optim.weight_decay, optim.grad_clip, optim.min_lr) == (
        1e-4, (0.9, 0.99), 1e-4, 10.0, 5e-5)


def test_presets_and_unknown_preset_error():
    paper = load_preset("paper")
    assert (paper.tokenizer.encoder.dim, paper.tokenizer.encoder.depth, paper.tokenizer.decoder.depth) == (512, 8, 8)
    quantizer = paper.tokenizer.quantizer
    assert (quantizer.codebook_size, quantizer.code_dim, paper.tokenizer.frames) == (1024, 32, 16)
    dynamics = paper.dynamics
    assert (dynamics.transformer.depth, dynamics.transformer.dim, dynamics.sampling_steps) == (12, 512, 25)
    assert paper.lam.num_actions == 7
    for name in ("tiny", "laptop", "small", "paper"):
        preset = load_preset(name)
        assert preset.dynamics.vocab_size == preset.tokenizer.quantizer.codebook_size
        assert preset.dynamics.grid == preset.tokenizer.grid
    with pytest.raises(ConfigError, match="known presets: laptop, paper, small, tiny"):
        load_preset("huge")


def test_world_model_generate_returns_frames_for_both_conditionings():
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer().eval()
    video, actions = random_video(frames=2)
    world = WorldModel(tokenizer, tiny_dynamics(steps=2).eval())
    frames = world.generate(video, np.concatenate([actions, actions, actions], axis=1), horizon=2)
    assert frames.shape == (2, 2, 64, 64, 3) and frames.min() >= 0 and frames.max() <= 1
    lam = LatentActionModel(dataclasses.replace(load_preset("tiny").lam, encoder=BLOCK, decoder=BLOCK,
                                                quantizer=QuantizerConfig(codebook_size=7, code_dim=8))).eval()
    latent = lam.infer_actions(video)  # (B, 1)
    assert latent.shape == (2, 1) and latent.max() < 7
    world = WorldModel(tokenizer, tiny_dynamics("latent", steps=2).eval(), lam)
    assert world.generate(video, torch.cat([latent, latent, latent], 1), horizon=2).shape == (2, 2, 64, 64, 3)


def test_lam_reads_each_latent_action_from_a_window_of_its_training_length():
    """Over a video longer than the LAM's window (an evaluation window, a play history), id t and the rebuilt
    frame t+1 are exactly those of the window of `frames` frames ending at frame t+1, as in training."""
    torch.manual_seed(0)
    lam = LatentActionModel(dataclasses.replace(load_preset("tiny").lam, encoder=BLOCK, decoder=BLOCK,
                                                quantizer=QuantizerConfig(codebook_size=7, code_dim=8))).eval()
    torch.nn.init.normal_(lam.to_pixels.weight, std=0.02)  # a fresh LAM predicts "nothing moves" whatever it sees
    span = lam.config.frames
    video = np.random.default_rng(0).integers(0, 256, (2, span + 5, 64, 64, 3), dtype=np.uint8)
    frames = torch.as_tensor(video).float() / 255
    ids = lam.infer_actions(video)  # (B, T-1)
    with torch.no_grad():
        predicted, same_ids = lam.predict_next(frames)
        windows = [lam(frames[:, max(0, t + 2 - span) : t + 2]) for t in range(video.shape[1] - 1)]
    assert ids.shape == (2, span + 4) and torch.equal(ids, same_ids)
    assert torch.equal(ids, torch.stack([w[1].ids[:, -1] for w in windows], dim=1))
    assert torch.allclose(predicted, torch.stack([w[0][:, -1] for w in windows], dim=1), atol=1e-6)
    with torch.no_grad():
        # one pass over all frames: encoder and decoder see more past than in training
        whole_frames, whole = lam(frames)
    assert torch.equal(ids[:, : span - 1], whole.ids[:, : span - 1])  # within the first window nothing changes
    assert not torch.allclose(predicted, whole_frames, atol=1e-4)  # beyond it the one pass differs


# ---- the options that let a small dynamics learn quickly (issue 14) --------------------------------
def _fast_dynamics(**options):
    config = DynamicsConfig(vocab_size=32, grid=8, frames=4, transformer=BLOCK, sampling_steps=2, **options)
    return Dynamics(config)


def test_copy_gate_starts_as_a_logit_bonus_for_the_predecessors_token_only_where_it_is_known():
    torch.manual_seed(0)
    plain, copying = _fast_dynamics(), _fast_dynamics(copy_bias=3.0)
    gate = {k: v for k, v in copying.state_dict().items() if k.startswith("copy_gate")}
    copying.load_state_dict({**plain.state_dict(), **gate})
    tokens = torch.randint(0, 32, (2, 3, 8, 8))
    actions = torch.randint(0, 15, (2, 2))
    difference = copying(tokens, actions) - plain(tokens, actions)  # (B, T, h, w, V)
    assert torch.allclose(difference[:, 0], torch.zeros_like(difference[:, 0]))  # frame 0 has no predecessor
    bonus = difference[:, 1:].gather(-1, tokens[:, :-1].unsqueeze(-1)).squeeze(-1)  # (B, T-1, h, w)
    assert torch.allclose(bonus, torch.full_like(bonus, 3.0), atol=1e-5)
    assert torch.allclose(difference[:, 1:].sum(-1), bonus, atol=1e-4)  # nothing else changed


def test_tied_output_and_codebook_start_make_alike_codes_start_alike():
    torch.manual_seed(0)
    dynamics = _fast_dynamics(tie_embeddings=True, token_init="codebook")
    codebook = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    codebook[1] = torch.nn.functional.normalize(codebook[0] + 0.01 * torch.randn(8), dim=-1)  # a near twin of code 0
    dynamics.init_token_embeddings(codebook)
    table = dynamics.token_embedding.weight[:32]
    similarity = torch.nn.functional.cosine_similarity(table[0], table[1:], dim=-1)  # (31,)
    assert similarity[0] > 0.99 and similarity[1:].abs().max() < 0.99
    assert not hasattr(dynamics, "to_logits")  # logits read the embedding table
    with pytest.raises(ValueError, match="codes"):
        dynamics.init_token_embeddings(codebook[:16])


def test_changed_token_weight_weighs_the_tokens_that_do_not_copy_their_predecessor():
    torch.manual_seed(0)
    tokens, actions = torch.randint(0, 32, (2, 4, 8, 8)), torch.randint(0, 15, (2, 3))
    tokens[:, 2, :4] = tokens[:, 1, :4]  # half of frame 2 copies frame 1
    weighted = Dynamics(DynamicsConfig(vocab_size=32, grid=8, frames=4, transformer=BLOCK, changed_token_weight=3.0))
    plain = Dynamics(dataclasses.replace(weighted.config, changed_token_weight=1.0))
    plain.load_state_dict(weighted.state_dict())
    mask = weighted.random_mask(tokens, torch.Generator().manual_seed(1))  # (B, T, h, w): the losses' draw
    previous = previous_frames(tokens, weighted.mask_id)  # (B, T, h, w)
    per_token = torch.nn.functional.cross_entropy(
        plain(tokens.masked_fill(mask, plain.mask_id), actions, previous)[mask], tokens[mask], reduction="none")
    changed = tokens[mask] != previous[mask]  # (M,)
    assert changed.any() and (~changed).any()
    weights = 1.0 + 2.0 * changed.float()
    torch.testing.assert_close(weighted.compute_loss_on_tokens(tokens, actions, torch.Generator().manual_seed(1)).loss,
                               (weights * per_token).sum() / weights.sum())
    torch.testing.assert_close(plain.compute_loss_on_tokens(tokens, actions, torch.Generator().manual_seed(1)).loss,
                               per_token.mean())
    with pytest.raises(ConfigError, match="changed_token_weight"):
        DynamicsConfig(vocab_size=32, changed_token_weight=0.0)


def test_last_frame_mask_share_leaves_the_context_clean_in_that_share_of_windows():
    dynamics = _fast_dynamics(last_frame_mask_share=1.0)
    mask = dynamics.random_mask(torch.zeros(16, 4, 8, 8, dtype=torch.long), torch.Generator().manual_seed(0))
    assert not mask[:, :3].any() and mask[:, 3].flatten(1).float().mean(1).min() >= 0.5
    mixed = _fast_dynamics(last_frame_mask_share=0.5).random_mask(torch.zeros(400, 4, 8, 8, dtype=torch.long),
                                                                  torch.Generator().manual_seed(0))
    clean = (~mixed[:, 1:3].flatten(1).any(1)).float().mean()
    assert 0.4 < float(clean) < 0.6


def test_carry_keeps_the_previous_frames_pixels_exactly_where_the_dream_keeps_the_token():
    from world_model.generation import carry_unchanged

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer().eval()
    world = WorldModel(tokenizer, _fast_dynamics(carry_unchanged=True).eval())
    video, actions = random_video(batch=2, frames=4)
    dream = world.generate(video[:, :2], actions[:, :3], horizon=2, steps=2, temperature=0.0)  # (B, 2, H, W, C)
    context = tokenizer.tokenize(video[:, :2])
    # the same tokens
    generated = world.dynamics.generate_tokens(context, torch.as_tensor(actions[:, :3]).long(), 2, 2, 0.0)
    kept = (generated[:, 0] == context[:, -1]).repeat_interleave(8, 1).repeat_interleave(8, 2)  # (B, H, W)
    last = torch.as_tensor(video[:, 1]).float() / 255.0
    assert kept.any() and torch.equal(dream[:, 0][kept], last[kept])
    # the composition itself: unchanged patch -> previous pixels, changed patch -> decoded pixels
    decoded, previous = torch.zeros(1, 16, 16, 3), torch.ones(1, 16, 16, 3)
    new, old = torch.tensor([[[1, 2], [3, 4]]]), torch.tensor([[[1, 0], [3, 0]]])
    out = carry_unchanged(decoded, previous, new, old)
    assert out[0, :, :8].eq(1).all() and out[0, :, 8:].eq(0).all()
    plain = WorldModel(tokenizer, _fast_dynamics().eval())
    assert torch.equal(plain.render(decoded[:, :, :, :], previous, new, old), decoded)

