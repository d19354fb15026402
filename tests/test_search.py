"""``usconvert search``: the best nonuniform width within a budget, scored on held-out training
images, in the format every command reads."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import usconvert
from usconvert.configs import read_config, read_configs
from usconvert.errors import UsconvertError
from usconvert.profile import active_parameters, count_macs
from usconvert.search import Budget, HeldOut, parse_budget, search

TINY = Path(__file__).parent / "data" / "tiny.py"


def two_paths() -> usconvert.SlimmableNet:
    """Two convolution branches of equal cost added together: 'a:out' and 'b:out' slim apart."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(3, 32, 3, padding=1)
            self.a2, self.b2 = nn.Conv2d(32, 16, 1), nn.Conv2d(32, 16, 1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

        def forward(self, x):
            return self.head(self.a2(torch.relu(self.a(x))) + self.b2(torch.relu(self.b(x))))

    torch.manual_seed(0)
    return usconvert.convert(Model(), (3, 8, 8))


def test_budgets_parse_with_units_and_percentages():
    assert parse_budget(macs="150M") == Budget("macs", 150e6)
    assert parse_budget(macs="1.5g") == Budget("macs", 1.5e9)
    assert parse_budget(params="40%") == Budget("params", 0.4, relative=True)
    assert parse_budget(latency_ms="5") == Budget("latency_ms", 5.0)
    for kwargs, message in (({"macs": "150Q"}, "--macs must be a number with K, M or G, or a percentage"),
                            ({"latency_ms": "5M"}, "--latency-ms must be milliseconds"),
                            ({"macs": "0"}, "must be positive"),
                            ({"macs": "1M", "params": "1M"}, "exactly one budget"), ({}, "exactly one budget")):
        with pytest.raises(UsconvertError, match=message):
            parse_budget(**kwargs)


def test_greedy_shrinks_what_costs_the_least_score_and_meets_the_budget_exactly():
    net = two_paths()
    full = count_macs(net, 1.0).macs

    def score(config):  # shrinking 'b' hurts, shrinking 'a' barely does
        return 100 - 1 * (1 - config.get("a:out", 1.0)) - 50 * (1 - config.get("b:out", 1.0))

    result = search(net, score, parse_budget(macs="70%"))
    best = result.configs["best"]
    assert best["multiply_adds"] <= 0.7 * full and best["multiply_adds"] == count_macs(net, best["spaces"]).macs
    assert best["spaces"]["b:out"] == 1.0 and best["spaces"]["a:out"] < 0.6
    assert net.width == 1.0 and not net.statistics.labels()  # nothing left behind


def test_evolution_and_the_pareto_frontier_stay_within_the_budget():
    net = two_paths()
    full = count_macs(net, 1.0).macs
    score = lambda config: sum(config.values())  # noqa: E731 - bigger is better
    for strategy in ("greedy", "evolution"):
        result = search(net, score, parse_budget(macs="60%"), strategy=strategy, pareto=3, seed=1,
                        population=8, generations=3)
        costs = [entry["multiply_adds"] for entry in result.configs.values()]
        assert len(costs) >= 2 and min(costs) <= 0.6 * full and costs == sorted(costs), strategy
        assert all(cost <= full for cost in costs)
    again = search(net, score, parse_budget(macs="60%"), strategy="evolution", seed=1, population=8, generations=3)
    first = search(net, score, parse_budget(macs="60%"), strategy="evolution", seed=1, population=8, generations=3)
    assert again.configs == first.configs  # seeded


def test_parameter_budgets_and_impossible_budgets():
    net = two_paths()
    result = search(net, lambda c: sum(c.values()), parse_budget(params="50%"))
    net.set_width(result.configs["best"]["spaces"])
    assert active_parameters(net) <= 0.5 * sum(p.numel() for p in net.parameters())
    with pytest.raises(UsconvertError, match=r"the smallest width \(0.25 everywhere\) costs .* cannot be met"):
        search(net, lambda c: 0.0, parse_budget(macs="1%"))
    with pytest.raises(UsconvertError, match="within the budget .* nothing to search"):
        search(net, lambda c: 0.0, parse_budget(macs="100G"))


def test_candidates_are_scored_on_held_out_training_images_with_their_own_statistics():
    torch.manual_seed(0)
    model, source = usconvert.create(f"{TINY}:tiny", num_classes=10)
    net = usconvert.convert(model, (3, 16, 16), source=source)
    usconvert.calibrate(net, [(torch.randn(16, 3, 16, 16),)], [0.5], samples=16)
    net.set_width(0.5)
    calibrated = {k: v.clone() for k, v in net.statistics.tensors().items()}
    own = net.layers["1"].running_mean.clone()
    data = usconvert.data.fake(200, (3, 16, 16), 10)
    scorer = HeldOut(net, data.train, holdout=0.25, score_samples=30, calibration_samples=32)
    held = set(scorer.scoring.dataset.indices)
    assert len(held) == 30 and not held & set(scorer.calibrating.dataset.indices)
    for width in (0.5, {net.slimmable_spaces[0].name: 0.5}, 1.0):
        net.set_width(width)
        assert 0 <= scorer(width if isinstance(width, dict) else {s.name: width for s in net.slimmable_spaces}) <= 100
    assert torch.equal(net.layers["1"].running_mean, own)  # width 1.0's own statistics untouched
    assert {k: v for k, v in net.statistics.tensors().items()}.keys() == calibrated.keys()
    assert all(torch.equal(v, calibrated[k]) for k, v in net.statistics.tensors().items())


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=1200)


