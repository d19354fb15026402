"""How fast the command line answers when it has nothing heavy to do: ``usconvert --help``,
``--version`` and an argument error, against ``import torch`` alone (what every command paid
before the imports were made lazy), interleaved, medians, each a fresh process.

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

COMMANDS = {
    "usconvert --help": ["usconvert", "--help"],
    "usconvert --version": ["usconvert", "--version"],
    "usconvert convert resnet18 -o x.pt (argument error)": ["usconvert", "convert", "resnet18", "-o", "x.pt"],
    "python -c 'import torch, timm, torchvision'": [sys.executable, "-c", "import torch, timm, torchvision"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times = interleaved({name: (lambda c=command: subprocess.run(c, capture_output=True)) for name, command in
                         COMMANDS.items()}, repeats=args.repeats)
    report({"environment": environment(), "repeats": args.repeats,
            "seconds": {name: round(t, 3) for name, t in times.items()}})


if __name__ == "__main__":
    main()
