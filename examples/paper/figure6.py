"""Figure 6: a US-Net trained with and without inplace distillation, top-1 accuracy at widths
0.25:0.05:1.0 after BN calibration (mean over seeds; the band is ± one std).

    python examples/paper/figure6.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import arguments, spectrum_figure

VARIANTS = {"with inplace distillation": "us", "without inplace distillation": "us-no-distill"}


def main() -> None:
    spectrum_figure(arguments(__doc__), "figure6", VARIANTS, title="Inplace distillation",
                    experiment="Figure 6: inplace distillation")


if __name__ == "__main__":
    main()
