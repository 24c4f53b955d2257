"""Decoder-only Gemma 3 language model: the encoder trunk run causally plus the tied LM head.

This is the starting point of EmbeddingGemma's initialization (Vera et al. 2025, "EmbeddingGemma"): a
decoder-only Gemma 3 is adapted into an encoder-decoder (T5Gemma; Zhang et al. 2025, "Encoder-Decoder
Gemma"), whose encoder then initializes the embedding model (see `gemma_embed.model.encdec` and
`gemma_embed.train.init.adapt`).

Its files (read and written by `gemma_embed.io.decoder`) are the Hugging Face `Gemma3ForCausalLM` layout: `config.json` with model_type `gemma3_text`, and
`model.safetensors` with every trunk key prefixed `model.`; `lm_head.weight` is tied to
`model.embed_tokens.weight` and is not stored. The logits are `h @ embed_tokens.weight.T` (270m-style
configs have `final_logit_softcapping` None; configs with softcapping are refused by the config reader).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.gemma3 import GemmaEncoder, gemma_init_


class GemmaDecoderLM(nn.Module):
    """Token ids -> next-token logits [B, L, vocab] (`transformers.Gemma3ForCausalLM` without a cache)."""

    def __init__(self, cfg: GemmaEmbedConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = GemmaEncoder(cfg)  # the `model.` prefix of the Hugging Face layout

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Final-normed causal states [B, L, hidden]."""
        return self.model(input_ids, attention_mask, causal=True)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return lm_logits(self.hidden_states(input_ids, attention_mask), self.model.embed_tokens)

    def initialize(self, seed: int | None = None, std: float = 0.02) -> GemmaDecoderLM:
        """Random init as transformers does for Gemma 3 (see `gemma_init_`)."""
        return gemma_init_(self, seed, std)


def lm_logits(states: Tensor, embed_tokens: nn.Embedding) -> Tensor:
    """The tied LM head: `states @ embed_tokens.weight.T`."""
    return F.linear(states, embed_tokens.weight.to(states.dtype))
