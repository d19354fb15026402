"""A grammar of small random models for the property-based fuzzer (tests/test_fuzz.py and
benchmarks/fuzz.py): every channel rule of the graph pass has a production here, and so do
ops that have no rule (they must freeze what they touch).

A model is a list of ops applied to a (B, C, H, W) stream; each op is a tuple whose first item
names it. :func:`models` draws such lists with Hypothesis (channel counts follow the ops), and
:class:`GrammarModel` runs one."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from timm.layers import RmsNorm2d
from timm.layers.grn import GlobalResponseNorm
from timm.models.swin_transformer import window_partition, window_reverse
from torch import nn

SIZE = (3, 6, 6)
CHANNELS = (8, 12, 16, 24)
CLASSES = 5

OPS = ("conv", "norm", "act", "residual", "gate", "scale", "cat", "chunk", "narrow", "reshape", "shape_value",
       "bound", "twice", "no_rule", "spatial", "mix", "attention", "torch_attention", "created", "window", "region",
       "attribute")
WINDOW = ("roll", "partition", "relative_bias", "position_mlp")
# torch's nn.MultiheadAttention as users call it; the last two stay one unit (their channels freeze)
TORCH_ATTENTION = ("weightless", "weights_unused", "weights_used", "sequence_first", "masked", "cross")


@st.composite
def models(draw, max_ops: int = 6) -> list[tuple]:
    """An op list; the first op is a convolution of the 3 input channels."""
    channels = draw(st.sampled_from(CHANNELS))
    ops: list[tuple] = [("conv", channels, 1, "dense")]
    for _ in range(draw(st.integers(0, max_ops))):
        op, channels = draw(_op(channels))
        ops.append(op)
    # the head: to the classes, tied to the channels (True), or also returning the channel count
    ops.append(("head", draw(st.sampled_from((False, True, "count")))))
    return ops


def _divisors(c: int) -> list[int]:
    return [g for g in (2, 3, 4) if c % g == 0]


@st.composite
def _op(draw, c: int) -> tuple[tuple, int]:
    kind = draw(st.sampled_from(OPS))
    if kind == "conv":
        mode = draw(st.sampled_from(("dense", "grouped", "depthwise")))
        kernel = draw(st.sampled_from((1, 3)))
        if mode == "depthwise":
            multiplier = draw(st.sampled_from((1, 2)))
            return ("conv", c * multiplier, kernel, "depthwise"), c * multiplier
        out = draw(st.sampled_from(CHANNELS))
        if mode == "grouped":
            groups = [g for g in _divisors(c) if out % g == 0]
            if groups:
                return ("conv", out, kernel, f"groups{draw(st.sampled_from(groups))}"), out
        return ("conv", out, kernel, "dense"), out
    if kind == "norm":
        norm = draw(st.sampled_from(("bn", "gn1", "gn", "ln", "rms", "grn")))
        if norm == "gn":
            norm = f"gn{draw(st.sampled_from(_divisors(c)))}" if _divisors(c) else "gn1"
        return ("norm", norm), c
    if kind == "act":
        return ("act", draw(st.sampled_from(("relu", "gelu", "sigmoid", "tanh")))), c
    if kind == "residual":
        return ("residual", draw(st.sampled_from(("add", "add_", "sub_", "mul_", "iadd")))), c
    if kind == "gate":
        return ("gate", draw(st.sampled_from(("mul", "mul_", "expand_size", "expand_as")))), c
    if kind == "scale":
        return ("scale", draw(st.sampled_from(("mul", "add", "broadcast4d")))), c
    if kind == "cat":
        extra = draw(st.sampled_from(CHANNELS))
        return ("cat", extra, draw(st.booleans())), c + extra
    if kind == "chunk" and c % 2 == 0:
        variant = draw(st.sampled_from(("swap", "glu", "split_sizes", "tensor_chunk")))
        return ("chunk", variant), c // 2 if variant == "glu" else c
    if kind == "narrow" and c % 2 == 0:
        variant = draw(st.sampled_from(("head", "tail", "narrow_fn")))
        return ("narrow", variant), c // 2
    if kind == "reshape":
        return ("reshape", draw(st.sampled_from(RESHAPE))), c
    if kind == "shape_value":
        return ("shape_value", draw(st.sampled_from(("channel_scale", "channel_divide", "spatial_scale",
                                                      "numel")))), c
    if kind == "bound":
        return ("bound", draw(st.sampled_from(("clamp_min", "clamp_max", "where", "maximum", "clip")))), c
    if kind == "twice":
        return ("twice", draw(st.booleans())), c
    if kind == "spatial":
        return ("spatial", draw(st.sampled_from(("interpolate", "pad", "avg_pool", "pixel_shuffle", "movedim",
                                                  "pixel_unshuffle", "pool_then_upsample",
                                                  "upsample_then_pool")))), c
    if kind == "mix":
        return ("mix", draw(st.sampled_from([v for v in MIX if c % 2 == 0 or v != "heads_past_frozen"]))), c
    # two heads, and the zeros of an even channel count, need an even count to run at all
    if kind == "attention":
        return ("attention", draw(st.sampled_from((1, 2) if c % 2 == 0 else (1,)))), c
    if kind == "torch_attention":
        return ("torch_attention", draw(st.sampled_from(TORCH_ATTENTION))), c
    if kind == "created":
        return ("created", draw(st.sampled_from([v for v in CREATED if c % 2 == 0 or v != "channel_arithmetic"]))), c
    if kind == "window":
        return ("window", draw(st.sampled_from([v for v in WINDOW if c % 2 == 0 or v != "relative_bias"]))), c
    if kind == "region":
        return ("region", draw(st.sampled_from(REGION))), c
    if kind == "attribute":
        return ("attribute", draw(st.sampled_from(ATTRIBUTE))), c
    if kind == "no_rule":
        return ("no_rule", draw(st.sampled_from(("flip_channels", "einsum_ellipsis", "index_select")))), c
    return ("act", "relu"), c


RESHAPE = ("batch_fold", "batch_fold_hw", "tokens", "literal_view", "flatten_unflatten", "view_computed", "permute_ln",
           "patches", "patches_int")
MIX = ("softmax_channels", "softmax_spatial", "softmax_module", "sum_channels", "max_channels", "stack", "unbind",
       "roll_channels", "token_conv_pointwise", "token_conv_k3", "repeat_batch", "repeat_channels",
       "recurrent_rows", "recurrent_channels", "einsum_attention", "einsum_sum_channels", "fold_conv",
       "assign_positions", "assign_channels", "heads_past_frozen")
CREATED = ("batch_mask", "channel_zeros", "like_shape", "literal_channels", "channel_arithmetic", "buffer_batch",
           "batch_ones")
REGION = ("autocast_device", "autocast_literal")
ATTRIBUTE = ("data", "real", "mT", "mH")  # tensors read as attributes; mH has no rule


def gram_attention(x: torch.Tensor) -> torch.Tensor:
    """Every position attends to every other, channels as the features: einsum contracts c twice."""
    tokens = x.flatten(2)
    weights = torch.einsum("bcn,bcm->bnm", tokens, tokens).mul(0.1).softmax(-1)
    return torch.einsum("bnm,bcm->bcn", weights, tokens).view_as(x)


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GrammarModel(nn.Module):
    def __init__(self, ops: list[tuple], in_channels: int = SIZE[0]):
        super().__init__()
        self.ops = ops
        self.layers = nn.ModuleDict()
        self.tensors = nn.ParameterDict()
        c = in_channels
        for i, op in enumerate(ops):
            c = self._build(str(i), op, c)

    def _build(self, key: str, op: tuple, c: int) -> int:
        kind = op[0]
        add = self.layers.__setitem__
        if kind == "conv":
            _, out, kernel, mode = op
            groups = 1 if mode == "dense" else c if mode == "depthwise" else int(mode[len("groups"):])
            add(key, nn.Conv2d(c, out, kernel, padding=kernel // 2, groups=groups))
            return out
        if kind == "norm":
            norm = op[1]
            add(key, nn.BatchNorm2d(c) if norm == "bn" else _LayerNorm2d(c) if norm == "ln"
                else RmsNorm2d(c) if norm == "rms"  # timm's norms written as a mean over channels
                else GlobalResponseNorm(c, channels_last=False) if norm == "grn"
                else nn.GroupNorm(int(norm[2:]), c))
        elif kind in ("residual", "gate", "bound"):
            add(key, nn.Conv2d(c, c, 1))
        elif kind == "scale":
            shape = (1, c, 1, 1) if op[1] == "broadcast4d" else (c, 1, 1)
            self.tensors[key] = nn.Parameter(torch.rand(shape) + 0.5)
        elif kind == "cat":
            add(key, nn.Conv2d(c, op[1], 3 if op[2] else 1, padding=1 if op[2] else 0))
            return c + op[1]
        elif kind == "chunk":
            return c // 2 if op[1] == "glu" else c
        elif kind == "narrow":
            return c // 2
        elif kind == "reshape" and op[1] in ("tokens", "permute_ln", "patches", "patches_int"):
            add(key, nn.LayerNorm(c) if op[1] == "permute_ln" else nn.Linear(c, c))
        elif kind == "twice":
            add(key, nn.Conv2d(c, c, 3, padding=1))
        elif kind == "attention":
            add(key, nn.ModuleDict({"qkv": nn.Linear(c, 3 * c), "proj": nn.Linear(c, c)}))
        elif kind == "torch_attention":
            add(key, nn.MultiheadAttention(c, 2 if c % 2 == 0 else 1, batch_first=op[1] != "sequence_first"))
            if op[1] == "masked":
                tokens = SIZE[1] * SIZE[2]
                self.register_buffer(f"mask{key}", torch.triu(torch.full((tokens, tokens), -1e4), 1))
        elif kind == "created" and op[1] == "buffer_batch":
            self.register_buffer(f"offset{key}", torch.rand(1, c, 1, 1), persistent=False)
        elif kind == "region":
            add(key, nn.Conv2d(c, c, 1))
        elif kind == "no_rule" and op[1] == "index_select":
            self.register_buffer(f"index{key}", torch.arange(c - 1, -1, -1))
        elif kind == "mix" and op[1] == "softmax_module":
            add(key, nn.Softmax(dim=-1))
        elif kind == "mix" and op[1].startswith("token_conv"):  # tokens are its channels, x's channels its length
            tokens, kernel = SIZE[1] * SIZE[2], 1 if op[1].endswith("pointwise") else 3
            add(key, nn.Conv1d(tokens, tokens, kernel, padding=kernel // 2))
        elif kind == "mix" and op[1] == "recurrent_rows":  # Sequencer: an LSTM along each row, back to C
            add(key, nn.ModuleDict({"rnn": nn.LSTM(c, 4, batch_first=True, bidirectional=True),
                                    "fc": nn.Linear(8, c)}))
        elif kind == "mix" and op[1] == "recurrent_channels":  # a GRU whose steps are the channels
            add(key, nn.GRU(SIZE[1] * SIZE[2], 4, batch_first=True))
        elif kind == "mix" and op[1] == "fold_conv":  # each channel an image of its own (MViT's pooling)
            add(key, nn.Conv2d(1, 1, 3, padding=1))
        elif kind == "mix" and op[1] == "heads_past_frozen":
            add(key, nn.Linear(c // 2, c // 2))
        elif kind == "window" and op[1] == "partition":
            add(key, nn.Linear(c, c))
        elif kind == "window" and op[1] == "relative_bias":  # Swin's attention: a bias per head and offset
            tokens = SIZE[1] * SIZE[2]
            add(key, nn.ModuleDict({"qkv": nn.Linear(c, 3 * c), "proj": nn.Linear(c, c)}))
            self.tensors[key] = nn.Parameter(torch.randn(2 * tokens, 2))
            self.register_buffer(f"index{key}", torch.randint(0, 2 * tokens, (tokens, tokens)))
        elif kind == "window" and op[1] == "position_mlp":  # Swin V2's bias network on a coordinate buffer
            add(key, nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, c)))
            rows, columns = torch.meshgrid(torch.arange(SIZE[1]), torch.arange(SIZE[2]), indexing="ij")
            self.register_buffer(f"coordinates{key}", torch.stack([rows, columns], -1).flatten(0, 1))
        elif kind == "head":
            add(key, nn.Linear(c, c if op[1] is True else CLASSES))
        return c

    def forward(self, x):
        for i, op in enumerate(self.ops):
            x = self._run_op(str(i), op, x)
        return x

    def _run_op(self, key: str, op: tuple, x):  # noqa: C901 - one branch per production
        kind, layers = op[0], self.layers
        if kind in ("conv", "norm"):
            return layers[key](x)
        if kind == "act":
            return {"relu": torch.relu, "gelu": nn.functional.gelu, "sigmoid": torch.sigmoid,
                    "tanh": torch.tanh}[op[1]](x)
        if kind == "residual":
            y = layers[key](x)
            if op[1] == "add":
                return x + y
            if op[1] == "iadd":
                y += x
                return y
            if op[1] == "mul_":
                return y.mul_(torch.sigmoid(x))
            return getattr(y, op[1])(x)
        if kind == "gate":
            gate = torch.sigmoid(layers[key](x.mean((2, 3), keepdim=True)))
            if op[1] == "mul":
                return x * gate
            if op[1] == "mul_":
                return (x + 0).mul_(gate)
            if op[1] == "expand_size":
                return x * gate.expand(x.size())
            return x * gate.expand_as(x)
        if kind == "scale":
            p = self.tensors[key]
            return x * p if op[1] == "mul" else x + p
        if kind == "cat":
            return torch.cat([x, layers[key](x)], 1)
        if kind == "chunk":
            if op[1] == "swap":
                a, b = x.chunk(2, 1)
                return torch.cat([b, a], 1)
            if op[1] == "glu":
                a, b = torch.chunk(x, 2, dim=1)
                return a * torch.sigmoid(b)
            if op[1] == "split_sizes":
                a, b = torch.split(x, [x.shape[1] // 2, x.shape[1] // 2], dim=1)
                return torch.cat([a + b, a - b], 1)
            a, b = x.tensor_split(2, dim=1)
            return torch.cat([a, b * 2], 1)
        if kind == "narrow":
            half = x.shape[1] // 2
            if op[1] == "head":
                return x[:, :half]
            if op[1] == "tail":
                return x[:, half:]
            return x.narrow(1, 0, half)
        if kind == "reshape":
            return self._reshape(key, op[1], x)
        if kind == "shape_value":
            if op[1] == "channel_scale":
                return x * x.shape[1] ** -0.5
            if op[1] == "channel_divide":
                return x / x.size(1)
            if op[1] == "numel":
                return x * (x.numel() ** -0.25)
            return x * (x.shape[2] * x.shape[3]) ** -0.5
        if kind == "bound":
            t = layers[key](x)
            if op[1] == "clamp_min":
                return torch.clamp(x, min=t)
            if op[1] == "clamp_max":
                return x.clamp_max(t)
            if op[1] == "clip":
                return torch.clip(x, t - 1, t + 1)
            if op[1] == "where":
                return torch.where(x > t, x, t)
            return torch.maximum(x, t)
        if kind == "twice":
            conv = layers[key]
            return conv(torch.relu(conv(x))) if op[1] else conv(x) + conv(torch.tanh(x))
        if kind == "spatial":
            return self._spatial(op[1], x)
        if kind == "mix":
            return self._mix(key, op[1], x)
        if kind == "attention":
            return self._attention(layers[key], op[1], x)
        if kind == "torch_attention":
            return self._torch_attention(key, op[1], x)
        if kind == "created":
            return self._created(key, op[1], x)
        if kind == "window":
            return self._window(key, op[1], x)
        if kind == "region":
            return self._region(key, op[1], x)
        if kind == "attribute":
            return getattr(getattr(x, op[1]) * 2, op[1]) if op[1] in ("mT", "mH") else getattr(x, op[1]) + x
        if kind == "no_rule":
            if op[1] == "flip_channels":
                return torch.flip(x, [1])
            if op[1] == "einsum_ellipsis":
                return torch.einsum("bc...->bc...", x) * 2
            return torch.index_select(x, 1, getattr(self, f"index{key}"))
        if kind == "head":
            y = layers[key](x.mean((2, 3)))
            if op[1] == "count":  # torchvision's segmentation models return dicts: outputs are not one tensor
                return {"out": y, "channels": x.shape[1]}
            return y @ layers[key].weight if op[1] else y
        raise ValueError(kind)

    @staticmethod
    def _spatial(variant: str, x):
        F = nn.functional
        if variant == "interpolate":
            return F.interpolate(F.interpolate(x, scale_factor=2.0, mode="nearest"), size=x.shape[-2:])
        if variant == "pad":
            return F.pad(x, (1, 1, 1, 1))[:, :, 1:-1, 1:-1] + F.pad(x, (0, 0, 0, 0))
        if variant == "avg_pool":
            return F.avg_pool2d(x, 3, stride=1, padding=1) + F.adaptive_max_pool2d(x, x.shape[-2:])
        # the map shrinks and grows back, or the other way, and no size is read on the way: the
        # first op alone must freeze a channel space that lies on the rows (one variant each)
        if variant == "pool_then_upsample":
            return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2.0)
        if variant == "upsample_then_pool":
            return F.avg_pool2d(F.interpolate(x, scale_factor=2.0), 2)
        if variant == "pixel_shuffle":  # channels to space and back: whole blocks of 4 channels
            return F.pixel_unshuffle(F.pixel_shuffle(torch.cat([x, x, x, x], 1), 2), 2)[:, : x.shape[1]]
        if variant == "pixel_unshuffle":
            return F.pixel_shuffle(F.pixel_unshuffle(x, 2), 2)
        return torch.movedim(torch.movedim(x, 1, -1) * 2, -1, 1)

    def _torch_attention(self, key: str, variant: str, x):
        """torch's nn.MultiheadAttention over the positions (torchvision's ViT): without weights,
        with its averaged weights dropped or used (a mean over the heads), sequence first, with a
        mask, and as cross-attention."""
        attention, (B, C, H, W) = self.layers[key], x.shape
        t = x.flatten(2).transpose(1, 2)
        if variant == "weightless":
            out = attention(t, t, t, need_weights=False)[0]
        elif variant == "weights_unused":
            out, _ = attention(t, t, t)
        elif variant == "weights_used":
            out, weights = attention(t, t, t)
            out = out + weights @ t
        elif variant == "sequence_first":
            s = t.transpose(0, 1)
            out = attention(s, s, s, need_weights=False)[0].transpose(0, 1)
        elif variant == "masked":
            out = attention(t, t, t, need_weights=False, attn_mask=getattr(self, f"mask{key}").to(t.dtype))[0]
        else:
            out = attention(t, torch.tanh(t), t, need_weights=False)[0]
        return out.transpose(1, 2).reshape(B, C, H, W)

    def _created(self, key: str, variant: str, x):
        """Tensors made from sizes: timm's drop-path mask, per-channel tensors sized by a count
        read from the input, by a literal, or by arithmetic on the count."""
        if variant == "batch_mask":
            return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).fill_(0.5)
        if variant == "channel_zeros":
            return x + torch.zeros(1, x.shape[1], 1, 1, dtype=x.dtype).fill_(0.25)
        if variant == "batch_ones":  # sizes as separate arguments, the first a size read (Gemma 4)
            return x * torch.ones(x.shape[0], x.shape[1], x.shape[2], x.shape[3], dtype=x.dtype).fill_(0.5)
        if variant == "like_shape":
            return x * x.new_full(x.shape, 2.0)
        if variant == "literal_channels":
            return x * x.new_ones(1, self._channels_before(key), 1, 1)
        if variant == "buffer_batch":  # ConViT: a buffer read in the forward, expanded to the batch
            return x + getattr(self, f"offset{key}").expand(x.shape[0], -1, -1, -1)
        return x + x.new_zeros(1, x.shape[1] // 2 * 2, 1, 1)

    def _region(self, key: str, variant: str, x):
        """Autocast regions (EfficientViT's LiteMLA): on the input's device, entered on a branch
        on the device type, or on a literal device."""
        if variant == "autocast_device" and x.device.type != "meta":
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.layers[key](x) * 2
        with torch.autocast("cpu", enabled=False):
            return torch.relu(self.layers[key](x))

    def _window(self, key: str, variant: str, x):
        """Swin's ops: a cyclic shift, windows of a padded channels-last map (timm's own
        window_partition, and window_reverse, which timm registers as not traceable), attention
        with a relative position bias gathered per head by an index buffer, and Swin V2's bias
        computed by an MLP from coordinates (its hidden width narrows no activation)."""
        if variant == "roll":
            return torch.roll(torch.roll(x, (1, 2), dims=(2, 3)) * 2, (-1, -2), dims=(2, 3))
        B, C, H, W = x.shape
        if variant == "position_mlp":
            bias = self.layers[key](getattr(self, f"coordinates{key}").to(x.dtype))
            return x + bias.transpose(0, 1).reshape(1, C, H, W)
        if variant == "partition":
            y = x.permute(0, 2, 3, 1)
            pad_h, pad_w = (4 - H % 4) % 4, (4 - W % 4) % 4
            y = nn.functional.pad(y, (0, 0, 0, pad_w, 0, pad_h))
            _, padded_h, padded_w, _ = y.shape
            windows = window_partition(y, (4, 4)).view(-1, 16, C)
            windows = self.layers[key](windows.softmax(1) * windows).view(-1, 4, 4, C)
            y = window_reverse(windows, (4, 4), padded_h, padded_w)[:, :H, :W, :]
            return y.permute(0, 3, 1, 2).contiguous()  # as Swin's blocks do: later views need it
        layers, tokens, heads = self.layers[key], H * W, 2
        t = x.flatten(2).transpose(1, 2)
        q, k, v = layers["qkv"](t).reshape(B, tokens, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        bias = self.tensors[key][getattr(self, f"index{key}").view(-1)].view(tokens, tokens, -1).permute(2, 0, 1)
        attention = (attention + bias.unsqueeze(0)).softmax(-1)
        out = (attention @ v).transpose(1, 2).reshape(B, tokens, C)
        return layers["proj"](out).transpose(1, 2).reshape(B, C, H, W)

    def _mix(self, key: str, variant: str, x):
        if variant == "softmax_channels":  # mixes the channels: must freeze them
            return torch.softmax(x, 1)
        if variant == "roll_channels":
            return torch.roll(x, 1, dims=1)
        if variant == "repeat_batch":  # GCViT's global query, repeated for each window of its image
            return x.repeat_interleave(2, dim=0)[1::2] * 2
        if variant == "repeat_channels":
            return torch.repeat_interleave(x, 2, 1)[:, 1::2]
        if variant == "recurrent_rows":
            B, C, H, W = x.shape
            rows, _ = self.layers[key]["rnn"](x.permute(0, 2, 3, 1).reshape(B * H, W, C))
            return x + self.layers[key]["fc"](rows).reshape(B, H, W, C).permute(0, 3, 1, 2)
        if variant == "recurrent_channels":
            steps, _ = self.layers[key](x.flatten(2))
            return x * steps.mean(-1)[:, :, None, None]
        if variant.startswith("token_conv"):  # MLP-Mixer's token mixing as a convolution (CoaT's aggregate)
            B, C, H, W = x.shape
            return self.layers[key](x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, H, W)
        if variant == "softmax_spatial":
            return x.flatten(2).softmax(-1).view_as(x)
        if variant == "softmax_module":
            return self.layers[key](x.flatten(2)).view_as(x)
        if variant == "sum_channels":
            return x * x.sum(1, keepdim=True)
        if variant == "max_channels":
            return x - x.max(1, keepdim=True)[0]
        if variant == "stack":
            return torch.stack([x, -x], 0).sum(0)
        if variant == "einsum_attention":
            return gram_attention(x) + x
        if variant == "einsum_sum_channels":  # summed within one operand: must freeze them
            return x * torch.einsum("bchw->bhw", x).unsqueeze(1)
        if variant == "fold_conv":  # channels folded into the batch of a convolution, and back
            B, C, H, W = x.shape
            return self.layers[key](x.reshape(B * C, 1, H, W)).reshape(B, C, H, W) + x
        if variant == "assign_positions":  # in place, into whole channels (MViT's attn[:, :, 1:, 1:] = ...)
            y = x.clone()
            y[:, :, 1:] = y[:, :, 1:] * 2 + x[:, :, :-1]
            return y
        if variant == "assign_channels":  # in place, into one channel: the rest keep theirs, so they freeze
            y = x.clone()
            y[:, :1] = 0.5
            return y
        if variant == "heads_past_frozen":  # two heads; their channels frozen (scaled by their count), merged back
            B, C, H, W = x.shape
            t = self.layers[key](x.flatten(2).transpose(1, 2).reshape(B, H * W, 2, -1))
            t = (t * t.shape[-1] ** -0.5).reshape(B, H * W, C)
            return t.transpose(1, 2).reshape(B, C, H, W)
        rows = torch.unbind(x, 2)  # fx knows the count only from the traced size: index them
        return (rows[0] + rows[-1]).unsqueeze(2) + x

    @staticmethod
    def _attention(layers, heads: int, x):
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = layers["qkv"](tokens).reshape(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return layers["proj"](out.transpose(1, 2).reshape(B, H * W, C)).transpose(1, 2).reshape(B, C, H, W)

    def _reshape(self, key: str, variant: str, x):
        B, C, H, W = x.shape
        if variant in ("batch_fold", "batch_fold_hw"):
            z = x.reshape(B * C, -1) if variant == "batch_fold" else x.reshape(B * C, H * W)
            z = z - z.mean(1, keepdim=True)
            return z.reshape(B, C, H, W)
        if variant == "tokens":
            t = self.layers[key](x.flatten(2).transpose(1, 2))
            return t.transpose(1, 2).reshape(B, C, H, W)
        if variant == "literal_view":
            c = self._channels_before(key)
            return x.view(B, c, H * W).view(B, c, H, W)
        if variant == "flatten_unflatten":
            return x.flatten(1).unflatten(1, (C, H, W))
        if variant.startswith("patches"):  # MobileViT's unfold to patches, a transformer, and fold
            p = 2
            if variant == "patches_int":  # numbers Python needs: the traced values, guarded at run time
                nh, nw = int(math.ceil(H / p)), int(W / p)
            else:
                nh, nw = H // p, W // p
            folded = B * C * nh
            t = x.reshape(folded, p, nw, p).transpose(1, 2).reshape(B, C, nh * nw, p * p).transpose(1, 3)
            t = t.reshape(B * p * p, nh * nw, -1)
            t = t + self.layers[key](t)
            t = t.view(B, p * p, nh * nw, -1).transpose(1, 3).reshape(folded, nw, p, p).transpose(1, 2)
            return t.reshape(B, C, nh * p, nw * p)
        if variant == "view_computed":
            return x.view(x.shape[0], x.shape[1], -1).view(x.size())
        return self.layers[key](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def _channels_before(self, key: str) -> int:
        c = SIZE[0]
        for i, op in enumerate(self.ops[: int(key)]):
            c = _channels_after(op, c)
        return c


def _channels_after(op: tuple, c: int) -> int:
    kind = op[0]
    if kind == "conv":
        return op[1]
    if kind == "cat":
        return c + op[1]
    if kind == "chunk" and op[1] == "glu" or kind == "narrow":
        return c // 2
    if kind == "head":
        return c if op[1] is True else CLASSES
    return c
