"""A trained PPO policy: its weights, saved beside each RLlib checkpoint, loaded without RLlib.

Every checkpoint of `genie agent train` holds `policy/weights.pt` (a plain torch state dict, loaded with
`torch.load(weights_only=True)`: no pickle runs) and `policy/policy.json` (the network's description). Collectors
and `genie agent eval` load only these: fast, no env runners, no Ray CPUs to deadlock on (`Algorithm.from_checkpoint`
asks for its env runners' CPUs and hangs when collectors hold them all). RLlib's own checkpoint beside it is for
resuming training only. A checkpoint without a policy folder (made before it existed, or elsewhere) is refused:
RLlib loads its module by unpickling, which runs whatever code the file holds. `genie agent export` converts one
the user trusts, once (`export_policy`).

A checkpoint may be a storage URI (s3://..., file://...): on a cluster the collectors run on other nodes than the
trainer, so a folder on the head's disk is invisible to them. `local_checkpoint` mirrors the policy the URI names
(a run folder's latest complete checkpoint) into a node-local temp folder, loaded and then removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow.fs as pafs

from genie_common.errors import ConfigError
from genie_common.storage import RemoteFolder, is_uri
from rl_agent.agent_output import AgentOutput
from rl_agent.coinrun_env import FRAME_SHAPE, NUM_ACTIONS

_NOT_FOUND = pafs.FileType.NotFound

MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"  # RLlib's (legacy loading)
POLICY_SUBDIR = "policy"
WEIGHTS_FILE, DESCRIPTION_FILE = "weights.pt", "policy.json"
POLICY_FORMAT = "genie-impala-policy/1"


def checkpoints_of(run_dir: Path) -> list[Path]:
    """A run folder's complete checkpoints (those with their `.complete` marker), oldest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("iter_*") if (p / ".complete").exists()) if root.is_dir() else []


def remote_checkpoint(uri: str) -> str:
    """The URI of the checkpoint `uri` names: a run folder's latest complete one, else `uri` itself."""
    folder = RemoteFolder(uri)
    if folder.kind() == _NOT_FOUND:
        raise ConfigError(f"checkpoint {uri} does not exist; train one with `genie agent train --out {uri}`")
    if folder.kind("checkpoints") != _NOT_FOUND:
        complete = [n for n in folder.folders("checkpoints")
                    if n.startswith("iter_") and folder.exists(f"checkpoints/{n}/.complete")]
        if not complete:
            raise ConfigError(f"run folder {uri} has no complete checkpoint yet; let `genie agent train` save one")
        return f"{folder.uri}/checkpoints/{complete[-1]}"
    return folder.uri


@contextlib.contextmanager
def local_checkpoint(checkpoint: str | Path) -> Iterator[Path]:
    """A local path holding `checkpoint`: itself, or for a URI a temp mirror of its policy (removed afterwards).

    Only the policy folder travels (weights and description, a few MB), not RLlib's state for resuming.
    """
    if not is_uri(checkpoint):
        yield Path(checkpoint)
        return
    folder = RemoteFolder(remote_checkpoint(str(checkpoint)))
    if folder.exists(f"{POLICY_SUBDIR}/{DESCRIPTION_FILE}"):
        subdir = POLICY_SUBDIR
    elif folder.exists(DESCRIPTION_FILE):
        subdir = ""  # a policy folder itself
    else:  # nothing of a pickle-only checkpoint is even fetched
        raise ConfigError(f"{folder.uri} holds no {POLICY_SUBDIR}/{DESCRIPTION_FILE}: not a checkpoint of `genie agent "
                          f"train`, or {_PICKLE_ONLY} If you trust where it came from, copy it to this machine, run "
                          f"`genie agent export` on it and upload it again")
    staging = Path(tempfile.mkdtemp(prefix="genie-policy-"))
    try:
        folder.download_tree(subdir, staging / subdir if subdir else staging)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_PICKLE_ONLY = ("an RLlib checkpoint without genie-redux's tensor-only policy (made before it existed, or elsewhere): "
                "its module is a pickle, and loading a pickle runs whatever code it holds.")


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The checkpoint folder a local path names: a run folder's latest complete checkpoint, else the path itself."""
    path = Path(checkpoint)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; train one with `genie agent train --out DIR`")
    if (path / "checkpoints").is_dir():
        complete = checkpoints_of(path)
        if not complete:
            raise ConfigError(f"run folder {path} has no complete checkpoint yet; let `genie agent train` save one")
        path = complete[-1]
    return path


