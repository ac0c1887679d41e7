"""UMoED's unified hash decoder: learned query slots, Soft-MoE Transformer decoder layers, a word classifier.

The Soft-MoE block is Puigcerver et al., "From Sparse to Soft Mixtures of Experts", ICLR 2024
(arXiv:2308.00951), in the form the UMoED reference code uses it (kalenforn/clip-based-cross-modal-hash,
``models/UMoED/hash/block/{SoftMoe,transformer}.py``): it replaces the second linear map of each decoder
layer's feed-forward block, and every expert is one affine map.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class SoftMoE(nn.Module):
    """Soft mixture of ``num_experts`` affine experts with ``slots_per_expert`` slots each.

    Every expert slot takes a softmax-weighted mix of the tokens (dispatch, softmax over tokens); every token
    takes a softmax-weighted mix of the slot outputs (combine, softmax over all slots). Tokens of one sample
    therefore exchange information, and no token is dropped.

    The init reproduces the reference: ``phi`` and the experts are drawn as ``kaiming_uniform_(a=sqrt(5))``
    does on 3-D tensors, i.e. bounds 1/sqrt(n p) for ``phi`` and 1/sqrt(in_dim * out_dim) for the expert
    weights and biases (about 22x smaller than a ``Linear(2048, 512)``, spec §2.2).
    """

    def __init__(self, in_dim: int, out_dim: int, num_experts: int, slots_per_expert: int):
        super().__init__()
        self.phi = nn.Parameter(torch.empty(in_dim, num_experts, slots_per_expert))
        self.expert_weight = nn.Parameter(torch.empty(num_experts, in_dim, out_dim))
        self.expert_bias = nn.Parameter(torch.empty(num_experts, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.phi, -1 / math.sqrt(self.phi[0].numel()), 1 / math.sqrt(self.phi[0].numel()))
        bound = 1 / math.sqrt(self.expert_weight[0].numel())
        nn.init.uniform_(self.expert_weight, -bound, bound)
        nn.init.uniform_(self.expert_bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, in_dim) tokens -> (B, M, out_dim)."""
        logits = torch.einsum("bmd,dnp->bmnp", x, self.phi)
        dispatch = logits.softmax(dim=1)
        combine = logits.flatten(2).softmax(dim=-1).view_as(logits)
        slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
        outputs = torch.einsum("bnpd,nde->bnpe", slots, self.expert_weight) + self.expert_bias[:, None]
        return torch.einsum("bnpe,bmnp->bme", outputs, combine)

    def extra_repr(self) -> str:
        in_dim, experts, slots = self.phi.shape
        return f"in_dim={in_dim}, out_dim={self.expert_weight.shape[-1]}, experts={experts}, slots_per_expert={slots}"


class DecoderLayer(nn.Module):
    """Post-norm Transformer decoder layer without masks whose feed-forward output map is a Soft-MoE.

    With ``moe=False`` the output map is a ``Linear``, which makes the layer ``nn.TransformerDecoderLayer``
    (ReLU, post-norm): the reference's ``MoE: False`` ablation. One dropout rate acts inside both attentions,
    after the ReLU and on every residual branch.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, moe: bool, num_experts: int,
                 slots_per_expert: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, ffn_dim)
        self.ffn_out = SoftMoE(ffn_dim, dim, num_experts, slots_per_expert) if moe else nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        x = self.norm2(x + self.dropout(self.cross_attn(x, memory, memory, need_weights=False)[0]))
        return self.norm3(x + self.dropout(self.ffn_out(self.dropout(F.relu(self.linear(x))))))


class UnifiedDecoder(nn.Module):
    """One decoder for both modalities: M learned query slots read a token sequence, each emits V word logits.

    Args:
        in_dim: width of the memory tokens (CLIP's projected width).
        num_queries: query slots M, one word each.
        vocab_size: words per slot V.
        dim: decoder width; a ``Linear(in_dim, dim) + ReLU`` projects the memory when it differs from ``in_dim``.
        layers: decoder layers, all deep copies of one initialised layer (identical initial weights, as in the
            reference).
        heads: attention heads.
        ffn_dim: hidden width of the feed-forward blocks.
        dropout: dropout rate everywhere in the layers.
        moe: Soft-MoE (True) or a plain linear map (False) as the feed-forward output.
        num_experts: Soft-MoE experts n.
        slots_per_expert: Soft-MoE slots per expert p.
    """

    def __init__(self, in_dim: int, num_queries: int, vocab_size: int, dim: int = 512, layers: int = 6,
                 heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.3, moe: bool = True, num_experts: int = 8,
                 slots_per_expert: int = 8):
        super().__init__()
        layer = DecoderLayer(dim, heads, ffn_dim, dropout, moe, num_experts, slots_per_expert)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(layers))
        self.input_proj = nn.Linear(in_dim, dim) if dim != in_dim else None
        self.queries = nn.Parameter(torch.randn(num_queries, dim))
        self.classifier = nn.Linear(dim, vocab_size)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, in_dim) tokens -> (B, M, V) slot logits; all slots are decoded in one parallel pass."""
        if self.input_proj is not None:
            memory = F.relu(self.input_proj(memory))
        x = self.queries.expand(memory.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, memory)
        return self.classifier(x)
