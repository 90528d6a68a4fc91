"""What a player's keys and a dream's letters mean, for both kinds of world model.

GenieRedux-G is conditioned on CoinRun's own 15 actions (Procgen's button combinations, see
`rl_agent.coinrun_env.ACTION_NAMES`, checked against `procgen.env.BaseProcgenEnv.get_combos`);
in CoinRun UP is the jump. GenieRedux is conditioned on the LAM's K latent actions, which have
no names: the player presses 1..K (or the buttons), and discovers what each one does.
"""

from __future__ import annotations

from genie_common.errors import ConfigError
from rl_agent.coinrun_env import ACTION_NAMES

ACTION_ID = {name: i for i, name in enumerate(ACTION_NAMES)}
NOOP = ACTION_ID["NOOP"]

# `genie dream --actions` letters for GenieRedux-G. Q/E/Z/C sit at the corners around S on a
# QWERTY keyboard, as the diagonal they stand for.
DREAM_LETTERS: dict[str, str] = {
    "R": "RIGHT",
    "L": "LEFT",
    "J": "UP",  # jump
    "U": "UP",
    "D": "DOWN",
    "N": "NOOP",
    ".": "NOOP",
    "E": "RIGHT+UP",  # jump right
    "Q": "LEFT+UP",  # jump left
    "C": "RIGHT+DOWN",
    "Z": "LEFT+DOWN",
}

DREAM_HELP = (
    "GenieRedux-G letters: R right, L left, J (or U) jump, D down, N (or .) no-op, E jump right, Q jump left, "
    "C right+down, Z left+down; e.g. 'RRRJRR'. Or comma-separated CoinRun action ids 0..14 (e.g. '7,7,8'). "
    "GenieRedux (latent actions): digits 0..K-1, one per frame (e.g. '0012')."
)


class ActionError(ConfigError):
    """An action the model does not have; the message lists what is allowed."""


def parse_dream_actions(text: str, conditioning: str, num_actions: int) -> list[int]:
    """The action ids a `--actions` string stands for (one per generated frame)."""
    text = text.strip()
    if not text:
        raise ActionError(f"--actions is empty. {DREAM_HELP}")
    if "," in text:
        try:
            ids = [int(part) for part in text.split(",") if part.strip()]
        except ValueError as err:
            raise ActionError(f"--actions {text!r}: comma-separated entries must be integer ids ({err})") from err
    elif conditioning == "latent":
        if not text.isdigit():
            raise ActionError(f"--actions {text!r}: a GenieRedux model takes latent action digits 0..{num_actions - 1}")
        ids = [int(c) for c in text]
    else:
        ids = []
        for position, letter in enumerate(text.upper()):
            if letter not in DREAM_LETTERS:
                raise ActionError(f"--actions: unknown letter {letter!r} at position {position}. {DREAM_HELP}")
            ids.append(ACTION_ID[DREAM_LETTERS[letter]])
    bad = [a for a in ids if not 0 <= a < num_actions]
    if bad:
        raise ActionError(f"--actions: ids {bad} outside 0..{num_actions - 1} for this {conditioning} model")
    return ids


def action_labels(conditioning: str, num_actions: int) -> list[str]:
    """Button labels of the page, one per action id."""
    if conditioning == "latent":
        return [f"latent {i}" for i in range(num_actions)]
    return list(ACTION_NAMES[:num_actions])
