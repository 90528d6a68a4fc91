"""How much of the forked-future score does a scrolled dynamics's scroll head decide?

The forks (docs/design.md, 'Metrics'): from one real context, RIGHT x4 and LEFT x4 replayed in the real game and
dreamt; a window scores how often each dream is closer to its own real future than the other dream is (chance 0.5).
A scrolled dynamics copies the frame before shifted by the scroll its head draws, so part of a dream's answer to the
key is that draw. This probe dreams the same windows of a trained model with the scroll drawn four ways:

- `head`: the model's own head (what `genie eval` scores);
- `lookup`: a table fit on the model's training data: action id x the previous scroll (0.25 px bins) -> the
  histogram of the next whole-pixel scroll per axis (backed off to the action's histogram);
- `persist`: the previous scroll, whatever the key (a key-blind scroll);
- `oracle`: each fork's real registered scroll, frame by frame (the best a scroll head could do; the tokens are
  still the model's).

So `oracle` bounds what a better scroll head could buy, and `persist` what the tokens alone do with the key.

    python benchmarks/probe_fork_scroll.py --run runs/tiny [--model genie-g-ta] [--windows 32] [--maskgit-steps 4]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_agent.coinrun_env import ACTION_NAMES
from rl_agent.store.reader import EpisodeStore
from world_model.evaluation.config import FORK_ACTIONS
from world_model.evaluation.episodes import select_windows
from world_model.evaluation.forks import forked_contexts
from world_model.evaluation.metrics import forked_future_psnr, forked_future_wins, mean_ci95
from world_model.evaluation.models import load_model_under_test, training_data
from world_model.evaluation.rollouts import autoregressive
from world_model.scroll import scene_scroll

CONTEXT, STEPS = 2, 4


class ScrollLookup:
    """Action id x previous scroll bin -> counts of the next whole-pixel scroll, per axis, from real episodes."""

    def __init__(self, stores: list[EpisodeStore], max_scroll: int) -> None:
        self.max_scroll, self.choices = max_scroll, 2 * max_scroll + 1
        self.cells: dict[tuple[int, int, int], np.ndarray] = defaultdict(lambda: np.zeros(self.choices))
        self.actions: dict[tuple[int, int], np.ndarray] = defaultdict(lambda: np.zeros(self.choices))
        for store in stores:
            for e in range(len(store)):
                frames, actions = store.window(e, 0, int(store.lengths[e]))  # (L, H, W, C), (L-1,)
                scrolls = scene_scroll(frames[:-1], frames[1:])  # (L-1, 2): [i] into frame i+1, by actions[i]
                for i in range(1, len(scrolls)):
                    for axis in (0, 1):
                        choice = self.choice(scrolls[i, axis])
                        self.cells[(axis, int(actions[i]), self.bin(scrolls[i - 1, axis]))][choice] += 1
                        self.actions[(axis, int(actions[i]))][choice] += 1

    def choice(self, scroll: float) -> int:
        return int(np.clip(np.floor(scroll + 0.5), -self.max_scroll, self.max_scroll)) + self.max_scroll

    @staticmethod
    def bin(scroll: float) -> int:
        return round(float(scroll) * 4)

    def logits(self, action_ids: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """(B,) action ids, (B, 2) previous scrolls -> (B, 2, 2S+1) log-probabilities."""
        out = torch.zeros(len(action_ids), 2, self.choices)
        for b, action in enumerate(action_ids.tolist()):
            for axis in (0, 1):
                prior = self.actions.get((axis, action), np.ones(self.choices))
                counts = 2.0 * prior / prior.sum() + self.cells.get((axis, action, self.bin(previous[b, axis])), 0)
                out[b, axis] = torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32) + 1e-6)
        return out


def one_hot_logits(choices: np.ndarray, size: int) -> torch.Tensor:
    """(B, 2) whole-pixel choice indices -> (B, 2, size) logits putting all mass on them."""
    out = torch.full((len(choices), 2, size), -30.0)
    out.scatter_(-1, torch.as_tensor(choices, dtype=torch.long).unsqueeze(-1), 0.0)
    return out


def dream_forks(world, contexts, context_ids, forks, draw, maskgit_steps: int) -> torch.Tensor:
    """Each fork dreamt with its key held, the scroll from `draw(fork, frame, actions, previous)` (None: the head)."""
    dynamics, dreams = world.dynamics, []
    for f, name in enumerate(FORK_ACTIONS):
        frame = {"j": 0}

        def patched(context, actions, previous_scroll, last_output=None, f=f, frame=frame):
            frame["j"] += 1
            return draw(f, frame["j"] - 1, actions[:, -1], previous_scroll)

        if draw is None:
            dynamics.__dict__.pop("next_scroll_logits", None)
        else:
            dynamics.next_scroll_logits = patched
        held = torch.full((len(contexts), STEPS), ACTION_NAMES.index(name), dtype=torch.long)  # (B, k)
        ids = torch.cat([context_ids[:, : CONTEXT - 1], held], dim=1)  # (B, Tc-1+k)
        frames = np.concatenate([contexts, forks[:, f]], axis=1)  # only the context is read
        with torch.no_grad():
            dreams.append(autoregressive(world, frames, ids, CONTEXT, STEPS, maskgit_steps, None, 0))  # (B, k, H, W, C)
    dynamics.__dict__.pop("next_scroll_logits", None)
    return torch.stack(dreams, dim=1)  # (B, F, k, H, W, C)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a study folder (genie pipeline --out), e.g. runs/tiny")
    parser.add_argument("--model", default="genie-g-ta", help="a scrolled GenieRedux-G model of the study")
    parser.add_argument("--windows", type=int, default=32, help="forked windows per test set")
    parser.add_argument("--maskgit-steps", type=int, default=4, help="MaskGIT passes per frame (tiny's eval: 4)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    model = load_model_under_test(run / "models" / args.model)
    world = model.world
    if model.stage != "dynamics" or not world.dynamics.scrolled() or model.conditioning != "ground_truth":
        raise SystemExit(f"{args.model}: needs a GenieRedux-G dynamics with the scrolled copy path")
    size = 2 * world.dynamics.config.max_scroll + 1
    lookup = ScrollLookup([EpisodeStore(d, split="train") for d in training_data(model.run_info)],
                          world.dynamics.config.max_scroll)
    print(f"{args.model} of {run}; lookup fit on {', '.join(training_data(model.run_info))}")
    for test in ("basic-test", "diverse-test"):
        store = EpisodeStore(run / "data" / test)  # the eval's windows (context + horizon 10, seed 0) that fork
        contexts, context_ids, forks = forked_contexts(store, select_windows(store, CONTEXT + 10, None, 0),
                                                       args.windows, CONTEXT, STEPS, FORK_ACTIONS)
        context_ids = torch.as_tensor(context_ids.astype(np.int64))  # (B, c-1)
        last = contexts[:, -1:]  # (B, 1, H, W, C)
        real = [np.stack([scene_scroll(s[:-1], s[1:]) for s in np.concatenate([last, forks[:, f]], axis=1)])
                for f in range(forks.shape[1])]  # per fork (B, k, 2): the real scroll into each fork frame
        draws = {
            "head": None,
            "lookup": lambda f, j, actions, previous: lookup.logits(actions, previous),
            "persist": lambda f, j, actions, previous: one_hot_logits(
                np.vectorize(lookup.choice)(previous.float().numpy()), size),
            "oracle": lambda f, j, actions, previous: one_hot_logits(np.vectorize(lookup.choice)(real[f][:, j]), size),
        }
        for name, draw in draws.items():
            dreams = dream_forks(world, contexts, context_ids, forks, draw, args.maskgit_steps)
            score, _ = forked_future_wins(forked_future_psnr(dreams.clamp(0, 1), forks).numpy())  # (B,)
            mean, half = mean_ci95(score)
            print(f"  {test:13s} scroll from {name:8s} forked-future score {mean:.2f} ± {half:.2f} "
                  f"({len(score)} windows, chance 0.5)", flush=True)


if __name__ == "__main__":
    main()
