"""The property-based fuzzer in CI: a fixed seed and number of random models from the grammar
(tests/fuzz_grammar.py); benchmarks/fuzz.py runs long campaigns of the same property."""

from hypothesis import HealthCheck, given, settings

from fuzz_grammar import ATTRIBUTE, CREATED, MIX, OPS, REGION, RESHAPE, TORCH_ATTENTION, WINDOW, models
from fuzz_property import check_model

EXAMPLES = 150


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(models())
def test_every_random_model_is_exact_or_frozen(ops):
    check_model(ops)


def test_the_grammar_covers_every_production():
    """Each production of the grammar builds, converts and passes the property on its own."""
    from fuzz_grammar import _op  # noqa: F401  (the productions are listed in OPS)
    examples = {
        "conv": [("conv", 32, 3, "depthwise"), ("conv", 16, 3, "groups4"), ("conv", 12, 1, "dense")],
        "norm": [("norm", "bn"), ("norm", "gn4"), ("norm", "gn1"), ("norm", "ln"), ("norm", "rms"), ("norm", "grn")],
        "act": [("act", "gelu")],
        "residual": [("residual", v) for v in ("add", "add_", "sub_", "mul_", "iadd")],
        "gate": [("gate", v) for v in ("mul", "mul_", "expand_size", "expand_as")],
        "scale": [("scale", v) for v in ("mul", "add", "broadcast4d")],
        "cat": [("cat", 8, True)],
        "chunk": [("chunk", v) for v in ("swap", "glu", "split_sizes", "tensor_chunk")],
        "narrow": [("narrow", v) for v in ("head", "tail", "narrow_fn")],
        "reshape": [("reshape", v) for v in RESHAPE],
        "shape_value": [("shape_value", v) for v in ("channel_scale", "channel_divide", "spatial_scale", "numel")],
        "bound": [("bound", v) for v in ("clamp_min", "clamp_max", "where", "maximum", "clip")],
        "twice": [("twice", True), ("twice", False)],
        "spatial": [("spatial", v) for v in ("interpolate", "pad", "avg_pool", "pixel_shuffle", "movedim",
                                             "pixel_unshuffle", "pool_then_upsample", "upsample_then_pool")],
        "mix": [("mix", v) for v in MIX],
        "attention": [("attention", 1), ("attention", 2)],
        "torch_attention": [("torch_attention", v) for v in TORCH_ATTENTION],
        "created": [("created", v) for v in CREATED],
        "window": [("window", v) for v in WINDOW],
        "region": [("region", v) for v in REGION],
        "attribute": [("attribute", v) for v in ATTRIBUTE],
        "no_rule": [("no_rule", v) for v in ("flip_channels", "einsum_ellipsis", "index_select")],
    }
    assert set(examples) == set(OPS)
    # ops that move or mix no channels must keep them slimmable, not only exact
    channel_preserving = {
        *(("spatial", v) for v in ("interpolate", "pad", "avg_pool", "movedim", "pixel_unshuffle", "pool_then_upsample",
                                   "upsample_then_pool")),
        *(("mix", v) for v in ("softmax_spatial", "softmax_module", "stack", "unbind", "token_conv_pointwise",
                                               "repeat_batch", "recurrent_rows", "einsum_attention", "fold_conv",
                                               "assign_positions")),
        *(("window", v) for v in WINDOW), ("attention", 1), ("attention", 2),
        *(("torch_attention", v) for v in ("weightless", "weights_unused", "weights_used", "sequence_first")),
        *(("reshape", v) for v in ("batch_fold", "tokens", "permute_ln", "patches", "patches_int")), ("act", "gelu"),
        *(("created", v) for v in ("batch_mask", "channel_zeros", "like_shape", "buffer_batch", "batch_ones")),
        *(("region", v) for v in REGION), ("norm", "rms"), ("norm", "grn"),
        *(("attribute", v) for v in ("data", "real", "mT"))}
    for kind, ops in examples.items():
        for op in ops:
            net = check_model([("conv", 16, 1, "dense"), op, ("conv", 16, 3, "dense"), ("head", kind == "conv")])
            if op in channel_preserving:
                assert not net.space("layers.0:out").frozen, (op, net.space("layers.0:out").frozen_reasons)
            if op == ("window", "relative_bias"):  # the bias table shrinks with the heads
                heads = [s for s in net.spaces if s.name.endswith(":heads")]
                assert heads and not any(s.frozen for s in heads), [(s.name, s.frozen_reasons) for s in heads]
            if op == ("mix", "assign_channels"):
                reasons = net.space("layers.0:out").frozen_reasons
                assert any("assigned in part" in reason for reason in reasons), reasons
            if op == ("mix", "heads_past_frozen"):  # the heads stay slimmable, the projection's channels not
                heads = [s for s in net.spaces if s.name.endswith(":heads")]
                assert heads and not any(s.frozen for s in heads), [(s.name, s.frozen_reasons) for s in net.spaces]
                assert net.space("layers.1:out").frozen
            if op[0] == "torch_attention":  # traced as its products: its heads slim unless a mean is taken over them
                heads = [s for s in net.spaces if s.name.endswith(":heads")]
                assert len(heads) == (0 if op[1] in ("masked", "cross") else 1), [s.name for s in net.spaces]
                assert all(s.frozen == (op[1] == "weights_used") for s in heads), [(s.name, s.frozen_reasons)
                                                                                   for s in heads]
            if op in (("torch_attention", "masked"), ("torch_attention", "cross")):  # called as one unit
                reasons = net.space("layers.0:out").frozen_reasons
                assert any("MultiheadAttention" in reason for reason in reasons), reasons
            if op == ("window", "position_mlp"):  # its hidden width is computed from a buffer, and x.dtype
                reasons = net.space("layers.1.0:out").frozen_reasons
                assert any("carried by no activation" in reason for reason in reasons), reasons
    # every head: the tied one returns the channels of its input, the last returns their count
    for head, reasons in ((False, []), (True, ["model output"]),
                          ("count", ["model output: a number computed from a channel count"])):
        net = check_model([("conv", 16, 1, "dense"), ("conv", 16, 3, "dense"), ("head", head)])
        assert not net.space("layers.0:out").frozen
        assert net.space("layers.1:out").frozen_reasons == reasons
