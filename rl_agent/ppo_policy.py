"""A trained PPO policy: its weights, saved beside each RLlib checkpoint, loaded without RLlib.

Every checkpoint of `genie agent train` holds `policy/weights.pt` (a plain torch state dict, loaded with
`torch.load(weights_only=True)`: no pickle runs) and `policy/policy.json` (the network's description). Collectors
and `genie agent eval` load only these: fast, no env runners, no Ray CPUs to deadlock on (`Algorithm.from_checkpoint`
asks for its env runners' CPUs and hangs when collectors hold them all). RLlib's own checkpoint beside it is for
resuming training; checkpoints made before the policy folder existed still load through RLlib's pickles.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from rl_agent.agents import AgentOutput
from rl_agent.coinrun_env import FRAME_SHAPE, NUM_ACTIONS, ConfigError

MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"  # RLlib's (legacy loading)
POLICY_SUBDIR = "policy"
WEIGHTS_FILE, DESCRIPTION_FILE = "weights.pt", "policy.json"
POLICY_FORMAT = "genie-impala-policy/1"


def checkpoints_of(run_dir: Path) -> list[Path]:
    """A run folder's complete checkpoints (those with their `.complete` marker), oldest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("iter_*") if (p / ".complete").exists()) if root.is_dir() else []


def resolve_module_dir(checkpoint: str | Path) -> Path:
    """Accept a run folder (its latest checkpoint), an RLlib checkpoint, or its module folder."""
    path = Path(checkpoint)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; train one with `genie agent train --out DIR`")
    if (path / "checkpoints").is_dir():
        complete = checkpoints_of(path)
        if not complete:
            raise ConfigError(f"run folder {path} has no complete checkpoint yet; let `genie agent train` save one")
        path = complete[-1]
    if (path / POLICY_SUBDIR / DESCRIPTION_FILE).exists():
        return path / POLICY_SUBDIR
    if (path / DESCRIPTION_FILE).exists():
        return path
    if (path / MODULE_SUBDIR).is_dir():
        return path / MODULE_SUBDIR
    if (path / "class_and_ctor_args.pkl").exists():
        return path
    raise ConfigError(
        f"{checkpoint} is not an RLlib PPO checkpoint (no {MODULE_SUBDIR}); pass a run folder of "
        f"`genie agent train` or one of its checkpoints/iter_* folders"
    )


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
                   "channels": list(net["channels"]), "hidden": net["hidden"], "blocks": net["blocks"]}
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
                              tuple(description["channels"]), int(description["hidden"]), int(description["blocks"]))
        net.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a missing key, a bad file, a shape mismatch: all "unusable"
        raise ConfigError(f"cannot load the policy in {folder}: {type(err).__name__}: {err}") from err
    return net, net.frame_shape, net.num_actions


def load_module(checkpoint: str | Path):
    """The policy network of a checkpoint, checked to be a CoinRun policy (64x64x3 frames, 15 actions)."""
    module_dir = resolve_module_dir(checkpoint)
    if (module_dir / DESCRIPTION_FILE).exists():
        module, shape, actions = _load_policy_folder(module_dir)
    else:
        module, shape, actions = _load_rllib_module(module_dir)
    if shape != FRAME_SHAPE or actions != NUM_ACTIONS:
        raise ConfigError(f"{checkpoint} was trained for observations {shape} and {actions} actions; "
                          f"CoinRun needs {FRAME_SHAPE} frames and {NUM_ACTIONS} actions")
    if not hasattr(module, "policy_and_value"):
        raise ConfigError(f"{checkpoint} holds a {type(module).__name__}, not genie-redux's ImpalaCNNModule")
    module.eval()
    return module, module_dir


def _load_rllib_module(module_dir: Path):
    """Checkpoints older than the policy folder: RLlib's pickled module (prints RLlib's deprecation notice)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    try:
        module = RLModule.from_checkpoint(str(module_dir.absolute()))  # RLlib takes paths as URIs: absolute only
    except Exception as err:  # noqa: BLE001 - RLlib raises many kinds; all mean "unusable checkpoint"
        raise ConfigError(f"cannot load the policy in {module_dir}: {type(err).__name__}: {err}") from err
    return module, tuple(getattr(module.observation_space, "shape", ()) or ()), getattr(module.action_space, "n", None)


class PPOAgent:
    """Samples actions from a trained policy, batched over a vector env, with its logp and value."""

    def __init__(self, checkpoint: str | Path, torch_threads: int | None = 1) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.module, module_dir = load_module(checkpoint)
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