def resolve_module_dir(checkpoint: str | Path) -> Path:
    """The tensor-only policy folder of a run folder (its latest checkpoint), a checkpoint, or a policy folder.

    A checkpoint that holds only RLlib's pickled module is refused here, before anything loads it, with the
    command that converts one the user trusts."""
    path = checkpoint_folder(checkpoint)
    if (path / POLICY_SUBDIR / DESCRIPTION_FILE).exists():
        return path / POLICY_SUBDIR
    if (path / DESCRIPTION_FILE).exists():
        return path
    if rllib_module_dir(path) is not None:
        raise ConfigError(f"{checkpoint} is {_PICKLE_ONLY} If you trust where it came from, convert it once: "
                          f"`genie agent export {checkpoint}`")
    raise ConfigError(
        f"{checkpoint} is not a PPO checkpoint of genie-redux (no {POLICY_SUBDIR}/{DESCRIPTION_FILE}); pass a run "
        f"folder of `genie agent train` or one of its checkpoints/iter_* folders"
    )


def rllib_module_dir(path: Path) -> Path | None:
    """RLlib's module folder inside a checkpoint folder (or the module folder itself); None when there is none."""
    if (path / MODULE_SUBDIR).is_dir():
        return path / MODULE_SUBDIR
    if (path / "class_and_ctor_args.pkl").exists():
        return path
    return None


def export_policy(checkpoint: str | Path) -> Path:
    """Convert a checkpoint holding only RLlib's pickled module into a tensor-only policy folder beside it.

    This unpickles the module (it runs the checkpoint's code): only for a checkpoint the user trusts, on their
    word (`genie agent export`). Afterwards every command loads the tensors alone. Returns the policy folder."""
    folder = checkpoint_folder(checkpoint)
    if (folder / POLICY_SUBDIR / DESCRIPTION_FILE).exists() or (folder / DESCRIPTION_FILE).exists():
        return resolve_module_dir(folder)  # tensor-only already: nothing to unpickle
    module_dir = rllib_module_dir(folder)
    if module_dir is None:
        raise ConfigError(f"{checkpoint} is not an RLlib PPO checkpoint (no {MODULE_SUBDIR}); pass a run folder of "
                          f"`genie agent train` or one of its checkpoints/iter_* folders")
    module, shape, actions = _load_rllib_module(module_dir)
    _check_coinrun_policy(module, shape, actions, checkpoint)
    return save_policy(module.state_dict(), dict(module.model_config or {}), folder / POLICY_SUBDIR)


def checkpoint_id(module_dir: Path) -> str:
    """Content hash of the module's weights: the same weights always get the same id."""
    digest = hashlib.sha256()
    for file in sorted(p for p in module_dir.rglob("*") if p.is_file()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def save_policy(weights: dict[str, Any], model_config: dict[str, Any], folder: Path) -> Path:
    """Write a policy folder: the network's state dict (tensors only) and its description."""
    import torch

    from rl_agent.impala_module import ImpalaCNNModule

    folder.mkdir(parents=True, exist_ok=True)
    state = {name: torch.as_tensor(value).detach().cpu().clone() for name, value in weights.items()}
    torch.save(state, folder / WEIGHTS_FILE)
    net = ImpalaCNNModule.net_config(model_config)
    description = {"format": POLICY_FORMAT, "frame_shape": list(FRAME_SHAPE), "num_actions": NUM_ACTIONS,
                   "channels": list(net["channels"]), "hidden": net["hidden"], "blocks": net["blocks"],
                   "allowed_actions": list(net["allowed_actions"])}
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description, indent=1))
    return folder


