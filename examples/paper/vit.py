"""A transformer as a US-Net (issue 19): a small timm ViT (vit_tiny's width, 4 blocks, 6 heads,
patches of 8 at 32x32) trained once as a US-Net against four individually trained widths, on
digits, with the same recipe and budget (AdamW). The US-Net is then evaluated at all 31 widths
from 0.25 to 1.0: Scala (NeurIPS 2024) reports that the plain US recipe is weak on ViTs at widths
not seen in training, which would show as dips between the widths that every step trains (the
smallest and the largest).

The ViT US-Net had not converged after the shared budget of 30 epochs (its curve is still
rising where every individual ViT has flattened), so one more US-Net (``--long-seeds``) trains
for twice the budget, 60 epochs, and is reported as its own row, marked as such.

    python examples/paper/vit.py [--seeds 0 1] [--long-seeds 0] [--out docs/results] [--smoke]
"""

from __future__ import annotations

import statistics

from common import (SWITCHES, Timer, arguments, cell, check_same_settings, evaluate_run, run, train_for_evaluation,
                    train_seconds, write_result)

from usconvert.spectrum import plot
from usconvert.width import width_grid


def main() -> None:
    args = arguments(__doc__, lambda parser: parser.add_argument(
        "--long-seeds", type=int, nargs="*", default=[0], help="seeds of the US-Net trained for 60 epochs"))
    timer = Timer()
    long_seeds = args.long_seeds[:1] if args.smoke else args.long_seeds
    # the longest run first, so that two processes finish together
    runs = [run("vit-us-60-epochs", s) for s in long_seeds]
    runs += [run(m, s) for s in args.seeds for m in ("vit-us", *[f"vit-inet-{w:g}" for w in SWITCHES])]
    records = train_for_evaluation(args, runs)
    check_same_settings({r: v for r, v in records.items() if r.method != "vit-us-60-epochs"})
    check_same_settings(records, also=("epochs",))
    widths = width_grid(0.25, 1.0, 0.25 if args.smoke else 0.025)
    spectra: list[list] = []  # per seed, the US-Net's rows at every width
    inet: dict[float, list[float]] = {w: [] for w in SWITCHES}
    for seed in args.seeds:
        # no batch norm in a ViT: nothing to calibrate, every width reads the same layer norms
        spectra.append(evaluate_run(args, run("vit-us", seed), widths, calibrate_samples=None))
        for width in SWITCHES:
            row, = evaluate_run(args, run(f"vit-inet-{width:g}", seed), [width], calibrate_samples=None)
            inet[width].append(100 - row.top1)
    long_error: dict[float, list[float]] = {}
    for seed in long_seeds:
        for row in evaluate_run(args, run("vit-us-60-epochs", seed), widths, calibrate_samples=None):
            long_error.setdefault(float(row.width), []).append(100 - row.top1)
    us_error = {float(row.width): [100 - rows[i].top1 for rows in spectra] for i, row in enumerate(spectra[0])}
    madds = {float(row.width): row.multiply_adds for row in spectra[0]}
    lines = ["| width | multiply-adds | I-Net (ViT) | US-Net (ViT) | US-Net (ViT), 60 epochs |",
             "|---|---|---|---|---|"]
    for width in SWITCHES:
        lines.append(f"| {width:g}x | {madds[width] / 1e6:.2f}M | {cell(inet[width])} | {cell(us_error[width])} | "
                     f"{cell(long_error[width]) if long_error else '-'} |")
    table = "\n".join(lines)
    mean = {w: statistics.fmean(e) for w, e in us_error.items()}
    ordered = sorted(mean)
    # a dip: a width worse than the straight line between its neighbours
    dips = {w: mean[w] - (mean[a] + mean[b]) / 2 for a, w, b in zip(ordered, ordered[1:], ordered[2:])}
    worst = max(dips, key=dips.get) if dips else None
    print(table)
    if worst is not None:
        print(f"largest dip in the US-Net's error curve: {dips[worst]:+.2f} points at {worst:g}x")
    series = [{"name": "US-Net (ViT), mean over seeds",
               "rows": [{"width": w, "multiply_adds": madds[w], "top1": 100 - mean[w]} for w in ordered]}]
    if long_error:
        series.append({"name": f"US-Net (ViT), 60 epochs, seed{'s' * (len(long_seeds) > 1)} "
                               f"{', '.join(map(str, long_seeds))}",
                       "rows": [{"width": w, "multiply_adds": madds[w], "top1": 100 - statistics.fmean(long_error[w])}
                                for w in ordered]})
    series += [{"name": f"I-Net (ViT) {w:g}x", "rows": [{"width": w, "multiply_adds": madds[w],
                                                          "top1": 100 - statistics.fmean(inet[w])}]}
               for w in SWITCHES]
    plot(series, args.out / "vit.png", title=f"A ViT as a US-Net at 31 widths, against individual ViTs ({args.data})")
    write_result(args, "vit", f"top-1 error (%) of a timm ViT trained as a US-Net and individually, on {args.data}",
                 us_net_error={str(w): e for w, e in us_error.items()},
                 individual_error={str(w): e for w, e in inet.items()}, long_seeds=long_seeds,
                 us_net_60_epochs_error={str(w): e for w, e in long_error.items()},
                 multiply_adds={str(w): v for w, v in madds.items()},
                 dips={str(w): round(d, 3) for w, d in dips.items()}, markdown=table, seconds=timer.seconds(),
                 train_seconds=train_seconds(records))


if __name__ == "__main__":
    main()
