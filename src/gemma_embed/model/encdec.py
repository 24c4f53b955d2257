"""T5Gemma-style encoder-decoder built from a decoder-only Gemma 3 (Zhang et al. 2025, "Encoder-Decoder Gemma").

* encoder: the Gemma 3 trunk run bidirectionally (`GemmaEncoder`, the trunk EmbeddingGemma keeps);
* decoder: the same trunk run causally, with a cross-attention block added to every layer between
  self-attention and the MLP (sandwich-normed like the others; keys/values are the encoder states, no rotary
  embedding, padding keys masked);
* one embedding table shared by encoder, decoder and the tied LM head.

Both stacks are initialized from the decoder-only weights; as in T5Gemma's balanced adaptation, each
cross-attention starts as a copy of its layer's self-attention (and its norms as the self-attention norms).
The encoder is what `gemma_embed.train.init.adapt` exports as the embedding model's initialization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.decoder import GemmaDecoderLM, lm_logits
from gemma_embed.model.gemma3 import (
    Attention,
    EncoderLayer,
    GemmaEncoder,
    RMSNorm,
    attention_masks,
    layer_rotary_tables,
    residual_norm,
)


class CrossAttention(Attention):
    """Decoder queries over encoder states: the self-attention projections and q/k norms, no rotary."""

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor | None) -> Tensor:  # type: ignore[override]
        batch, length, _ = x.shape
        source = memory.shape[1]
        q = self.q_norm(self.q_proj(x).view(batch, length, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(memory).view(batch, source, self.num_kv_heads, self.head_dim))
        v = self.v_proj(memory).view(batch, source, self.num_kv_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q,
            k.transpose(1, 2),
            v,
            attn_mask=mask,
            scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))


class DecoderLayer(EncoderLayer):
    """`EncoderLayer` (run causally) plus a sandwich-normed cross-attention block before the MLP."""

    def __init__(self, cfg: GemmaEmbedConfig, layer_type: str) -> None:
        super().__init__(cfg, layer_type)
        self.cross_attn = CrossAttention(cfg)
        self.pre_cross_attn_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_cross_attn_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor | None,
        memory: Tensor,
        memory_mask: Tensor | None,
    ) -> Tensor:
        x = residual_norm(
            x, self.self_attn(self.input_layernorm(x), rotary, mask), self.post_attention_layernorm
        )
        cross = self.cross_attn(self.pre_cross_attn_layernorm(x), memory, memory_mask)
        x = residual_norm(x, cross, self.post_cross_attn_layernorm)
        return residual_norm(x, self.mlp(self.pre_feedforward_layernorm(x)), self.post_feedforward_layernorm)

    def init_cross_from_self(self) -> None:
        """T5Gemma initialization: cross-attention (and its norms) start as the self-attention's."""
        with torch.no_grad():
            self.cross_attn.load_state_dict(self.self_attn.state_dict())
            self.pre_cross_attn_layernorm.weight.copy_(self.input_layernorm.weight)
            self.post_cross_attn_layernorm.weight.copy_(self.post_attention_layernorm.weight)


class CrossDecoder(GemmaEncoder):
    """The causal decoder stack with cross-attention; parameter names extend `GemmaEncoder`'s."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__(cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg, t) for t in cfg.layer_types)

    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        memory: Tensor,
        memory_mask: Tensor | None,
    ) -> Tensor:
        cfg = self.config
        length = input_ids.shape[1]
        x = self.embed(input_ids)
        full_mask, sliding_mask = attention_masks(attention_mask, length, cfg.sliding_window, x.device, True)
        cross_mask = None if memory_mask is None else memory_mask.bool()[:, None, None, :]
        tables = layer_rotary_tables(cfg, length, x.device, x.dtype)
        for layer in self.layers:
            mask = sliding_mask if layer.is_sliding else full_mask
            x = layer(x, tables[layer.is_sliding], mask, memory, cross_mask)
        return self.norm(x)


class EncoderDecoder(nn.Module):
    """Encoder ids + decoder ids -> decoder logits [B, Ld, vocab]; one embedding table for both stacks."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = GemmaEncoder(cfg)
        self.decoder = CrossDecoder(cfg)
        self.decoder.embed_tokens = self.encoder.embed_tokens  # shared, and tied to the LM head

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.encoder(input_ids, attention_mask)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        decoder_input_ids: Tensor,
        decoder_attention_mask: Tensor | None = None,
    ) -> Tensor:
        memory = self.encode(input_ids, attention_mask)
        states = self.decoder(decoder_input_ids, decoder_attention_mask, memory, attention_mask)
        return lm_logits(states, self.encoder.embed_tokens)

    @classmethod
    def from_decoder(cls, lm: GemmaDecoderLM) -> EncoderDecoder:
        """Both stacks copy the decoder-only trunk; cross-attention copies each layer's self-attention."""
        dtype = next(lm.parameters()).dtype
        model = cls(lm.config).to(dtype)
        trunk = lm.model.state_dict()
        model.encoder.load_state_dict(trunk)
        missing, unexpected = model.decoder.load_state_dict(trunk, strict=False)
        assert not unexpected and all("cross" in k for k in missing), (missing, unexpected)
        for layer in model.decoder.layers:
            layer.init_cross_from_self()
        return model
