"""Exact or frozen: each way a conversion once computed a different function without saying so
(numbers read from shapes, in-place binary ops, tensor bounds, tied weights, the batch folded
into channels, a convolution called twice under batch-norm folding, a stale eval cache) has a
test here, and so has the conversion self-check that catches what no rule covers."""

import importlib
import operator

import pytest
import torch
from torch import nn

import usconvert
from helpers import check_conversion, frozen_reasons
from usconvert.errors import ConversionError
from usconvert.export import export
from usconvert.graph import rules
from usconvert.graph.rules import TensorValue
from usconvert.graph.tensor_rules import keep_dims
from usconvert.verify import relative_error, write_informative_values

SIZE = (3, 8, 8)
C = 64  # wide enough that random nonuniform widths differ between spaces (divisor 8)


class Stem(nn.Module):
    """Two 1x1 convolutions of the input and a consumer: the pieces the cases below combine."""

    def __init__(self, out: int = C):
        super().__init__()
        self.a = nn.Conv2d(3, out, 1)
        self.b = nn.Conv2d(3, out, 1)
        self.head = nn.Conv2d(out, 4, 1)


class ShapeScale(Stem):
    def forward(self, x):
        y = self.a(x)
        return self.head(y * y.shape[1] ** -0.5)


class SizeDivide(Stem):
    def forward(self, x):
        y = self.a(x)
        return self.head(y / y.size(1) + y / y.numel())


def test_a_channel_count_used_as_a_value_freezes_its_space():
    for model in (ShapeScale(), SizeDivide()):
        net = check_conversion(model, SIZE, configurations=3)
        assert net.space("a:out").frozen
        assert any("a number computed from a channel count" in r for r in net.space("a:out").frozen_reasons)


class SizesInReshape(Stem):
    def forward(self, x):
        y = self.a(x)
        B, C_, H, W = y.shape
        return self.head(y.view(B, C_, H * W).view(B, C_, H, W))


def test_channel_counts_that_only_size_a_reshape_stay_slimmable():
    net = check_conversion(SizesInReshape(), SIZE, configurations=3, batches=(1, 4))
    assert not net.space("a:out").frozen


def test_the_registry_refuses_a_second_rule_for_a_key():
    with pytest.raises(rules.DuplicateRuleError, match="add_"):
        rules.method_rule("add_")(lambda ctx: None)
    with pytest.raises(rules.DuplicateRuleError):
        rules.function_rule(operator.add)(lambda ctx: None)


class InPlaceAddOfConcatenation(Stem):
    def __init__(self):
        super().__init__(out=C // 2)
        self.c = nn.Conv2d(3, C, 1)
        self.head = nn.Conv2d(C, 4, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1).add_(self.c(x)))


class InPlaceGate(Stem):
    def forward(self, x):
        y = self.a(x)
        y.mul_(torch.sigmoid(self.b(x)))
        y.sub_(self.b(x)).div_(torch.sigmoid(self.b(x)) + 1).pow_(1)
        return self.head(y)


@pytest.mark.parametrize("model", [InPlaceAddOfConcatenation, InPlaceGate])
def test_in_place_binary_ops_tie_their_second_operand(model):
    net = check_conversion(model(), SIZE, configurations=4)
    assert not net.space("a:out").frozen


class TensorBound(Stem):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.head(self.op(self.a(x), self.b(x)))


@pytest.mark.parametrize("op", [lambda y, t: torch.clamp(y, min=t), lambda y, t: torch.clip(y, max=t),
                                lambda y, t: y.clamp_min(t), lambda y, t: torch.clamp_max(y, t),
                                lambda y, t: y.clamp(t, t + 1)], ids=["clamp", "clip", "clamp_min", "clamp_max",
                                                                      "clamp_method"])
def test_tensor_bounds_of_clamp_shrink_with_the_clamped_tensor(op):
    net = check_conversion(TensorBound(op), SIZE, configurations=4)
    assert not net.space("a:out").frozen
    net.set_width({"a:out": 0.25})
    assert net.active_channels("b")["out"] == list(range(16))  # tied: one space for both


class TiedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3)
        self.fc = nn.Linear(C, C)

    def forward(self, x):
        y = self.fc(self.conv(x).mean((2, 3)))
        return y @ self.fc.weight  # the layer's own weight read again: (B, out) @ (out, in)


def test_a_layer_weight_read_outside_the_layer_shrinks_with_the_layer():
    net = check_conversion(TiedWeight(), SIZE, configurations=3)
    assert not net.space("fc:out").frozen
    net.set_width(0.25)
    small = export(net)
    x = torch.randn(2, *SIZE, dtype=torch.float64)
    net.eval_cache = False
    with net.sliced_statistics(), torch.no_grad():
        assert relative_error(small(x), net(x)) <= 1e-9  # sliced once, not twice
    assert small.fc.weight.shape == (16, C)  # its inputs are the model output: whole


class BatchFold(Stem):
    def __init__(self, spatial_product: bool):
        super().__init__()
        self.spatial_product = spatial_product

    def forward(self, x):
        y = self.a(x)
        B, C_, H, W = y.shape
        z = y.reshape(B * C_, H * W) if self.spatial_product else y.reshape(B * C_, -1)
        z = z - z.mean(1, keepdim=True)  # instance-norm-like: per (sample, channel) row
        return self.head(z.reshape(B, C_, H, W))


@pytest.mark.parametrize("spatial_product", [False, True])
def test_the_batch_folded_into_channels_follows_the_batch(spatial_product):
    net = check_conversion(BatchFold(spatial_product), SIZE, batches=(1, 2, 4), configurations=2)
    assert not net.space("a:out").frozen


class Expanded(Stem):
    def forward(self, x):
        y = self.a(x)
        gate = self.b(x).mean((2, 3), keepdim=True)
        return self.head(y * gate.expand(y.size()) + gate.expand(-1, -1, y.shape[2], y.shape[3]))


def test_expand_to_a_size_read_from_a_tensor_ties_the_channels():
    net = check_conversion(Expanded(), SIZE, configurations=3)
    assert not net.rule_errors
    assert not net.space("a:out").frozen


class CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, C, 1)
        self.conv = nn.Conv2d(C, C, 3, padding=1)
        self.bn = nn.BatchNorm2d(C)
        self.head = nn.Conv2d(C, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.bn(self.conv(x)) + self.conv(x))  # the second call has no norm


def test_batch_norm_folds_into_one_call_site_of_a_convolution_called_twice():
    model = write_informative_values(CalledTwice().double().eval())
    net = usconvert.convert(model, SIZE)
    x = torch.randn(3, *SIZE, dtype=torch.float64)
    folded = export(net, 1.0, fold_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) <= 1e-9
    net.set_width(0.25)
    net.eval_cache = False
    with net.sliced_statistics(), torch.no_grad():
        assert relative_error(export(net, fold_bn=True)(x), net.eval()(x)) <= 1e-9


class WithBatchNorm(nn.Module):
    def __init__(self, momentum=0.1):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3)
        self.bn = nn.BatchNorm2d(C, momentum=momentum)
        self.head = nn.Conv2d(C, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


def _eval(net, x):
    with torch.no_grad():
        return net(x)


def _uncached(net, x):
    net.eval_cache = False
    try:
        return _eval(net, x)
    finally:
        net.eval_cache = True


@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("change", ["data in place", "data assigned", "load with assign", "parameter replaced",
                                    "buffer written through data"])
def test_the_eval_cache_never_serves_stale_weights(change, width):
    net = usconvert.convert(write_informative_values(WithBatchNorm().eval()), SIZE)
    net.eval()
    x = torch.randn(2, *SIZE)
    with net.sliced_statistics():
        net.set_width(width)
        before = _eval(net, x)
        if change == "data in place":
            net.model.conv.weight.data.mul_(0.5)
        elif change == "data assigned":
            net.model.conv.weight.data = net.model.conv.weight.data * 0.5
        elif change == "load with assign":
            state = {k: v * 0.5 if k.endswith("weight") else v for k, v in net.model.state_dict().items()}
            net.model.load_state_dict(state, assign=True)
        elif change == "parameter replaced":
            net.model.conv.weight = nn.Parameter(net.model.conv.weight.detach() * 0.5)
        else:
            net.model.bn.running_mean.data.add_(1.0)
        after = _eval(net, x)
        assert not torch.allclose(after, before)
        assert torch.allclose(after, _uncached(net, x), atol=1e-6)


class WithConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, C, 3)
        self.branch = nn.Conv2d(C, C, 1)
        self.head = nn.Conv2d(2 * C, 4, 1)

    def forward(self, x):
        stem = torch.relu(self.stem(x))
        return self.head(torch.cat([stem, self.branch(stem)], 1))  # at a width, its channels are not leading


