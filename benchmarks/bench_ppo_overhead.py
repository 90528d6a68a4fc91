"""RLlib's overhead: env steps/s of `genie agent train`'s PPO against a minimal PPO loop in plain PyTorch.

Both sides train the same IMPALA-CNN (rl_agent/impala_module.py) on the same CoinRun vector env (the preset's
envs x rollout per iteration), with the same epochs, minibatches, optimiser and loss (ppo2's value clipping of
rl_agent/ppo_learner.py), in one process with the same torch threads. Iterations alternate between the two (one
RLlib, one plain, ...) so a machine whose load drifts slows both alike. Prints steps/s of each and the ratio.

    python benchmarks/bench_ppo_overhead.py [--preset tiny] [--rounds 4]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")


class PlainPPO:
    """PPO in ~60 lines: rollout of `rollout_length` steps on `envs_per_runner` games, GAE, epochs x minibatches."""

    def __init__(self, settings) -> None:
        from rl_agent.coinrun_env import FRAME_SHAPE, NUM_ACTIONS
        from rl_agent.coinrun_vector_env import CoinRunGymVectorEnv
        from rl_agent.impala_module import ImpalaPolicyNet

        torch.manual_seed(settings.seed)
        self.settings = settings
        self.env = CoinRunGymVectorEnv(settings.envs_per_runner, settings.env, seed=settings.seed)
        self.obs, _ = self.env.reset()  # (E, H, W, C) uint8
        self.resetting = np.zeros(settings.envs_per_runner, dtype=bool)  # NEXT_STEP autoreset: this step only resets
        self.net = ImpalaPolicyNet(FRAME_SHAPE, NUM_ACTIONS, settings.channels, settings.hidden, settings.blocks,
                                   settings.allowed_actions)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.lr, eps=settings.adam_eps)
        self.rng = np.random.default_rng(settings.seed)

    def iterate(self) -> int:
        """One rollout and its update; returns the env steps taken."""
        from rl_agent.ppo_learner import ppo2_value_loss

        s, T, E = self.settings, self.settings.rollout_length, self.settings.envs_per_runner
        frames = np.empty((T + 1, E, *self.obs.shape[1:]), np.uint8)  # (T+1, E, H, W, C)
        actions, logp, values, rewards = (np.zeros((T, E), np.float32) for _ in range(4))
        ends, terminal, valid = np.zeros((T, E), bool), np.zeros((T, E), bool), np.ones((T, E), bool)
        # --- Rollout ---
        for t in range(T):
            frames[t] = self.obs
            with torch.no_grad():
                logits, value = self.net.policy_and_value(torch.from_numpy(self.obs))
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            actions[t], logp[t], values[t] = action.numpy(), dist.log_prob(action).numpy(), value.numpy()
            valid[t] = ~self.resetting
            self.obs, rewards[t], terminated, truncated, _ = self.env.step(action.numpy())
            terminal[t], ends[t] = terminated, terminated | truncated
            self.resetting = ends[t]
        frames[T] = self.obs
        with torch.no_grad():
            last_value = self.net.policy_and_value(torch.from_numpy(self.obs))[1].numpy()
        # --- GAE (an episode end stops the recursion; a truncated one still bootstraps from its last frame) ---
        next_values = np.concatenate([values[1:], last_value[None]])  # (T, E)
        deltas = rewards + s.gamma * (1 - terminal) * next_values - values
        advantages, running = np.zeros_like(deltas), np.zeros(E, np.float32)
        for t in reversed(range(T)):
            running = deltas[t] + s.gamma * s.lam * (1 - ends[t]) * running
            advantages[t] = running
        targets = advantages + values
        # --- Update ---
        keep = valid.reshape(-1)
        batch = {name: torch.from_numpy(array.reshape(T * E, *array.shape[2:])[keep]) for name, array in
                 {"obs": frames[:T], "actions": actions, "logp": logp, "values": values, "targets": targets,
                  "advantages": advantages}.items()}
        advantages = batch["advantages"]
        batch["advantages"] = (advantages - advantages.mean()) / advantages.std().clamp_min(1e-4)
        size = len(batch["obs"]) // s.minibatches
        for _ in range(s.epochs):
            order = torch.from_numpy(self.rng.permutation(len(batch["obs"])))
            for start in range(0, size * s.minibatches, size):
                mb = {k: v[order[start:start + size]] for k, v in batch.items()}
                logits, value = self.net.policy_and_value(mb["obs"])
                dist = torch.distributions.Categorical(logits=logits)
                ratio = torch.exp(dist.log_prob(mb["actions"].long()) - mb["logp"])
                surrogate = torch.min(mb["advantages"] * ratio, mb["advantages"] * ratio.clamp(1 - s.clip, 1 + s.clip))
                vf_loss = ppo2_value_loss(value, mb["values"], mb["targets"], s.vf_clip)
                loss = (-surrogate + s.vf_coeff * vf_loss - s.entropy_coeff * dist.entropy()).mean()
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), s.grad_clip)
                self.optimizer.step()
        return T * E


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--rounds", type=int, default=4, help="timed iterations of each, alternating")
    args = parser.parse_args()

    import ray

    from cluster.presets import load_preset
    from rl_agent.ppo_config import PPOSettings, build_ppo_config

    values = dict(load_preset(args.preset)["agent"]) | {"num_env_runners": 0}  # one process: sample in the driver
    settings = PPOSettings.from_dict(values)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algo = build_ppo_config(settings, gpus_available=0).build_algo()
        plain = PlainPPO(settings)
        algo.train(), plain.iterate()  # warm-up: imports, env creation, first allocations
        seconds, steps = {"rllib": 0.0, "plain": 0.0}, {"rllib": 0, "plain": 0}
        for _ in range(args.rounds):
            began = time.perf_counter()
            steps["rllib"] += int(algo.train()["env_runners"]["num_env_steps_sampled"])
            seconds["rllib"] += time.perf_counter() - began
            began = time.perf_counter()
            steps["plain"] += plain.iterate()
            seconds["plain"] += time.perf_counter() - began
        algo.stop()
    finally:
        ray.shutdown()
    rate = {k: steps[k] / seconds[k] for k in seconds}
    print(f"preset {args.preset}: {settings.envs_per_runner} envs x {settings.rollout_length} steps, "
          f"{settings.epochs} epochs x {settings.minibatches} minibatches, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds")
    print(f"RLlib PPO (genie agent train): {rate['rllib']:7.1f} env steps/s ({steps['rllib']} steps, "
          f"{seconds['rllib']:.1f} s)")
    print(f"plain PyTorch PPO loop:        {rate['plain']:7.1f} env steps/s ({steps['plain']} steps, "
          f"{seconds['plain']:.1f} s)")
    print(f"ratio RLlib / plain: {rate['rllib'] / rate['plain']:.2f}x (goal >= 0.9x)")


if __name__ == "__main__":
    main()
