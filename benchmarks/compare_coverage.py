"""Two census runs side by side: which models changed their result or their slimmable share,
as a markdown section (for docs/COVERAGE.md after a change to the rules).

    git show HEAD~1:docs/coverage.json > /tmp/before.json
    python benchmarks/compare_coverage.py /tmp/before.json docs/coverage.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before = {r["name"]: r for r in json.loads(args.before.read_text())["results"]}
    after = {r["name"]: r for r in json.loads(args.after.read_text())["results"]}
    rows, lost, gained = [], [], []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name, {}), after.get(name, {})
        if old.get("passed") and not new.get("passed"):
            lost.append(name)
        if new.get("passed") and not old.get("passed"):
            gained.append(name)
        shares = (old.get("slimmable_share"), new.get("slimmable_share"))
        if old.get("passed") != new.get("passed") or (None not in shares and abs(shares[0] - shares[1]) >= 0.005):
            rows.append(f"| {name} | {_result(old)} | {_result(new)} | {_share(shares[0])} | {_share(shares[1])} | "
                        f"{_ratio(old)} | {_ratio(new)} |")
    print(f"{len(before)} models before, {len(after)} after; passes lost: {', '.join(lost) or 'none'}; "
          f"gained: {', '.join(gained) or 'none'}.\n")
    print("| model | before | after | slimmable share before | after | MACs min/1.0 before | after |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows) if rows else "| (no model changed) | | | | | | |")


def _result(r: dict) -> str:
    return "pass" if r.get("passed") else (r.get("stage", "missing") if r else "missing")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _ratio(r: dict) -> str:
    value = r.get("macs_min_over_full")
    return "" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
