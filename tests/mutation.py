"""Rule mutants for benchmarks/mutate_rules.py: with ``USCONVERT_MUTANT=<rule>:<kind>`` set, the
test session starts with every registry entry of that rule replaced by a weaker one, and the
rule tests must fail. ``pass_through``: the output keeps the first tensor's spaces where its
shape allows and ties nothing (the silent wrong function of tools that pass unknown ops
through); ``freeze_all``: the rule freezes everything it touches (exact, but no longer slims)."""

from __future__ import annotations

import os

from usconvert.graph import analyze  # noqa: F401  (registers every rule)
from usconvert.graph.rules import FUNCTION_RULES, METHOD_RULES, MODULE_RULES, TensorValue

TABLES = {"module": MODULE_RULES, "function": FUNCTION_RULES, "method": METHOD_RULES}


def rule_names() -> list[str]:
    """Every distinct rule, by name."""
    return sorted({rule.__name__ for table in TABLES.values() for rule in table.values()})


def pass_through(ctx):
    x = next(ctx.tensors(), None)
    out = ctx.out_shape
    if x is None or not isinstance(out, tuple) or len(out) != len(x.shape):
        return ctx.fixed_output()
    return TensorValue(out, tuple(layout if out[d] == x.shape[d] else None for d, layout in enumerate(x.dims)))


def freeze_all(ctx):
    return ctx.opaque("mutant")


def apply(spec: str) -> int:
    name, kind = spec.split(":")
    mutant = {"pass_through": pass_through, "freeze_all": freeze_all}[kind]
    replaced = 0
    for table in TABLES.values():
        for key, rule in list(table.items()):
            if rule.__name__ == name:
                table[key] = mutant
                replaced += 1
    if not replaced:
        raise SystemExit(f"no rule named {name!r}")
    return replaced


if os.environ.get("USCONVERT_MUTANT"):
    apply(os.environ["USCONVERT_MUTANT"])
