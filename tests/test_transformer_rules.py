"""Rules for the blocks of transformers and hybrids (issue 19), each on a small hand-written
block or a real timm block: converted, equal to the original at width 1.0, prefix-equivalent
at reduced and nonuniform widths, and slimmable where the op moves no channels; frozen, with
the reason, where it does."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import usconvert
from helpers import check_conversion, frozen_reasons
from usconvert.profile import count_macs

SIZE = (3, 8, 8)


class ChannelsLast(nn.Module):
    """A stem to (B, H, W, C), a block on channels-last maps, and a classifier."""

    def __init__(self, block: nn.Module, channels: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.block = block
        self.head = nn.Linear(channels, 5)

    def forward(self, x):
        x = self.block(self.stem(x).permute(0, 2, 3, 1))
        return self.head(x.mean((1, 2)))


def test_timm_swin_block_slims_by_whole_heads_with_shifted_windows():
    """timm's SwinTransformerBlock: cyclic shift (torch.roll), padding by computed amounts,
    window partition and window_reverse (registered with timm as not traceable, but it traces),
    the relative position bias gathered per head, the shifted-window mask."""
    from timm.models.swin_transformer import SwinTransformerBlock

    block = SwinTransformerBlock(dim=32, input_resolution=(6, 6), num_heads=4, head_dim=8, window_size=4,
                                 shift_size=2, always_partition=True)
    net = check_conversion(ChannelsLast(block), (3, 6, 6))
    slimmable = {s.name for s in net.slimmable_spaces}
    # the bias table's head columns shrink with the heads (prefix equivalence holds above)
    assert {"stem:out", "block.attn:heads", "block.mlp.fc1:out"} <= slimmable, frozen_reasons(net)
    full = count_macs(net, 1.0).total
    assert count_macs(net, 0.25).total < 0.2 * full


class Tokens(ChannelsLast):
    """A stem to (B, H*W, C) tokens, a block on them, and a classifier."""

    def forward(self, x):
        return self.head(self.block(self.stem(x).flatten(2).transpose(1, 2)).mean(1))


def test_spaces_that_only_constants_carry_are_frozen_and_the_ones_of_activations_are_not():
    """timm's Swin V2 window attention computes its position bias with an MLP on a buffer of
    coordinates: the MLP's hidden width and the coordinate pair are carried by no activation, so
    slimming them saves nothing per input (they fold into one constant) and only takes capacity.
    The same MLP on the tokens narrows activations and stays slimmable."""
    from timm.models.swin_transformer_v2 import WindowAttention

    attention = WindowAttention(32, (3, 3), num_heads=4)
    net = check_conversion(Tokens(attention), (3, 3, 3))
    constant = "carried by no activation"
    coordinates = net.space("block.relative_coords_table:dim3")
    assert any(constant in reason for reason in coordinates.frozen_reasons), coordinates.frozen_reasons
    hidden = net.space("block.cpb_mlp.0:out")
    assert hidden.frozen_reasons == [hidden.frozen_reasons[0]] and constant in hidden.frozen_reasons[0]
    assert {"stem:out", "block:heads"} <= {s.name for s in net.slimmable_spaces}, frozen_reasons(net)

    mlp_on_tokens = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    net = check_conversion(Tokens(mlp_on_tokens), (3, 3, 3))
    assert {"stem:out", "block.0:out"} <= {s.name for s in net.slimmable_spaces}, frozen_reasons(net)


class WrittenInPlace(nn.Module):
    """A constant canvas that the input's features are written into in place, then projected."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.canvas = nn.Parameter(torch.randn(1, 16))
        self.mix = nn.Linear(16, 24)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        canvas = self.canvas * 1
        canvas[:] = self.stem(x).mean((0, 2, 3))
        return self.head(self.mix(canvas).relu())


def test_a_constant_written_in_place_with_the_input_carries_activations():
    net = check_conversion(WrittenInPlace(), (3, 4, 4))
    assert frozen_reasons(net) == ["model output"]  # the canvas's channels merged with the stem's, and mix's
    assert "mix:out" in {s.name for s in net.slimmable_spaces}


