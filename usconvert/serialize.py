"""Saving and loading a ``SlimmableNet`` as one .safetensors file (no pickle anywhere).

The file holds the model's tensors under their original names, per-width batch-norm
statistics under ``__statistics__.``, and JSON metadata: how to rebuild the model, the input
size, divisor, min width, the layers that average their output, a digest of the channel-space
table and the format version. Loading rebuilds the model, re-traces it, checks the digest and
loads the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import FileFormatError, first_line
from .files import EXPORT_METADATA_KEY, atomic_path
from .models import build
from .nn import SlimConv, SlimLinear

if TYPE_CHECKING:
    from .net import SlimmableNet

# version 2 names the layers that average their output; version 1 meant every convolution and
# linear layer. A file is written at the lowest version that reads it right, so that an older
# usconvert (which reads 1 only) refuses a network with averaging instead of misapplying it,
# and still reads every other network.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "usconvert"
STATISTICS_PREFIX = "__statistics__."


def _plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing memory (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        if tensor.numel():
            seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def save(net: "SlimmableNet", path: str | Path, extra_metadata: dict[str, Any] | None = None,
         extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``net`` to ``path`` atomically. Extra tensors (a training checkpoint's) are stored
    under their own names, which start with ``__``, and ignored by :func:`load`."""
    from safetensors.torch import save_file

    import timm
    tensors = _plain_tensors(net.model.state_dict())
    tensors.update({STATISTICS_PREFIX + k: v for k, v in _plain_tensors(net.statistics.tensors()).items()})
    tensors.update(_plain_tensors(extra_tensors or {}))
    metadata = {
        "format_version": FORMAT_VERSION if net.averaged_layers else 1,
        "source": net.source or {"kind": "module", "class": type(net.model).__name__},
        "input_size": list(net.input_size),
        "data_config": net.data_config,
        "divisor": net.divisor,
        "min_width": net.min_width,
        "output_averaging": net.output_averaging,
        "averaged_layers": net.averaged_layers,
        "space_digest": net.space_digest(),
        "checked_frozen": checked_frozen(net),
        "statistics_labels": net.statistics.labels(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
        **(extra_metadata or {}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)})
    return Path(path)


def _averaged_layers(net: "SlimmableNet", metadata: dict[str, Any]) -> list[str]:
    """The layers whose output the saved network averaged. Files written before the layers were
    recorded (format version 1, before 2026-12-03) averaged every convolution and linear layer
    when the option was on."""
    if "averaged_layers" in metadata:
        return list(metadata["averaged_layers"])
    if not metadata.get("output_averaging", False):
        return []
    return [name for name, layer in net.layers.items() if isinstance(layer, (SlimConv, SlimLinear))]


def checked_frozen(net: "SlimmableNet") -> dict[str, str]:
    """The spaces the conversion self-check froze, by name: a file records them, so that loading
    rebuilds the same network without checking again."""
    return dict(net.self_check.frozen) if net.self_check is not None else {}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The usconvert metadata of a file, with clear errors for missing, corrupt or foreign files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            everything = f.metadata() or {}
    except Exception as exc:
        raise FileFormatError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                              f"{first_line(exc)}"
                              ) from exc
    raw = everything.get(METADATA_KEY)
    if raw is None and EXPORT_METADATA_KEY in everything:
        raise FileFormatError(f"{path} is one width exported from a usconvert network, an ordinary model: load it "
                              f"with usconvert.load_exported({str(path)!r}) (usconvert inspect describes it)")
    if raw is None:
        raise FileFormatError(f"{path} is a safetensors file but not a usconvert network (no usconvert metadata)")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path} has corrupt usconvert metadata") from exc
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise FileFormatError(f"{path} has usconvert format version {version}; this usconvert reads versions "
                              f"{' and '.join(map(str, READABLE_VERSIONS))} (a newer usconvert wrote it?)")
    return metadata


def _read_tensors(path: str | Path, device: str | torch.device = "cpu"
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's tensors and the statistics store's, of a usconvert file."""
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:
        raise FileFormatError(f"cannot read the tensors of {path}: {exc}") from exc
    statistics = {k[len(STATISTICS_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATISTICS_PREFIX)}
    return {k: v for k, v in tensors.items() if not k.startswith("__")}, statistics


def load_into(net: "SlimmableNet", path: str | Path) -> None:
    """Load a file's weights and statistics into an existing network of the same architecture."""
    metadata = read_metadata(path)
    if metadata["space_digest"] != net.space_digest():
        raise FileFormatError(f"{path} holds a network with other channel spaces than this one")
    state, statistics = _read_tensors(path)
    result = net.model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise FileFormatError(f"{path} does not match its model: missing {result.missing_keys[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")
    net.statistics.load_tensors(statistics, metadata.get("statistics_labels", {}))
    net.set_width(net.width)


def load(path: str | Path, model: nn.Module | None = None, map_location: str | torch.device = "cpu"
         ) -> "SlimmableNet":
    """Rebuild the network saved at ``path``. ``model`` is needed only for files saved from a
    model object rather than from a model name (pass the same architecture)."""
    from .convert import convert
    from .verify import SelfCheck

    metadata = read_metadata(path)
    source = metadata["source"]
    if source.get("kind") == "module":
        if model is None:
            raise FileFormatError(f"{path} was saved from a {source.get('class')} object, not a model name; "
                                  f"pass the same architecture as load(path, model=...)")
        source = None
    else:
        model = build(source)
    net = convert(model, tuple(metadata["input_size"]), divisor=int(metadata["divisor"]),
                  min_width=float(metadata["min_width"]), source=source, check=False)
    net.self_check = SelfCheck(frozen=dict(metadata.get("checked_frozen", {})))  # as found when converted
    net.freeze_spaces(net.self_check.frozen)
    net.data_config = metadata.get("data_config") or net.data_config
    if net.space_digest() != metadata["space_digest"]:
        raise FileFormatError(f"the channel spaces of the rebuilt model differ from those in {path} "
                              f"(saved with {metadata.get('versions')}; is the model code different?)")
    net.average_outputs_of(_averaged_layers(net, metadata))
    load_into(net, path)
    net.to(map_location)
    net.set_width(1.0)
    return net
