"""Figure 11: are networks naturally slimmable? An individually trained 1.0x model and the
4-switch S-Net, evaluated at every width from 0.25 to 1.0 after batch-norm calibration, against
the US-Net (one seed; the figure is a spectrum, not a table).

    python examples/paper/figure11.py [--seeds 0] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import Timer, arguments, evaluate_run, run, train_for_evaluation, write_result
from usconvert.spectrum import plot
from usconvert.width import width_grid

NETWORKS = {"US-Net": "us", "S-Net (4 switches)": "snet", "I-Net 1.0x": "inet-1"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    args.seeds = args.seeds[:1]  # the spectra of one network per method
    seed = args.seeds[0]
    train_for_evaluation(args, [run(m, seed) for m in NETWORKS.values()])
    widths = width_grid(0.25, 1.0, 0.25 if args.smoke else 0.025)
    series = []
    for label, method in NETWORKS.items():
        rows = evaluate_run(args, run(method, seed), widths, calibrate_samples=128 if args.smoke else 1024)
        series.append({"name": label, "rows": [r.__dict__ for r in rows]})
        worst = min(rows, key=lambda r: r.top1)
        print(f"{label:>20}: top-1 {rows[-1].top1:.1f}% at 1.0, lowest {worst.top1:.1f}% at {worst.width}")
    plot(series, args.out / "figure11.png", title=f"Calibrated at every width: only the US-Net holds ({args.data})")
    write_result(args, "figure11", "Figure 11: I-Net 1.0x, S-Net and US-Net at every width after BN calibration",
                 series=series, seconds=timer.seconds())


if __name__ == "__main__":
    main()