class FoldedIntoBatch(nn.Module):
    """Each channel as an image of its own: (B, C, H, W) -> (B*C, 1, H, W), a one-channel
    convolution, and back; the channels ride on the batch dim through the convolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.blur = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        B, C, H, W = x.shape
        x = self.blur(x.reshape(B * C, 1, H, W)).reshape(B, C, H, W)
        return self.head(x.mean((2, 3)))


def test_a_convolution_keeps_channels_folded_into_its_batch():
    net = check_conversion(FoldedIntoBatch(), (3, 8, 8))
    assert not net.space("stem:out").frozen, frozen_reasons(net)


class Assigned(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        self.stem = nn.Conv2d(3, 16, 1)
        self.other = nn.Conv2d(3, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y, z = self.stem(x), self.other(x)
        y = y.clone()
        if self.variant == "positions":
            y[:, :, 1:, :] = z[:, :, 1:, :] * 2
        elif self.variant == "channels":
            y[:, :8] = 0.5
        elif self.variant == "broadcast":
            y[..., :2] = z.mean((2, 3), keepdim=True)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("variant", ["positions", "broadcast"])
def test_item_assignment_merges_the_value_into_the_region(variant):
    net = check_conversion(Assigned(variant), (3, 8, 8))
    assert len(net.slimmable_spaces) == 1, frozen_reasons(net)  # stem and other: one space
    net.set_width(0.5)
    assert net.active_channels("stem")["out"] == net.active_channels("other")["out"] == list(range(8))


def test_item_assignment_into_part_of_the_channels_freezes_them():
    net = check_conversion(Assigned("channels"), (3, 8, 8))
    assert any("channels assigned in part" in r for r in net.space("stem:out").frozen_reasons), frozen_reasons(net)
    assert not net.space("other:out").frozen


class HeadsOverFrozen(nn.Module):
    """Heads split off the channels, a per-head projection whose channel count scales it (so
    its channels freeze, and stay on the tensor), and the heads merged back with them: MViT's
    heads merged with the channels of its pooling, which a depthwise convolution of fixed
    channels froze."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.inner = nn.Linear(4, 6)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)
        B, N, C = t.shape
        t = self.inner(t.reshape(B, N, 4, -1))  # MViT: reshape(B, N, 3, num_heads, -1)
        t = t * t.shape[-1] ** -0.5
        return self.head(t.reshape(B, N, -1).mean(1))


def test_a_reshape_moves_slimmable_channels_past_frozen_ones():
    net = check_conversion(HeadsOverFrozen(), (3, 4, 4))
    assert any("channel count" in r for r in net.space("inner:out").frozen_reasons), frozen_reasons(net)
    assert not net.space("reshape:heads").frozen, frozen_reasons(net)


class MViTAttention(nn.Module):
    def __init__(self, has_cls_token: bool):
        super().__init__()
        from timm.models.mvitv2 import MultiScaleAttention

        self.stem = nn.Conv2d(3, 32, 1)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 32)) if has_cls_token else None
        self.attn = MultiScaleAttention(32, 32, (4, 4), num_heads=4, kernel_q=(3, 3), kernel_kv=(3, 3),
                                        stride_kv=(2, 2), has_cls_token=has_cls_token)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        H, W = x.shape[2:]
        t = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1)
        t, _ = self.attn(t, [H, W])
        return self.head(t.mean(1))


@pytest.mark.parametrize("has_cls_token", [True, False])
def test_timm_mvitv2_attention_slims_by_whole_heads(has_cls_token):
    """timm's MViT v2 attention folds its heads into the batch of depthwise pooling
    convolutions, merges them back with the pooled head dim, and adds its relative positions
    into ``attn[:, :, 1:, 1:]`` in place: the heads slim through all three."""
    net = check_conversion(MViTAttention(has_cls_token), (3, 4, 4))
    assert not net.space("attn:heads").frozen, frozen_reasons(net)
    full = count_macs(net, 1.0).total
    assert count_macs(net, 0.25).total < 0.4 * full


