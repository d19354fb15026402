"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN; issue 19's Sequencer): their input features slim
through the first layer's input weights, their hidden units stay whole, and a recurrence along
or across a channel dimension freezes it. Export, sorting, multiply-adds and parameter counts
see the sliced input weights."""

import pytest
import torch
from torch import nn

from helpers import check_conversion, frozen_reasons, random_configuration
from test_transformer_rules import ChannelsLast
from usconvert.dense import dense_module
from usconvert.profile import active_parameters, count_macs
from usconvert.search import _Cost
from usconvert.sorting import sort_channels
from usconvert.verify import relative_error

SIZE = (3, 6, 6)


class Rows(nn.Module):
    """Sequencer's token mixing: a recurrent layer along each row of a channels-last map, its
    hidden states projected back to the channels."""

    def __init__(self, rnn: nn.RNNBase, channels: int = 32):
        super().__init__()
        self.rnn = rnn
        directions = 2 if rnn.bidirectional else 1
        self.fc = nn.Linear(directions * (rnn.proj_size or rnn.hidden_size), channels)

    def forward(self, x):
        B, H, W, C = x.shape
        if self.rnn.batch_first:
            y, _ = self.rnn(x.reshape(B * H, W, C))
        else:
            y, _ = self.rnn(x.reshape(B * H, W, C).transpose(0, 1))
            y = y.transpose(0, 1)
        return x + self.fc(y).reshape(B, H, W, C)


RNNS = {
    "lstm_bidirectional": lambda: nn.LSTM(32, 6, batch_first=True, bidirectional=True),
    "lstm_two_layers_projected": lambda: nn.LSTM(32, 8, num_layers=2, batch_first=True, proj_size=5),
    "gru_time_first": lambda: nn.GRU(32, 6),
    "rnn_relu_bidirectional": lambda: nn.RNN(32, 6, nonlinearity="relu", batch_first=True, bidirectional=True),
}


def macs_by_hand(rnn: nn.RNNBase, inputs: int, steps: int) -> int:
    """Every weight matrix multiplies once per step of every sequence; the first layer's input
    weights at the active inputs."""
    total = 0
    for name, p in rnn.named_parameters():
        if p.ndim == 2:
            total += p.shape[0] * (inputs if name.startswith("weight_ih_l0") else p.shape[1])
    return total * steps


@pytest.mark.parametrize("kind", RNNS)
def test_a_recurrent_layer_slims_its_inputs_and_keeps_its_hidden_units(kind):
    model = ChannelsLast(Rows(RNNS[kind]()))
    net = check_conversion(model, SIZE, configurations=2)
    assert not net.space("stem:out").frozen, frozen_reasons(net)
    rnn = net.layers["block.rnn"]
    net.set_width(0.25)
    active = len(net.active_channels("block.rnn")["in"])
    assert active == 8
    # multiply-adds: counted per weight matrix (fvcore counts none for recurrent ops), and the
    # search's estimate agrees at any configuration
    steps = SIZE[1] * SIZE[2]
    assert count_macs(net).by_layer["block.rnn"] == macs_by_hand(rnn, active, steps)
    assert count_macs(net, 1.0).by_layer["block.rnn"] == macs_by_hand(rnn, 32, steps)
    cost = _Cost(net, "macs", 1)
    for configuration in (0.25, 0.6, random_configuration(net, seed=3)):
        net.set_width(configuration)
        assert cost.macs_estimate() == pytest.approx(count_macs(net).macs, rel=1e-9)
    # the dense export is the original class at the active inputs, and computes the same
    net.set_width(0.6)
    dense = dense_module(net)
    plain = dense.get_submodule("block.rnn")
    assert type(plain) is type(RNNS[kind]()) and plain.input_size == plain.weight_ih_l0.shape[1] < 32
    assert active_parameters(net) == sum(p.numel() for p in dense.parameters())
    x = torch.randn(2, *SIZE, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(dense(x), net(x)) <= 1e-12


def test_a_slimmed_recurrent_layer_trains_its_active_input_columns_only():
    net = check_conversion(ChannelsLast(Rows(RNNS["lstm_bidirectional"]())), SIZE)
    net.train()
    net.set_width(0.25)
    net(torch.randn(2, *SIZE, dtype=torch.float64)).sum().backward()
    rnn = net.layers["block.rnn"]
    for name in ("weight_ih_l0", "weight_ih_l0_reverse"):
        grad = getattr(rnn, name).grad
        assert grad[:, :8].abs().sum() > 0 and not grad[:, 8:].any(), name
    assert rnn.weight_hh_l0.grad.abs().sum() > 0
    net.set_width(1.0)  # the module's own weights again (its flat list was never rebound)
    assert all(a is b for a, b in zip(rnn._flat_weights, rnn.parameters()))


def test_timm_sequencer_block_slims_its_channels():
    from timm.models.sequencer import Sequencer2dBlock

    net = check_conversion(ChannelsLast(Sequencer2dBlock(32, 6, mlp_ratio=2.0)), SIZE)
    assert {"stem:out", "block.mlp_channels.fc1:out"} <= {s.name for s in net.slimmable_spaces}, frozen_reasons(net)
    assert count_macs(net, 0.25).macs < 0.35 * count_macs(net, 1.0).macs
    report = sort_channels(net, "l1")
    assert report.moved > 0 and report.error_at_full_width <= 1e-9


class AlongChannels(nn.Module):
    """A recurrence whose sequence is the channels (each channel a step): it mixes them."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(SIZE[1] * SIZE[2], 4, batch_first=True)

    def forward(self, x):  # (B, H, W, C)
        y, _ = self.rnn(x.flatten(1, 2).transpose(1, 2))  # (B, C, 4): C steps
        return x * y.mean(-1)[:, None, None, :]


def test_a_recurrence_along_the_channels_freezes_them():
    net = check_conversion(ChannelsLast(AlongChannels()), SIZE)
    assert net.space("stem:out").frozen
    assert any("recurrent layer along or across a channel dimension" in r
               for r in net.space("stem:out").frozen_reasons), frozen_reasons(net)
