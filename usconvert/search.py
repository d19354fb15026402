"""Which width to deploy: the best nonuniform configuration of a US-Net under a budget of
multiply-adds, parameters or measured latency (the paper's Figure 10 question; AutoSlim's greedy
slimming, or an evolutionary search as MMRazor and NVIDIA ModelOpt have).

Candidates are scored on a held-out part of the *training* split (never the validation split),
each with batch-norm statistics recomputed for it from other training images (cheap: no
gradients), so that a search never selects on the data it is later judged on. Costs are
estimated from each layer's multiply-adds at width 1.0 scaled by its active channels (exact
for convolutions and linear layers), and the chosen configurations are counted exactly (fvcore)
or, for latency, measured.
"""

from __future__ import annotations

import copy
import math
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader, Subset

from .calibrate import calibrate
from .errors import UsconvertError
from .net import SlimmableNet
from .profile import active_parameters, active_size, count_macs, measure_latency
from .width import active_units

KINDS = {"macs": "multiply-adds", "params": "parameters", "latency_ms": "latency (ms)"}
STRATEGIES = ("greedy", "evolution")
_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


@dataclass
class Budget:
    kind: str  # "macs", "params" or "latency_ms"
    amount: float  # absolute, or a share of width 1.0's cost when ``relative``
    relative: bool = False

    def value(self, full: float) -> float:
        return self.amount * full if self.relative else self.amount

    def describe(self, full: float) -> str:
        return f"{_human(self.value(full), self.kind)} {KINDS[self.kind]}" + (
            f" ({100 * self.amount:g}% of width 1.0)" if self.relative else "")