@pytest.mark.parametrize("dims, frozen", [((1, 2), False), ((3,), True), ((-1,), True)])
def test_roll_keeps_channels_unless_it_rolls_them(dims, frozen):
    class Roll(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 32)

        def forward(self, x):
            return self.fc(torch.roll(x, shifts=(1,) * len(dims), dims=dims))

    net = check_conversion(ChannelsLast(Roll()), SIZE)
    assert net.space("stem:out").frozen is frozen
    if frozen:
        assert any("roll over channels" in r for r in net.space("stem:out").frozen_reasons)


@pytest.mark.parametrize("channel_pad, frozen", [(0, False), (1, True)])
def test_padding_by_amounts_computed_from_spatial_sizes(channel_pad, frozen):
    """Swin pads a channels-last map to whole windows: ``(0, 0, 0, pad_w, 0, pad_h)``, the
    amounts computed from H and W at run time. Padding the channel dim itself freezes."""

    class Pad(nn.Module):
        def forward(self, x):
            _, H, W, _ = x.shape
            pad_h, pad_w = (3 - H % 3) % 3, (3 - W % 3) % 3
            y = F.pad(x, (0, channel_pad, 0, pad_w, 0, pad_h))
            return y[:, :H, :W, : x.shape[-1]] if channel_pad else y[:, :H, :W, :]

    net = check_conversion(ChannelsLast(Pad()), SIZE)
    assert net.space("stem:out").frozen is frozen


def test_padding_the_channel_dim_freezes_its_channels():
    """Two zero channels appended (``F.pad`` over dim 1 of NCHW): at a reduced width the padded
    tensor would have k + 2 channels where the next layer reads C + 2."""

    class PadChannels(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 1)
            self.head = nn.Linear(18, 5)

        def forward(self, x):
            return self.head(F.pad(self.conv(x), (0, 0, 0, 0, 0, 2)).mean((2, 3)))

    net = check_conversion(PadChannels(), (3, 6, 6))
    assert any("padding over channels" in r for r in net.space("conv:out").frozen_reasons)


