"""One test per channel rule, on small hand-written models: each converts, equals the original
at width 1.0, and passes prefix equivalence at several widths (a wrong rule fails there even
when every shape fits)."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, GroupNorm1Act, LayerNorm2d, LayerNormAct2d
from torch import nn

import usconvert
from fuzz_grammar import gram_attention
from helpers import check_conversion, frozen_reasons
from usconvert.nn import SlimBatchNorm, SlimLayerNorm
from usconvert.profile import active_parameters

SIZE = (3, 16, 16)


def head(channels: int, classes: int = 5) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


def only_output_frozen(net) -> bool:
    return not any(s.frozen_by_rule for s in net.spaces)


def test_convolutions_of_every_shape_and_linear():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU6(),
        nn.Conv2d(24, 32, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(32), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 40), nn.GELU(), nn.Linear(40, 5))
    net = check_conversion(model, SIZE)
    assert [s.size for s in net.spaces] == [16, 24, 32, 40, 5]
    assert only_output_frozen(net)
    net.set_width(0.25)
    assert [s.active for s in net.spaces] == [8, 8, 8, 16, 5]


def test_model_input_channels_are_fixed_and_output_frozen():
    net = check_conversion(nn.Sequential(nn.Conv2d(3, 16, 3), *head(16)), SIZE)
    net.set_width(0.25)
    assert net.active_channels("0")["in"] == [0, 1, 2]
    assert net.space("3:out").frozen_reasons == ["model output"]


def test_depthwise_ties_input_and_output_including_multipliers():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.BatchNorm2d(32), nn.ReLU(),  # channel multiplier 2
        nn.Conv2d(32, 24, 1), *head(24))
    net = check_conversion(model, SIZE)
    assert len(net.slimmable_spaces) == 2  # the first pointwise output (shared by both depthwise) and 24
    net.set_width(0.5)
    assert net.active_channels("3")["out"] == list(range(8))
    assert net.active_channels("6")["out"] == list(range(16))  # 8 groups x multiplier 2


def test_grouped_convolution_moves_by_whole_groups():
    model = nn.Sequential(
        nn.Conv2d(3, 48, 1), nn.BatchNorm2d(48), nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1, groups=4), nn.BatchNorm2d(48), nn.ReLU(),  # group width 12
        nn.Conv2d(48, 96, 3, padding=1, groups=4), nn.BatchNorm2d(96), nn.ReLU(),  # 12 in, 24 out per group
        *head(96))
    net = check_conversion(model, SIZE, widths=(0.6, 0.75))
    groups = net.space("3:groups")
    assert groups.size == 4 and groups.unit_channels == 12
    for width in (0.25, 0.5, 0.75):
        net.set_width(width)
        active_in = len(net.active_channels("3")["in"])
        assert active_in % 12 == 0 and active_in % 8 == 0 or active_in == 48
        assert len(net.active_channels("6")["out"]) == 2 * active_in


def test_norms_batch_group_layer_and_timm_subclasses():
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), BatchNormAct2d(32, act_layer=nn.ReLU),
        nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(1, 32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), LayerNorm2d(32), nn.ReLU(),
        # norms with their activation inside (timm's vitamin stem): prefix equivalence must see the GELU
        nn.Conv2d(32, 32, 3, padding=1), LayerNormAct2d(32, act_layer=nn.GELU),
        nn.Conv2d(32, 32, 3, padding=1), GroupNorm1Act(32, act_layer=nn.SiLU), *head(32))
    net = check_conversion(model, SIZE)
    assert isinstance(net.layers["1"], SlimBatchNorm) and isinstance(net.layers["1"], BatchNormAct2d)
    assert isinstance(net.layers["9"], SlimLayerNorm) and net.layers["9"].channel_layout_dim == 1
    assert net.space("3:groups").unit_channels == 8  # GroupNorm(4, 32): whole groups of 8


class ChannelsLastBlock(nn.Module):
    """ConvNeXt's block with permutes, LayerNorm over the last dim, Linear MLP and layer scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim))

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.fc2(F.gelu(self.fc1(self.norm(x))))
        x = x * self.gamma
        return shortcut + x.permute(0, 3, 1, 2)


