"""Networks without batch norm whose convolutions are weight-normalised (the paper's WDSR):
every width is the full network's computed weight, sliced."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import weight_norm as hook_weight_norm
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import usconvert
from usconvert.export import export
from usconvert.verify import relative_error

from helpers import check_conversion


class _Block(nn.Module):
    def __init__(self, channels: int, norm):
        super().__init__()
        self.expand = norm(nn.Conv2d(channels, 4 * channels, 3, padding=1))
        self.reduce = norm(nn.Conv2d(4 * channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.reduce(torch.relu(self.expand(x)))


class _TinySR(nn.Module):
    """WDSR's shape: weight-normalised residual body, no batch norm, pixel-shuffle tail, and a
    global skip of the upscaled input."""

    def __init__(self, norm, channels: int = 16, scale: int = 2):
        super().__init__()
        self.head = norm(nn.Conv2d(3, channels, 3, padding=1))
        self.body = nn.Sequential(_Block(channels, norm), _Block(channels, norm))
        self.tail = nn.Sequential(norm(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)), nn.PixelShuffle(scale))
        self.skip = nn.Sequential(norm(nn.Conv2d(3, 3 * scale * scale, 5, padding=2)), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.tail(self.body(self.head(x))) + self.skip(x)


NORMS = {"parametrization": weight_norm, "hook": hook_weight_norm, "spectral": spectral_norm}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_weight_normalised_network_slims_and_equals_masked_full_network(kind):
    net = check_conversion(_TinySR(NORMS[kind]), (3, 12, 12), widths=(0.6,))
    assert [s.name for s in net.slimmable_spaces] == ["head:out", "body.0.expand:out", "body.1.expand:out"]
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    net.eval()
    with torch.no_grad():
        full = net(x)
        net.set_width(0.25)
        assert relative_error(net(x), full) > 1e-3  # a smaller width is a different function


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["parametrization", "hook"])
def test_gradients_reach_the_normalisation_parameters_and_export_is_plain(kind, tmp_path):
    torch.manual_seed(0)
    model = _TinySR(NORMS[kind])
    net = usconvert.convert(model, (3, 12, 12))
    x = torch.randn(2, 3, 12, 12)
    net.train()
    net.set_width(0.5)
    net(x).square().mean().backward()
    names = {"parametrization": ("head.parametrizations.weight.original0", "head.parametrizations.weight.original1"),
             "hook": ("head.weight_g", "head.weight_v")}[kind]
    grads = {n: p.grad for n, p in net.model.named_parameters()}
    for name in names:
        assert grads[name] is not None and grads[name].abs().sum() > 0
    assert grads[names[1]][8:].abs().sum() == 0  # head's inactive outputs (8 of 16 at 0.5) get nothing

    exported = export(net, 0.5)
    assert type(exported.get_submodule("head")) is nn.Conv2d
    assert exported.get_submodule("head").weight.shape == (8, 3, 3, 3)
    assert not any("parametrizations" in n or n.endswith("_g") for n, _ in exported.named_parameters())
    net.eval()
    net.set_width(0.5)
    with torch.no_grad():
        assert relative_error(exported(x), net.model(x)) < 1e-6
    copy.deepcopy(model)  # the user's model stays copyable (weight_norm hooks leave graph tensors behind)

    path = usconvert.save(net, tmp_path / "sr.safetensors")
    loaded = usconvert.load(path, _TinySR(NORMS[kind]))
    loaded.eval()
    loaded.set_width(0.5)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_other_forward_pre_hooks_freeze_their_layer():
    model = _TinySR(weight_norm)
    model.body[0].expand.register_forward_pre_hook(lambda module, args: None)
    net = usconvert.convert(model, (3, 12, 12))
    space = net.space("body.0.expand:out")
    assert space.frozen and "forward pre-hooks" in space.frozen_reasons[0]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_export_after_an_optimizer_step_uses_the_current_hook_weight():
    """A ``weight_norm`` hook's weight is the last forward's: export recomputes it from its
    sources, so a step without a forward since is not lost."""
    torch.manual_seed(0)
    net = usconvert.convert(_TinySR(hook_weight_norm), (3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    net.train()
    net(x).square().mean().backward()
    torch.optim.SGD(net.parameters(), lr=0.5).step()  # the hook tensors are now stale
    exported = export(net, 0.5)
    net.eval()
    net.set_width(0.5)
    with torch.no_grad():
        assert relative_error(exported(x), net(x)) <= 1e-5
