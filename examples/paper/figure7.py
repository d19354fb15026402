"""Figure 7: the width lower bound k0. US-Nets trained with k0 = 0.25 (the default), 0.35 and
0.05, each evaluated from its own k0 to 1.0 in steps of 0.05 after BN calibration (mean over
seeds). The paper: a US-Net's performance is grounded on its lower bound.

    python examples/paper/figure7.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import arguments, spectrum_figure

VARIANTS = {"k0 = 0.35": "us-k0-0.35", "k0 = 0.25": "us", "k0 = 0.05": "us-k0-0.05"}


def main() -> None:
    spectrum_figure(arguments(__doc__), "figure7", VARIANTS, title="Width lower bound k0",
                    experiment="Figure 7: width lower bound k0",
                    also=("expect",), from_width=0.35)  # the conversion's min_width is the method


if __name__ == "__main__":
    main()
