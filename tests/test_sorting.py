"""Importance-sorted channels: width 1.0 stays the same function, every width stays a
sub-network of the sorted one, and the leading channels are the important ones."""

import copy

import pytest
import torch
from torch import nn

import usconvert
from helpers import random_configuration
from test_models import MODELS, SIZE, build
from usconvert.models import load_state
from usconvert.sorting import CRITERIA, model_state, sort_channels
from usconvert.verify import prefix_error, relative_error, write_informative_values

TOL = 1e-9  # float64


def sorted_reference(model: nn.Module, net: usconvert.SlimmableNet) -> nn.Module:
    """The original architecture holding the sorted weights (conversion keeps state-dict keys)."""
    reference = copy.deepcopy(model)
    load_state(reference, model_state(net), "the sorted network")
    return reference


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_sorting_keeps_width_one_and_every_width_a_sub_network(name):
    torch.manual_seed(0)
    model = write_informative_values(build(name).double().eval())
    for p in model.parameters():  # trained-looking weights: channels of very different norms
        with torch.no_grad():
            p.mul_(torch.rand(p.shape[0], *[1] * (p.ndim - 1), dtype=p.dtype) * 2)
    net = usconvert.convert(model, SIZE, check=False)
    report = sort_channels(net, "l1")
    assert report.moved > 0 and report.error_at_full_width <= TOL
    x = torch.randn(3, *SIZE, dtype=torch.float64)
    net.eval()
    net.set_width(1.0)
    with torch.no_grad():
        assert relative_error(net(x), model(x)) <= TOL
    reference = sorted_reference(model, net)
    for width in (net.min_width, random_configuration(net, seed=1)):
        assert prefix_error(reference, net, width, x) <= TOL, width


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.mix = nn.Conv2d(16, 16, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        return self.head(torch.relu(self.mix(torch.relu(self.bn(self.conv(x))))))


def two_layers(dead: list[int]) -> tuple[nn.Module, usconvert.SlimmableNet]:
    """Channels ``dead`` of the first conv contribute nothing: their rows are zero."""
    torch.manual_seed(0)
    model = write_informative_values(TwoLayers().double().eval())
    with torch.no_grad():
        model.conv.weight[dead] = 0
        model.conv.bias[dead] = 0
        model.bn.bias[dead] = -5  # after the ReLU: exactly zero
        model.mix.weight[dead] = 0  # and the second conv's matching outputs too
        model.mix.bias[dead] = 0
    return model, usconvert.convert(model, (3, 8, 8), check=False, divisor=8)


def test_l1_moves_the_channels_that_matter_to_the_front():
    """Half the channels are dead: sorted, width 0.5 keeps exactly the live half and computes
    what the full network computes."""
    dead = list(range(0, 16, 2))
    model, net = two_layers(dead)
    sort_channels(net, "l1")
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    net.eval()
    with torch.no_grad(), net.sliced_statistics():
        full = net(x)
        net.set_width(0.5)
        assert relative_error(net(x), full) <= TOL
    unsorted = usconvert.convert(model, (3, 8, 8), check=False)
    unsorted.eval()
    with torch.no_grad(), unsorted.sliced_statistics():
        unsorted.set_width(0.5)
        assert relative_error(unsorted(x), full) > 0.01  # without sorting, width 0.5 loses live channels


def test_taylor_sees_what_the_next_layer_ignores():
    """The first conv's rows are all alive, but the second conv reads only half of them: only
    gradients know which half matters."""
    torch.manual_seed(0)
    model = write_informative_values(TwoLayers().eval())
    ignored = list(range(0, 16, 2))
    with torch.no_grad():
        model.mix.weight[:, ignored] = 0
    net = usconvert.convert(model, (3, 8, 8), check=False)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(2)]
    report = sort_channels(net, "taylor", data, batches=2)
    order = report.permuted["conv:out"]
    assert sorted(order[:8]) == list(range(1, 16, 2)), order  # the channels the next layer reads come first


def test_the_bn_criterion_orders_by_batch_norm_scale():
    model, net = two_layers([])
    with torch.no_grad():
        net.layers["bn"].weight.copy_(torch.arange(16, dtype=torch.float64))
    report = sort_channels(net, "bn")
    assert report.permuted["conv:out"] == list(range(15, -1, -1))


def test_frozen_spaces_and_statistics_of_other_widths():
    model, net = two_layers([])
    usconvert.calibrate(net, [(torch.randn(8, 3, 8, 8, dtype=torch.float64),)], [0.5], samples=8)
    head_before = net.layers["head.2"].weight.detach().clone()
    report = sort_channels(net, "l1")
    assert "head.2:out" not in report.permuted  # the model output is frozen and stays
    # its rows (the classes) kept their order; only its columns (the sorted channels) moved
    torch.testing.assert_close(net.layers["head.2"].weight.sum(1), head_before.sum(1))
    assert not torch.equal(net.layers["head.2"].weight, head_before)
    assert not net.statistics.labels()  # computed for the old order: dropped


