"""Files of the decoder-only Gemma 3 LM (`gemma_embed.model.decoder.GemmaDecoderLM`): the Hugging Face
`Gemma3ForCausalLM` layout, `config.json` (model_type `gemma3_text`) and `model.safetensors` with every trunk
key prefixed `model.`; the tied `lm_head.weight` is not stored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.checkpoint import (
    check_state,
    read_checkpoint_json,
    read_encoder_tensors,
    tensors_for_saving,
)
from gemma_embed.io.files import atomic_directory, write_json
from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.decoder import GemmaDecoderLM
from gemma_embed.model.gemma3 import skeleton

PREFIX = "model."  # the trunk keys of the Hugging Face layout
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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
    config = decoder_config(read_checkpoint_json(root / "config.json"), root / "config.json")
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
