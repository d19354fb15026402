"""Figure 9: the number of widths trained per step, n = 3, 4 (the default) and 5, evaluated at
widths 0.25:0.05:1.0 after BN calibration (mean over seeds). The paper: n = 4 beats n = 3, and
n = 5 is no better than n = 4. The training time of each is recorded too.

    python examples/paper/figure9.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import Timer, arguments, spectra, summarize, write_result

from usconvert.spectrum import plot

VARIANTS = {"n = 3": "us-n3", "n = 4": "us", "n = 5": "us-n5"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    series, _ = spectra(args, VARIANTS, also=("widths_per_step",))
    plot(series, args.out / "figure9.png", title=f"Widths trained per step n ({args.data})")
    write_result(args.out, "figure9", {"experiment": "Figure 9: widths per training step n", "data": args.data,
                                       "seeds": args.seeds, "smoke": args.smoke, "series": series,
                                       "summary": summarize(series), "seconds": timer.seconds()})


if __name__ == "__main__":
    main()