def parse_budget(*, macs: str | None = None, params: str | None = None, latency_ms: str | None = None) -> Budget:
    """``--macs 150M`` or ``--macs 40%``, ``--params 1.2M``, ``--latency-ms 5``: exactly one."""
    given = {kind: text for kind, text in (("macs", macs), ("params", params), ("latency_ms", latency_ms))
             if text is not None}
    if len(given) != 1:
        raise UsconvertError("give exactly one budget: --macs (150M or 40%), --params (1.2M or 40%) or --latency-ms")
    (kind, text), = given.items()
    option = "--" + kind.replace("_", "-")
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG%]?)\s*", text, flags=re.IGNORECASE)
    if match is None or (kind == "latency_ms" and match.group(2) not in ("", "%")):
        units = "milliseconds, or a percentage" if kind == "latency_ms" else "a number with K, M or G, or a percentage"
        raise UsconvertError(f"{option} must be {units} (such as {'5' if kind == 'latency_ms' else '150M'} or 40%), "
                             f"got {text!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    if number <= 0:
        raise UsconvertError(f"{option} must be positive, got {text!r}")
    if unit == "%":
        return Budget(kind, number / 100, relative=True)
    return Budget(kind, number * _UNITS[unit])


@dataclass
class Candidate:
    levels: tuple[int, ...]  # per slimmable space, the index of its active count among its levels
    score: float = math.nan
    cost: float = math.nan  # estimated


@dataclass
class SearchResult:
    configs: dict[str, dict[str, Any]]  # name -> {"spaces": {space: ratio}, "multiply_adds", ...}
    budget: float
    full_cost: float
    kind: str
    evaluated: int = 0
    seconds: float = 0.0
    trajectory: list[dict[str, float]] = field(default_factory=list)  # every scored candidate: cost, score
    path: list[dict[str, Any]] = field(default_factory=list)  # greedy: the configuration after each move


class _Spaces:
    """The active counts a space can take (the width rule over ratios in [min_width, 1.0]),
    and the ratio that gives each."""

    def __init__(self, net: SlimmableNet):
        self.names = [space.name for space in net.slimmable_spaces]
        self.levels: list[list[tuple[int, float]]] = []
        grid = [net.min_width + (1.0 - net.min_width) * i / 2000 for i in range(2001)]
        for space in net.slimmable_spaces:
            seen: dict[int, float] = {}
            for ratio in grid:  # each count's ratio: the one nearest to its share of the space
                units = active_units(space.size, ratio, net.divisor, space.step, space.unit_channels)
                if units not in seen or abs(ratio - units / space.size) < abs(seen[units] - units / space.size):
                    seen[units] = round(ratio, 6)
            self.levels.append(sorted(seen.items()))

    def full(self) -> tuple[int, ...]:
        return tuple(len(levels) - 1 for levels in self.levels)

    def smallest(self) -> tuple[int, ...]:
        return tuple(0 for _ in self.levels)

    def configuration(self, levels: tuple[int, ...]) -> dict[str, float]:
        return {name: self.levels[i][level][1] for i, (name, level) in enumerate(zip(self.names, levels))}


class _Cost:
    """The budget's cost of the network at its current width: estimated from each layer's
    multiply-adds at width 1.0 scaled by its active channels, or exact."""

    def __init__(self, net: SlimmableNet, kind: str, latency_batch: int):
        self.net, self.kind, self.latency_batch = net, kind, latency_batch
        full = count_macs(net, 1.0)
        self.by_layer = {name: macs for name, macs in full.by_layer.items() if macs}
        self.layers_full = sum(self.by_layer.values())
        self.rest = full.macs - self.layers_full  # products outside layers (attention): scaled alike
        self.latency_fit: tuple[float, float] | None = None
        if kind == "latency_ms":
            self._fit_latency()

    def macs_estimate(self) -> float:
        layers = 0.0
        for name, macs in self.by_layer.items():
            layers += macs * _weight_share(self.net.layers[name])
        return layers + (self.rest * layers / self.layers_full if self.layers_full else self.rest)

    def estimate(self) -> float:
        if self.kind == "params":
            return float(active_parameters(self.net))
        macs = self.macs_estimate()
        if self.kind == "latency_ms":
            intercept, slope = self.latency_fit
            return intercept + slope * macs
        return macs

    def exact(self) -> float:
        if self.kind == "params":
            return float(active_parameters(self.net))
        if self.kind == "latency_ms":
            return measure_latency(self.net, self.latency_batch).median_ms
        return float(count_macs(self.net).macs)

    def _fit_latency(self) -> None:
        """Latency against multiply-adds, measured at uniform widths on this device (a straight
        line: the search compares candidates by it, and measures the ones it keeps)."""
        previous = self.net.width
        points = []
        for width in (self.net.min_width, (1 + self.net.min_width) / 2, 1.0):
            self.net.set_width(width)
            points.append((self.macs_estimate(), measure_latency(self.net, self.latency_batch).median_ms))
        self.net.set_width(previous)
        xs, ys = zip(*points)
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
        self.latency_fit = (mean_y - slope * mean_x, slope)


class HeldOut:
    """Scores a configuration: top-1 (or minus the L1 loss, for regression) on held-out training
    images, with batch-norm statistics computed for it from other training images."""

    def __init__(self, net: SlimmableNet, train_images: Any, *, holdout: float = 0.1, score_samples: int = 1024,
                 calibration_samples: int = 256, batch_size: int = 64, seed: int = 0, workers: int = 0):
        if not 0 < holdout < 1:
            raise UsconvertError(f"--holdout must be a fraction in (0, 1), got {holdout:g}")
        order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed)).tolist()
        cut = max(1, int(len(order) * holdout))
        held, rest = order[:cut][:score_samples], order[cut:]
        if len(held) < 2 or len(rest) < 2:
            raise UsconvertError(f"the training split has {len(train_images)} images: too few to hold some out")
        self.net = net
        self.scoring = DataLoader(Subset(train_images, held), batch_size=batch_size, num_workers=workers)
        self.calibrating = DataLoader(Subset(train_images, rest), batch_size=batch_size, shuffle=True,
                                      generator=torch.Generator().manual_seed(seed), num_workers=workers)
        self.calibration_samples = calibration_samples
        self.images = len(held)
        self.device = next(net.parameters()).device

    def __call__(self, configuration: dict[str, float]) -> float:
        net = self.net
        net.set_width(configuration)
        key = net.configuration_key()
        # width 1.0 keeps the layers' own statistics; an entry the network had is given back after
        needs_statistics = bool(net.batch_norm_layers()) and not net.is_full_width()
        kept = copy.deepcopy(net.statistics.entries[key]) if key in net.statistics.entries else None
        # each candidate is run once or twice: the slicing path itself, not a dense copy of it
        # (a copy per candidate would cost more than its few forward passes)
        if needs_statistics:
            calibrate(net, self.calibrating, [], configs={"search candidate": configuration},
                      samples=self.calibration_samples, device=self.device, memory_budget=0)
        net.set_width(configuration)
        net.eval()
        cache, net.eval_cache = net.eval_cache, False
        hits = total = 0.0
        regression = False
        try:
            with torch.no_grad():
                for inputs, targets in self.scoring:
                    output = net(inputs.to(self.device)).float()
                    targets = targets.to(self.device)
                    if targets.dtype.is_floating_point and targets.shape == output.shape:
                        regression = True
                        hits -= torch.nn.functional.l1_loss(output, targets, reduction="sum").item() / output[0].numel()
                    else:
                        hits += (output.argmax(-1) == targets).sum().item()
                    total += inputs.shape[0]
        finally:
            net.eval_cache = cache
            if needs_statistics:
                net.statistics.remove(key)
                if kept is not None:
                    net.statistics.restore(key, kept)
            net.set_width(1.0)
        return hits / total * (1 if regression else 100)


