"""Searched nonuniform widths against uniform widths of the same cost (the paper's Figure 10
question; AutoSlim's greedy slimming and an evolutionary search), on the trained digits US-Nets.

For each seed's US-Net, ``usconvert.search`` runs on held-out *training* images: greedy slimming
from width 1.0 down to the smallest budget (its path gives the configurations at the larger
budgets too), and evolution at each budget. Every chosen configuration and every uniform width
of the same multiply-adds is then calibrated (1,024 training images) and evaluated on the
validation split, which the search never saw.

    python examples/paper/search.py [--seeds 0 1 2] [--network us] [--out docs/results] [--smoke]

``--network``: which trained US-Nets to search, by their method in ``common.METHODS``: ``us``
(Table 1's, the data's budget), ``us-nonuniform`` (the same budget, trained with a random ratio
per channel space, so that the nonuniform configurations a search visits were trained),
``us-40-epochs`` (the pretrained experiment's from-scratch row) or ``us-nonuniform-40-epochs``.
"""

from __future__ import annotations

from common import Timer, arguments, cell, data_splits, evaluate, network_path, run, train_all, write_result

import usconvert
from usconvert.search import HeldOut, parse_budget, search, uniform_at_cost
from usconvert.spectrum import plot

BUDGETS = (0.6, 0.4, 0.25)  # shares of width 1.0's multiply-adds


def main() -> None:
    args = arguments(__doc__, lambda parser: parser.add_argument(
        "--network", choices=("us", "us-nonuniform", "us-40-epochs", "us-nonuniform-40-epochs"), default="us",
        help="which trained US-Nets to search"))
    timer = Timer()
    train_all([run(args.network, s) for s in args.seeds], args.out, args.setting, jobs=args.jobs, smoke=args.smoke)
    budgets = (0.8,) if args.smoke else BUDGETS
    samples = 128 if args.smoke else 1024
    accuracy: dict[str, dict[str, list[float]]] = {}
    costs: dict[str, dict[str, list[int]]] = {}
    seconds: dict[str, list[float]] = {"greedy": [], "evolution": []}
    series = []
    for seed in args.seeds:
        net = usconvert.load(network_path(args.out, run(args.network, seed)))
        splits = data_splits(net, args.setting, seed)
        score = HeldOut(net, splits.calibration, holdout=0.15, score_samples=64 if args.smoke else 512,
                        calibration_samples=64 if args.smoke else 256, seed=seed)
        full = usconvert.profile.count_macs(net, 1.0).macs
        greedy = search(net, score, parse_budget(macs=f"{100 * min(budgets):g}%"), step=0.5 if args.smoke else 0.2,
                        seed=seed)
        seconds["greedy"].append(greedy.seconds)
        chosen = {}
        for share in budgets:
            within = [p for p in greedy.path if p["cost"] <= share * full]
            chosen[f"greedy {share:.0%}"] = max(within, key=lambda p: p["cost"])["spaces"]
            evolved = search(net, score, parse_budget(macs=f"{100 * share:g}%"), strategy="evolution", seed=seed,
                             population=4 if args.smoke else 16, generations=1 if args.smoke else 10)
            seconds["evolution"].append(evolved.seconds)
            chosen[f"evolution {share:.0%}"] = evolved.configs["best"]["spaces"]
            chosen[f"uniform {share:.0%}"] = uniform_at_cost(net, share * full)
        rows = evaluate(net, list(chosen.values()), setting=args.setting, calibrate_samples=samples, seed=seed)
        for (label, _), row in zip(chosen.items(), rows):
            method, budget = label.rsplit(" ", 1)
            accuracy.setdefault(method, {}).setdefault(budget, []).append(row.top1)
            costs.setdefault(method, {}).setdefault(budget, []).append(row.multiply_adds)
            if seed == args.seeds[0]:
                series.append({"name": label, "rows": [row.__dict__]})
    lines = ["| budget (of 1.0x multiply-adds) | " + " | ".join(accuracy) + " |", "|---|" + "---|" * len(accuracy)]
    for share in budgets:
        budget = f"{share:.0%}"
        cells = [f"{cell(accuracy[m][budget])}% ({sum(costs[m][budget]) / len(costs[m][budget]) / 1e6:.2f}M)"
                 for m in accuracy]
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    name = f"search-{args.network}"  # one result per searched network
    plot(series, args.out / f"{name}.png", title=f"Searched nonuniform widths against uniform ones ({args.data})")
    write_result(args, name, "Searched nonuniform widths against uniform widths of the same multiply-adds: top-1 (%) "
                 "on the validation split", network=args.network, accuracy=accuracy, multiply_adds=costs,
                 markdown=table, search_seconds=seconds, seconds=timer.seconds())


if __name__ == "__main__":
    main()
