"""Files of nonuniform widths, one format for every command: a JSON object that maps a name to
the ratios of named channel spaces, ``{"small": {"conv_stem:out": 0.5, ...}}``; ``search``
writes each under ``"spaces"`` beside what it costs and scores, ``{"small": {"spaces": {...},
"multiply_adds": ..., "parameters": ..., "score": ...}}``, which every command reads too. A
single flat ``{space: ratio}`` object is one configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsconvertError

Configuration = dict[str, float]


def read_configs(path: str | Path, option: str = "--configs") -> dict[str, Configuration]:
    """Every named configuration of the file (a flat one is named after the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsconvertError(f"cannot read {option} {path}: {exc}") from None
    if isinstance(data, dict) and data and all(isinstance(v, (int, float)) for v in data.values()):
        return {path.stem: {k: float(v) for k, v in data.items()}}
    configs = {}
    for name, value in (data.items() if isinstance(data, dict) else []):
        spaces = value.get("spaces", value) if isinstance(value, dict) else None
        if not isinstance(spaces, dict) or not all(isinstance(r, (int, float)) for r in spaces.values()):
            raise UsconvertError(f"{option} {path}: {name!r} must map channel spaces to ratios")
        configs[name] = {k: float(r) for k, r in spaces.items()}
    if not configs:
        raise UsconvertError(f"{option} {path} must map names to {{space: ratio}} objects")
    return configs


def read_config(path: str | Path, name: str | None = None, option: str = "--config") -> Configuration:
    """One configuration: the file's only one, or the one called ``name``."""
    configs = read_configs(path, option)
    if name is None:
        if len(configs) > 1:
            raise UsconvertError(f"{option} {path} holds {len(configs)} configurations "
                                 f"({', '.join(configs)}): choose one with --name")
        return next(iter(configs.values()))
    if name not in configs:
        raise UsconvertError(f"{option} {path} has no configuration {name!r}; it has {', '.join(configs)}")
    return configs[name]


def configs_document(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What ``search`` writes: per name, ``spaces`` and any measured fields."""
    return {name: {"spaces": entry["spaces"], **{k: v for k, v in entry.items() if k != "spaces"}}
            for name, entry in entries.items()}