def test_channels_last_blocks_and_layer_scale_parameters():
    model = nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), ChannelsLastBlock(32), ChannelsLastBlock(32), *head(32))
    net = check_conversion(model, SIZE)
    assert only_output_frozen(net)
    assert net.layers["1.norm"].channel_layout_dim == 3


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn(self.conv2(F.relu(self.conv1(x))))
        return F.relu(x + y) - 0.5 * (x - y) / 2.0


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        gate = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate) + x / (1 + gate.abs())


def test_elementwise_ops_merge_spaces_including_broadcast_gates():
    model = nn.Sequential(nn.Conv2d(3, 32, 3), Residual(32), SqueezeExcite(32), *head(32))
    net = check_conversion(model, SIZE)
    stem = net.space("0:out")
    assert {"1.conv2", "2.expand"} <= set(stem.members)  # residual and gate share the stem's space


class Concatenation(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 24, 3, padding=1)
        self.bn = nn.BatchNorm2d(40)
        self.conv = nn.Conv2d(40, 32, 1)

    def forward(self, x):
        return self.conv(F.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1))))


def test_concatenation_consumers_gather_each_segment():
    net = check_conversion(nn.Sequential(Concatenation(), *head(32)), SIZE)
    net.set_width(0.5)
    assert net.active_channels("0.conv")["in"] == list(range(8)) + list(range(16, 16 + 16))
    assert net.active_channels("0.bn")["channel"] == list(range(8)) + list(range(16, 32))


class Splits(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 16, 3, padding=1)
        self.c = nn.Conv2d(3, 32, 3, padding=1)
        self.out = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        left, right = torch.cat([self.a(x), self.b(x)], 1).split([16, 16], dim=1)  # at the boundary
        first, second = self.c(x).chunk(2, dim=1)  # inside one space: it is refined in two
        third = torch.cat([self.a(x), self.c(x)], 1)[:, 16:32]
        return self.out(left * first + right * second - third)


def test_split_and_chunk_follow_the_active_sizes():
    net = check_conversion(nn.Sequential(Splits(), *head(16)), SIZE)
    assert only_output_frozen(net)
    assert len(net.layers["0.c"].out_layout.segments) == 2  # chunk inside one space refines it
    net.set_width(0.5)
    assert net.active_channels("0.c")["out"] == list(range(8)) + list(range(16, 24))


def test_flatten_of_a_feature_map_into_linear():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 5))
    net = check_conversion(model, SIZE)
    net.set_width(0.5)
    assert net.active_channels("3")["in"] == list(range(8 * 16))  # a channel prefix is a feature prefix


class SizeDriven(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.conv(x)
        b, c = x.size(0), x.shape[1]
        pooled = x.reshape(b, c, -1).mean(-1)
        return self.fc(pooled.view(b, c) + torch.zeros_like(pooled))


class ConstantChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.conv(x).reshape(x.shape[0], 16, -1).mean(-1))


def test_channel_counts_read_in_python_follow_the_width():
    net = check_conversion(SizeDriven(), SIZE)
    assert not net.space("conv:out").frozen


def test_channel_counts_written_as_constants_follow_the_width():
    net = check_conversion(ConstantChannels(), SIZE)  # the literal 16 becomes the active count
    assert not net.space("conv:out").frozen
    exported = usconvert.export(net, 0.5)
    assert "reshape(getitem, 8, -1)" in exported.code


class ConstantUnflatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.unflatten = nn.Unflatten(1, (16, 256))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.unflatten(self.conv(x).flatten(1)).mean(-1))


def test_channel_counts_in_module_attributes_freeze():
    net = check_conversion(ConstantUnflatten(), SIZE)
    assert any("constant" in r for r in net.space("conv:out").frozen_reasons)