def test_bad_criteria_are_clear():
    _, net = two_layers([])
    with pytest.raises(usconvert.UsconvertError, match="choose one of none, l1, l2, bn, taylor"):
        sort_channels(net, "magnitude")
    with pytest.raises(usconvert.UsconvertError, match="taylor needs data"):
        sort_channels(net, "taylor")
    assert sort_channels(net, "none").permuted == {}
    assert CRITERIA == ("none", "l1", "l2", "bn", "taylor")


def test_model_state_completes_shared_and_unread_tensors_of_the_model():
    """CoaT registers one position-encoding module under two names; the network holds it once.
    The sorted weights load back into the model under both names, sorted."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 1)
            self.encoding = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.blocks = nn.ModuleList([nn.Module()])
            self.blocks[0].encoding = self.encoding  # the same module, a second name
            self.register_buffer("unread", torch.arange(4.0))
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            return self.head(self.blocks[0].encoding(torch.relu(self.stem(x))).mean((2, 3)))

    torch.manual_seed(0)
    model = Shared().eval()
    net = usconvert.convert(model, (3, 8, 8))
    sort_channels(net, "l1")
    state = model_state(net, model)
    assert set(state) == set(model.state_dict())
    assert torch.equal(state["blocks.0.encoding.weight"], state["encoding.weight"])
    held = net.model.state_dict()
    held_key = next(k for k in state if k.endswith("encoding.weight") and k in held)
    assert torch.equal(state["encoding.weight"], held[held_key])
    load_state(model, state, "the sorted network")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert relative_error(net.eval()(x), model(x)) < 1e-5


@pytest.mark.parametrize("fp32", [False, True], ids=["float64", "fp32_norms"])
def test_the_check_at_width_one_allows_the_precision_the_model_computes_in(fp32):
    """The check runs in float64; a model whose norms compute in float32 whatever the input's
    type (timm's ``RmsNormFp32``, DeepSeek's ViT) reorders float32 sums, which move its output a
    few units of float32 and must pass, while a wrong permutation must still be caught."""
    from test_timm_layers import SIZE as NORM_SIZE, ChannelNorms

    model = write_informative_values(ChannelNorms(fp32).double().eval())
    net = usconvert.convert(model, NORM_SIZE, check=False)
    report = sort_channels(copy.deepcopy(net), "l1")
    assert report.moved > 0
    assert (report.error_at_full_width > TOL) == fp32 and report.error_at_full_width < 1e-6


def test_a_permutation_that_changes_width_one_is_undone_and_reported(monkeypatch):
    import usconvert.sorting as sorting

    model, net = two_layers(dead=[0, 1])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    original = sorting._element_order
    calls = []

    def one_member_left_behind(layout, orders):  # the second member keeps the old order
        calls.append(layout)
        return None if len(calls) == 2 else original(layout, orders)

    monkeypatch.setattr(sorting, "_element_order", one_member_left_behind)
    with pytest.raises(usconvert.ConversionError, match="sorting channels changed the network's output at width 1.0"):
        sort_channels(net, "l1")
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


class NonPersistentScale(nn.Module):
    """A per-channel tensor the state dict does not hold (``persistent=False``): the model builds
    it anew when a saved network is loaded, so a permutation of it would be lost."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1), nn.Linear(8, 5)
        self.register_buffer("scale", torch.linspace(0.5, 2, 16).view(1, 16, 1, 1), persistent=False)

    def forward(self, x):
        return self.fc(self.b(self.a(x) * self.scale).mean((2, 3)))


def test_a_space_along_a_non_persistent_buffer_keeps_its_order_through_save_and_load(tmp_path):
    torch.manual_seed(0)
    net = usconvert.convert(NonPersistentScale(), (3, 8, 8))
    report = sort_channels(net, "l1")
    assert report.kept_in_order == {"a:out": "the non-persistent buffer scale runs along it"}
    assert "a:out" not in report.permuted and report.permuted["b:out"] != sorted(report.permuted["b:out"])
    usconvert.save(net, tmp_path / "n.safetensors")
    loaded = usconvert.load(tmp_path / "n.safetensors", model=NonPersistentScale())
    x = torch.randn(2, 3, 8, 8)
    for width in (1.0, 0.5):
        net.set_width(width)
        loaded.set_width(width)
        with torch.no_grad():
            assert relative_error(loaded.train()(x), net.train()(x)) < 1e-6
