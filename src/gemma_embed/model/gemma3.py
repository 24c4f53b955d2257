"""The Gemma 3 text transformer as a bidirectional encoder (the trunk of EmbeddingGemma).

Parameter names mirror Hugging Face's `Gemma3TextModel`, so a published `model.safetensors` loads with
no renaming. What makes it an encoder rather than Gemma 3's decoder:

* attention is bidirectional; a sliding layer lets token i see key j when |i - j| <= sliding_window // 2
  (a symmetric window), a full layer sees every non-padding key;
* padding masks keys only, and every query may always see itself, so no attention row is fully masked
  (a fully masked row is NaN after softmax, and NaN in a padding row reaches real rows through 0 * NaN).

Numerics follow the reference: RMSNorm statistics and its (1 + w) gain in float32, rotary tables computed
in float32 and cast to the activation dtype, the embedding scale sqrt(hidden) cast to the weight dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gemma_embed.model import kernels
from gemma_embed.model.attention import attention
from gemma_embed.model.config import SLIDING, GemmaEmbedConfig

M = TypeVar("M", bound=nn.Module)


def gemma_init_(module: M, seed: int | None = None, std: float = 0.02) -> M:
    """In place, as transformers initialises Gemma 3: normal(0, std) matrices, zero norm gains; returns module."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("norm.weight"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return module


class _SkipInit(TorchFunctionMode):
    """Turns the `torch.nn.init` calls of module constructors into no-ops."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextmanager
def skeleton() -> Iterator[None]:
    """Modules built inside have meta (storage-less) tensors and skip initialization: a model to load weights
    into with `load_state_dict(..., assign=True)`. Skipping the initializers matters: on meta tensors they
    run as Python reference kernels that import torch's compiler stack (about 100 MB of memory)."""
    with torch.device("meta"), _SkipInit():
        yield


class RMSNorm(nn.Module):
    """`x * rsqrt(mean(x^2) + eps) * (1 + w)`, computed in float32 (Gemma's zero-centred gain)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


def rotary_tables(head_dim: int, base: float, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin tables [length, head_dim] of the default (unscaled) rotary embedding, in float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (base**exponents)
    positions = torch.arange(length, device=device, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def layer_rotary_tables(
    cfg: GemmaEmbedConfig, length: int, device: torch.device, dtype: torch.dtype
) -> dict[bool, tuple[Tensor, Tensor]]:
    """is_sliding -> (cos, sin) in `dtype`: sliding layers use the local base, full layers rope_theta."""
    tables = {}
    for is_sliding, base in ((True, cfg.rope_local_base_freq), (False, cfg.rope_theta)):
        cos, sin = rotary_tables(cfg.head_dim, base, length, device)
        tables[is_sliding] = (cos.to(dtype), sin.to(dtype))
    return tables


def project(x: Tensor, layers: tuple[nn.Module, ...]) -> tuple[Tensor, ...]:
    """`layer(x)` for each layer. Layers of one type that compute several projections of one input together
    (quantized layers quantize x once and run one integer product) say so by a `project_together`
    static method; the model needs to know nothing else of them."""
    together = getattr(type(layers[0]), "project_together", None)
    if together is not None and all(type(layer) is type(layers[0]) for layer in layers):
        return together(x, layers)
    return tuple(layer(x) for layer in layers)


class Attention(nn.Module):
    """Grouped-query attention with per-head q/k RMSNorm before the rotary embedding."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.scale = cfg.query_pre_attn_scalar**-0.5
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        batch, length, _ = x.shape
        cos, sin = (table[:, None] for table in rotary)  # [L, 1, D]: broadcast over heads
        q, k, v = project(x, (self.q_proj, self.k_proj, self.v_proj))
        q = self.q_norm(q.view(batch, length, self.num_heads, self.head_dim))
        k = self.k_norm(k.view(batch, length, self.num_kv_heads, self.head_dim))
        q, k = kernels.rotary(q, cos, sin).transpose(1, 2), kernels.rotary(k, cos, sin).transpose(1, 2)
        v = v.view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        out = attention(q, k, v, mask, self.scale, self.num_heads != self.num_kv_heads)  # long: in blocks
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """`down(gelu_tanh(gate(x)) * up(x))`."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(kernels.gelu_tanh_mul(*project(x, (self.gate_proj, self.up_proj))))


class EncoderLayer(nn.Module):
    """Sandwich-normed block: norms before and after both attention and the MLP."""

    def __init__(self, cfg: GemmaEmbedConfig, layer_type: str) -> None:
        super().__init__()
        self.is_sliding = layer_type == SLIDING
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        x = residual_norm(
            x, self.self_attn(self.input_layernorm(x), rotary, mask), self.post_attention_layernorm
        )
        return residual_norm(x, self.mlp(self.pre_feedforward_layernorm(x)), self.post_feedforward_layernorm)


def residual_norm(residual: Tensor, x: Tensor, norm: RMSNorm) -> Tensor:
    """`residual + norm(x)` as one kernel (the sandwich block's post-norm and residual add)."""
    return kernels.add_rms_norm(residual, x, norm.weight, norm.eps)


def attention_masks(
    attention_mask: Tensor | None, length: int, radius: int, device: torch.device, causal: bool = False
) -> tuple[Tensor | None, Tensor | None]:
    """Boolean (True = may attend) masks for full and sliding layers, broadcastable to [B, H, L, L].

    None means "attend everywhere", which lets SDPA take its unmasked fast path. With `causal` (Gemma 3 as a
    decoder) query i sees keys j <= i, and a sliding layer only those with i - j < radius, where the caller
    passes the declared `sliding_window` as radius (transformers' one-sided window).
    """
    positions = torch.arange(length, device=device)
    if causal:
        offset = positions[:, None] - positions[None, :]
        past = offset >= 0
        window = past & (offset < radius)
        if attention_mask is not None and not bool(attention_mask.all()):
            keys = attention_mask.bool()[:, None, None, :]
            past, window = (keys & past) | (offset == 0), (keys & window) | (offset == 0)
        return past, window
    distance = (positions[:, None] - positions[None, :]).abs()
    window = distance <= radius if length > radius + 1 else None
    if attention_mask is None or bool(attention_mask.all()):
        return None, window
    keys = attention_mask.bool()[:, None, None, :]
    itself = distance == 0  # every query sees itself: no row is ever fully masked
    full = keys | itself
    sliding = full if window is None else (keys & window) | itself
    return full, sliding


class GemmaEncoder(nn.Module):
    """Token ids -> contextual token states [B, L, hidden] (the sentence-transformers `Transformer` module)."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(EncoderLayer(cfg, t) for t in cfg.layer_types)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def embed(self, input_ids: Tensor) -> Tensor:
        weight = self.embed_tokens.weight
        scale = torch.tensor(self.config.hidden_size**0.5).to(weight.dtype)
        return self.embed_tokens(input_ids) * scale

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        """Final-normed states; `causal` runs the trunk as Gemma 3's decoder (see `attention_masks`)."""
        cfg = self.config
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings {cfg.max_position_embeddings}"
            )
        x = self.embed(input_ids)
        radius = cfg.sliding_window if causal else cfg.window_radius
        full_mask, sliding_mask = attention_masks(attention_mask, length, radius, x.device, causal)
        tables = layer_rotary_tables(cfg, length, x.device, x.dtype)
        for layer in self.layers:
            mask = sliding_mask if layer.is_sliding else full_mask
            x = layer(x, tables[layer.is_sliding], mask)
        return self.norm(x)