class Attention(nn.Module):
    """timm's attention: fused q, k, v split into heads by literal sizes, merged back by one."""

    def __init__(self, dim: int = 32, heads: int = 4, fused: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.fused = heads, dim // heads, fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))


class AttentionSizedFromInput(Attention):
    """CaiT's, ConViT's and PVT's way: the head dim and the merged width computed from the input's
    channel count, which belongs to the residual stream, not to the heads."""

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


class AttentionWithBatchInHeads(Attention):
    """SAM's way: the batch folded into the heads (``B * num_heads``), and a size read back from
    that merged dim (``q.shape[0]``). Traced at batch 2, it must hold at every batch size."""

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, N, -1).unbind(0)
        q = q.reshape(q.shape[0], N, self.head_dim) * self.head_dim ** -0.5
        x = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(x.view(B, self.num_heads, N, -1).transpose(1, 2).reshape(B, N, -1))


class EinsumAttention(Attention):
    """Attention written with einsum (SAM's and MViT's relative positions, many research models):
    the feature letter contracts q with k, the key letter a with v, the head letter stays."""

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.einsum("bhqd,bhkd->bhqk", q * self.head_dim ** -0.5, k).softmax(-1)
        return self.proj(torch.einsum("bhqk,bhkd->bqhd", weights, v).reshape(B, N, self.num_heads * self.head_dim))


class Transformer(nn.Module):
    def __init__(self, fused: bool = True, attention: type = Attention, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.norm = nn.LayerNorm(32)
        self.attn = attention(fused=fused, heads=heads)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(self.norm(x))
        return self.head(x.mean(1))


@pytest.mark.parametrize("fused", [True, False])
def test_attention_shrinks_by_whole_heads(fused):
    net = check_conversion(Transformer(fused), (6, 8))
    heads = net.space("attn:heads")
    assert (heads.size, heads.unit_channels, heads.frozen) == (4, 8, False)
    assert not net.space("embed:out").frozen
    net.set_width(0.5)
    assert heads.active == 2 and net.active_channels("attn.qkv")["out"] == [*range(16), *range(32, 48), *range(64, 80)]
    exported = usconvert.export(net)
    assert exported.get_submodule("attn.proj").in_features == 16 and "reshape(getitem, getitem_1, 16)" in exported.code


def test_attention_written_with_einsum_shrinks_by_whole_heads():
    net = check_conversion(Transformer(attention=EinsumAttention), (6, 8))
    heads = net.space("attn:heads")
    assert (heads.size, heads.unit_channels, heads.frozen) == (4, 8, False)
    assert not net.space("embed:out").frozen
    net.set_width(0.5)
    assert net.active_channels("attn.qkv")["out"] == [*range(16), *range(32, 48), *range(64, 80)]


@pytest.mark.parametrize("function,reason", [
    (lambda x: torch.einsum("bchw->bhwc", x).permute(0, 3, 1, 2), None),  # every letter kept
    (lambda x: torch.einsum("bchw,b->bchw", x, x.new_ones(x.shape[0])), None),  # a batch letter shared
    (gram_attention, None),  # the fuzzer's op
    (lambda x: torch.einsum("bchw,c->bchw", x, torch.linspace(0, 1, 16, dtype=x.dtype)), "combined with fixed"),
    (lambda x: torch.einsum("bchw,cd->bdhw", x, torch.ones(16, 16, dtype=x.dtype)), "contracted against fixed"),
    (lambda x: x * torch.einsum("bchw->bhw", x).unsqueeze(1), "reduction over channels"),
])
def test_einsum_keeps_merges_contracts_and_reduces_by_letter(function, reason):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Call(function), nn.Conv2d(16, 8, 1), *head(8))
    net = check_conversion(model, SIZE)
    stem = net.space("0:out")
    assert stem.frozen == (reason is not None), stem.frozen_reasons
    assert reason is None or any(reason in r and "einsum" in r for r in stem.frozen_reasons), stem.frozen_reasons
    assert not net.space("2:out").frozen


