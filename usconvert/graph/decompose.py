"""Forwards that trace, for torch.nn modules that torch.fx calls as one unit.

``nn.MultiheadAttention`` is a leaf of every fx trace (a torch.nn module), and a leaf's channels
freeze: in torchvision's ViTs that froze the whole residual stream, a third of their
multiply-adds. Traced as the products it computes (a packed query, key and value projection,
heads, attention, the output projection, as timm's ``Attention`` writes them), the graph pass
sees a linear layer and heads it has rules for. The forward computes what the module's own
(unfused) path computes; a call that uses what it does not cover (masks, a causal hint, separate
key and value projections, an added bias or zero attention, cross-attention) stays one unit.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

_ATTENTION_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def traceable_forward(module: nn.Module, args: tuple, kwargs: dict, dims_of: Callable[[Any], int | None]
                      ) -> Callable[..., Any] | None:
    """A forward of ``module`` for this call that traces into its products, or None where the
    module's own forward must be called as one unit. ``dims_of``: how many dims a traced tensor
    has in the example (None: not known); an unbatched query (2 dims) is left to the module."""
    if type(module).forward is not nn.MultiheadAttention.forward:  # a subclass may change it
        return None
    try:
        call = _ATTENTION_SIGNATURE.bind(module, *args, **kwargs)
    except TypeError:
        return None
    call.apply_defaults()
    given = call.arguments
    if dims_of(given["query"]) != 3:
        return None
    self_attention = given["query"] is given["key"] is given["value"]
    plain = (module._qkv_same_embed_dim and module.bias_k is None and module.bias_v is None
             and not module.add_zero_attn)
    unmasked = given["key_padding_mask"] is None and given["attn_mask"] is None and given["is_causal"] is False
    if not (self_attention and plain and unmasked and isinstance(given["need_weights"], bool)
            and isinstance(given["average_attn_weights"], bool)):
        return None
    return functools.partial(_self_attention, module)


def _self_attention(m: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    key_padding_mask: None = None, need_weights: bool = True, attn_mask: None = None,
                    average_attn_weights: bool = True, is_causal: bool = False) -> tuple[torch.Tensor, Any]:
    x = query if m.batch_first else query.transpose(0, 1)
    batch, length, _ = x.shape
    heads, head_dim = m.num_heads, m.head_dim
    qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias).reshape(batch, length, 3, heads, head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    dropout = m.dropout if m.training else 0.0
    weights = None
    if need_weights:  # the module's path with weights: scaled products, softmax, dropout, then values
        weights = torch.softmax((q * head_dim ** -0.5) @ k.transpose(-2, -1), dim=-1)
        if dropout > 0.0:
            weights = F.dropout(weights, dropout)  # the weights returned are those applied
        out = weights @ v
        if average_attn_weights:
            weights = weights.mean(dim=1)
    else:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    out = m.out_proj(out.transpose(1, 2).reshape(batch, length, heads * head_dim))
    return (out if m.batch_first else out.transpose(0, 1)), weights