def search(net: SlimmableNet, score: Callable[[dict[str, float]], float], budget: Budget, *,
           strategy: str = "greedy", pareto: int = 1, seed: int = 0, step: float = 0.1, latency_batch: int = 1,
           population: int = 16, generations: int = 10, on_candidate: Callable[[], None] | None = None
           ) -> SearchResult:
    """The best configuration of ``net`` within ``budget`` by ``score`` (higher is better; see
    :class:`HeldOut`); with ``pareto`` > 1, that many configurations along the score/cost
    frontier, from the budget up to width 1.0's cost. ``greedy`` is AutoSlim's one-shot greedy
    slimming: from width 1.0, repeatedly shrink (by ``step`` of its channels) the space whose
    shrinking loses the least score per unit of cost saved. ``evolution`` evolves ``population``
    configurations within the budget for ``generations`` generations (mutation and crossover)."""
    if strategy not in STRATEGIES:
        raise UsconvertError(f"--strategy must be greedy or evolution, got {strategy!r}")
    if pareto < 1:
        raise UsconvertError("--pareto must be at least 1")
    if not net.slimmable_spaces:
        raise UsconvertError("the network has no slimmable channel space: nothing to search")
    started = time.perf_counter()
    previous, was_training = net.width, net.training
    spaces = _Spaces(net)
    cost = _Cost(net, budget.kind, latency_batch)
    try:
        full = _exact(net, cost, spaces, spaces.full())
        smallest = _exact(net, cost, spaces, spaces.smallest())
        limit = budget.value(full)
        if limit >= full:
            raise UsconvertError(f"width 1.0 costs {_human(full, budget.kind)} {KINDS[budget.kind]}, within the "
                                 f"budget of {_human(limit, budget.kind)}: nothing to search")
        if limit < smallest:
            raise UsconvertError(f"the smallest width ({net.min_width:g} everywhere) costs "
                                 f"{_human(smallest, budget.kind)} {KINDS[budget.kind]}: a budget of "
                                 f"{_human(limit, budget.kind)} cannot be met")
        run = _Run(net, spaces, cost, score, limit, on_candidate)
        path: list[Candidate] = []
        kept = (_greedy(run, step, pareto, full, path) if strategy == "greedy"
                else _evolution(run, pareto, full, random.Random(seed), population, generations))
        configs = {}
        for index, candidate in enumerate(sorted(kept, key=lambda c: c.cost)):
            name = "best" if pareto == 1 else f"pareto-{index + 1}"
            configs[name] = _describe(net, spaces, cost, candidate)
        return SearchResult(configs, limit, full, budget.kind, run.evaluated, time.perf_counter() - started,
                            run.trajectory, [{"spaces": spaces.configuration(c.levels), "cost": c.cost,
                                              "score": c.score} for c in path])
    finally:
        net.set_width(previous)
        net.train(was_training)


class _Run:
    """The search's bookkeeping: scores each candidate once, within the budget or not."""

    def __init__(self, net: SlimmableNet, spaces: _Spaces, cost: _Cost, score: Callable, limit: float,
                 on_candidate: Callable[[], None] | None):
        self.net, self.spaces, self.cost, self.score_fn, self.limit = net, spaces, cost, score, limit
        self.on_candidate = on_candidate
        self.scores: dict[tuple[int, ...], float] = {}
        self.evaluated = 0
        self.trajectory: list[dict[str, float]] = []

    def estimate(self, levels: tuple[int, ...]) -> float:
        self.net.set_width(self.spaces.configuration(levels))
        return self.cost.estimate()

    def score(self, candidate: Candidate) -> Candidate:
        if candidate.levels not in self.scores:
            self.scores[candidate.levels] = self.score_fn(self.spaces.configuration(candidate.levels))
            self.evaluated += 1
            if self.on_candidate is not None:
                self.on_candidate()
        candidate.score = self.scores[candidate.levels]
        candidate.cost = self.estimate(candidate.levels)
        self.trajectory.append({"cost": candidate.cost, "score": candidate.score})
        return candidate

    def within(self, levels: tuple[int, ...]) -> bool:
        """Within the budget: by the estimate, then, for a candidate that may be kept, exactly."""
        if self.estimate(levels) > self.limit:
            return False
        return _exact(self.net, self.cost, self.spaces, levels) <= self.limit


