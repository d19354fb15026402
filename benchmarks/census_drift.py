"""Which rows of a census file the current tree would change: every model is converted at the
row's input size (no self-check: the census's froze nothing in any row) and its frozen spaces
are compared with the row's. The models that differ need a census run again after a change to
the rules; the others convert as recorded (docs/COVERAGE.md, "MViT's heads").

    python benchmarks/census_drift.py [--census docs/coverage.json] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import usconvert
from usconvert.errors import first_line
from usconvert.files import write_json_file
from usconvert.models import create


def frozen_now(name: str, input_size: list[int]) -> set[str] | str:
    """The spaces frozen by the rules, as the census names them (the model output aside)."""
    torch.manual_seed(0)
    try:
        model, _ = create(name, num_classes=10)
        net = usconvert.convert(model.eval(), input_size, check=False)
    except Exception as exc:  # a model that no longer converts is a change too
        return f"error: {first_line(exc)}"
    return {s.name for s in net.spaces if s.frozen_by_rule}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--census", type=Path, default=Path("docs/coverage.json"))
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    for row in json.loads(args.census.read_text())["results"]:
        if not row["passed"]:
            continue
        start = time.perf_counter()
        now = frozen_now(row["name"], row.get("input_size") or [3, 128, 128])
        recorded = {name for name, _ in row["frozen"]}
        if isinstance(now, str):
            results[row["name"]] = now
        elif now == recorded:
            results[row["name"]] = "same"
        else:
            results[row["name"]] = f"{len(now - recorded)} spaces frozen, {len(recorded - now)} freed"
        print(f"{row['name']:>40}: {results[row['name']]} ({time.perf_counter() - start:.1f} s)", flush=True)
    changed = sorted(name for name, result in results.items() if result != "same")
    print(f"{len(changed)} of {len(results)} models convert differently from their census rows: {', '.join(changed)}")
    if args.output:
        write_json_file(args.output, {"census": str(args.census), "results": results, "changed": changed})


if __name__ == "__main__":
    main()