@pytest.mark.parametrize("heads", [4, 1])
def test_attention_sized_from_its_input_follows_the_heads_not_the_residual(heads):
    net = check_conversion(Transformer(attention=AttentionSizedFromInput, heads=heads), (6, 8))
    assert net.space("attn:heads").frozen == (heads == 1) and not net.space("embed:out").frozen
    net.set_width({"embed:out": 0.25})  # the residual shrinks, the heads stay whole
    assert len(net.active_channels("attn.proj")["in"]) == 32
    exported = usconvert.export(net)
    with torch.no_grad():
        x = torch.randn(2, 6, 8, dtype=torch.float64)
        assert torch.allclose(exported(x), net(x))


@pytest.mark.parametrize("batch", [1, 3])
def test_the_batch_folded_into_the_heads_follows_the_batch_size(batch):
    net = check_conversion(Transformer(attention=AttentionWithBatchInHeads), (6, 8), batch=batch)
    assert not net.space("attn:heads").frozen
    net.set_width(0.5)
    exported = usconvert.export(net)
    for size in (1, 4):
        x = torch.randn(size, 6, 8, dtype=torch.float64)
        with torch.no_grad():
            assert torch.allclose(exported(x), net(x))


class PositionalProjection(nn.Module):
    """EdgeNeXt's and XCiT's positional encoding: a fixed-size input built in the forward, on
    the device and dtype read from the projection's own weight, projected into the stream, and
    a buffer of the stream's width used outside any layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.proj = nn.Conv2d(32, 16, 1)
        self.register_buffer("gain", torch.linspace(0.5, 1.5, 16).view(1, 16, 1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.conv(x)
        codes = torch.linspace(0, 1, 32, device=self.proj.weight.device, dtype=self.proj.weight.dtype)
        codes = codes.view(1, 32, 1, 1)
        return self.fc(((x + self.proj(codes)) * self.gain).mean((2, 3)))


def test_weights_read_for_their_device_stay_the_layers_and_buffers_slice():
    net = check_conversion(PositionalProjection(), SIZE)
    net.set_width(0.25)
    assert {k: len(v) for k, v in net.active_channels("proj").items()} == {"in": 32, "out": 8}
    assert usconvert.export(net).get_submodule("proj").weight.shape == (8, 32, 1, 1)
    assert active_parameters(net) == 8 * 3 * 9 + 8 + 8 * 32 + 8 + 5 * 8 + 5  # the buffer is no parameter


class FunctionalSpatial(nn.Module):
    """The test's modules in function form: each op's function rule, not its module's."""

    def __init__(self):
        super().__init__()
        self.conv, self.proj = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 1)

    def forward(self, x):
        x = F.interpolate(F.max_pool2d(self.conv(x), 2), scale_factor=2.0)
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, stride=1)
        return self.proj(F.dropout(F.hardswish(x), 0.5, self.training))


@pytest.mark.parametrize("form", ["modules", "functions"])
def test_passthrough_of_pooling_interpolation_padding_and_dropout(form):
    body = FunctionalSpatial() if form == "functions" else nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.MaxPool2d(2), nn.Dropout(0.5), nn.Upsample(scale_factor=2), nn.ZeroPad2d(1),
        nn.AvgPool2d(3, stride=1), nn.Hardswish(), nn.Dropout2d(0.1), nn.Conv2d(16, 16, 1))
    net = check_conversion(nn.Sequential(body, *head(16)), SIZE)
    assert only_output_frozen(net)


class MovedChannels(nn.Module):
    """A pointwise layer over channels moved last and back, by movedim and moveaxis."""

    def __init__(self):
        super().__init__()
        self.conv, self.mlp, self.proj = nn.Conv2d(3, 24, 3, padding=1), nn.Linear(24, 24), nn.Conv2d(24, 16, 1)

    def forward(self, x):
        return self.proj(self.mlp(torch.movedim(self.conv(x), 1, -1)).moveaxis(-1, 1))


