"""genie play at `tiny` on CPU: frames/s per session at 25, 8 and 1 MaskGIT steps, and the latency of one
key press end to end (HTTP -> Serve proxy -> ingress -> batched model replica -> back) vs calling the
model's play step directly in this process, with the overhead ratio (target <= 20%).

Both sides do the same work: the served sessions run without the real game beside the dream (that
is a feature with its own cost, not Serve's). Both use the same number of torch threads. The model
is untrained (speed does not depend on the weights). With CUDA (`--device cuda`) it measures frames/s
at `--preset paper` on the GPU instead of CPU `tiny` (Genie ran at about 1 frame/s; real time is >= 15).

    python benchmarks/bench_play.py [--presses 12] [--threads 1] [--preset tiny] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
import torch

from cluster.play.session import PlayConfig
from cluster.play.starts import fresh_level
from cluster.play.stepper import Stepper, StepInput
from world_model.config import load_preset
from world_model.dynamics import Dynamics
from world_model.generation import WorldModel
from world_model.runs import export_world_model
from world_model.tokenizer import Tokenizer

STEP_COUNTS = (25, 8, 1)


class DirectPlayer:
    """Presses keys by calling the play step in this process, the context growing as in a session."""

    def __init__(self, stepper: Stepper, steps: int, context: np.ndarray) -> None:
        self.stepper, self.steps = stepper, steps
        self.tokens = list(stepper.encode(context))  # each (h, w)
        self.actions: list[int] = []

    def press(self, action: int = 7) -> float:
        window = np.stack(self.tokens[-self.stepper.context_frames:])  # (Tc, h, w)
        previous = self.actions[len(self.actions) - (len(window) - 1):] if len(window) > 1 else []
        began = time.perf_counter()
        out = self.stepper.step([StepInput(window, np.array([*previous, action]), self.steps, 1.0)])[0]
        if self.stepper.model.dynamics.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - began
        self.tokens.append(out.tokens)
        self.actions.append(action)
        return elapsed


class ServedPlayer:
    """Presses keys through HTTP -> Serve proxy -> ingress -> model replica, as the page does (keep-alive),
    without the real game beside the dream, so both sides generate the same frame and nothing else."""

    def __init__(self, base: str, steps: int, seed: int) -> None:
        self.http, self.base = requests.Session(), base
        new = {"start": "fresh", "seed": seed, "steps": steps, "real": False}
        self.sid = self.http.post(f"{base}/api/sessions", json=new).json()["session"]

    def press(self, action: int = 7) -> float:
        began = time.perf_counter()
        self.http.post(f"{self.base}/api/sessions/{self.sid}/step", json={"action": action}).raise_for_status()
        return time.perf_counter() - began

    def close(self) -> None:
        self.http.delete(f"{self.base}/api/sessions/{self.sid}")


def direct_latencies(stepper: Stepper, steps: int, presses: int, context: np.ndarray) -> list[float]:
    player = DirectPlayer(stepper, steps, context)
    return [player.press() for _ in range(presses + 2)][2:]  # the first presses warm up with a shorter context


def served_latencies(base: str, steps: int, presses: int, seed: int) -> list[float]:
    player = ServedPlayer(base, steps, seed)
    times = [player.press() for _ in range(presses + 2)][2:]
    player.close()
    return times


def paired_latencies(stepper: Stepper, base: str, steps: int, presses: int,
                     context: np.ndarray) -> tuple[list[float], list[float]]:
    """Direct and served key presses alternated one by one, so both see the same machine load."""
    direct, served = DirectPlayer(stepper, steps, context), ServedPlayer(base, steps, seed=3)
    pairs = [(direct.press(), served.press()) for _ in range(presses + 2)][2:]
    served.close()
    return [d for d, _ in pairs], [v for _, v in pairs]


def concurrent_fps(base: str, sessions: int, steps: int, presses: int) -> float:
    """Frames/s each session sees when `sessions` players press keys at once (batched by the model server)."""
    def player(i: int) -> float:
        return statistics.median(served_latencies(base, steps, presses, seed=100 + i))

    with ThreadPoolExecutor(sessions) as pool:
        return 1.0 / statistics.median(pool.map(player, range(sessions)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=12, help="key presses measured per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the model replica")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-serve", action="store_true", help="in-process frames/s only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    model = WorldModel(Tokenizer(preset.tokenizer), Dynamics(preset.dynamics)).eval().to(args.device)
    stepper = Stepper(model)
    context = fresh_level(3).frames  # (1, H, W, C)
    card = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} torch thread(s)"
    print(f"genie play, preset {args.preset} GenieRedux-G, {card}")

    direct = {s: direct_latencies(stepper, s, args.presses, context) for s in STEP_COUNTS}
    print(f"\n{'MaskGIT steps':>13} | {'direct ms':>9} | {'frames/s':>8}")
    for s in STEP_COUNTS:
        median = statistics.median(direct[s])
        print(f"{s:>13} | {1000 * median:9.1f} | {1 / median:8.2f}")
    if args.no_serve:
        return

    import ray
    from ray import serve

    from cluster.play.server import APP_NAME, build_app

    run = export_world_model(tempfile.mkdtemp(prefix="bench-play-") + "/run", model.tokenizer.cpu(),
                             model.dynamics.cpu(), preset=args.preset)
    model.to(args.device)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    try:
        port = 8931
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = PlayConfig(model_cpus=1, torch_threads=args.threads, model_gpus=1 if args.device == "cuda" else 0)
        serve.run(build_app(str(run), config), name=APP_NAME, route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        print(f"\n{'MaskGIT steps':>13} | {'direct ms':>9} | {'Serve ms':>8} | {'overhead':>8} | "
              f"{'frames/s served':>15}")
        for s in STEP_COUNTS:
            direct_times, served_times = paired_latencies(stepper, base, s, args.presses, context)
            d, v = statistics.median(direct_times), statistics.median(served_times)
            print(f"{s:>13} | {1000 * d:9.1f} | {1000 * v:8.1f} | {100 * (v - d) / d:7.1f}% | {1 / v:15.2f}")
        print("\noverhead = (Serve - direct) / direct, medians of one key press (one frame), the two "
              "alternated press by press; target <= 20%")
        for sessions in (2, 4):
            fps = concurrent_fps(base, sessions, 8, max(4, args.presses // 2))
            print(f"{sessions} players at once, 8 steps: {fps:.2f} frames/s per player, {sessions * fps:.2f} in total")
        sizes = requests.get(f"{base}/api/stats").json()["batch_sizes"]
        print(f"model batch sizes seen: max {max(sizes)}, mean {np.mean(sizes):.2f}")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