def _greedy(run: _Run, step: float, pareto: int, full: float, path: list[Candidate]) -> list[Candidate]:
    current = run.score(Candidate(run.spaces.full()))
    path.append(current)
    while not run.within(current.levels):
        moves = []
        for i, level in enumerate(current.levels):
            if level == 0:
                continue
            levels = run.spaces.levels[i]
            target = levels[level][0] - max(1, round(step * levels[-1][0]))
            lower = max((j for j in range(level) if levels[j][0] <= target), default=level - 1)
            moves.append(current.levels[:i] + (lower,) + current.levels[i + 1:])
        if not moves:
            raise UsconvertError("every space is at its smallest width and the budget is still not met")
        best = None
        for levels in moves:
            candidate = run.score(Candidate(levels))
            saved = current.cost - candidate.cost
            loss_per_saving = (current.score - candidate.score) / saved if saved > 0 else math.inf
            if best is None or loss_per_saving < best[0]:
                best = (loss_per_saving, candidate)
        current = best[1]
        path.append(current)
    if pareto == 1:
        return [current]
    targets = [run.limit + (full - run.limit) * k / (pareto - 1) for k in range(pareto)]
    chosen = []
    for target in targets:  # the largest configuration of the path under each cost target
        fitting = [c for c in path if c.cost <= target] or [current]
        pick = max(fitting, key=lambda c: c.cost)
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def _evolution(run: _Run, pareto: int, full: float, rng: random.Random, population: int,
               generations: int) -> list[Candidate]:
    sizes = [len(levels) for levels in run.spaces.levels]

    def repair(levels: list[int]) -> tuple[int, ...]:
        while not run.within(tuple(levels)):
            shrinkable = [i for i, level in enumerate(levels) if level > 0]
            i = rng.choice(shrinkable)
            levels[i] = rng.randrange(0, levels[i])
        return tuple(levels)

    pool = [run.score(Candidate(repair([rng.randrange(n) for n in sizes]))) for _ in range(population)]
    for _ in range(generations):
        parents = sorted(pool, key=lambda c: -c.score)[: max(2, population // 2)]
        children = []
        while len(children) < population - len(parents):
            a, b = rng.sample(parents, 2)
            child = [rng.choice(pair) for pair in zip(a.levels, b.levels)]  # uniform crossover
            for i, n in enumerate(sizes):  # mutation
                if rng.random() < 0.2:
                    child[i] = min(n - 1, max(0, child[i] + rng.choice((-2, -1, 1, 2))))
            children.append(run.score(Candidate(repair(child))))
        pool = parents + children
    best = max(pool, key=lambda c: c.score)
    if pareto == 1:
        return [best]
    seen = {c.levels: c for c in pool}
    scored = [Candidate(levels, score, run.estimate(levels)) for levels, score in run.scores.items()
              if levels in seen or run.estimate(levels) <= run.limit]
    frontier = [c for c in scored if not any(o.score >= c.score and o.cost < c.cost for o in scored)]
    frontier = sorted(frontier, key=lambda c: c.cost)
    picks = [frontier[round(k * (len(frontier) - 1) / max(1, pareto - 1))] for k in range(pareto)]
    return list({c.levels: c for c in [*picks, best]}.values())


def _exact(net: SlimmableNet, cost: _Cost, spaces: _Spaces, levels: tuple[int, ...]) -> float:
    net.set_width(spaces.configuration(levels))
    return cost.exact()


def _describe(net: SlimmableNet, spaces: _Spaces, cost: _Cost, candidate: Candidate) -> dict[str, Any]:
    configuration = spaces.configuration(candidate.levels)
    net.set_width(configuration)
    entry: dict[str, Any] = {"spaces": configuration, "multiply_adds": count_macs(net).macs,
                             "parameters": active_parameters(net), "score": candidate.score}
    if cost.kind == "latency_ms":
        entry["latency_ms"] = cost.exact()
    return entry


def _human(value: float, kind: str) -> str:
    if kind == "latency_ms":
        return f"{value:.2f} ms"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def uniform_at_cost(net: SlimmableNet, target: float, kind: str = "macs", widths: Iterable[float] | None = None,
                    latency_batch: int = 1) -> float:
    """The largest uniform width whose cost is within ``target`` (to compare a searched
    configuration with the uniform width of the same budget)."""
    cost = _Cost(net, kind, latency_batch)
    previous = net.width
    best = net.min_width
    try:
        for width in widths or [net.min_width + (1 - net.min_width) * i / 300 for i in range(301)]:
            net.set_width(width)
            if cost.estimate() <= target:
                best = max(best, width)
    finally:
        net.set_width(previous)
    return best


def _weight_share(layer: torch.nn.Module) -> float:
    """The share of a layer's multiply-adds at the current width: each weight element is one
    multiply-add per output position (or time step), so the share of its weights in use (a
    recurrent layer's are its ``weight_*`` matrices, of which only the first layer's input
    columns shrink)."""
    weight = getattr(layer, "weight", None)
    weights = [weight] if isinstance(weight, torch.Tensor) else [
        p for name, p in layer.named_parameters(recurse=False) if name.startswith("weight")]
    full = sum(w.numel() for w in weights)
    return sum(active_size(w, layer.tensor_layouts(w)) for w in weights) / full if full else 1.0