def _load_policy_folder(folder: Path):
    import torch

    from rl_agent.impala_module import ImpalaPolicyNet

    try:
        description = json.loads((folder / DESCRIPTION_FILE).read_text())
        if description.get("format") != POLICY_FORMAT:
            raise ConfigError(f"{folder / DESCRIPTION_FILE} is not a {POLICY_FORMAT} description")
        net = ImpalaPolicyNet(tuple(description["frame_shape"]), int(description["num_actions"]),
                              tuple(description["channels"]), int(description["hidden"]), int(description["blocks"]),
                              tuple(description.get("allowed_actions", ())))  # absent (older policies): all
        net.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    except ConfigError:
        raise
    except Exception as err:  # a missing key, a bad file, a shape mismatch: all "unusable"
        raise ConfigError(f"cannot load the policy in {folder}: {type(err).__name__}: {err}") from err
    return net, net.frame_shape, net.num_actions


def load_module(checkpoint: str | Path):
    """The policy network of a checkpoint (tensors only, no pickle), checked to be a CoinRun policy."""
    module_dir = resolve_module_dir(checkpoint)
    module, shape, actions = _load_policy_folder(module_dir)
    _check_coinrun_policy(module, shape, actions, checkpoint)
    module.eval()
    return module, module_dir


def _check_coinrun_policy(module: Any, shape: tuple, actions: int | None, checkpoint: str | Path) -> None:
    """A policy for CoinRun's 64x64x3 frames and 15 actions, with genie-redux's network."""
    if shape != FRAME_SHAPE or actions != NUM_ACTIONS:
        raise ConfigError(f"{checkpoint} was trained for observations {shape} and {actions} actions; "
                          f"CoinRun needs {FRAME_SHAPE} frames and {NUM_ACTIONS} actions")
    if not hasattr(module, "policy_and_value"):
        raise ConfigError(f"{checkpoint} holds a {type(module).__name__}, not genie-redux's ImpalaCNNModule")


def _load_rllib_module(module_dir: Path):
    """RLlib's pickled module (it runs the pickle's code): for `export_policy` alone, on the user's word."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    try:
        module = RLModule.from_checkpoint(str(module_dir.absolute()))  # RLlib takes paths as URIs: absolute only
    except Exception as err:  # RLlib raises many kinds; all mean "unusable checkpoint"
        raise ConfigError(f"cannot load the policy in {module_dir}: {type(err).__name__}: {err}") from err
    return module, tuple(getattr(module.observation_space, "shape", ()) or ()), getattr(module.action_space, "n", None)


class PPOAgent:
    """Samples actions from a trained policy, batched over a vector env, with its logp and value."""

    def __init__(self, checkpoint: str | Path, torch_threads: int | None = 1) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        with local_checkpoint(checkpoint) as local:
            self.module, module_dir = load_module(local)
            self.name = f"ppo:{checkpoint_id(module_dir)}"

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> AgentOutput:  # obs: (E, H, W, C) uint8
        import torch

        with torch.no_grad():
            logits, values = self.module.policy_and_value(torch.from_numpy(np.ascontiguousarray(obs)))
        logits = logits.double().numpy()  # (E, 15)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        # inverse-CDF sampling with our own generator: the same seed gives the same actions
        cdf = np.cumsum(probs, axis=1)
        actions = np.minimum((cdf < rng.random((len(obs), 1))).sum(axis=1), NUM_ACTIONS - 1)
        logp = np.log(probs[np.arange(len(obs)), actions])
        return AgentOutput(actions=actions.astype(np.int64), logp=logp.astype(np.float32),
                           value=values.numpy().astype(np.float32))
