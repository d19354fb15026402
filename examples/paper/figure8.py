"""Figure 8: the width divisor d. US-Nets converted with d = 8 (the default: channel counts are
multiples of 8, as in MobileNets) and d = 1 (any count), evaluated at widths 0.25:0.05:1.0
after BN calibration (mean over seeds). The paper: d = 1 slightly helps overall.

    python examples/paper/figure8.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import arguments, spectrum_figure

VARIANTS = {"d = 8": "us", "d = 1": "us-d1"}


def main() -> None:
    spectrum_figure(arguments(__doc__), "figure8", VARIANTS, title="Width divisor d",
                    experiment="Figure 8: width divisor d",
                    also=("expect",))  # the conversion's divisor is the method


if __name__ == "__main__":
    main()
