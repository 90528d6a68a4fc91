"""genie play at `tiny` on CPU: frames/s per session at 25, 8 and 1 MaskGIT steps, and the latency of one
key press end to end (HTTP -> Serve proxy -> ingress -> batched model replica -> back) vs calling the
model's play step directly in this process, with the overhead ratio (target <= 20%).

Both sides use the same number of torch threads. The model is untrained (speed does not depend on the
weights). With CUDA (`--device cuda`) it measures frames/s at `--preset paper` on the GPU instead of
CPU `tiny` (Genie ran at about 1 frame/s; real time is >= 15).

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


def direct_latencies(stepper: Stepper, steps: int, presses: int, context: np.ndarray) -> list[float]:
    """Seconds per play step called in-process, the session's context growing as in play."""
    tokens = list(stepper.encode(context))
    actions: list[int] = []
    times = []
    for i in range(presses + 2):
        window = np.stack(tokens[-stepper.context_frames:])  # (Tc, h, w)
        previous = actions[len(actions) - (len(window) - 1):] if len(window) > 1 else []
        began = time.perf_counter()
        out = stepper.step([StepInput(window, np.array([*previous, 7]), steps, 1.0)])[0]
        if stepper.model.dynamics.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
        tokens.append(out.tokens)
        actions.append(7)
    return times[2:]  # the first steps warm up and run with a shorter context


def served_latencies(base: str, steps: int, presses: int, seed: int) -> list[float]:
    http = requests.Session()  # keep-alive, as a browser does
    sid = http.post(f"{base}/api/sessions", json={"start": "fresh", "seed": seed, "steps": steps}).json()["session"]
    times = []
    for _ in range(presses + 2):
        began = time.perf_counter()
        response = http.post(f"{base}/api/sessions/{sid}/step", json={"action": 7})
        response.raise_for_status()
        times.append(time.perf_counter() - began)
    http.delete(f"{base}/api/sessions/{sid}")
    return times[2:]


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

    run = export_world_model(tempfile.mkdtemp(prefix="bench-play-") + "/run", model.tokenizer.cpu(), model.dynamics.cpu(),
                             preset=args.preset)
    model.to(args.device)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    try:
        port = 8931
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = PlayConfig(model_cpus=1, torch_threads=args.threads, model_gpus=1 if args.device == "cuda" else 0)
        serve.run(build_app(str(run), config), name=APP_NAME, route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        print(f"\n{'MaskGIT steps':>13} | {'direct ms':>9} | {'Serve ms':>8} | {'overhead':>8} | {'frames/s served':>15}")
        for s in STEP_COUNTS:
            served = served_latencies(base, s, args.presses, seed=1)
            # alternate once more with the direct call, so both see the same machine load
            direct_again = direct_latencies(stepper, s, args.presses, context)
            d = statistics.median(direct[s] + direct_again)
            v = statistics.median(served)
            print(f"{s:>13} | {1000 * d:9.1f} | {1000 * v:8.1f} | {100 * (v - d) / d:7.1f}% | {1 / v:15.2f}")
        print("\noverhead = (Serve - direct) / direct, medians of one key press (one frame); target <= 20%")
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
