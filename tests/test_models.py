"""The engine on real timm and torchvision models (random weights, 64x64 inputs)."""

import pytest
import timm
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from helpers import check_conversion

MODELS = ["resnet18", "resnet50", "mobilenetv2_100", "mobilenetv3_large_100", "efficientnet_b0", "densenet121",
          "regnety_002", "convnext_atto", "ghostnet_100", "tv:resnet18", "tv:mobilenet_v2", "tv:shufflenet_v2_x0_5"]
SIZE = (3, 64, 64)


def build(name: str) -> torch.nn.Module:
    if name.startswith("tv:"):
        return torchvision.models.get_model(name[3:], weights=None, num_classes=10)
    return timm.create_model(name, num_classes=10)


def flops(net, width) -> int:
    net.set_width(width)
    with FlopCounterMode(display=False) as counter:
        net(torch.randn(2, *SIZE, dtype=torch.float64))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", MODELS)
def test_model_converts_exactly_and_shrinks(name):
    model = build(name)
    net = check_conversion(model, SIZE, batch=2)  # equivalence at 1.0, prefix equivalence at 3 widths
    assert not net.rule_errors

    net.train()
    net.set_width(net.min_width)
    out = net(torch.randn(2, *SIZE, dtype=torch.float64))
    assert out.shape == (2, 10)

    net.eval()
    with net.sliced_statistics():
        ratio = flops(net, net.min_width) / flops(net, 1.0)
    assert ratio <= 0.2, f"{name}: multiply-adds at min width are {ratio:.3f} of width 1.0"
