"""How big is a key's effect on the next frame in CoinRun, and how much of it does a trained dynamics use?

From real states (fresh levels, a random number of random-agent steps), the real game is forked: RIGHT
and LEFT, one step each (and k steps, for the pixel gap). Printed, with 95% CIs over states:

- `pixel_gap_k`: PSNR between the real RIGHT and LEFT futures after k steps (high = hard to tell apart);
- `tokens_differ`: share of the tokenizer's tokens that differ between the two next frames;
- `tokens_changed`: share that differ between the last context frame and the RIGHT next frame;
- `argmax_differs`: share of positions where the dynamics' one-pass prediction (next frame fully masked)
  differs between the two keys;
- `action_nats`: log-likelihood of each real next frame's tokens under its own key minus under the other
  key, averaged over the tokens that differ between the two futures (0: the key is ignored).

    python benchmarks/probe_action_effect.py --run runs/tiny [--model genie-g] [--states 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_agent.coinrun_env import ACTION_NAMES, CoinRunConfig, make_replay_env
from world_model.evaluation.metrics import mean_ci95
from world_model.runs import load_world_model


def step(env, action: int) -> tuple[np.ndarray, bool]:
    env.act(np.array([action], np.int32))
    _, obs, first = env.observe()
    return np.array(obs["rgb"][0], dtype=np.uint8), bool(first[0])  # (H, W, C), episode ended


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a `genie pipeline` output folder")
    parser.add_argument("--model", default="genie-g", help="a GenieRedux-G dynamics run under RUN/models")
    parser.add_argument("--states", type=int, default=60)
    parser.add_argument("--steps", type=int, default=4, help="k: frames each fork is held for the pixel gap")
    parser.add_argument("--first-level", type=int, default=5000, help="levels from here on (none of a preset's sets)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    world = load_world_model(Path(args.run) / "models" / args.model).model
    tokenizer, dynamics = world.tokenizer, world.dynamics
    if dynamics.config.conditioning != "ground_truth":
        parser.error(f"{args.model} is a latent-action model; the probe holds CoinRun keys (a GenieRedux-G run)")
    context = max(1, dynamics.config.frames - 1)
    right, left = ACTION_NAMES.index("RIGHT"), ACTION_NAMES.index("LEFT")
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[float]] = {}
    level = args.first_level
    while len(rows.get("tokens_differ", [])) < args.states:
        env = make_replay_env(CoinRunConfig(), level)
        level += 1
        _, obs, _ = env.observe()
        frames, actions, alive = [np.array(obs["rgb"][0], np.uint8)], [], True
        for _ in range(int(rng.integers(context + 2, 25))):
            action = int(rng.integers(15))
            frame, ended = step(env, action)
            if ended:
                alive = False
                break
            frames.append(frame), actions.append(action)
        if not alive:
            env.close()
            continue
        state = env.get_state()
        forks = {}
        for key in (right, left):
            env.set_state(state)
            forks[key] = [step(env, key)[0] for _ in range(args.steps)]
        env.close()
        for k in range(args.steps):
            rows.setdefault(f"pixel_gap_{k + 1}", []).append(psnr(forks[right][k], forks[left][k]))
        video = np.stack([np.stack(frames[-context:] + [forks[key][0]]) for key in (right, left)])  # (2, c+1, H, W, C)
        ids = tokenizer.tokenize(video)  # (2, c+1, h, w)
        log_p = {}
        with torch.no_grad():
            for key in (right, left):
                keys = (torch.tensor([actions[len(actions) - (context - 1):] + [key]]) if context > 1
                        else torch.tensor([[key]]))
                logits_of = dynamics.recomputed_new_frame_logits(ids[:1, :context], world.action_inputs(keys))
                masked = torch.full((1, 1, *ids.shape[-2:]), dynamics.mask_id)
                log_p[key] = logits_of(masked)[0].log_softmax(-1)  # (h, w, V)
        real_right, real_left = ids[0, -1], ids[1, -1]  # (h, w)
        differ = real_right != real_left

        def own(key: int, target: torch.Tensor) -> torch.Tensor:
            return log_p[key].gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (h, w)

        margin = (own(right, real_right) - own(left, real_right) + own(left, real_left) - own(right, real_left)) / 2
        rows.setdefault("tokens_differ", []).append(float(differ.float().mean()))
        rows.setdefault("tokens_changed", []).append(float((real_right != ids[0, context - 1]).float().mean()))
        differs = (log_p[right].argmax(-1) != log_p[left].argmax(-1)).float().mean()
        rows.setdefault("argmax_differs", []).append(float(differs))
        if differ.any():
            rows.setdefault("action_nats", []).append(float(margin[differ].mean()))
    print(f"{args.model} of {args.run}: {args.states} real states (levels {args.first_level}..{level - 1}), "
          f"context {context}")
    for name, values in rows.items():
        mean, half = mean_ci95(values)
        print(f"{name:16s} {mean:8.3f} ± {half:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
