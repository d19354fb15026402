"""Figure 6: a US-Net trained with and without inplace distillation, top-1 accuracy on digits
at widths 0.25:0.05:1.0 after BN calibration (mean over seeds; the band is ± one std).

    python examples/paper/figure6.py [--seeds 0 1 2] [--out docs/results] [--smoke]
"""

from __future__ import annotations

import statistics

from common import (Timer, arguments, check_same_settings, evaluate, mean_std, network_path, run, train_all,
                    write_result)

import usconvert
from usconvert.spectrum import plot
from usconvert.width import width_grid

VARIANTS = {"with inplace distillation": "us", "without inplace distillation": "us-no-distill"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    check_same_settings(train_all([run(m, s) for s in args.seeds for m in VARIANTS.values()], args.out,
                                  jobs=args.jobs, smoke=args.smoke))
    widths = width_grid(0.25, 1.0, 0.25 if args.smoke else 0.05)
    series, summary = [], {}
    for label, method in VARIANTS.items():
        per_seed = []
        for seed in args.seeds:
            net = usconvert.load(network_path(args.out, run(method, seed)))
            per_seed.append(evaluate(net, widths, calibrate_samples=128 if args.smoke else 1024))
        rows = []
        for i, width in enumerate(widths):
            mean, std = mean_std([seed_rows[i].top1 for seed_rows in per_seed])
            rows.append({**per_seed[0][i].__dict__, "top1": mean, "top1_std": std})
        series.append({"name": label, "rows": rows})
        summary[label] = {"mean_top1": statistics.fmean(r["top1"] for r in rows),
                          "min_top1": min(r["top1"] for r in rows)}
        print(f"{label:>30}: mean top-1 over widths {summary[label]['mean_top1']:.2f}%, "
              f"lowest {summary[label]['min_top1']:.2f}%")
    plot(series, args.out / "figure6.png", title="US-MobileNetV2 on digits: inplace distillation")
    write_result(args.out, "figure6", {"experiment": "Figure 6: inplace distillation", "seeds": args.seeds,
                                       "smoke": args.smoke, "series": series, "summary": summary,
                                       "seconds": timer.seconds()})


if __name__ == "__main__":
    main()