def test_search_then_calibrate_spectrum_and_export_read_its_file(tmp_path):
    assert run("convert", f"{TINY}:tiny", "--num-classes", "10", "--input-size", "3,16,16", "-o", "t.safetensors",
               cwd=tmp_path).returncode == 0
    result = run("search", "t.safetensors", "--data", "fake:200", "--macs", "50%", "--pareto", "2", "-o", "c.json",
                 "--score-samples", "32", "--calibration-samples", "32", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    document = json.loads((tmp_path / "c.json").read_text())
    assert set(document) == {"pareto-1", "pareto-2"} == set(read_configs(tmp_path / "c.json"))
    assert all({"spaces", "multiply_adds", "parameters", "score"} <= set(v) for v in document.values())
    assert document["pareto-1"]["multiply_adds"] <= summary["budget"]
    missing = run("spectrum", "t.safetensors", "--data", "fake:200", "--widths", "1.0", "--configs", "c.json",
                  cwd=tmp_path)
    assert missing.returncode == 2 and "calibrate t.safetensors --configs c.json" in missing.stderr
    assert run("calibrate", "t.safetensors", "--data", "fake:200", "--configs", "c.json", "--widths", "0.5",
               "--samples", "64", "-o", "cal.safetensors", cwd=tmp_path).returncode == 0
    spectrum = run("spectrum", "cal.safetensors", "--data", "fake:200", "--widths", "0.5,1.0", "--configs", "c.json",
                   "--json", "-o", "s.png", cwd=tmp_path)
    assert spectrum.returncode == 0, spectrum.stderr
    rows = json.loads(spectrum.stdout)["rows"]
    assert [(r["width"], r["configuration"]) for r in rows] == [(0.5, None), (1.0, None), (None, "pareto-1"),
                                                                 (None, "pareto-2")]
    exported = run("export", "cal.safetensors", "--config", "c.json", "--name", "pareto-1", "-o", "small.pt2",
                   cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    ambiguous = run("export", "cal.safetensors", "--config", "c.json", "-o", "small.pt2", cwd=tmp_path)
    assert ambiguous.returncode == 2 and "choose one with --name" in ambiguous.stderr
    assert read_config(tmp_path / "c.json", "pareto-2") == document["pareto-2"]["spaces"]
    no_data = run("search", "t.safetensors", "--macs", "50%", "-o", "c.json", cwd=tmp_path)
    assert no_data.returncode == 2 and "give --data" in no_data.stderr
