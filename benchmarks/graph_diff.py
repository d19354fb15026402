"""Which models convert differently when a setting of the tracer or of the channel analysis
changes: each model of a census file is traced (both modes) and analysed with the setting off and
on, and the generated code and the spaces (name, size, frozen or not) are compared. A model that
converts the same needs no new census run after the change; the others do (docs/COVERAGE.md: 10
of 178 changed when buffers became graph nodes).

    python benchmarks/graph_diff.py [--census docs/coverage.json] [--setting proxy_buffer_attributes] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from usconvert.files import write_json_file
from usconvert.errors import first_line
from usconvert.graph import trace as tracing
from usconvert.graph.analyze import ChannelAnalysis
from usconvert.models import create

SETTINGS = (tracing.SlimTracer, ChannelAnalysis)


def conversion(model: torch.nn.Module, example: torch.Tensor) -> tuple[list[str], list[tuple]] | str:
    """The traced code of both modes, and every space: its name, size and whether it is frozen."""
    try:
        traced = tracing.trace(model, example)
        analysis = ChannelAnalysis(model)
        analysis.run(traced.graphs)
    except Exception as exc:  # a model that does not convert one way is a difference too
        return f"error: {first_line(exc)}"
    code = [g.python_code("self").src for g in (traced.train_graph, traced.eval_graph)]
    return code, [(s.name, s.size, bool(s.frozen_reasons)) for s in analysis.spaces.nodes if s.definition is None]


def describe(off: tuple[list[str], list[tuple]] | str, on: tuple[list[str], list[tuple]] | str) -> str:
    if off == on:
        return "same"
    if isinstance(off, str) or isinstance(on, str) or off[0] != on[0]:
        return "different"
    changed = len(set(off[1]) ^ set(on[1])) // 2 if len(off[1]) == len(on[1]) else None
    return "different" if changed is None else f"different: {changed} spaces frozen or freed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--census", type=Path, default=Path("docs/coverage.json"))
    parser.add_argument("--setting", default="proxy_buffer_attributes",
                        help="a boolean attribute of SlimTracer or of ChannelAnalysis")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    owner = next((cls for cls in SETTINGS if isinstance(getattr(cls, args.setting, None), bool)), None)
    if owner is None:
        raise SystemExit(f"neither SlimTracer nor ChannelAnalysis has a boolean setting {args.setting!r}")
    initial = getattr(owner, args.setting)
    results = {}
    try:
        for entry in json.loads(args.census.read_text())["results"]:
            start = time.perf_counter()
            torch.manual_seed(0)
            model, _ = create(entry["name"], num_classes=10)
            example = torch.randn(2, *(entry.get("input_size") or (3, 128, 128)))
            traced = {}
            for value in (False, True):
                setattr(owner, args.setting, value)
                traced[value] = conversion(tracing.copy_model(model), example)
            results[entry["name"]] = describe(traced[False], traced[True])
            print(f"{entry['name']:>40}: {results[entry['name']]} ({time.perf_counter() - start:.1f} s)", flush=True)
    finally:
        setattr(owner, args.setting, initial)
    changed = sorted(name for name, result in results.items() if result != "same")
    print(f"{len(changed)} of {len(results)} models convert differently with {args.setting} on: {', '.join(changed)}")
    if args.output:
        write_json_file(args.output, {"setting": args.setting, "results": results, "changed": changed})


if __name__ == "__main__":
    main()
