"""Multiply-adds and parameters per width."""

import pytest

import usconvert
from usconvert.models import create
from usconvert.profile import active_parameters, count_macs, count_torch_flops, summary


@pytest.fixture(scope="module")
def mobilenet():
    model, source = create("mobilenetv2_100")
    return usconvert.convert(model, (3, 224, 224), source=source)


def test_mobilenetv2_multiply_adds_match_the_paper(mobilenet):
    full = count_macs(mobilenet, 1.0)
    assert abs(full.macs - 300.8e6) / 300.8e6 < 0.01  # conv + linear, the paper's convention
    assert abs(full.total - 314.2e6) / 314.2e6 < 0.01  # fvcore's total includes batch norm


def test_counts_grow_with_width_and_parameters_shrink(mobilenet):
    counts = [count_macs(mobilenet, w).macs for w in (0.25, 0.5, 0.75, 1.0)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    mobilenet.set_width(0.25)
    small = active_parameters(mobilenet)
    mobilenet.set_width(1.0)
    assert active_parameters(mobilenet) == sum(p.numel() for p in mobilenet.parameters())
    assert small < 0.2 * active_parameters(mobilenet)
    assert mobilenet.width == 1.0  # counting restores the width


def test_summary(mobilenet):
    info = summary(mobilenet)
    assert info["slimmable_share"] == pytest.approx(1.0)
    assert info["frozen_spaces"] == 1 and info["spaces"][-1]["reasons"] == ["model output"]
    assert info["multiply_adds"]["min_over_full"] < 0.15
    assert info["spaces"][0]["active_at_min_width"] == 8


def test_torch_flop_counter_agrees_with_fvcore_and_runs_in_train_mode(mobilenet):
    from usconvert.profile import count_torch_flops
    for width in (1.0, 0.25):
        assert count_torch_flops(mobilenet, width).layer_macs == count_macs(mobilenet, width).macs
    train = count_torch_flops(mobilenet, 0.25, train=True)  # forward and backward
    assert train.layer_macs > 2 * count_macs(mobilenet, 0.25).macs
    assert mobilenet.width == 1.0 and all(p.grad is None for p in mobilenet.parameters())


def test_torch_tools_see_no_gradient_less_tensor_that_requires_grad():
    """A parameter sliced outside its layer (a position embedding) without autograd: torch
    makes such a view claim to require grad with no gradient function, and FlopCounterMode's
    module tracker (like any output hook that follows gradients) fails on it."""
    import torch
    from torch import nn
    from usconvert.profile import count_torch_flops

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 32, 4, stride=4)
            self.position = nn.Parameter(torch.randn(1, 16, 32))
            self.mlp = nn.Linear(32, 32)
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
            return self.head(self.mlp(tokens).mean(1))

    net = usconvert.convert(Tokens(), (3, 16, 16))
    count = count_torch_flops(net, 0.25)
    assert count.layer_macs == count_macs(net, 0.25).macs
    net.set_width(0.25)
    (target, slicing), = net.sliced_tensors()
    with torch.no_grad():
        assert not slicing(net.model.get_parameter(target)).requires_grad


def test_convolutions_with_string_padding_are_counted():
    """``padding="same"`` (ConvMixer's depthwise layers) and ``"valid"`` trace as
    ``aten::_convolution_mode``, which fvcore alone counts as 0."""
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 5, padding="same", groups=16),
                          nn.Conv2d(16, 32, 3, padding="valid"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))
    net = usconvert.convert(model, (3, 16, 16))
    counted = count_macs(net, 1.0)
    assert counted.by_layer == {"0": 16 * 3 * 9 * 256, "1": 16 * 25 * 256, "2": 32 * 16 * 9 * 196, "5": 320}
    for width in (1.0, net.min_width):
        assert count_torch_flops(net, width).layer_macs == count_macs(net, width).macs


def test_fused_attention_modules_are_counted_by_their_linear_layers():
    """In eval mode without gradients ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
    run one native kernel whose projections neither fvcore nor FlopCounterMode counts (torchvision's
    ViTs read two thirds of their multiply-adds). Hand-counted: 16 tokens of 16 features."""
    import torch
    from torch import nn

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.patches = nn.Conv2d(3, 16, 4, stride=4)
            self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            tokens = self.encoder(self.patches(x).flatten(2).transpose(1, 2))
            tokens = self.attention(tokens, tokens, tokens, need_weights=False)[0]
            return self.head(tokens.mean(1))

    net = usconvert.convert(Tokens(), (3, 16, 16))
    tokens, features = 16, 16
    projections = 4 * features * features * tokens  # query, key, value and output
    hand = {"patches": 16 * 3 * 16 * tokens, "encoder": projections + 2 * features * 32 * tokens,
            "attention": projections, "head": 16 * 10}
    fast_path = torch.backends.mha.get_fastpath_enabled()
    counted = count_macs(net, 1.0)
    assert counted.macs == sum(hand.values())
    assert {name: counted.by_layer[name] for name in ("patches", "head")} == {"patches": hand["patches"],
                                                                              "head": hand["head"]}
    assert count_torch_flops(net, 1.0).layer_macs == counted.macs
    assert torch.backends.mha.get_fastpath_enabled() == fast_path  # set back after counting
