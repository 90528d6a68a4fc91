"""What `genie eval` leaves in --out: results.json, results.md, psnr_over_horizon.png, samples/*.gif|png.

Shapes: H x W x C pixels of a uint8 frame.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from genie_common import storage

SCALE = 2  # samples are upscaled 2x (64 px frames are tiny on a screen)
METRIC_LABELS = {"delta_psnr": "ΔtPSNR, paper (any other id)", "delta_psnr_effect": "ΔtPSNR, other effect",
                 "forked_future_score": "forked-future score",
                 "forked_direction_cosine": "forked-future direction (cosine)"}
LABEL_HEIGHT = 12


def format_value(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_key_way(key_way: dict[str, float] | None) -> str:
    """A held key's `key_way` (share of windows it moved the agent its way, 95% CI) as "0.88 ± 0.17", or "—"."""
    return "—" if not key_way else f"{format_value(key_way['share'])} ± {format_value(key_way['ci95'])}"


def markdown_table(results: dict[str, Any]) -> str:
    """A self-describing Markdown table of every metric of one evaluation."""
    model, data, settings = results["model"], results["data"], results["settings"]
    lines = [
        f"# {model['name']} on {data['name']}",
        "",
        f"- model: {model['location']} (checkpoint {model['checkpoint']}, preset {model['preset']}, step "
        f"{model['step']}, variant {model.get('variant') or 'unknown'})",
        f"- data: {data['location']} ({data.get('kind') or 'unknown kind'}, "
        f"agents {', '.join(data.get('agents', []))})",
        f"- context {settings['context']} frames, horizon {settings['horizon']} frames, MaskGIT steps "
        f"{settings['maskgit_steps'] if model['stage'] == 'dynamics' else 'n/a'}, seed {settings['seed']}, "
        f"{len(results['episodes'])} episodes",
        f"- level overlap with training data: {results['level_overlap']['note']}",
        "",
        "| metric | mode | value |",
        "|---|---|---|",
    ]
    for m in results["metrics"]:
        digits = 3 if m["metric"] in ("ssim", "forked_future_score", "forked_direction_cosine") else 2
        name = METRIC_LABELS.get(m["metric"], m["metric"]) + (f" (t={m['t']})" if "t" in m else "") + \
            (f" (k={m['k']}, {m['windows']} windows)" if "k" in m else "")
        value = format_value(m["value"], digits)
        if m.get("ci95") is not None and not math.isnan(m["ci95"]):
            value += f" ± {m['ci95']:.{digits}f}"
        lines.append(f"| {name} | {m['mode']} | {value} |")
    if "skipped" in results.get("fid", {}):
        lines += ["", results["fid"]["skipped"]]
    if results.get("delta_psnr_effect_skipped"):
        lines += ["", f"ΔtPSNR by effect class: not measured, {results['delta_psnr_effect_skipped']}."]
    forked = results.get("forked_futures")
    if forked:
        lines += ["",
                  f"## Forked futures ({' vs '.join(forked['forks'])}, k={forked['k']} frames, context "
                  f"{forked['context']})",
                  "",
                  f"Score: {forked['rule']}; chance {forked['chance']}. Dreams driven by {forked['dream_actions']}. "
                  f"Real forks {forked['real_forks']}.", ""]
        if "score" in forked:
            per_frame = ", ".join(f"{v:.2f}" for v in forked["per_frame_score"])
            lines.append(f"Score {forked['score']:.3f} ± {format_value(forked['ci95'], 3)} (95% CI) over "
                         f"{forked['windows']} windows; by frame 1..{forked['k']}: {per_frame}.")
            direction = forked.get("direction")
            if direction:
                sizes = ", ".join(format_value(v) for v in direction["size_median_per_frame"])
                lines += ["", f"Direction: {direction['rule']}. Cosine {direction['cosine']:.3f} ± "
                              f"{format_value(direction['ci95'], 3)}; by frame: "
                              f"{', '.join(f'{m:.3f}' for m, _ in direction['cosine_per_frame'])}; size (median) "
                              f"by frame: {sizes}."]
        else:
            lines.append(f"Not measured: {forked['skipped_reason']}.")
        for skip in forked["skipped"][:5]:
            lines.append(f"- skipped {skip['id']} @ {skip['start']}: {skip['reason']}")
        if len(forked["skipped"]) > 5:
            lines.append(f"- ... {len(forked['skipped']) - 5} more skipped windows in results.json")
    control = results.get("controllability")
    if control:
        lines += ["", f"## Controllability ({control['steps']} frames per held action; {control['convention']})", ""]
        relative = control["relative_to"]
        game = control.get("real_game") or {}
        real_game = bool(game.get("windows"))
        game_columns = (" real game: enacted | real game: moves its way | dream agrees with the game (a still dream) |"
                        if real_game else "")
        lines += [f"| action | mean motion px (dx, dy) | {'vs ' + relative if relative else 'dominant'} | observed "
                  f"({', '.join(control['actions'][next(iter(control['actions']))]['observed'])}) | expected | enacted "
                  f"| moves its way | real 1-step px |{game_columns}",
                  "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if real_game else "")]
        for name, row in control["actions"].items():
            moved = "({:+.2f}, {:+.2f})".format(*row["mean_motion_px"])
            if relative:
                versus = ("({:+.2f}, {:+.2f})".format(*row["mean_motion_vs_noop_px"]) if row["mean_motion_vs_noop_px"]
                          else "—")
            else:
                versus = row["dominant"]
            one_step = row["real_one_step_motion_px"]
            real = "({:+.2f}, {:+.2f})".format(*one_step) if one_step else "—"
            observed = " / ".join(str(v) for v in row["observed"].values())
            line = (f"| {name} | {moved} | {versus} | {observed} | {row['expected'] or '—'} | "
                    f"{format_value(row['enacted'])} | {format_key_way(row.get('key_way'))} | {real} |")
            if real_game:
                answer = row.get("real_game") or {}
                still = format_value(answer.get("agreement_if_still"))
                line += (f" {format_value(answer.get('enacted'))} | {format_key_way(answer.get('key_way'))} | "
                         f"{format_value(answer.get('agreement'))} ({still}) |")
            lines.append(line)
        if real_game:
            lines += ["", f"The real game: each key held for the same {control['steps']} frames from the same contexts "
                          f"({game['windows']} windows replayed, {len(game['skipped'])} skipped), classified as the "
                          "dreams are. A key's enact rate in the real game is the most a faithful dream can score; "
                          "in brackets, how often a dream that never moves would agree with the game. Moves its way: "
                          "the share of windows whose motion relative to NOOP has the key's sign along its axis, any "
                          "size (± 95% CI): CoinRun's momentum keeps most held keys under the 'still' threshold in "
                          "the real game, not their direction."]
    return "\n".join(lines) + "\n"


def plot_over_horizon(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_step = results["per_step"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, values in per_step.items():
        steps = np.arange(1, len(values["psnr"]) + 1)
        style = "--" if mode == "copy_last_frame" else "-"
        axes[0].plot(steps, values["psnr"], style, marker="o", label=mode.replace("_", " "))
        if "ssim" in values:
            axes[1].plot(steps, values["ssim"], style, marker="o", label=mode.replace("_", " "))
    world = results["model"]["stage"] == "dynamics"
    xlabel = "predicted frame (steps after the context)" if world else "frame of the window"
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    s = results["settings"]
    fig.suptitle(f"{results['model']['name']} on {results['data']['name']}: context {s['context']}, horizon "
                 f"{s['horizon']}, MaskGIT {s['maskgit_steps'] if world else 'n/a'}, seed {s['seed']}, "
                 f"{len(results['episodes'])} episodes",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _labelled(frames: np.ndarray, label: str, length: int) -> list[Image.Image]:
    """(frames, H, W, C) uint8 -> `length` PIL images with a label strip; shorter sequences hold their last frame."""
    out = []
    for t in range(length):
        frame = frames[min(t, len(frames) - 1)]
        image = Image.fromarray(frame).resize((frame.shape[1] * SCALE, frame.shape[0] * SCALE), Image.NEAREST)
        canvas = Image.new("RGB", (image.width, image.height + LABEL_HEIGHT), "white")
        canvas.paste(image, (0, LABEL_HEIGHT))
        ImageDraw.Draw(canvas).text((2, 0), label[:22], fill="black")
        out.append(canvas)
    return out


def write_sample(sample: dict[str, Any], folder: Path, index: int) -> list[Path]:
    """One episode: a GIF (ground truth | predictions | held actions, side by side) and a PNG strip (rows over time)."""
    rows = {"ground truth": sample["ground_truth"], **sample["rows"]}
    length = max(len(v) for v in rows.values())
    columns = {name: _labelled(frames, name, length) for name, frames in rows.items()}
    width, height = sum(c[0].width for c in columns.values()), next(iter(columns.values()))[0].height
    gif_frames = []
    for t in range(length):
        canvas = Image.new("RGB", (width, height), "white")
        x = 0
        for images in columns.values():
            canvas.paste(images[t], (x, 0))
            x += images[t].width
        gif_frames.append(canvas)
    episode = sample["episode"]
    stem = f"{index:02d}_{episode['id']}_{episode['start']}".replace("/", "_")
    gif = folder / f"{stem}.gif"
    gif_frames[0].save(gif, save_all=True, append_images=gif_frames[1:], duration=250, loop=0)
    cell = next(iter(columns.values()))[0]
    strip = Image.new("RGB", (cell.width * length, cell.height * len(columns)), "white")
    for r, images in enumerate(columns.values()):
        for t, image in enumerate(images):
            strip.paste(image, (t * cell.width, r * cell.height))
    png = folder / f"{stem}.png"
    strip.save(png)
    return [gif, png]


def write_outputs(output, out: str | Path) -> dict[str, Any]:
    """Write every output into `out` (a folder or storage URI); returns their locations."""
    remote = storage.is_uri(out)
    folder = Path(tempfile.mkdtemp(prefix="genie-eval-")) if remote else Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"results": "results.json", "table": "results.md", "plot": "psnr_over_horizon.png",
                               "samples": []}
    (folder / "results.md").write_text(markdown_table(output.results))
    plot_over_horizon(output.results, folder / "psnr_over_horizon.png")
    samples = folder / "samples"
    samples.mkdir(exist_ok=True)
    for i, sample in enumerate(output.samples):
        written["samples"] += [f"samples/{p.name}" for p in write_sample(sample, samples, i)]
    payload = {**output.results, "outputs": written}
    (folder / "results.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    if remote:
        for path in folder.rglob("*"):
            if path.is_file():
                storage.upload_file(path, storage.join(out, str(path.relative_to(folder))))
        shutil.rmtree(folder, ignore_errors=True)
    return {**written, "folder": str(out)}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
