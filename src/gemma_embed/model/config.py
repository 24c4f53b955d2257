"""Model configuration: one dataclass for the Gemma 3 encoder plus the embedding head, and named presets.

`to_hf_dict`/`from_hf_dict` translate to and from the Hugging Face `gemma3_text` config.json, which is what
published checkpoints carry. `sliding_window` always holds the *declared* window (512 for EmbeddingGemma);
a token then attends to keys with |i - j| <= sliding_window // 2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gemma_embed.errors import ConfigError

SLIDING = "sliding_attention"
FULL = "full_attention"


@dataclass(frozen=True)
class GemmaEmbedConfig:
    vocab_size: int = 262_144
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 24
    num_attention_heads: int = 3
    num_key_value_heads: int = 1
    head_dim: int = 256
    query_pre_attn_scalar: float = 256
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0  # full-attention layers
    rope_local_base_freq: float = 10_000.0  # sliding-window layers
    sliding_window: int = 512
    sliding_window_pattern: int = 6  # every 6th layer is global: 5 sliding : 1 full
    layer_types: tuple[str, ...] | None = None
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    # Embedding head (sentence-transformers modules 2_Dense and 3_Dense).
    dense_dims: tuple[int, ...] = (3072, 768)
    matryoshka_dims: tuple[int, ...] = (768, 512, 256, 128)
    max_seq_length: int = 2048

    def __post_init__(self) -> None:
        if self.layer_types is None:
            pattern = self.sliding_window_pattern
            types = tuple(SLIDING if (i + 1) % pattern else FULL for i in range(self.num_hidden_layers))
            object.__setattr__(self, "layer_types", types)
        problems = []
        if len(self.layer_types) != self.num_hidden_layers:
            problems.append(
                f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers"
            )
        if unknown := set(self.layer_types) - {SLIDING, FULL}:
            problems.append(f"unknown layer types {sorted(unknown)}")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            problems.append("head_dim must be even for rotary embeddings")
        if self.sliding_window < 1:
            problems.append("sliding_window must be >= 1")
        if self.max_seq_length > self.max_position_embeddings:
            problems.append("max_seq_length exceeds max_position_embeddings")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    @property
    def embedding_dim(self) -> int:
        """Size of the final sentence embedding (the last dense layer's output, or hidden_size)."""
        return self.dense_dims[-1] if self.dense_dims else self.hidden_size

    @property
    def window_radius(self) -> int:
        """A sliding layer lets token i see key j when |i - j| <= this radius."""
        return self.sliding_window // 2

    def replace(self, **changes: Any) -> GemmaEmbedConfig:
        if "num_hidden_layers" in changes and "layer_types" not in changes:
            changes["layer_types"] = None
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json -------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """The `gemma3_text` config.json of the transformer module (what transformers and ST read)."""
        return {
            "architectures": ["Gemma3TextModel"],
            "model_type": "gemma3_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_local_base_freq": self.rope_local_base_freq,
            "rope_scaling": None,
            "sliding_window": self.sliding_window,
            "_sliding_window_pattern": self.sliding_window_pattern,
            "layer_types": list(self.layer_types),
            "use_bidirectional_attention": True,
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "use_cache": False,
        }

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], **head: Any) -> GemmaEmbedConfig:
        """Read a `gemma3_text` config.json (transformers 4.x or 5.x spelling); refuse what we cannot run."""
        if raw.get("model_type") not in (None, "gemma3_text"):
            raise ConfigError(
                f"model_type {raw.get('model_type')!r} is not supported; expected 'gemma3_text'"
            )
        activation = raw.get("hidden_activation", raw.get("hidden_act", "gelu_pytorch_tanh"))
        if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise ConfigError(
                f"hidden_activation {activation!r} is not supported; expected 'gelu_pytorch_tanh'"
            )
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if raw.get(key) is not None:
                raise ConfigError(f"{key}={raw[key]} is not supported by this encoder")
        if raw.get("attention_bias"):
            raise ConfigError("attention_bias=true is not supported by this encoder")
        rope_theta = raw.get("rope_theta")
        local_theta = raw.get("rope_local_base_freq")
        rope_params = raw.get("rope_parameters") or {}
        for layer_type in (FULL, SLIDING):
            params = rope_params.get(layer_type) or {}
            if params.get("rope_type", "default") != "default":
                raise ConfigError(
                    f"rope_type {params['rope_type']!r} on {layer_type} layers is not supported"
                )
        rope_theta = rope_params.get(FULL, {}).get("rope_theta", rope_theta)
        local_theta = rope_params.get(SLIDING, {}).get("rope_theta", local_theta)
        if (raw.get("rope_scaling") or {}).get("rope_type", "default") != "default":
            raise ConfigError("rope_scaling is not supported by this encoder")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: raw[k] for k in known if k in raw and k not in ("dense_dims", "matryoshka_dims")}
        if rope_theta is not None:
            values["rope_theta"] = float(rope_theta)
        if local_theta is not None:
            values["rope_local_base_freq"] = float(local_theta)
        if "_sliding_window_pattern" in raw:
            values["sliding_window_pattern"] = raw["_sliding_window_pattern"]
        if values.get("layer_types") is not None:
            values["layer_types"] = tuple(values["layer_types"])
        try:
            return cls(**values, **head)
        except TypeError as exc:
            raise ConfigError(f"invalid config.json: {exc}") from exc


PRESETS: dict[str, GemmaEmbedConfig] = {
    # The published google/embeddinggemma-300m values.
    "embeddinggemma-300m": GemmaEmbedConfig(),
    # Small configs for tests and CPU training. The same architecture, fewer and narrower layers.
    # The shipped gemma-embed-mini: ~14M parameters, 28 MB in bf16 (the package limit is 32 MB). The head widens
    # to 384 = all-MiniLM-L6-v2's dimension, so distillation needs no projection.
    "mini": GemmaEmbedConfig(
        vocab_size=32_768,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=128,
        max_position_embeddings=1024,
        max_seq_length=512,
        dense_dims=(1024, 384),
        matryoshka_dims=(384, 256, 128, 64),
    ),
    "tiny": GemmaEmbedConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        max_position_embeddings=256,
        max_seq_length=256,
        dense_dims=(256, 64),
        matryoshka_dims=(64, 32, 16),
    ),
}


def preset(name: str) -> GemmaEmbedConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
