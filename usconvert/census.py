"""Model-zoo coverage: every model checked in its own process, with a time limit.

A model passes when it builds, converts, equals the original at width 1.0 (eval), is
prefix-equivalent at the minimum width and at a random nonuniform configuration, and its
export at the minimum width equals the slimmable network. Run as a module, this file checks one
model and prints its result as JSON (the worker of :func:`census`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from .files import write_json_file

TOLERANCE = 1e-4  # float32, relative to the output's scale


def timm_families() -> dict[str, list[str]]:
    import timm
    return {module: timm.list_models(module=module) for module in timm.list_modules()}


def parameter_count(name: str) -> int | None:
    """A timm model's parameter count, built on the meta device (no memory, no weights)."""
    import timm
    import torch
    try:
        with torch.device("meta"):
            model = timm.create_model(name, num_classes=10)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters())


def smallest_variant(models: list[str]) -> str:
    """The family's model with the fewest parameters; timm's ``test_*`` models (tiny
    configurations made for timm's own tests) only when the family has nothing else."""
    real = [m for m in models if not m.startswith("test_")] or models
    counted = [(count, name) for name in real if (count := parameter_count(name)) is not None]
    return min(counted)[1] if counted else min(real, key=len)


def smallest_variants(cache: Path | None = None) -> list[str]:
    """``smallest_variant`` of every timm family. Counting builds each of timm's ~1,300 models
    on the meta device (tens of minutes on 2 cores: their weight initialisation runs there too),
    so the choice is kept in ``cache`` (default: ``~/.cache/usconvert``), one file per timm
    version, and only families not in it, or whose choice timm no longer lists, are counted."""
    import timm
    path = (cache or _cache_dir()) / f"smallest-timm-variants-{timm.__version__}.json"
    try:
        chosen = json.loads(path.read_text())
    except (OSError, ValueError):
        chosen = {}
    families = {module: models for module, models in timm_families().items() if models}
    stale = [module for module, models in families.items() if chosen.get(module) not in models]
    for module in stale:
        chosen[module] = smallest_variant(families[module])
    if stale:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_file(path, chosen)
        except OSError:  # a read-only home: the census still runs, and counts again next time
            pass
    return [chosen[module] for module in families]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "usconvert"


def model_names(source: str = "all", pattern: str | None = None, one_per_family: bool = False) -> list[str]:
    from .models import list_models
    if not one_per_family:
        return list_models(source, pattern)
    names = list_models("torchvision", pattern) if source in ("torchvision", "all") else []
    if source in ("timm", "all"):
        names += [n for n in smallest_variants() if not pattern or fnmatch.fnmatch(n, pattern)]
    return sorted(names)


