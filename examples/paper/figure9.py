"""Figure 9: the number of widths trained per step, n = 3, 4 (the default) and 5, evaluated at
widths 0.25:0.05:1.0 after BN calibration (mean over seeds). The paper: n = 4 beats n = 3, and
n = 5 is no better than n = 4. The training time of each is recorded too. Two more series at
4/5 of the learning rate: n = 5 there takes n = 4's step length (the widths' losses are summed
before a step), and n = 4 there tells whether a lower rate helps any n.

    python examples/paper/figure9.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import arguments, spectrum_figure

VARIANTS = {"n = 3": "us-n3", "n = 4": "us", "n = 5": "us-n5",
            "n = 4, lr × 0.8": "us-lr-0.8", "n = 5, lr × 0.8": "us-n5-lr-0.8"}


def main() -> None:
    spectrum_figure(arguments(__doc__), "figure9", VARIANTS, title="Widths trained per step n",
                    experiment="Figure 9: widths per training step n",
                    also=("widths_per_step", "lr"))


if __name__ == "__main__":
    main()