@pytest.mark.parametrize("copied", ["output averaging", "gathered channels"])
def test_the_eval_cache_never_serves_copies_of_the_weights(copied):
    """Averaged weights and gathered channels are copies, not views: a width with them is not
    cached (a write through ``.data`` bumps no version, so a cached copy would be stale)."""
    net = usconvert.convert(WithBatchNorm().eval() if copied == "output averaging" else WithConcat(), SIZE)
    net.output_averaging = copied == "output averaging"
    net.eval()
    x = torch.randn(2, *SIZE)
    with net.sliced_statistics():
        net.set_width(0.5)
        before = _eval(net, x)
        net.model.head.weight.data.mul_(0.5)
        after = _eval(net, x)
        assert not torch.allclose(after, before)
        assert torch.allclose(after, _uncached(net, x), atol=1e-6)


def test_forward_hooks_registered_after_the_first_eval_call_run():
    net = usconvert.convert(WithBatchNorm().eval(), SIZE)
    net.eval()
    x = torch.randn(2, *SIZE)
    _eval(net, x)  # builds the cache
    seen = []
    handle = net.model.conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    _eval(net, x)
    assert seen == [(2, C, 6, 6)]
    handle.remove()
    _eval(net, x)
    assert len(seen) == 1


def test_batch_norm_without_momentum_averages_every_batch_at_a_tracked_width():
    torch.manual_seed(0)
    net = usconvert.convert(WithBatchNorm(momentum=None), SIZE)
    net.track_statistics([0.5])
    net.train()
    net.set_width(0.5)
    batches = [torch.randn(4, *SIZE) for _ in range(3)]
    means = []
    for x in batches:
        net(x)
        with torch.no_grad():
            means.append(net.model.conv(x).mean((0, 2, 3)))  # the active channels' batch means
    stored = net.statistics.get(net.configuration_key())["bn"][0]
    assert torch.allclose(stored, torch.stack(means).mean(0), atol=1e-5)


# -- the conversion self-check -----------------------------------------------------------------
class Sum(Stem):
    def forward(self, x):
        return self.head(self.a(x) + self.b(x))


def _untie_add(monkeypatch):
    """Weaken the add rule to pass its first operand through: the second operand's space is
    never tied, and at nonuniform widths the sum no longer fits."""
    importlib.import_module("usconvert.graph.analyze")  # registers the rules first, so that this one replaces
    monkeypatch.setitem(rules.FUNCTION_RULES, operator.add, lambda ctx: keep_dims(ctx, ctx.args[0]))


def test_the_self_check_freezes_the_spaces_a_wrong_rule_leaves_slimmable(monkeypatch):
    _untie_add(monkeypatch)
    net = usconvert.convert(Sum(), SIZE)
    assert set(net.self_check.frozen) == {"a:out", "b:out"}
    assert all("failed the conversion self-check" in net.space(n).frozen_reasons[-1] for n in ("a:out", "b:out"))
    check_conversion_at_every_width(net)
    unchecked = usconvert.convert(Sum(), SIZE, check=False)
    assert not unchecked.space("a:out").frozen