def test_movedim_carries_the_channels_to_their_new_place():
    net = check_conversion(nn.Sequential(MovedChannels(), *head(16)), SIZE)
    assert only_output_frozen(net)
    net.set_width(0.5)
    assert net.active_channels("0.mlp")["in"] == net.active_channels("0.conv")["out"] == list(range(16))


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 16, 3, padding=1)
        self.d = nn.Conv2d(16, 16, 3, padding=1)
        self.mix = nn.Parameter(torch.rand(16, 16))

    def forward(self, x):
        x = torch.flip(self.a(x), dims=(1,))  # no rule: freezes
        x = self.b(x)
        x = x - x.mean(1, keepdim=True)  # reduction over channels
        y = self.c(x)
        return self.d(torch.einsum("nc...,cd->nd...", y, self.mix))  # parameter outside modules, an op with no rule


def test_unknown_ops_reductions_and_foreign_parameters_freeze_with_reasons():
    net = check_conversion(nn.Sequential(Opaque(), *head(16)), SIZE)
    reasons = " | ".join(frozen_reasons(net))
    assert "function flip with no channel rule" in reasons
    assert "reduction over channels" in reasons
    assert "einsum with an ellipsis" in reasons
    frozen = {s.name for s in net.spaces if s.frozen}
    assert frozen == {"0.a:out", "0.b:out", "0.c:out", "0.mix:dim0", "0.mix:dim1", "3:out"}
    assert not net.space("0.d:out").frozen  # what follows the opaque ops still slims


class TokenMaxHead(nn.Module):
    """VOLO's auxiliary head: class scores per token of a channels-last (B, N, C), max over tokens,
    added to the class token's scores."""

    def __init__(self):
        super().__init__()
        self.embed, self.head, self.aux = nn.Linear(3, 16), nn.Linear(16, 24), nn.Linear(16, 24)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose(1, 2))
        aux_values, aux_index = self.aux(tokens[:, 1:]).max(1)
        pooled = torch.amax(self.aux(tokens), dim=1, keepdim=True)
        return self.out(self.head(tokens[:, 0]) + 0.5 * aux_values + pooled[:, 0] + 0 * aux_index)


def test_max_over_tokens_keeps_the_channel_dim_of_a_channels_last_tensor():
    net = check_conversion(TokenMaxHead(), SIZE)
    assert {s.name for s in net.slimmable_spaces} == {"embed:out", "aux:out"}  # head's is tied to aux's
    net.set_width(0.5)
    assert net.active_channels("head")["out"] == net.active_channels("aux")["out"] == list(range(16))


class OptionalMask(nn.Module):
    """Hiera's forward: a mask argument that defaults to None, and code that branches on it."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 16, 3, padding=1), head(16)

    def forward(self, x, mask=None, return_features: bool = False):
        x = self.conv(x)
        if mask is not None:
            x = x * mask.view(x.shape[0], 1, *x.shape[2:])
        return x if return_features else self.head(x)


def test_optional_forward_arguments_are_traced_at_their_defaults():
    net = check_conversion(OptionalMask(), SIZE)
    assert not net.space("conv:out").frozen


def test_channel_shuffle_converts_and_stays_exact():
    from torchvision.models.shufflenetv2 import channel_shuffle

    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 16, 3, padding=1)
            self.c = nn.Conv2d(32, 16, 1)

        def forward(self, x):
            return self.c(channel_shuffle(torch.cat([self.a(x), self.b(x)], 1), 2))

    net = check_conversion(nn.Sequential(Shuffle(), *head(16)), SIZE)
    assert only_output_frozen(net)


def test_pixel_shuffle_moves_channel_groups():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(16, 16, 3, padding=1),
                          nn.PixelUnshuffle(2), nn.Conv2d(64, 8, 1), *head(8))
    check_conversion(model, SIZE)


def test_conversion_leaves_the_original_untouched():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), *head(16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    net = usconvert.convert(model, SIZE)
    net.set_width(0.25)
    net.train()(torch.randn(4, *SIZE)).sum().backward()
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("module", [nn.ConvTranspose2d(16, 16, 2, stride=2), nn.PReLU(16)])
def test_modules_without_a_rule_freeze_rather_than_crash(module):
    model = nn.Sequential(nn.Conv2d(3, 16, 3), module, nn.Conv2d(16, 8, 1), *head(8))
    net = check_conversion(model, SIZE)
    assert net.space("0:out").frozen


class SeparateProjectionAttention(nn.Module):
    """Single-head attention with q, k and v from their own layers and an explicit scale: q and
    k must shrink together (they contract), the output follows v, not q."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 24)
        self.q, self.k, self.v = nn.Linear(24, 16), nn.Linear(24, 16), nn.Linear(24, 32)
        self.proj = nn.Linear(32, 5)

    def forward(self, x):
        x = self.embed(x)
        y = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), scale=0.25)
        return self.proj(y.mean(1))


