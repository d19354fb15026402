"""``SlimmableNet``: one set of weights, any width in [min_width, 1.0], chosen at run time."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from .dense import shared_view
from .errors import UsconvertError, WidthError
from .eval_cache import EvalCache
from .nn import (OWN_STATISTICS, MissingStatistics, ParameterSlice, SlimBatchNorm, SlimConv, SlimLinear, Space,
                 WidthStatistics)
from .statistics import StatisticsStore, configuration_key
from .width import active_units

Width = float | Mapping[str, float]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


BATCH_STATISTICS_ONLY = MissingStatistics("batch-norm statistics are being computed (calibration in progress)")


class SlimmableNet(nn.Module):
    """A converted model. ``set_width(r)`` sets every slimmable channel space to its share of
    ``r`` (the width rule with the divisor); ``set_width({space: r, ...})`` sets spaces one by
    one. Layers run on views of the original full-size parameters."""

    def __init__(self, model: fx.GraphModule, train_graph: fx.Graph, eval_graph: fx.Graph, spaces: list[Space],
                 layers: dict[str, nn.Module], *, divisor: int, min_width: float, input_size: tuple[int, ...],
                 source: dict[str, Any] | None = None, rule_errors: list[str] | None = None,
                 data_config: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.statistics = StatisticsStore()
        self._train_graph, self._eval_graph = train_graph, eval_graph
        self.spaces = spaces
        self.layers = layers
        self.divisor = divisor
        self.min_width = min_width
        self.input_size = tuple(input_size)
        self.source = source
        self.data_config = data_config  # the model's preprocessing (mean, std, interpolation, crop)
        self.rule_errors = list(rule_errors or [])
        self.self_check: Any = None  # what the conversion self-check found (usconvert.verify.SelfCheck)
        self._spaces_by_name = {space.name: space for space in spaces}
        self.eval_cache = True  # inference runs the current width as an ordinary module (views of our tensors)
        self._eval_views = EvalCache()
        self._width: Width = 1.0
        self._sliced_statistics: str | None = None  # or "shared affine", "private affine"
        self._batch_statistics_only = False
        self._tracked: set[str] = set()
        self._tracked_counters: dict[str, dict[str, torch.Tensor]] = {}
        self.set_width(1.0)

    # -- running -----------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # under torch.compile the slicing path is compiled for the width (its sizes are guarded,
        # so another width compiles again); the cache's bookkeeping is Python dynamo cannot trace
        if self.eval_cache and not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            cached = self._cached_model()
            if cached is not None:
                return cached(*args, **kwargs)
        return self.model(*args, **kwargs)

    def _cached_model(self) -> nn.Module | None:
        """This width as an ordinary module with views of our tensors (:mod:`usconvert.eval_cache`);
        None (the slicing path) where a width cannot be a view."""
        state = (self.configuration_key(), self._sliced_statistics, self.statistics.version)
        return self._eval_views.get(self.model, state, self.statistics.parameters(), lambda: shared_view(self))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "SlimmableNet":
        self._eval_views.clear(tensors=True)  # .to(), .half(), ...: tensors are replaced
        result = super()._apply(fn, *args, **kwargs)
        self._apply_statistics()  # the layers must hold the replaced statistics tensors
        return result

    def train(self, mode: bool = True) -> "SlimmableNet":
        self._eval_views.clear()
        graph = self._train_graph if mode else self._eval_graph
        if self.model.graph is not graph:
            self.model.graph = graph  # the graphs differ where the model branches on self.training
        return super().train(mode)

    # -- widths ------------------------------------------------------------------------------
    @property
    def width(self) -> Width:
        return self._width

    @property
    def slimmable_spaces(self) -> list[Space]:
        return [space for space in self.spaces if not space.frozen]

    def space(self, name: str) -> Space:
        try:
            return self._spaces_by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._spaces_by_name, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise WidthError(f"no channel space named {name!r}{hint}") from None

    def set_width(self, width: Width, *, nearest_calibrated: bool = False) -> None:
        """Set the active width: a ratio in [min_width, 1.0] for every space, or a mapping from
        space names to ratios (spaces not named stay at 1.0). Cheap: no re-tracing.

        ``nearest_calibrated``: when this uniform width has no batch-norm statistics, use the
        nearest width that has (the width actually set is ``net.width``). To calibrate a width
        on the spot instead, :func:`usconvert.ensure_calibrated`."""
        self._set_width(width)
        if not nearest_calibrated or self.has_statistics():
            return
        if isinstance(width, Mapping):
            raise WidthError("nearest_calibrated applies to uniform widths only")
        calibrated = [float(label) for label in self.statistics.labels().values() if _is_number(label)] + [1.0]
        self._set_width(min(calibrated, key=lambda w: (abs(w - float(width)), -w)))

    @property
    def output_averaging(self) -> bool:
        """The paper's output averaging (Table 4), off by default: every dense convolution
        scales its output by its full count of input channels over the active count. Identity
        at width 1.0; below it the network is no longer the original model's sub-network (a
        choice of training, saved with the network, baked in by export).

        Linear layers are left alone, as in the paper's code: averaging a classifier multiplies
        its logits by full / active inputs (4 at 0.25x), a scale one set of weights cannot serve
        at every width (on Fashion-MNIST it cost 5 points at 1.0x and 10 at 0.25x, RESULTS.md)."""
        return bool(self.averaged_layers)

    @output_averaging.setter
    def output_averaging(self, on: bool) -> None:
        self.average_outputs_of([name for name, layer in self.layers.items() if isinstance(layer, SlimConv)]
                                if on else [])

    @property
    def averaged_layers(self) -> list[str]:
        """The layers whose output is averaged, by name (a saved network records them)."""
        return [name for name, layer in self.layers.items() if getattr(layer, "output_averaging", False)]

    def average_outputs_of(self, names: Collection[str]) -> None:
        """Average the outputs of exactly these convolution or linear layers, and no others:
        what a file recorded, whichever rule ``output_averaging`` followed when it was saved."""
        names = set(names)
        weighted = {name for name, layer in self.layers.items() if isinstance(layer, (SlimConv, SlimLinear))}
        if names - weighted:
            raise UsconvertError(f"output averaging applies to convolution and linear layers; not to "
                                 f"{', '.join(sorted(names - weighted))}")
        for name in weighted:
            self.layers[name].output_averaging = name in names
        self._eval_views.clear()

    def freeze_spaces(self, reasons: Mapping[str, str]) -> None:
        """Keep these spaces whole from now on, each with its reason (the conversion self-check
        freezes what it finds wrong). The width is set back to 1.0."""
        for name, reason in reasons.items():
            space = self.space(name)
            if reason not in space.frozen_reasons:
                space.frozen_reasons.append(reason)
        self.set_width(1.0)

    def has_statistics(self) -> bool:
        """Whether eval mode can run at this width: full width, no batch norm, or calibrated."""
        return (self.is_full_width() or not self.batch_norm_layers()
                or self.statistics.get(self.configuration_key()) is not None)

    def _set_width(self, width: Width) -> None:
        if isinstance(width, Mapping):
            ratios = {}
            for name, ratio in width.items():
                space = self.space(name)
                if space.frozen:
                    raise WidthError(f"space {name!r} is frozen ({space.frozen_reasons[0]}) and has no width to set")
                ratios[name] = self._check_ratio(ratio, f"width of space {name!r}")
            for space in self.spaces:
                space.active = self._active(space, ratios.get(space.name, 1.0))
            width = dict(width)
        else:
            ratio = self._check_ratio(width, "width")
            for space in self.spaces:
                space.active = self._active(space, ratio)
            width = ratio
        self._width = width
        self._configuration_key = configuration_key(self.configuration())
        self._apply_statistics()

    def _check_ratio(self, ratio: Any, what: str) -> float:
        try:
            value = float(ratio)
        except (TypeError, ValueError):
            raise WidthError(f"{what} must be a number, got {ratio!r}") from None
        if not (self.min_width - 1e-9 <= value <= 1.0 + 1e-9):
            raise WidthError(f"{what} {value:g} is outside [{self.min_width:g}, 1.0], the range this network "
                             f"was converted for (convert --min-width sets it)")
        return min(value, 1.0)

    def _active(self, space: Space, ratio: float) -> int:
        if space.frozen:
            return space.size
        return active_units(space.size, ratio, self.divisor, space.step, space.unit_channels)

    def configuration(self) -> list[int]:
        """Active unit counts of the slimmable spaces, in order: what identifies a width."""
        return [space.active for space in self.slimmable_spaces]

    def configuration_key(self) -> str:
        return self._configuration_key

    def is_full_width(self) -> bool:
        return all(space.active == space.size for space in self.spaces)

    def width_label(self) -> str:
        """A uniform width's ratio; a nonuniform width's name, where one was calibrated under a
        name (``calibrate --configs``), else ``nonuniform <key>``."""
        if isinstance(self._width, float):
            return f"{self._width:g}"
        key = self.configuration_key()
        return self.statistics.labels().get(key) or f"nonuniform {key}"

    def width_fields(self) -> dict[str, Any]:
        """The current width as every output row gives it: ``width`` a number (null for a
        nonuniform width) and ``configuration`` the nonuniform width's name (else null)."""
        uniform = isinstance(self._width, float)
        return {"width": self._width if uniform else None, "configuration": None if uniform else self.width_label()}

    def sliced_tensors(self) -> Iterator[tuple[str, ParameterSlice]]:
        """Parameters and buffers used outside the layers (a layer scale, a position embedding)
        that the network slices at run time: (attribute path, the slicing op)."""
        for node in self.model.graph.nodes:
            if node.op == "call_module" and node.args and getattr(node.args[0], "op", None) == "get_attr":
                helper = self.model.get_submodule(node.target)
                if isinstance(helper, ParameterSlice):
                    yield node.args[0].target, helper

    # -- batch-norm statistics ---------------------------------------------------------------
    def batch_norm_layers(self) -> dict[str, SlimBatchNorm]:
        return {name: m for name, m in self.layers.items() if isinstance(m, SlimBatchNorm)}

    @contextmanager
    def sliced_statistics(self, *, private_affine: bool = False) -> Iterator[None]:
        """Within the block, eval at any width uses the full-width statistics (and, unless
        ``private_affine``, shared batch-norm weights) sliced to the active channels instead of
        calibrated (or private) ones: for counting and comparisons, not for accuracy."""
        self._sliced_statistics = "private affine" if private_affine else "shared affine"
        self._apply_statistics()
        try:
            yield
        finally:
            self._sliced_statistics = None
            self._apply_statistics()

    def clear_width_statistics(self) -> None:
        """Forget what was computed per width below 1.0 (calibrated and tracked statistics,
        private batch-norm weights): after the channels moved, it no longer fits."""
        self.statistics.clear()
        self._tracked.clear()
        self._tracked_counters.clear()
        self._apply_statistics()

    def track_statistics(self, widths: list[Width]) -> None:
        """Let train-mode forwards at these widths update running statistics of their own (the
        paper tracks the min and max widths during training, so both can be validated). Width
        1.0 always tracks into the layers' own buffers."""
        previous = self._width
        for width in widths:
            self.set_width(width)
            if self.is_full_width():
                continue
            key = self.configuration_key()
            self._tracked.add(key)
            if self.statistics.get(key) is None:
                for name, layer in self.batch_norm_layers().items():
                    if layer.track_running_stats:
                        n = len(layer.active_channels()["channel"])
                        device = layer.running_mean.device
                        self.statistics.put(key, self.width_label(), name, torch.zeros(n, device=device),
                                            torch.ones(n, device=device))
        self.set_width(previous)

    def privatize_norms(self, widths: list[float]) -> None:
        """Switchable batch norm (the S-Net baseline of the paper's Table 1): each of these
        widths gets private batch-norm weight and bias, starting from the shared ones. A width
        between them borrows those of the nearest larger one (width 1.0: the layers' own)."""
        previous = self._width
        for width in widths:
            self.set_width(width)
            if self.is_full_width():
                continue
            for name, layer in self.batch_norm_layers().items():
                if layer.weight is not None:
                    channels = layer.active_channels()["channel"]
                    self.statistics.put_affine(self.configuration_key(), self.width_label(), name,
                                               layer.weight[channels], layer.bias[channels], channels)
        self.set_width(previous)

    def _private_affine(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        own = self.statistics.affine(self.configuration_key())
        if not own and isinstance(self._width, float) and not self.is_full_width():
            labels = self.statistics.labels()
            larger = [(float(labels[key]), key) for key in labels
                      if _is_number(labels[key]) and float(labels[key]) >= self._width and self.statistics.affine(key)]
            own = self.statistics.affine(min(larger)[1]) if larger else {}
        out = {}
        for name, (weight, bias, channels) in own.items():
            active = self.layers[name].active_channels()["channel"]
            if channels.numel() != len(active) or channels.tolist() != active:
                position = {c: i for i, c in enumerate(channels.tolist())}
                index = torch.tensor([position[c] for c in active], device=weight.device)
                weight, bias = weight.index_select(0, index), bias.index_select(0, index)
            out[name] = (weight, bias)
        return out

    @contextmanager
    def batch_statistics_only(self) -> Iterator[None]:
        """Within the block, every width normalises with batch statistics in train mode and
        updates no running statistics (what calibration needs)."""
        self._batch_statistics_only = True
        self._apply_statistics()
        try:
            yield
        finally:
            self._batch_statistics_only = False
            self._apply_statistics()

    def _apply_statistics(self) -> None:
        layers = self.batch_norm_layers()
        # sliced statistics (counting, comparisons) mean the shared parameters too
        shared_affine = self._sliced_statistics == "shared affine"
        affine = self._private_affine() if self.statistics.entries and not shared_affine else {}
        for name, layer in layers.items():
            layer.width_affine = affine.get(name)
        if self._batch_statistics_only:
            for layer in layers.values():
                layer.width_statistics = BATCH_STATISTICS_ONLY
            return
        if self.is_full_width() or self._sliced_statistics:
            for layer in layers.values():
                layer.width_statistics = OWN_STATISTICS
            return
        key = self.configuration_key()
        stored = self.statistics.get(key) or {}
        calibrated = ", ".join(sorted(self.statistics.labels().values())) or "none"
        missing = MissingStatistics(
            f"no batch-norm statistics for width {self.width_label()} (calibrated widths: {calibrated}); "
            f"compute them with `usconvert calibrate NETWORK --data DATA -o CALIBRATED.safetensors` (in Python: "
            f"usconvert.calibrate or usconvert.ensure_calibrated), or evaluate in train mode")
        track = key in self._tracked
        for name, layer in layers.items():
            pair = stored.get(name)
            batches = self._tracked_batches(key, name, pair[0].device) if track and pair is not None else None
            layer.width_statistics = (WidthStatistics(*pair, track=track, batches=batches) if pair is not None
                                      else missing)

    def _tracked_batches(self, key: str, layer: str, device: torch.device) -> torch.Tensor:
        """The batch counter of a tracked width's statistics in one layer (momentum=None layers
        take the cumulative average over it, as torch's batch norm does with its own counter)."""
        counters = self._tracked_counters.setdefault(key, {})
        if layer not in counters:
            counters[layer] = torch.zeros((), dtype=torch.long, device=device)
        return counters[layer]

    # -- introspection -----------------------------------------------------------------------
    def active_channels(self, layer: str) -> dict[str, list[int]]:
        """The indices of a layer's active input/output (or normalised) channels at this width."""
        return self.layers[layer].active_channels()

    def space_digest(self) -> str:
        """A digest of the channel-space table, to check that a saved file matches its model."""
        table = [[s.name, s.size, s.step, s.unit_channels, s.frozen] for s in self.spaces]
        return hashlib.sha256(json.dumps(table).encode()).hexdigest()[:32]

    def extra_repr(self) -> str:
        return (f"width={self.width_label()}, spaces={len(self.spaces)} ({len(self.slimmable_spaces)} slimmable), "
                f"divisor={self.divisor}, min_width={self.min_width:g}")
