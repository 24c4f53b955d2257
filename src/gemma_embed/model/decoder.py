"""Decoder-only Gemma 3 language model: the encoder trunk run causally plus the tied LM head.

This is the starting point of EmbeddingGemma's initialization (Vera et al. 2025, "EmbeddingGemma"): a
decoder-only Gemma 3 is adapted into an encoder-decoder (T5Gemma; Zhang et al. 2025, "Encoder-Decoder
Gemma"), whose encoder then initializes the embedding model (see `gemma_embed.model.encdec` and
`gemma_embed.train.init.adapt`).

Files are the Hugging Face `Gemma3ForCausalLM` layout: `config.json` with model_type `gemma3_text`, and
`model.safetensors` with every trunk key prefixed `model.`; `lm_head.weight` is tied to
`model.embed_tokens.weight` and is not stored. The logits are `h @ embed_tokens.weight.T` (270m-style
configs have `final_logit_softcapping` None; configs with softcapping are refused by the config reader).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.checkpoint import (
    check_state,
    read_encoder_tensors,
    read_json,
    tensors_for_saving,
)
from gemma_embed.io.files import atomic_directory, write_json
from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.gemma3 import GemmaEncoder, gemma_init_, skeleton

PREFIX = "model."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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


def decoder_config(raw: dict[str, Any], where: Path) -> GemmaEmbedConfig:
    """The trunk config of a `gemma3_text` causal-LM config.json (the embedding head fields are unused)."""
    if raw.get("use_bidirectional_attention"):
        raise CheckpointError(f"{where}: use_bidirectional_attention=true; this is not a decoder-only model")
    if raw.get("tie_word_embeddings") is False:
        raise CheckpointError(f"{where}: tie_word_embeddings=false (an untied LM head) is not supported")
    limit = int(raw.get("max_position_embeddings", 2048))
    try:
        return GemmaEmbedConfig.from_hf_dict(raw, max_seq_length=min(2048, limit))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def load_decoder(path: str | Path, *, dtype: torch.dtype = torch.float32) -> GemmaDecoderLM:
    """Load a Hugging Face `Gemma3ForCausalLM` directory (safetensors only) into an eval-mode model."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a checkpoint directory")
    config = decoder_config(read_json(root / "config.json"), root / "config.json")
    tensors = read_encoder_tensors(root)  # strips `model.`, drops a stored (tied) `lm_head.weight`
    with skeleton():
        model = GemmaDecoderLM(config)
    check_state(model.model.state_dict(), tensors, root / "model.safetensors")
    model.model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, assign=True)
    return model.eval()


def hf_decoder_config(cfg: GemmaEmbedConfig, dtype: torch.dtype) -> dict[str, Any]:
    """`config.json` of `Gemma3ForCausalLM` for this trunk."""
    name = str(dtype).removeprefix("torch.")
    return {
        **cfg.to_hf_dict(),
        "architectures": ["Gemma3ForCausalLM"],
        "use_bidirectional_attention": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "dtype": name,
        "torch_dtype": name,
    }


def save_decoder(
    model: GemmaDecoderLM, path: str | Path, *, tokenizer_dir: Path | None = None, overwrite: bool = False
) -> Path:
    """Write the Hugging Face causal-LM layout atomically; tokenizer files are copied from `tokenizer_dir`."""
    dtype = next(model.parameters()).dtype
    with atomic_directory(Path(path), overwrite=overwrite, error=CheckpointError) as out:
        write_json(out / "config.json", hf_decoder_config(model.config, dtype))
        state = {PREFIX + k: v for k, v in model.model.state_dict().items()}
        save_file(tensors_for_saving(state), str(out / "model.safetensors"), {"format": "pt"})
        for name in TOKENIZER_FILES:
            if tokenizer_dir is not None and (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, out / name)
    return Path(path)
