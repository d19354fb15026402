"""Which models trace to a different graph when a setting of the tracer changes: each model of
a census file is traced (both modes) with the setting off and on, and the generated code is
compared. A model whose graphs are the same needs no new census run after the change; the
others do (docs/COVERAGE.md: 10 of 178 changed when buffers became graph nodes).

    python benchmarks/graph_diff.py [--census docs/coverage.json] [--setting proxy_buffer_attributes] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from usconvert.files import write_json_file
from usconvert.graph import trace as tracing
from usconvert.models import create


def graphs(model: torch.nn.Module, example: torch.Tensor) -> list[str] | str:
    try:
        traced = tracing.trace(model, example)
    except Exception as exc:  # a model that does not trace one way is a difference too
        return f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return [g.python_code("self").src for g in (traced.train_graph, traced.eval_graph)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--census", type=Path, default=Path("docs/coverage.json"))
    parser.add_argument("--setting", default="proxy_buffer_attributes", help="a boolean attribute of SlimTracer")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    if not isinstance(getattr(tracing.SlimTracer, args.setting, None), bool):
        raise SystemExit(f"SlimTracer has no boolean setting {args.setting!r}")
    initial = getattr(tracing.SlimTracer, args.setting)
    results = {}
    try:
        for entry in json.loads(args.census.read_text())["results"]:
            start = time.perf_counter()
            torch.manual_seed(0)
            model, _ = create(entry["name"], num_classes=10)
            example = torch.randn(2, *(entry.get("input_size") or (3, 128, 128)))
            traced = {}
            for value in (False, True):
                setattr(tracing.SlimTracer, args.setting, value)
                traced[value] = graphs(model, example)
            results[entry["name"]] = "same" if traced[False] == traced[True] else "different"
            print(f"{entry['name']:>40}: {results[entry['name']]} ({time.perf_counter() - start:.1f} s)", flush=True)
    finally:
        setattr(tracing.SlimTracer, args.setting, initial)
    changed = sorted(name for name, result in results.items() if result != "same")
    print(f"{len(changed)} of {len(results)} models trace differently with {args.setting} on: {', '.join(changed)}")
    if args.output:
        write_json_file(args.output, {"setting": args.setting, "results": results, "changed": changed})


if __name__ == "__main__":
    main()
