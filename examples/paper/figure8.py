"""Figure 8: the width divisor d. US-Nets converted with d = 8 (the default: channel counts are
multiples of 8, as in MobileNets) and d = 1 (any count), evaluated at widths 0.25:0.05:1.0
after BN calibration (mean over seeds). The paper: d = 1 slightly helps overall.

    python examples/paper/figure8.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import Timer, arguments, spectra, summarize, write_result

from usconvert.spectrum import plot

VARIANTS = {"d = 8": "us", "d = 1": "us-d1"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    series, _ = spectra(args, VARIANTS, also=("expect",))  # the conversion's divisor is the method
    plot(series, args.out / "figure8.png", title=f"Width divisor d ({args.data})")
    write_result(args.out, "figure8", {"experiment": "Figure 8: width divisor d", "data": args.data,
                                       "seeds": args.seeds, "smoke": args.smoke, "series": series,
                                       "summary": summarize(series), "seconds": timer.seconds()})


if __name__ == "__main__":
    main()
