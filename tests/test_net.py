"""The SlimmableNet API: widths, spaces, statistics, gradients."""

import copy

import pytest
import timm
import torch

import usconvert
from usconvert import CalibrationRequiredError, WidthError
from usconvert.nn.layout import Space


@pytest.fixture(scope="module")
def net():
    return usconvert.convert(timm.create_model("mobilenetv2_050", num_classes=10), (3, 32, 32))


def test_width_outside_the_range_is_refused(net):
    for bad in (0.1, 1.2, -1, "wide"):
        with pytest.raises(WidthError):
            net.set_width(bad)
    net.set_width(1.0)


def test_uniform_widths_are_nested_prefixes(net):
    previous = None
    for width in (0.25, 0.4, 0.6, 0.8, 1.0):
        net.set_width(width)
        active = {name: net.active_channels(name)["out"] for name in net.layers if "out" in net.active_channels(name)}
        if previous:
            assert all(set(previous[n]) <= set(active[n]) for n in active)
        previous = active
    net.set_width(1.0)


def test_nonuniform_width_by_space_name(net):
    name = net.slimmable_spaces[3].name
    net.set_width({name: 0.5})
    for space in net.spaces:
        assert space.active == (net.slimmable_spaces[3].size // 2 if space.name == name else space.size) or \
            space.name == name
    assert net.space(name).active < net.space(name).size
    with pytest.raises(WidthError, match="no channel space named"):
        net.set_width({"nonexistent:out": 0.5})
    with pytest.raises(WidthError, match="frozen"):
        net.set_width({net.spaces[-1].name: 0.5})
    with pytest.raises(WidthError, match="outside"):
        net.set_width({name: 0.01})
    net.set_width(1.0)


def test_setting_a_width_does_not_retrace(net):
    graph, code = net.model.graph, net.model.code
    net.set_width(0.3)
    net.set_width(0.7)
    assert net.model.graph is graph and net.model.code == code
    net.set_width(1.0)


def test_eval_at_an_uncalibrated_width_says_what_to_do(net):
    net.eval()
    net.set_width(0.5)
    with pytest.raises(CalibrationRequiredError, match="usconvert calibrate"):
        net(torch.randn(1, 3, 32, 32))
    net.train()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    net.set_width(1.0)


def test_stored_statistics_are_used_in_eval(net):
    net.set_width(0.5)
    key = net.configuration_key()
    for name, layer in net.batch_norm_layers().items():
        n = len(net.active_channels(name)["channel"])
        net.statistics.put(key, "0.5", name, torch.zeros(n), torch.ones(n))
    net.set_width(0.5)
    net.eval()
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    net.train()
    net.set_width(1.0)


def test_gradients_reach_the_shared_full_size_weights(net):
    net.train()
    net.zero_grad()
    net.set_width(0.25)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    conv = net.layers["conv_stem"]
    active = len(net.active_channels("conv_stem")["out"])
    assert conv.weight.grad.shape == conv.weight.shape
    assert conv.weight.grad[:active].abs().sum() > 0
    assert conv.weight.grad[active:].abs().sum() == 0
    net.zero_grad()
    net.set_width(1.0)


def test_training_at_a_small_width_leaves_full_width_statistics_alone(net):
    bn = net.layers["bn1"]
    before = bn.running_mean.clone()
    net.train()
    net.set_width(0.25)
    net(torch.randn(4, 3, 32, 32))
    assert torch.equal(bn.running_mean, before)
    net.set_width(1.0)
    net(torch.randn(4, 3, 32, 32))
    assert not torch.equal(bn.running_mean, before)


def test_deepcopy_gives_an_independent_network(net):
    twin = copy.deepcopy(net)
    twin.set_width(0.25)
    assert net.width == 1.0
    x = torch.randn(2, 3, 32, 32)
    net.eval(), twin.eval()
    twin.set_width(1.0)
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))
    net.train()


def test_spaces_describe_themselves(net):
    space = net.spaces[0]
    assert space.name == "conv_stem:out" and space.size == 16 and "conv_stem" in space.members
    assert net.spaces[-1].frozen_reasons == ["model output"]
    # the output is frozen for the caller, not by a rule: a census does not count it
    assert net.spaces[-1].frozen and not net.spaces[-1].frozen_by_rule and not space.frozen_by_rule
    single = Space("squeeze:out", 1, frozen_reasons=["a single channel"])
    assert single.frozen_by_rule