def check(name: str, input_size: tuple[int, ...], seed: int = 0) -> dict[str, Any]:
    """All checks of one model, in this process."""
    import torch

    from .convert import convert
    from .export import export
    from .models import create, default_input_size, load_state
    from .profile import count_torch_flops, summary
    from .sorting import model_state, sort_channels
    from .verify import prefix_error, relative_error, write_informative_values

    result: dict[str, Any] = {"name": name, "passed": False, "stage": "build", "error": None}
    start = time.perf_counter()
    def fresh_model() -> tuple[Any, dict[str, Any]]:
        torch.manual_seed(seed)
        model, source = create(name, num_classes=10)
        # what a fresh model starts at zero would hide from every check
        return write_informative_values(model.eval(), seed), source

    try:
        model, source = fresh_model()
        result["stage"] = "convert"
        sizes = sizes_to_try(input_size, default_input_size(model))
        for size in sizes:
            try:
                net = convert(model, size, source=source)
                break
            except Exception:
                if size == sizes[-1]:
                    raise
        result["input_size"] = list(size)
        result["self_check_frozen"] = sorted(net.self_check.frozen)  # spaces a rule left slimmable wrongly
        x = torch.randn(3, *size)  # not the batch of 2 that convert traces with: sizes must follow the batch
        net.eval()
        result["stage"] = "equivalence"
        with torch.no_grad():
            error = relative_error(net(x), model(x))
        result["equivalence_error"] = error
        if error > TOLERANCE:
            raise AssertionError(f"output differs from the original at width 1.0 ({error:.1e})")
        result["stage"] = "prefix"
        rng = random.Random(seed)
        mixed = {s.name: rng.uniform(net.min_width, 1.0) for s in net.slimmable_spaces}
        for label, width in (("min", net.min_width), ("nonuniform", mixed)):
            if isinstance(width, dict) and not width:
                continue
            error = prefix_error(model, net, width, x)
            result[f"prefix_error_{label}"] = error
            if error > TOLERANCE:
                raise AssertionError(f"prefix equivalence fails at the {label} width ({error:.1e})")
        result["stage"] = "export"
        net.set_width(net.min_width)
        net.eval_cache = False
        with net.sliced_statistics(), torch.no_grad():
            error = relative_error(export(net)(x), net(x))
        result["export_error"] = error
        if error > TOLERANCE:
            raise AssertionError(f"the exported model differs ({error:.1e})")
        result["stage"] = "measure"
        info = summary(net)
        result.update(slimmable_share=info["slimmable_share"], convolution_share=info["convolution_share"],
                      macs_min_over_full=info["multiply_adds"]["min_over_full"],
                      frozen=[[s.name, s.frozen_reasons[0]] for s in net.spaces if s.frozen_by_rule],
                      rule_errors=info["rule_errors"][:3])
        result["stage"] = "torch flop counter"  # torch's own tool runs on the network, and agrees with fvcore
        count_torch_flops(net, net.min_width, train=True, batch=2)  # train-mode batch norm needs two
        torch_count = count_torch_flops(net, net.min_width)
        if info["multiply_adds"]["min_width"]:
            result["torch_macs_over_fvcore"] = torch_count.layer_macs / info["multiply_adds"]["min_width"]
        result["stage"] = "sort channels"  # width 1.0 unchanged (checked inside), every width a sub-network
        sort_channels(net, "l1")
        # the model, sorted as the network is: built again, since a model that has run in eval
        # mode may cache what it derives from its tensors (TinyViT its attention biases), and
        # loaded from a plain dict, since the metadata of net.model's state (a GraphModule's
        # versions) is not the model's
        del model
        model, _ = fresh_model()
        load_state(model, model_state(net, model), "the sorted network")
        error = prefix_error(model, net, mixed or net.min_width, x)
        result["sorted_prefix_error"] = error
        if error > TOLERANCE:
            raise AssertionError(f"after sorting channels, prefix equivalence fails ({error:.1e})")
        result["passed"], result["stage"] = True, "done"
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result["error"] = f"{type(exc).__name__}: {text}"[:300]
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def sizes_to_try(requested: tuple[int, ...], default: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Input sizes to convert at, in order: the one asked for; the smallest multiples of 14, 32,
    48 and 64 above it that are smaller than the model's own (patches of 14: DeepSeek's ViT, a
    patch grid of 48: Gemma 4; at their own sizes, 546 and 768, they need more time or memory
    than a census machine has); the model's own."""
    channels, *spatial = requested
    between = {(channels, *(-(-s // step) * step for s in spatial)) for step in (14, 32, 48, 64)}
    smaller = sorted(s for s in between if s != tuple(requested) and all(a < b for a, b in zip(s[1:], default[1:])))
    return list(dict.fromkeys([tuple(requested), *smaller, tuple(default)]))


def check_in_subprocess(name: str, input_size: tuple[int, ...], timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "usconvert.census", name, ",".join(map(str, input_size))]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "passed": False, "stage": "timeout", "error": f"no result within {timeout:g}s",
                "seconds": round(time.perf_counter() - start, 2)}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"name": name, "passed": False, "stage": "crash", "error": tail,
                "seconds": round(time.perf_counter() - start, 2)}
    return json.loads(lines[-1])


def census(names: list[str], *, input_size: tuple[int, ...] = (3, 128, 128), timeout: float = 120, jobs: int = 1,
           on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Check every model in its own process, ``jobs`` at once. A process that dies (out of
    memory beside another large model: tv:vit_h_14 peaks at 17 GB) is run again alone."""
    def report(result: dict[str, Any]) -> dict[str, Any]:
        if on_result is not None:
            on_result(result)
        return result

    def one(name: str) -> dict[str, Any]:
        result = check_in_subprocess(name, input_size, timeout)
        return result if result["stage"] == "crash" and jobs > 1 else report(result)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, names))
    for index, result in enumerate(results):
        if result["stage"] == "crash" and jobs > 1:
            results[index] = report({**check_in_subprocess(result["name"], input_size, timeout), "retried_alone": True})
    return results


def failure_cause(result: dict[str, Any]) -> str:
    """A failure's stage and message with names and numbers removed, to group alike failures."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"|\d+(\.\d+)?(e-?\d+)?", "…", result.get("error") or "")
    return f"{result['stage']}: {message}"


def grouped_failures(results: list[dict[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for r in results:
        if not r["passed"]:
            groups.setdefault(failure_cause(r), []).append(r["name"])
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def is_cnn(result: dict[str, Any]) -> bool:
    """At least half of its multiply-adds in convolutions (known only for models that convert)."""
    return result.get("convolution_share", 0.0) >= 0.5


def source_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model zoo: how many pass, and the median slimmable share of the CNNs and the others
    among those that pass."""
    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    rows = []
    for source in ("timm", "torchvision"):
        chosen = [r for r in results if r["name"].startswith("tv:") == (source == "torchvision")]
        if not chosen:
            continue
        passed = [r for r in chosen if r["passed"]]
        rows.append({"source": source, "models": len(chosen), "passed": len(passed),
                     "cnns": sum(map(is_cnn, passed)),
                     "median_share_cnn": median([r["slimmable_share"] for r in passed if is_cnn(r)]),
                     "median_share_other": median([r["slimmable_share"] for r in passed if not is_cnn(r)])})
    return rows


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    passed = [r for r in results if r["passed"]]
    lines = ["# Coverage", "", f"`{meta['command']}` on {meta['date']}: timm {meta['timm']}, torch {meta['torch']}, "
             f"torchvision {meta['torchvision']}.", "",
             f"**{len(passed)} of {len(results)} models pass** ({100 * len(passed) / max(1, len(results)):.0f}%).", "",
             "| source | models | pass | pass rate | CNNs among them | median slimmable share, CNNs | "
             "median slimmable share, others |", "|---|---|---|---|---|---|---|"]
    for row in source_summary(results):
        lines.append(f"| {row['source']} | {row['models']} | {row['passed']} | "
                     f"{100 * row['passed'] / row['models']:.0f}% | {row['cnns']} | "
                     f"{_percent(row['median_share_cnn'])} | {_percent(row['median_share_other'])} |")
    lines += ["", "A model passes when it builds, converts (on informative values: random norms, and random values for "
              "every parameter the fresh model starts at one value, such as a zero classifier or layer scales of "
              "1e-6), equals the original at width 1.0, is prefix-equivalent at "
              "the minimum width and at a random nonuniform configuration, exports at the minimum width, runs under "
              "torch's FlopCounterMode, and, with its channels sorted by importance (l1), still equals itself at "
              "width 1.0 and stays prefix-equivalent at the nonuniform configuration. "
              "The slimmable share is the share of multiply-adds at width 1.0 in layers whose channels scale with "
              "the width; a CNN has at least half of its multiply-adds in convolutions.", ""]
    ratios = sorted(r["torch_macs_over_fvcore"] for r in passed if r.get("torch_macs_over_fvcore") is not None)
    if ratios:
        agree = sum(abs(x - 1) <= 0.01 for x in ratios)
        lines += [f"Every passing model also runs under torch's `FlopCounterMode` at the minimum width, forward and "
                  f"backward in train mode. Its count of convolutions and matrix products agrees with fvcore's "
                  f"multiply-adds within 1% in {agree} of {len(ratios)} models (torch / fvcore: median "
                  f"{statistics.median(ratios):.3f}, range {ratios[0]:.3f} to {ratios[-1]:.3f}).", ""]
    caught = [f"{r['name']} ({len(r['self_check_frozen'])})" for r in results if r.get("self_check_frozen")]
    lines += [f"The conversion self-check froze spaces that the rules had left slimmable in "
              f"{len(caught)} models: {', '.join(caught) or 'none'}.", "", "## Failures by cause", ""]
    for cause, names in grouped_failures(results).items():
        lines.append(f"- **{len(names)}** {cause}: {', '.join(names)}")
    if all(r["passed"] for r in results):
        lines.append("None.")
    lines += ["", "## Every model", "", "| model | result | slimmable share | convolution share | MACs min/1.0 | "
              "frozen spaces | seconds |", "|---|---|---|---|---|---|---|"]
    for r in results:
        share, conv = _percent(r.get("slimmable_share")), _percent(r.get("convolution_share"))
        ratio = f"{r['macs_min_over_full']:.3f}" if r.get("macs_min_over_full") is not None else ""
        frozen = "; ".join(f"{n} ({why})" for n, why in r.get("frozen", [])[:3])
        if len(r.get("frozen", [])) > 3:
            frozen += f"; +{len(r['frozen']) - 3} more"
        status = "pass" if r["passed"] else f"fail ({r['stage']})"
        lines.append(f"| {r['name']} | {status} | {share} | {conv} | {ratio} | {frozen} | {r.get('seconds', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1], tuple(int(s) for s in sys.argv[2].split(",")))))
