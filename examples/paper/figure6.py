"""Figure 6: a US-Net trained with and without inplace distillation, top-1 accuracy at widths
0.25:0.05:1.0 after BN calibration (mean over seeds; the band is ± one std).

    python examples/paper/figure6.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import Timer, arguments, spectra, summarize, write_result

from usconvert.spectrum import plot

VARIANTS = {"with inplace distillation": "us", "without inplace distillation": "us-no-distill"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    series, _ = spectra(args, VARIANTS)
    plot(series, args.out / "figure6.png", title=f"US-MobileNetV2 on {args.data}: inplace distillation")
    write_result(args.out, "figure6", {"experiment": "Figure 6: inplace distillation", "data": args.data,
                                       "seeds": args.seeds, "smoke": args.smoke, "series": series,
                                       "summary": summarize(series), "seconds": timer.seconds()})


if __name__ == "__main__":
    main()