class ZeroScaled(Stem):
    """A mean over channels reaches the output only through a gain that starts at zero (ReZero,
    NFNets' skip gains; ConvNeXt's 1e-6 is as good as zero to a comparison) and a zero classifier
    (torchvision's ViT): in the fresh model every output is the classifier's bias."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(C, 1, 1))
        nn.init.zeros_(self.head.weight)

    def forward(self, x):
        y = self.a(x)
        return self.head(self.gain * y * y.mean(1, keepdim=True))


def test_the_self_check_sees_past_what_a_fresh_model_starts_at_zero(monkeypatch):
    """Weaken the mean's rule to forget that a mean over channels divides by their count: below
    width 1.0 it is no longer the masked model's mean, and only values that reach the output show it."""
    importlib.import_module("usconvert.graph.analyze")  # registers the rules first, so that this one replaces
    monkeypatch.setitem(rules.METHOD_RULES, "mean", lambda ctx: TensorValue(
        ctx.out_shape, tuple(None if d == 1 else dim for d, dim in enumerate(ctx.args[0].dims))))
    model = ZeroScaled()
    net = usconvert.convert(model, SIZE)
    assert net.self_check.frozen.keys() == {"a:out"}
    for module in (model, net.model):  # the check's values are given back
        assert not module.gain.any() and not module.head.weight.any()


def check_conversion_at_every_width(net):
    x = torch.randn(2, *SIZE)
    for width in (0.25, 0.5, 1.0):
        net.set_width(width)
        with torch.no_grad():
            net.eval()(x)


def test_a_file_keeps_what_the_self_check_froze(monkeypatch, tmp_path):
    from usconvert.models import create
    from usconvert.serialize import load, save
    model, source = create("tv:resnet18", num_classes=5)
    net = usconvert.convert(model, (3, 32, 32), source=source)
    name = net.slimmable_spaces[1].name
    net.freeze_spaces({name: "failed the conversion self-check at the min width"})
    net.self_check.frozen[name] = "failed the conversion self-check at the min width"
    save(net, tmp_path / "n.safetensors")
    loaded = load(tmp_path / "n.safetensors")
    assert loaded.space(name).frozen and loaded.space_digest() == net.space_digest()


def test_a_mismatch_at_full_width_is_a_conversion_error(monkeypatch):
    convert_module = importlib.import_module("usconvert.convert")  # the package's name is the function
    real_rewrite = convert_module.rewrite

    def wrong_at_full_width(traced, analysis):
        result = real_rewrite(traced, analysis)
        with torch.no_grad():
            result.module.a.bias.add_(1.0)
        return result

    monkeypatch.setattr(convert_module, "rewrite", wrong_at_full_width)
    with pytest.raises(ConversionError, match="differs from the model at width 1.0"):
        usconvert.convert(Sum(), SIZE)


def test_the_self_check_leaves_the_network_as_it_was():
    model = WithBatchNorm().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    net = usconvert.convert(model, SIZE)
    assert net.self_check.errors.keys() == {"1.0", "min", "nonuniform"}
    assert all(torch.equal(v, net.model.state_dict()[k]) for k, v in state.items())
    assert net.width == 1.0 and not net.training and frozen_reasons(net) == ["model output"]


class BakedBatch(nn.Module):
    """An exported module that is right only at the traced batch of 2."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * (x.shape[0] / 2)


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_an_exported_file_is_verified_at_a_batch_other_than_the_traced_one(monkeypatch, tmp_path, suffix):
    from usconvert.errors import UsconvertError
    export_module = importlib.import_module("usconvert.export")
    real = export_module.export
    net = usconvert.convert(WithBatchNorm().eval(), SIZE)
    path = tmp_path / f"m{suffix}"
    export_module.write(net, path)  # the real export passes at both batches
    path.unlink()
    monkeypatch.setattr(export_module, "export", lambda *args, **kwargs: BakedBatch(real(*args, **kwargs)))
    with pytest.raises(UsconvertError, match="batches of 2 and 3"):
        export_module.write(net, path)
    assert not path.exists() and not list(tmp_path.iterdir())
