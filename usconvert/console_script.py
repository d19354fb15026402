"""The ``usconvert`` command's entry point. It imports nothing before it can catch Ctrl-C, so an
interrupt at any moment, even while the command line itself is still being imported, ends with
one line and exit code 130 instead of a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    run()