def space_of(net, layer: str, role: str = "out"):
    """The one channel space of a layer's output (or input)."""
    layout = getattr(net.layers[layer], f"{role}_layout")
    (space, _), = layout.segments
    return space


def test_attention_ties_query_to_key_and_the_output_to_value():
    net = check_conversion(SeparateProjectionAttention(), (6, 8), configurations=3)
    query, value = space_of(net, "q"), space_of(net, "v")
    assert query is space_of(net, "k") and value is space_of(net, "proj", "in") and query is not value
    assert not query.frozen and not value.frozen


class Call(nn.Module):
    """A function as a layer, so that a function's rule is tested where its module's is (each
    has a rule of its own)."""

    def __init__(self, function, *args):
        super().__init__()
        self.function, self.args = function, args

    def forward(self, x):
        return self.function(x, *self.args)


PIXEL_REARRANGEMENTS = [nn.PixelShuffle(2), nn.PixelUnshuffle(2), Call(F.pixel_shuffle, 2), Call(F.pixel_unshuffle, 2)]


@pytest.mark.parametrize("module", [*PIXEL_REARRANGEMENTS, nn.PReLU()])
def test_spatial_rearrangements_and_shared_prelu_keep_the_channels_slimmable(module):
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), module, nn.LazyConv2d(8, 1), *head(8))
    model(torch.randn(1, *SIZE))  # materialise the lazy convolution
    net = check_conversion(model, SIZE)
    assert not space_of(net, "0").frozen and not space_of(net, "2").frozen


class TokenMixThen(nn.Module):
    """A token convolution (MLP-Mixer's token mixing: its channels are the H*W positions)
    reshaped back to a map puts a channel space on the rows and columns; pixel (un)shuffle
    interleaves those with the channels, pooling and interpolation mix neighbouring rows and
    change their count, and a norm takes statistics over them, so that space must stay whole
    (the fuzzer's and the mutation run's finds). ``mix_again``: a second token convolution reads the
    positions as its channels, so that nothing else freezes them."""

    def __init__(self, after: nn.Module, mix_again: bool = False):
        super().__init__()
        self.embed, self.tokens, self.after = nn.Conv2d(3, 16, 1), nn.Conv1d(256, 256, 1), after
        self.again = nn.Conv1d(256, 256, 1) if mix_again else None

    def forward(self, x):
        y = self.after(self._mix(self.tokens, self.embed(x)))
        return y if self.again is None else self._mix(self.again, y)

    @staticmethod
    def _mix(conv: nn.Module, y):
        B, C, H, W = y.shape
        return conv(y.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, H, W)


@pytest.mark.parametrize("after, reason", [
    *((pixels, "pixel shuffle over a channel dimension") for pixels in PIXEL_REARRANGEMENTS),
    *((Call(function, *args), "spatial op over a channel dimension") for function, *args in [
        (F.interpolate, None, 2.0), (F.avg_pool2d, 2), (F.max_pool2d, 3, 1, 1)]),
    (nn.GroupNorm(4, 16), "GroupNorm statistics over a channel dimension"),
    (nn.BatchNorm2d(16), "BatchNorm2d statistics over a channel dimension")])  # in training: eval cannot show it
