"""Whether a budget had converged: Table 1's networks trained for more epochs on the same
images with the same recipe and schedule (only ``epochs`` differs; checked), top-1 error at
Table 1's widths against the budget, and each run's validation curve. By default the US-Net and
the 0.25x I-Net, seed 0, at 80 and 160 epochs on Fashion-MNIST: whether 80 epochs had converged.
The narrowest I-Net gained the most from 40 to 80 epochs (1.6-2.3 points, RESULTS.md), and it is
the one width where the US-Net still trailed at 80 on every seed. ``--methods`` takes the other
US-Nets of common.METHODS too (evaluated at Table 1's widths, as its US-Net is), such as Figure
9's n = 5: whether an ablation's verdict holds at a longer budget.

budgets.json and budgets.png (``--result`` names them otherwise) go where ``--data`` puts
results (docs/results/fashion-mnist-80 by default); each budget's networks are where ``table1.py
--data <budget>`` keeps them (their evaluations are read back, not computed again), or with
``--out DIR`` in ``DIR/<budget>``.

    python examples/paper/budgets.py [--budgets fashion-mnist-80 fashion-mnist-160]
        [--methods us inet-0.25] [--seeds 0] [--result budgets] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import (DATA, METHODS, Setting, Timer, arguments, cell, check_same_settings, default_out,
                    evaluate_table1_run, mean_curves, run, save_figure, train_for_evaluation, write_result)

# a budget sets the epochs; a method that fixes its own would train the same at every budget
BUDGET_METHODS = [method for method, settings in METHODS.items() if "epochs" not in settings]


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budgets", nargs="+", choices=sorted(DATA),
                        default=["fashion-mnist-80", "fashion-mnist-160"],
                        help="data settings that differ in their epochs only (common.DATA)")
    parser.add_argument("--methods", nargs="+", choices=BUDGET_METHODS, default=["us", "inet-0.25"],
                        help="the networks to train at every budget: Table 1's, or another method of "
                             "common.METHODS that does not fix its own epochs")
    parser.add_argument("--result", default="budgets", help="the name of the JSON and PNG written")
    parser.set_defaults(seeds=[0], data="fashion-mnist-80")


def for_budget(args: argparse.Namespace, budget: str) -> argparse.Namespace:
    """The script's arguments as ``table1.py --data <budget>`` would have them."""
    out = default_out(budget) if args.out == default_out(args.data) else args.out / budget
    out.mkdir(parents=True, exist_ok=True)
    return argparse.Namespace(**{**vars(args), "data": budget, "out": out,
                                 "setting": Setting(budget, args.device, eval_samples=args.setting.eval_samples)})


def main() -> None:
    args = arguments(__doc__, _options)
    timer = Timer()
    budgets = sorted(dict.fromkeys(args.budgets), key=lambda b: DATA[b].budget["epochs"])
    epochs = {b: DATA[b].budget["epochs"] for b in budgets}
    per_budget = {b: for_budget(args, b) for b in budgets}
    runs = [run(m, s) for m in args.methods for s in args.seeds]
    records = {(budget, item): record for budget in budgets
               for item, record in train_for_evaluation(per_budget[budget], runs).items()}
    # a row differs from another in its method and budget only
    check_same_settings(records, also=("epochs", *{key for method in args.methods for key in METHODS[method]}))
    errors: dict[str, dict[str, dict[str, list[float]]]] = {}  # method -> width -> budget -> per seed
    curves: dict[str, dict[str, list[float]]] = {}  # "<method> at <epochs>" -> mean validation curves
    for method in args.methods:
        for budget in budgets:
            for seed in args.seeds:
                for row in evaluate_table1_run(per_budget[budget], method, seed):
                    errors.setdefault(method, {}).setdefault(f"{row.width:g}", {}).setdefault(
                        str(epochs[budget]), []).append(100 - row.top1)
            histories = [records[budget, run(method, seed)]["history"] for seed in args.seeds]
            curves[f"{method} at {epochs[budget]} epochs"] = mean_curves(histories, ("val_top1_max", "val_top1_min"))
    header = " | ".join(f"{epochs[b]} epochs" for b in budgets)
    lines = [f"| network | width | {header} |", "|---|---|" + "---|" * len(budgets)]
    for method, per_width in errors.items():
        for width, per_epochs in sorted(per_width.items(), key=lambda item: -float(item[0])):
            lines.append(f"| {method} | {width}x | " + " | ".join(cell(per_epochs[str(epochs[b])]) for b in budgets)
                         + " |")
    table = "\n".join(lines)
    print(table)
    _plot(errors, curves, [epochs[b] for b in budgets], args.out / f"{args.result}.png")
    write_result(args, args.result, "top-1 error (%) at Table 1's widths of networks trained for several "
                 "budgets (epochs), the same images and recipe otherwise", budgets={b: epochs[b] for b in budgets},
                 methods=args.methods, errors=errors, curves=curves, markdown=table, seconds=timer.seconds(),
                 train_seconds={f"{item.name} at {epochs[b]} epochs": record["train_seconds"]
                                for (b, item), record in records.items()})


def _plot(errors: dict, curves: dict, epochs: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    widths = sorted({width for per_width in errors.values() for width in per_width}, key=float, reverse=True)
    styles = ("o-", "s--", "^:", "d-.")
    for method, per_width in errors.items():
        for width, per_epochs in per_width.items():  # one colour per width, one style per network at it
            rivals = [other for other in errors if width in errors[other]]
            left.plot(epochs, [statistics.fmean(per_epochs[str(e)]) for e in epochs],
                      styles[rivals.index(method) % len(styles)], color=f"C{widths.index(width)}",
                      label=f"{method} {width}x")
    left.set_xscale("log", base=2)
    left.set_xticks(epochs, [str(e) for e in epochs])
    left.set_xlabel("epochs (budget)")
    left.set_ylabel("top-1 error on the test split (%)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    for name, curve in curves.items():
        right.plot(range(1, len(curve["val_top1_min"]) + 1), curve["val_top1_min"], label=f"{name} (smallest width)")
    right.set_xlabel("epoch")
    right.set_ylabel("validation top-1 (%)")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    later = [v for curve in curves.values() for v in curve["val_top1_min"][len(curve["val_top1_min"]) // 4:]]
    right.set_ylim(max(0.0, 5 * (min(later) // 5) - 5), 100)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
