"""`genie play` (the world model in a browser, served by Ray Serve) and `genie dream` (a scripted rollout as a GIF)."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

ORDER = 50

# the fields of PlayConfig and DreamConfig that are options of `genie play` and `genie dream`, in the order their help
# shows them (play: after --token; dream: --data after --level-seed)
PLAY_OPTIONS = ("rate_per_s", "max_gif_frames", "steps", "temperature", "max_sessions", "ttl_s", "max_upload_kb",
                "model_cpus", "model_gpus", "model_replicas", "torch_threads")
DREAM_OPTIONS = ("start", "level_seed", "steps", "temperature", "guidance", "seed", "fps", "scale", "side_by_side")

PLAY_DESCRIPTION = """\
Serve a world model as a game in the browser. A Ray Serve application holds the model (batching
the steps of concurrent players) and serves a page at the printed URL: start from a fresh Procgen
level (or, with --data, a test-set episode), play with the keys, watch the real game fed the same
actions beside the dream, change the MaskGIT step count (speed vs quality), step back, reset and
record a GIF. Serves until Ctrl-C.

keys: GenieRedux-G: arrows or WASD move, Up / W / Space jump (keys combine: Right+Up = jump right);
      GenieRedux: 1..K are the latent actions. Backspace steps back.
safety: binds to 127.0.0.1 unless --host says otherwise, and then answers only to loopback names
        (no DNS rebinding). Any other --host (e.g. 0.0.0.0) needs a token: --token, else a fresh one,
        printed in the URL; requests without it get 401. Each session may make --rate requests per
        second; POSTs must be JSON; no endpoint reads or writes a path; uploads are 64x64 PNG frames
        up to --max-upload-kb; a recording (GIF) holds at most --max-gif-frames frames.
"""


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import add_address, non_negative_int, output_file, port, storage_location
    from cluster.dataclass_options import add_options
    from cluster.play.actions import DREAM_HELP
    from cluster.play.config import DreamConfig, PlayConfig

    play = commands.add_parser("play", help="play the world model in a browser (Ray Serve); prints the URL",
                               description=PLAY_DESCRIPTION, formatter_class=_Formatter)
    play.add_argument("--model", required=True, type=storage_location,
                      help="dynamics run folder of `genie train dynamics` or its checkpoint")
    play.add_argument("--data", type=storage_location, default=None,
                      help="data set whose test episodes (else all) can be start frames; without it: fresh "
                           "Procgen levels")
    play.add_argument("--port", type=port, default=8000, help="HTTP port (default 8000)")
    play.add_argument("--host", default="127.0.0.1",
                      help="interface to bind (default 127.0.0.1, this machine only); 0.0.0.0 exposes the game to the "
                           "network and then needs a token")
    play.add_argument("--token", default=None,
                      help="the password every request must carry (at least 8 characters); required off loopback, "
                           "so a fresh one is made and printed when --host is not loopback and none is given")
    add_options(play, PlayConfig, PLAY_OPTIONS)
    play.add_argument("--seed", type=non_negative_int, default=None, help="seed of the random starts")
    add_address(play)
    play.set_defaults(handler=run_play)

    dream = commands.add_parser(
        "dream", help="roll the world model out with scripted actions and write a GIF (no browser, no Ray)",
        description="\n\n".join(textwrap.fill(p, 100) for p in (
            "Start from a real CoinRun frame, generate one frame per action and write the frames as an animated GIF "
            "(the start frame first). Runs in-process: no Ray, no browser.", DREAM_HELP)),
        formatter_class=_Formatter,
    )
    dream.add_argument("--model", required=True, type=storage_location,
                       help="dynamics run folder of `genie train dynamics` or its checkpoint")
    dream.add_argument("--actions", required=True,
                       help="one letter (or digit, or comma-separated id) per frame; see above")
    dream.add_argument("--out", type=output_file, default=Path("dream.gif"), help="GIF to write (default dream.gif)")
    add_options(dream, DreamConfig, DREAM_OPTIONS[:2])
    dream.add_argument("--data", type=storage_location, default=None, help="data set for --start test / episode:ID")
    add_options(dream, DreamConfig, DREAM_OPTIONS[2:])
    dream.set_defaults(handler=run_dream)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; each option's help ends with its default where it has one and does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.option_strings and not action.required and "default" not in text
                and action.default is not None and action.default is not False and action.default != argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def run_play(args: argparse.Namespace) -> int:
    from ray import serve

    from cluster.play.access import access_for, play_url
    from cluster.play.server import APP_NAME, build_app
    from cluster.ray_session import ray_session
    from genie_common.errors import ConfigError
    from world_model.runs import load_world_model

    token, hosts = access_for(args.host, args.token)
    config = play_config(args, token, hosts)
    loaded = load_world_model(args.model)  # fail here, with a clear message, rather than in a replica restart loop
    if args.data is not None:
        from cluster.play.starts import EpisodeStarts

        EpisodeStarts(args.data)
    with ray_session(args.address):
        if args.gpus:  # on `ray up`, GPU nodes start at zero: ask the autoscaler, or refuse what no node holds
            from rl_agent.capacity import ensure_resources, format_resources

            replica = {"CPU": args.model_cpus, "GPU": args.gpus}
            ensure_resources([replica] * args.replicas,
                             f"{args.replicas} model replica(s) x {format_resources(replica)}",
                             "drop --gpus to play on CPUs, or use fewer --replicas")
        serve.start(http_options={"host": args.host, "port": args.port})
        bound = _serve_address()
        if bound != (args.host, args.port):  # Ray keeps a running Serve's address and only logs that it did
            raise ConfigError(f"Ray Serve already runs on this cluster at {bound[0]}:{bound[1]} and cannot move while "
                              f"it runs: use --host {bound[0]} --port {bound[1]}, or stop it first (`serve shutdown`)")
        serve.run(build_app(args.model, config, args.data, args.seed), name=APP_NAME, route_prefix="/")
        url = play_url(args.host, args.port, token)
        if hosts is None:
            print(f"genie play: listening on {args.host}:{args.port}, reachable from the network; every request needs "
                  f"the token{'' if args.token else ' (made now)'}, so share this URL only with your players",
                  flush=True)
        print(f"genie play: {loaded.name} ({loaded.preset}, step {loaded.step}) at {url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping genie play")
        finally:
            serve.delete(APP_NAME)
    return 0


def play_config(args: argparse.Namespace, token: str | None, hosts: tuple[str, ...] | None):
    """The PlayConfig of `genie play`: its options, bursts of twice --rate, and the access `access_for` chose."""
    from cluster.dataclass_options import config_from_args
    from cluster.play.config import PlayConfig
    from genie_common.errors import ConfigError

    try:
        return config_from_args(PlayConfig, args, PLAY_OPTIONS, rate_burst=max(1, int(2 * args.rate)), token=token,
                                allowed_hosts=hosts)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _serve_address() -> tuple[str, int]:
    """The host and port the cluster's Serve proxies actually bind."""
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    return http.host, http.port


def run_dream(args: argparse.Namespace) -> int:
    from cluster.dataclass_options import config_from_args
    from cluster.play.config import DreamConfig
    from cluster.play.dream import dream

    config = config_from_args(DreamConfig, args, DREAM_OPTIONS)
    started = time.perf_counter()
    result = dream(args.model, args.actions, args.out, config, args.data)
    print(f"dream: {len(result.actions)} frames from {result.source} in {time.perf_counter() - started:.1f}s -> "
          f"{result.path}")
    return 0