def test_ops_over_rows_that_carry_channels_keep_them_whole(after, reason):
    norm = isinstance(after, (nn.GroupNorm, nn.BatchNorm2d))
    model = nn.Sequential(TokenMixThen(after, mix_again=norm), nn.LazyConv2d(8, 1), *head(8))
    model(torch.randn(1, *SIZE))  # materialise the lazy convolution
    net = check_conversion(model, SIZE, configurations=3)
    assert any(r.startswith(reason) for r in frozen_reasons(net))
    assert space_of(net, "0.tokens").frozen and not space_of(net, "0.embed").frozen


class TensorAttribute(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name, self.a, self.b = name, nn.Conv2d(3, 16, 1), nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.b(getattr(self.a(x), self.name))


@pytest.mark.parametrize("name", ["data", "real", "mH"])
def test_a_tensor_read_as_an_attribute_keeps_its_channels_or_freezes_them(name):
    """``x.data`` and ``x.real`` are x's values position by position; an attribute with no rule
    (``mH``) must freeze what it reads, never drop its spaces (the next layer would get too few
    channels at a reduced width)."""
    net = check_conversion(nn.Sequential(TensorAttribute(name), *head(8)), SIZE)
    assert space_of(net, "0.a").frozen == (name == "mH")
    if name == "mH":
        assert any(".mH with no channel rule" in r for r in space_of(net, "0.a").frozen_reasons)


def test_unflatten_back_to_the_feature_map_keeps_the_channels():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1)

        def forward(self, x):
            t = self.a(x).flatten(2)  # (B, C, H*W)
            return self.b(t.unflatten(2, (x.shape[2], x.shape[3])))

    net = check_conversion(nn.Sequential(Tokens(), *head(8)), SIZE, batches=(1,))
    assert not space_of(net, "0.a").frozen and not space_of(net, "0.b").frozen


class _Created(nn.Module):
    """Tensors made from sizes, as timm's drop-path makes its mask (``x.new_empty((B, 1, 1, 1))``
    with ``(1,) * (x.ndim - 1)``), and per-channel tensors sized by the channel count read."""

    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        x = self.conv(x)
        if self.variant == "batch_mask":
            x = x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).fill_(0.5)
        elif self.variant == "channel_sized":
            x = x + torch.zeros(1, x.shape[1], 1, 1, dtype=x.dtype) + x.new_full((x.size(0), x.size(1), 1, 1), 0.25)
        elif self.variant == "dim_method":
            x = x.mul_(x.new_ones((1,) * x.dim()))
        elif self.variant == "batch_first_argument":  # Gemma 4: torch.ones(batch_size, n), sizes as arguments
            x = x * torch.ones(x.shape[0], x.shape[1], 1, 1, dtype=x.dtype)
        elif self.variant == "literal_channels":  # 16 written as a number: stays 16 at every width
            x = x * x.new_ones(1, 16, 1, 1)
        else:  # "channel_arithmetic": a count computed from the channel count
            x = x * x.new_ones(1, x.shape[1] // 2 * 2, 1, 1)
        return self.out(x)


@pytest.mark.parametrize("variant", ["batch_mask", "channel_sized", "dim_method", "batch_first_argument"])
def test_tensors_created_from_sizes_keep_the_channels_they_read(variant):
    net = check_conversion(_Created(variant), SIZE)
    assert not net.space("conv:out").frozen, net.space("conv:out").frozen_reasons


@pytest.mark.parametrize("variant", ["literal_channels", "channel_arithmetic"])
def test_tensors_created_from_literal_or_computed_channel_counts_freeze(variant):
    net = check_conversion(_Created(variant), SIZE)
    assert net.space("conv:out").frozen


def test_timm_drop_path_in_training_keeps_the_channels_slimmable():
    from timm.layers import DropPath

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.drop_path = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), DropPath(0.5)

        def forward(self, x):
            return x + self.drop_path(self.bn(self.conv(x)))

    model = nn.Sequential(nn.Conv2d(3, 16, 1), Block(), *head(16))
    net = usconvert.convert(model, SIZE)
    assert only_output_frozen(net), frozen_reasons(net)
    net.train()
    net.set_width(0.25)
    torch.manual_seed(0)
    assert net(torch.randn(4, *SIZE)).shape == (4, 5)