def test_a_slice_bound_that_counts_channels_freezes_them_on_any_dim():
    """``x[:, :C]`` on a spatial dim with C read from the channels: at a reduced width C is the
    active count, so the slice would change."""

    class Slice(nn.Module):
        def forward(self, x):
            return x[:, : x.shape[-1] // 4] * 2

    net = check_conversion(ChannelsLast(Slice()), SIZE)
    assert net.space("stem:out").frozen
    assert any("indexes with it" in r for r in net.space("stem:out").frozen_reasons)


@pytest.mark.parametrize("gathered", ["rows", "channels"])
def test_gather_by_an_index_tensor_keeps_the_other_dims(gathered):
    """A relative position bias: ``table[index]`` gathers rows (offsets); its columns (heads, or
    here channels) shrink with what they are added to. Gathering channels freezes them."""

    class Bias(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(20, 32))
            self.register_buffer("index", torch.randint(0, 20, (8, 8)))
            self.channel_index = nn.Parameter(torch.randperm(32), requires_grad=False)

        def forward(self, x):
            if gathered == "rows":
                return x + self.table[self.index.view(-1)].view(8, 8, -1)
            return x[..., self.channel_index] + 1

    net = check_conversion(ChannelsLast(Bias()), SIZE)
    assert net.space("stem:out").frozen is (gathered == "channels")
    if gathered == "channels":
        assert any("gathered by an index tensor" in r for r in net.space("stem:out").frozen_reasons)


ALONG_ONE_DIM = {  # each makes the op for a given dim; a module is called as a module
    "softmax module": lambda dim: nn.Softmax(dim=dim),
    "softmax": lambda dim: partial(F.softmax, dim=dim),
    "softmin": lambda dim: partial(F.softmin, dim=dim),
    "log_softmax method": lambda dim: lambda x: x.log_softmax(dim),
    "normalize": lambda dim: partial(F.normalize, dim=dim),
}


@pytest.mark.parametrize("op", ALONG_ONE_DIM)
@pytest.mark.parametrize("dim, frozen", [(-2, False), (-1, True)])
def test_ops_along_one_dim_freeze_only_that_dim(op, dim, frozen):
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.op = ALONG_ONE_DIM[op](dim)

        def forward(self, x):
            return self.op(x.flatten(1, 2)).view_as(x)

    net = check_conversion(ChannelsLast(Mix()), SIZE)
    assert net.space("stem:out").frozen is frozen


class Branching(nn.Module):
    """Control flow on sizes, as MobileViT's and TinyViT's blocks have (``if H != new_h``)."""

    def __init__(self, on: str):
        super().__init__()
        self.on = on
        self.conv = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        B, C, H, W = x.shape
        if self.on == "spatial" and H % 3:
            x = F.pad(x, (0, 0, 0, 3 - H % 3))[:, :, :H]
        if self.on == "channels" and C > 8:
            x = x * 2
        if self.on == "values" and x.sum() > 0:
            x = -x
        if self.on == "batch" and B > 1:
            x = x * 2
        return self.conv(x) * int(W / 4)


def test_a_branch_on_spatial_sizes_traces_at_the_converted_size_and_is_guarded():
    model = nn.Sequential(nn.Conv2d(3, 32, 1), Branching("spatial"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 5))
    net = check_conversion(model, SIZE)
    assert not net.space("0:out").frozen
    with pytest.raises(usconvert.ConversionError, match="converted at another input size"):
        net(torch.randn(1, 3, 16, 16, dtype=torch.float64))


def test_a_branch_on_a_channel_count_freezes_those_channels():
    model = nn.Sequential(nn.Conv2d(3, 32, 1), Branching("channels"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 5))
    net = check_conversion(model, SIZE)
    assert net.space("0:out").frozen
    assert any("shape_guard" in r for r in net.space("0:out").frozen_reasons), net.space("0:out").frozen_reasons
    assert not net.space("1.conv:out").frozen


def test_a_branch_on_tensor_values_still_cannot_trace():
    model = nn.Sequential(nn.Conv2d(3, 32, 1), Branching("values"))
    with pytest.raises(usconvert.ConversionError, match="cannot trace"):
        usconvert.convert(model, SIZE, check=False)


def test_a_model_that_rejects_the_input_size_says_so_in_its_own_words():
    """Gemma 4 raises on an image size that is not a multiple of 48, and does so while being
    traced (a branch on sizes); the user is told the model's message for the size given, not
    fx's, which names proxies."""

    class MultipleOf(nn.Module):
        def forward(self, x):
            if x.shape[-1] % 12:
                raise ValueError(f"image size {x.shape[-1]} must be a multiple of 12")
            return x

    model = nn.Sequential(nn.Conv2d(3, 16, 1), MultipleOf(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with pytest.raises(usconvert.ConversionError) as raised:
        usconvert.convert(model, SIZE, check=False)
    assert str(raised.value) == ("the model does not run on an input of shape (2, 3, 8, 8) (a batch of --input-size "
                                 "3,8,8): image size 8 must be a multiple of 12")
    check_conversion(model, (3, 12, 12))


def test_numbers_read_from_sizes_are_computed_without_the_example_data():
    """The nodes recorded before a branch on sizes run on the example with fake tensors, and
    all their values are kept (a later node may take any of them): with real tensors, tracing
    torchvision's mvit_v2_s at 16x224x224 held every activation of the network at once and
    passed 24 GB, where running it takes 1.5 GB. Here the layers before the branch would hold
    four maps of 4 MiB; tracing allocates no tensor data for them, and still takes the branch
    at the traced size."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.utils._python_dispatch import TorchDispatchMode

    from usconvert.graph.trace import SlimTracer

    class DataAllocated(TorchDispatchMode):
        bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in torch.utils._pytree.tree_leaves(out):
                if isinstance(tensor, torch.Tensor) and not isinstance(tensor, FakeTensor):
                    self.bytes += tensor.untyped_storage().nbytes()
            return out

    wide = nn.Sequential(*[nn.Conv2d(32 if i else 3, 32, 3, padding=1) for i in range(4)])
    model = nn.Sequential(wide, Branching("spatial"), nn.AdaptiveAvgPool2d(1))
    example = torch.randn(2, 3, 128, 128)
    with DataAllocated() as allocated:
        graph = SlimTracer(example=example).trace(model)
    assert allocated.bytes < 2 ** 20, allocated.bytes
    assert any(node.target is usconvert.graph.trace.shape_guard for node in graph.nodes)


def test_a_registered_block_that_cannot_trace_is_called_whole():
    """timm's not-traceable modules are traced where they can be; one that branches on tensor
    values is taken back out of the graph and called as one unit, its channels frozen."""
    from timm.layers import register_notrace_module

    @register_notrace_module
    class ValueBranch(Branching):
        pass

    model = nn.Sequential(nn.Conv2d(3, 32, 1), ValueBranch("values"), nn.Conv2d(32, 16, 1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 5))
    net = check_conversion(model, SIZE)
    assert any("module ValueBranch with no channel rule" in r for r in net.space("0:out").frozen_reasons)
    assert not net.space("2:out").frozen


def test_timm_mobilevit_block_unfolds_and_folds_its_channels_with_the_batch():
    """MobileViT's block folds its channels into one dim with the batch and the patch rows
    (``B * C * n_h``) and back around a transformer, branching on its sizes on the way."""
    from timm.models.mobilevit import MobileVitBlock

    block = MobileVitBlock(16, 16, transformer_dim=24, transformer_depth=1, patch_size=2, num_heads=2)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    net = check_conversion(model, SIZE, batches=(1, 4))
    frozen = [(s.name, s.frozen_reasons) for s in net.spaces if s.frozen_by_rule]
    assert not frozen, frozen
    assert count_macs(net, 0.25).total < 0.3 * count_macs(net, 1.0).total  # 8 of 16 channels at least (d = 8)


def test_a_branch_on_the_batch_size_is_not_trusted():
    """A size read as a number that takes another value at another batch size (checked at a
    batch of 1 and one more than traced) is trusted nowhere: the registered block is called as
    one unit instead, as when sizes had no values."""
    from timm.layers import register_notrace_module

    @register_notrace_module
    class BatchBranch(Branching):
        pass

    model = nn.Sequential(nn.Conv2d(3, 32, 1), BatchBranch("batch"), nn.Conv2d(32, 16, 1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 5))
    net = check_conversion(model, SIZE, batches=(1, 4))
    assert any("module BatchBranch with no channel rule" in r for r in net.space("0:out").frozen_reasons)
    with pytest.raises(usconvert.ConversionError, match="cannot trace"):  # unregistered: nothing to call whole
        usconvert.convert(nn.Sequential(nn.Conv2d(3, 32, 1), Branching("batch")), SIZE, check=False)


def test_linear_function_with_a_weight_read_outside_its_layer():
    """Swin V2's qkv: ``F.linear(x, self.qkv.weight, bias=cat(q_bias, k_bias, v_bias))`` with
    the k bias a zero buffer; the weight's rows and columns and the bias shrink with x and the
    output."""

    class Qkv(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(32, 48, bias=False)
            self.q_bias, self.v_bias = nn.Parameter(torch.randn(16)), nn.Parameter(torch.randn(16))
            self.register_buffer("k_bias", torch.zeros(16), persistent=False)
            self.proj = nn.Linear(48, 32)

        def forward(self, x):
            bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
            return x + self.proj(F.linear(x, weight=self.qkv.weight, bias=bias).relu())

    net = check_conversion(ChannelsLast(Qkv()), SIZE)
    # the weight's rows are the q, k and v bias spaces; nothing but the output freezes
    assert {s.name for s in net.slimmable_spaces} == {"stem:out", "block.q_bias:dim0", "block.k_bias:dim0",
                                                     "block.v_bias:dim0"}, frozen_reasons(net)


class PositionalAttention(nn.Module):
    """ConViT's gated positional attention, reduced to its positional half: attention per head
    computed from a buffer of relative positions, expanded to the batch size read from x."""

    def __init__(self, channels: int = 32, heads: int = 4, tokens: int = 64):
        super().__init__()
        self.heads = heads
        self.register_buffer("positions", torch.randn(1, tokens, tokens, 3), persistent=False)
        self.position_projection = nn.Linear(3, heads)
        self.v = nn.Linear(channels, channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):
        B, H, W, C = x.shape
        attention = self.position_projection(self.positions.expand(B, -1, -1, -1)).permute(0, 3, 1, 2).softmax(-1)
        v = self.v(x.reshape(B, H * W, C)).reshape(B, H * W, self.heads, C // self.heads).permute(0, 2, 1, 3)
        return self.proj((attention @ v).transpose(1, 2).reshape(B, H, W, C))


def test_a_buffer_expanded_to_the_batch_size_is_a_node_of_the_graph():
    """A buffer read in the forward is traced as a node (fx's ``proxy_buffer_attributes``):
    as a plain tensor, ``.expand(B, ...)`` with the traced batch size cannot be called."""
    net = check_conversion(ChannelsLast(PositionalAttention()), SIZE, batches=(1,))
    assert not net.space("stem:out").frozen, frozen_reasons(net)
    assert count_macs(net, 0.25).total < 0.3 * count_macs(net, 1.0).total


class DeviceRegion(nn.Module):
    """EfficientViT's LiteMLA: a branch on the device type, and a region in which autocast is
    off for the device the input is on."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.inner = nn.Linear(channels, channels)
        self.outer = nn.Linear(channels, channels)

    def forward(self, x):
        if x.device.type != "meta":
            with torch.autocast(device_type=x.device.type, enabled=False):
                x = self.inner(x.to(self.inner.weight.dtype))
        return self.outer(x)


def test_an_autocast_region_on_the_input_device_is_kept_in_the_graph():
    """Slimmable through the region; and under mixed precision the converted network computes
    what the model does, which it would not if the region were dropped from the graph (fx drops
    ``with`` blocks): the inner layer runs in float32, the outer one in bfloat16."""
    model = ChannelsLast(DeviceRegion())
    net = check_conversion(model, SIZE)
    assert not net.space("stem:out").frozen, frozen_reasons(net)
    model.float()
    net.float()
    x = torch.randn(2, *SIZE)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x)
        assert torch.equal(net(x), expected)
        with torch.autocast("cpu", enabled=False):
            assert not torch.equal(model(x).to(expected.dtype), expected)  # the test can tell the regions apart


class Aggregate(nn.Module):
    """CoaT's head: the class tokens of three scales stacked to (B, 3, C), then a Conv1d with
    the scales as its channels, so that it runs along C."""

    def __init__(self, kernel: int, stride: int, channels: int = 32):
        super().__init__()
        self.scales = nn.ModuleList(nn.Linear(channels, channels) for _ in range(3))
        self.aggregate = nn.Conv1d(3, 1, kernel, stride=stride, padding=kernel // 2)

    def forward(self, tokens):
        return self.aggregate(torch.stack([scale(tokens) for scale in self.scales], 1)).squeeze(1)


@pytest.mark.parametrize("kernel, stride, frozen", [(1, 1, False), (3, 1, True), (1, 2, True)])
def test_a_convolution_along_channels_keeps_them_only_where_it_maps_position_to_position(kernel, stride, frozen):
    model = nn.Sequential(nn.Conv2d(3, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), Aggregate(kernel, stride),
                          nn.Linear(32 // stride, 5))
    net = check_conversion(model, SIZE)
    assert net.space("3.scales.0:out").frozen is frozen, frozen_reasons(net)
    assert not net.space("0:out").frozen
    if frozen:
        assert any("convolution over a channel dimension" in r for r in net.space("3.scales.0:out").frozen_reasons)


@pytest.mark.parametrize("dim, frozen", [(0, False), (-1, True)])
def test_repeat_interleave_keeps_the_channels_of_the_other_dims(dim, frozen):
    """GCViT's global query: one per image, repeated along the batch for each of its windows."""

    class Repeat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 32)

        def forward(self, x):
            B, H, W, C = x.shape
            windows = x.reshape(-1, 4, C)  # (B * 16 windows, 4 tokens, C)
            query = self.fc(x.mean((1, 2))).unsqueeze(1)  # (B, 1, C)
            if dim == 0:
                return (windows * query.repeat_interleave(windows.shape[0] // B, dim=0)).reshape(B, H, W, C)
            return x + query.repeat_interleave(2, dim=dim)[..., ::2].unsqueeze(1)

    net = check_conversion(ChannelsLast(Repeat()), SIZE)
    assert net.space("stem:out").frozen is frozen, frozen_reasons(net)
    if frozen:
        assert any("repeat_interleave over channels" in r for r in net.space("block.fc:out").frozen_reasons)


def test_attention_over_keys_that_carry_channels_freezes_them():
    """A token-mixing layer (MLP-Mixer's, as a Linear over the tokens) makes the token dim its
    output channels; attention then takes a softmax over those keys, where an inactive key still
    takes its share of every query's attention: the space freezes (it did not, found by the
    fuzzer). Queries stay independent rows."""

    class TokensThenAttention(nn.Module):
        def __init__(self, tokens: int = SIZE[1] * SIZE[2]):
            super().__init__()
            self.mix = nn.Linear(tokens, tokens)
            self.qkv, self.proj = nn.Linear(32, 96), nn.Linear(32, 32)

        def forward(self, x):  # (B, H, W, C)
            t = self.mix(x.flatten(1, 2).transpose(1, 2)).transpose(1, 2)  # (B, tokens as channels, C)
            B, N, C = t.shape
            q, k, v = self.qkv(t).reshape(B, N, 3, 2, C // 2).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
            return self.proj(out).mean(1)[:, None, None, :]

    net = check_conversion(ChannelsLast(TokensThenAttention()), SIZE)
    assert any("softmax over the keys" in r for r in net.space("block.mix:out").frozen_reasons), frozen_reasons(net)
    assert not net.space("stem:out").frozen, net.space("stem:out").frozen_reasons


def test_torchvision_vit_slims_its_residual_stream_and_heads_through_torch_attention():
    """torch's nn.MultiheadAttention, a leaf of every fx trace, is traced as its products (one
    packed projection, heads, attention, the output projection): torchvision's ViT no longer
    freezes its whole residual stream, and computes what the module computes, in train mode with
    attention dropout too (the same draws)."""
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(image_size=8, patch_size=4, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                            num_classes=5, attention_dropout=0.3)
    net = check_conversion(vit, SIZE)
    assert not net.space("conv_proj:out").frozen, frozen_reasons(net)
    heads = [s for s in net.spaces if s.name.endswith("self_attention:heads")]
    assert len(heads) == 2 and not any(s.frozen for s in heads), [(s.name, s.frozen_reasons) for s in net.spaces]
    assert count_macs(net, 0.25).macs < 0.2 * count_macs(net, 1.0).macs
    model = vit.double()  # check_conversion converted it in float64
    model.train()
    net.train()
    x = torch.randn(3, *SIZE, dtype=torch.float64)
    torch.manual_seed(1)
    trained = net(x)
    torch.manual_seed(1)
    assert torch.allclose(trained, model(x), rtol=1e-9, atol=1e-12)


def test_torch_attention_called_with_a_mask_stays_one_unit_and_freezes_its_channels():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 1)
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            t = self.stem(x).flatten(2).transpose(1, 2)
            mask = torch.zeros(t.shape[0], t.shape[1], dtype=torch.bool, device=t.device)
            return self.head(self.attention(t, t, t, key_padding_mask=mask, need_weights=False)[0].mean(1))

    net = check_conversion(Masked(), SIZE)
    assert "module MultiheadAttention with no channel rule at attention (attention)" in frozen_reasons(net)
    assert not net.slimmable_spaces
