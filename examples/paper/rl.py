"""Actor-critic PPO with a slimmable network (the paper's Figure 5), on MinAtar games.

The network is the paper's, without batch norm: three convolutions of 32, 64 and 32 channels,
a fully connected layer of 512 features, and two heads on them (actor: one logit per action;
critic: one value), concatenated into one output so that the whole model converts as one
network. MinAtar's frames are 10x10, so the convolutions are 3x3 without padding (10 -> 8 -> 6
-> 4) where the paper's Atari frames took 8/4/3 with strides 4/2/1.

Training (the paper's Section 4.2, as it describes it for reinforcement learning): roll-outs are
played by the largest width; on each minibatch of them, width 1.0 takes the PPO loss and the
other widths of the sandwich rule learn the largest width's detached policy and value (inplace
distillation), all through usconvert's own ``sandwich_step`` and ``WidthSampler``. An
individually trained network (I-Net) is the same network at one fixed width, playing its own
roll-outs and taking the PPO loss. Every run gets the same frames, updates and hyper-parameters.

The loop is ours (CleanRL's PPO, written out) rather than a library's: Stable-Baselines3's PPO
computes one loss for one policy per minibatch inside its ``train()``, while the sandwich rule
needs every sampled width's forward and backward on the same minibatch, with the largest
width's output as the others' target.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import usconvert
from usconvert.files import atomic_path
from usconvert.net import Width
from usconvert.train.checkpoint import restore_rng_states, rng_states
from usconvert.train.losses import soft_cross_entropy
from usconvert.train.sampling import WidthSampler
from usconvert.train.step import sandwich_step


@dataclass(frozen=True)
class PPOConfig:
    """CleanRL's PPO settings for Atari (``ppo_atari.py``), MinAtar's sticky actions."""

    game: str = "breakout"
    frames: int = 1_000_000
    envs: int = 8
    steps: int = 128  # per environment and roll-out
    epochs: int = 4
    minibatches: int = 4
    lr: float = 2.5e-4  # Adam, decayed linearly to 0
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.1
    entropy: float = 0.01
    value: float = 0.5
    max_grad_norm: float = 0.5
    sticky_action_prob: float = 0.1
    eval_every: int = 25_000  # frames between evaluations
    eval_episodes: int = 8
    eval_max_steps: int = 5_000  # an episode still running then counts with its return so far
    device: str = "auto"  # auto: CUDA when present

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @property
    def updates(self) -> int:
        return max(1, self.frames // (self.envs * self.steps))


class ActorCritic(nn.Module):
    def __init__(self, channels: int, actions: int):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 32, 3), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 512), nn.ReLU())
        self.actor = nn.Linear(512, actions)
        self.critic = nn.Linear(512, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x)
        return torch.cat([self.actor(features), self.critic(features)], dim=-1)


class Games:
    """``n`` MinAtar games played side by side, each reset when its episode ends."""

    def __init__(self, game: str, n: int, seed: int, sticky_action_prob: float):
        from minatar import Environment

        self.envs = [Environment(game, sticky_action_prob=sticky_action_prob) for _ in range(n)]
        for i, env in enumerate(self.envs):
            env.seed(seed * 1_000 + i)
            env.reset()
        self.actions = self.envs[0].minimal_action_set()
        self.returns = np.zeros(n)

    @property
    def input_size(self) -> tuple[int, int, int]:
        h, w, c = self.envs[0].state_shape()
        return c, h, w

    def observe(self) -> torch.Tensor:
        return torch.from_numpy(np.stack([env.state() for env in self.envs])).permute(0, 3, 1, 2).float()

    def step(self, actions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float]]]:
        """Rewards, episode ends, and (game, return) of each episode that ended."""
        rewards, dones, ended = np.zeros(len(self.envs)), np.zeros(len(self.envs)), []
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            reward, done = env.act(self.actions[action])
            rewards[i], dones[i] = reward, done
            self.returns[i] += reward
            if done:
                ended.append((i, float(self.returns[i])))
                self.returns[i] = 0.0
                env.reset()
        return rewards, dones, ended


def build(config: PPOConfig) -> usconvert.SlimmableNet:
    games = Games(config.game, 1, 0, config.sticky_action_prob)
    model = ActorCritic(games.input_size[0], len(games.actions))
    return usconvert.convert(model, games.input_size)


def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return output[:, :-1], output[:, -1]


class PPOLoss:
    """The clipped PPO objective of one width on a minibatch; ``targets`` holds per row the
    action, its log-probability when played, the advantage and the return."""

    def __init__(self, config: PPOConfig):
        self.config = config

    def __call__(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, value = split(output)
        actions, old_log_prob, advantage, returns = targets.unbind(-1)
        log_probs = F.log_softmax(logits, -1)
        log_prob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        ratio = (log_prob - old_log_prob).exp()
        clip = self.config.clip
        policy = torch.max(-advantage * ratio, -advantage * ratio.clamp(1 - clip, 1 + clip)).mean()
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        return policy - self.config.entropy * entropy + self.config.value * 0.5 * F.mse_loss(value, returns)


class Distillation:
    """Inplace distillation of actor and critic: the largest width's detached policy (soft cross
    entropy) and value (squared error, weighted as PPO weights its value loss)."""

    def __init__(self, config: PPOConfig):
        self.config = config

    def __call__(self, output: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        logits, value = split(output)
        teacher_logits, teacher_value = split(teacher)
        return (soft_cross_entropy(logits, teacher_logits)
                + self.config.value * 0.5 * F.mse_loss(value, teacher_value))


@dataclass(frozen=True)
class Method:
    """What one run trains: the US-Net (sandwich widths, roll-outs by width 1.0), or one fixed
    width (an I-Net: its own roll-outs)."""

    name: str
    train_widths: tuple[float, ...] | None  # None: the sandwich rule
    eval_widths: tuple[float, ...]

    @property
    def rollout_width(self) -> float:
        return max(self.train_widths) if self.train_widths else 1.0


def evaluate(net: usconvert.SlimmableNet, width: Width, config: PPOConfig, seed: int) -> float:
    """Mean return of ``eval_episodes`` episodes at ``width``, one per game, actions sampled from
    the policy; the same games and draws at every call with the same ``seed``."""
    games = Games(config.game, config.eval_episodes, 10_000 + seed, config.sticky_action_prob)
    generator = torch.Generator().manual_seed(seed)
    net.set_width(width)
    returns: dict[int, float] = {}
    with torch.no_grad():
        for _ in range(config.eval_max_steps):
            logits, _ = split(net(games.observe().to(config.torch_device())).cpu())
            actions = torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)
            for i, episode_return in games.step(actions.tolist())[2]:
                returns.setdefault(i, episode_return)
            if len(returns) == config.eval_episodes:
                break
    return float(np.mean([returns.get(i, games.returns[i]) for i in range(config.eval_episodes)]))


def train(method: Method, config: PPOConfig, seed: int, path: Path, *, threads: int = 1) -> dict[str, Any]:
    """Train one run to ``path`` (the network), resuming from ``<path>.checkpoint.pt`` when an
    earlier run was interrupted. Its record (settings, curves, seconds) is written to
    ``<path>.json`` with every checkpoint, so the log on disk always matches the checkpoint."""
    torch.set_num_threads(threads)
    check_recorded_settings(path, config)
    record_path, checkpoint = path.with_suffix(".json"), path.with_suffix(".checkpoint.pt")
    if path.is_file() and record_path.is_file():
        return json.loads(record_path.read_text())
    torch.manual_seed(seed)
    net = build(config).to(config.torch_device())
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, eps=1e-5)
    games = Games(config.game, config.envs, seed, config.sticky_action_prob)
    sampler = WidthSampler(min_width=net.min_width, n=4, seed=seed,
                           fixed=list(method.train_widths) if method.train_widths else None)
    record: dict[str, Any] = {"run": path.stem, "method": asdict(method), "seed": seed, "config": asdict(config),
                              "threads": threads, "seconds": 0.0, "curves": [], "train_returns": []}
    first = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False, map_location=config.torch_device())
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        games, record, first = pickle.loads(state["games"]), state["record"], state["update"]
        restore_rng_states(state["rng"])
    criterion = PPOLoss(config)
    distill = Distillation(config) if method.train_widths is None else None
    device = config.torch_device()
    batch, minibatch = config.envs * config.steps, config.envs * config.steps // config.minibatches
    for update in range(first, config.updates):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.lr * (1 - update / config.updates)
        observations, targets = _roll_out(net, games, method.rollout_width, config, record)
        net.train()
        for epoch in range(config.epochs):
            order = torch.randperm(batch)
            for k in range(config.minibatches):
                rows = order[k * minibatch:(k + 1) * minibatch]
                step = (update * config.epochs + epoch) * config.minibatches + k
                sandwich_step(net, net, observations[rows].to(device), targets[rows].to(device), sampler.sample(step),
                              criterion=criterion, distill=distill)
                nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        record["seconds"] += time.perf_counter() - began
        frames = (update + 1) * batch
        if frames // config.eval_every > update * batch // config.eval_every or update + 1 == config.updates:
            net.eval()
            record["curves"].append({"frames": frames, "returns": {
                f"{w:g}": evaluate(net, w, config, seed) for w in method.eval_widths}})
            with atomic_path(checkpoint) as tmp:
                torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "update": update + 1,
                            "games": pickle.dumps(games), "record": record, "rng": rng_states()}, tmp)
            with atomic_path(record_path) as tmp:
                tmp.write_text(json.dumps(record, indent=1))
    net.set_width(1.0)
    usconvert.save(net.cpu(), path)
    checkpoint.unlink(missing_ok=True)
    return record


def check_recorded_settings(path: Path, config: PPOConfig) -> None:
    """Stop, before anything is trained, where ``path`` records a run with other settings: training
    there would resume a checkpoint of another run or overwrite a finished run's record (the
    only copy of a committed run whose network is gone). Another budget needs its own folder."""
    record_path = path.with_suffix(".json")
    if not record_path.is_file():
        return
    recorded, wanted = json.loads(record_path.read_text())["config"], asdict(config)
    differing = [f"{key} {recorded.get(key)} -> {value}" for key, value in wanted.items() if recorded.get(key) != value]
    if differing:
        raise SystemExit(f"{record_path} records a run with other settings ({', '.join(differing)}); "
                         "train these settings in another folder (--out)")


def kept_record(path: Path, config: PPOConfig) -> dict[str, Any] | None:
    """The record of a run that finished with ``config`` but whose network file is gone (records
    are committed, networks are not): its curves are all a figure needs, so it is not trained
    again. None for an unfinished run (a checkpoint beside it, or curves short of the last
    update) or one with other settings."""
    record_path = path.with_suffix(".json")
    if path.is_file() or not record_path.is_file() or path.with_suffix(".checkpoint.pt").is_file():
        return None
    record = json.loads(record_path.read_text())
    last_frames = config.updates * config.envs * config.steps
    finished = bool(record["curves"]) and record["curves"][-1]["frames"] == last_frames
    return record if finished and record["config"] == asdict(config) else None


def _roll_out(net: usconvert.SlimmableNet, games: Games, width: float, config: PPOConfig, record: dict[str, Any]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` moves in every game at ``width``; returns the observations and, per row, the
    action, its log-probability, the advantage (GAE) and the return."""
    net.eval()
    net.set_width(width)
    observations, actions, log_probs, values, rewards, dones = [], [], [], [], [], []
    observation = games.observe()
    device = config.torch_device()
    with torch.no_grad():
        for _ in range(config.steps):
            logits, value = split(net(observation.to(device)).cpu())
            log_prob = F.log_softmax(logits, -1)
            action = torch.multinomial(log_prob.exp(), 1).squeeze(-1)
            reward, done, ended = games.step(action.tolist())
            record["train_returns"] += [r for _, r in ended]
            observations.append(observation)
            actions.append(action)
            log_probs.append(log_prob.gather(-1, action.unsqueeze(-1)).squeeze(-1))
            values.append(value)
            rewards.append(torch.from_numpy(reward).float())
            dones.append(torch.from_numpy(done).float())
            observation = games.observe()
        next_value = split(net(observation.to(device)).cpu())[1]
    advantages = torch.zeros(config.steps, config.envs)
    running = torch.zeros(config.envs)
    for t in reversed(range(config.steps)):
        following = next_value if t == config.steps - 1 else values[t + 1]
        alive = 1.0 - dones[t]
        delta = rewards[t] + config.gamma * following * alive - values[t]
        running = delta + config.gamma * config.gae_lambda * alive * running
        advantages[t] = running
    returns = advantages + torch.stack(values)
    targets = torch.stack([torch.stack(actions).float(), torch.stack(log_probs), advantages, returns], dim=-1)
    return torch.stack(observations).flatten(0, 1), targets.flatten(0, 1)
