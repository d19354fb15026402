"""Figure 10: nonuniform slimming. A US-Net trained with a random ratio per channel space
(``train --nonuniform``) is evaluated along the global width r, with one of MobileNetV2's five
resolution stages at 0.6 r and the others at r, against all stages at r; every configuration's
batch-norm statistics are calibrated first. The paper (MobileNet v1): slimming the last stage
costs the most accuracy for the multiply-adds it saves, slimming the first the least.

    python examples/paper/figure10.py [--seeds 0] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

import re
import statistics
from typing import Any

import numpy as np
from common import (Timer, arguments, evaluate, mean_over_seeds, network_path, run, summarize, train_all,
                    write_result)

import usconvert
from usconvert.spectrum import plot
from usconvert.width import width_grid

NETWORK = "us-nonuniform-40-epochs"
STAGE_RATIO = 0.6
# torchvision's MobileNetV2 halves the resolution at features.0, 2, 4, 7 and 14
STAGES = {"stage 1 (features 0-1)": range(0, 2), "stage 2 (features 2-3)": range(2, 4),
          "stage 3 (features 4-6)": range(4, 7), "stage 4 (features 7-13)": range(7, 14),
          "stage 5 (features 14-18)": range(14, 19)}


def stage_of(space: str) -> str:
    index = int(re.match(r"features\.(\d+)\.", space).group(1))
    return next(name for name, blocks in STAGES.items() if index in blocks)


def against_uniform(series: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per configuration (the first series is uniform): mean and lowest top-1 over the global
    widths, multiply-adds as a share of uniform's at the same r, and top-1 minus uniform's at the
    same multiply-adds (uniform's spectrum interpolated where it spans them): the paper's
    comparison, accuracy under the same FLOPs."""
    uniform = series[0]["rows"]
    cost = np.array([r["multiply_adds"] for r in uniform], dtype=float)
    top1 = np.array([r["top1"] for r in uniform])
    summary = summarize(series)
    for s in series:
        rows = s["rows"]
        spanned = [r for r in rows if cost[0] <= r["multiply_adds"] <= cost[-1]]
        summary[s["name"]].update(
            multiply_adds_of_uniform=statistics.fmean(r["multiply_adds"] / u["multiply_adds"]
                                                      for r, u in zip(rows, uniform)),
            top1_minus_uniform_at_same_multiply_adds=statistics.fmean(
                r["top1"] - float(np.interp(r["multiply_adds"], cost, top1)) for r in spanned))
    return summary


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    train_all([run(NETWORK, s) for s in args.seeds], args.out, args.setting, jobs=args.jobs, smoke=args.smoke)
    net = usconvert.load(network_path(args.out, run(NETWORK, args.seeds[0])))
    # the slimmed stage at STAGE_RATIO r stays at or above the network's lower bound
    globals_ = width_grid(round(net.min_width / STAGE_RATIO + 0.005, 2), 1.0, 0.25 if args.smoke else 0.05)
    spaces = [s.name for s in net.slimmable_spaces]
    strategies = {"uniform": None, **{f"slim {name}": name for name in STAGES}}
    per_seed: dict[str, list[list]] = {label: [] for label in strategies}
    for seed in args.seeds:
        net = usconvert.load(network_path(args.out, run(NETWORK, seed)))
        configs = [{space: r * (STAGE_RATIO if stage is not None and stage_of(space) == stage else 1.0)
                    for space in spaces} for stage in strategies.values() for r in globals_]
        rows = evaluate(net, configs, setting=args.setting, calibrate_samples=128 if args.smoke else 1024, seed=seed)
        for i, label in enumerate(strategies):
            per_seed[label].append(rows[i * len(globals_):(i + 1) * len(globals_)])
    series = []
    for label, seeds in per_seed.items():
        # a configuration's row is named by its global width r
        points = [{"width": r, **{key: row[key] for key in ("multiply_adds", "top1", "top1_std")}}
                  for r, row in zip(globals_, mean_over_seeds(seeds))]
        series.append({"name": label, "rows": points})
        print(f"{label:>32}: top-1 {points[0]['top1']:.1f}% at {points[0]['multiply_adds'] / 1e6:.2f}M, "
              f"{points[-1]['top1']:.1f}% at {points[-1]['multiply_adds'] / 1e6:.2f}M")
    summary = against_uniform(series)
    for label, numbers in summary.items():
        print(f"{label:>32}: {numbers['multiply_adds_of_uniform']:.2f} of uniform's multiply-adds, top-1 "
              f"{numbers['top1_minus_uniform_at_same_multiply_adds']:+.2f} against uniform at the same multiply-adds")
    plot(series, args.out / "figure10.png", title=f"Slimming one stage to {STAGE_RATIO} r ({args.data})")
    write_result(args, "figure10", f"Figure 10: one resolution stage at {STAGE_RATIO} of the global width, top-1 (%)",
                 network=NETWORK, global_widths=globals_, series=series, summary=summary, seconds=timer.seconds())


if __name__ == "__main__":
    main()
