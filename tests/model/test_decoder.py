"""The decoder-only Gemma 3 LM against `transformers.Gemma3ForCausalLM` (eager attention, causal)."""

from __future__ import annotations

import pytest
import torch

from gemma_embed.errors import CheckpointError
from gemma_embed.io.decoder import hf_decoder_config, load_decoder, save_decoder
from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.decoder import GemmaDecoderLM

transformers = pytest.importorskip("transformers")

CONFIG = GemmaEmbedConfig(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=16,
    sliding_window=5,
    sliding_window_pattern=2,
    max_position_embeddings=128,
    max_seq_length=128,
)


def random_decoder(config: GemmaEmbedConfig = CONFIG, seed: int = 0) -> GemmaDecoderLM:
    """Weights large enough that norms and every layer matter."""
    model = GemmaDecoderLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            std = 0.3 if name.endswith("norm.weight") else 0.08
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model.eval()


def reference(path) -> torch.nn.Module:
    return transformers.Gemma3ForCausalLM.from_pretrained(
        str(path), attn_implementation="eager", dtype=torch.float32
    ).eval()


def test_logits_match_transformers(tmp_path):
    ours = random_decoder()
    save_decoder(ours, tmp_path / "lm")
    ref = reference(tmp_path / "lm")
    assert ref.config.use_bidirectional_attention is False
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, CONFIG.vocab_size, (3, 23), generator=gen)  # > 4x the sliding window
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # right padding
    mask[2, 7:] = 0
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits
        got = load_decoder(tmp_path / "lm")(ids, mask)
        unpadded = ours(ids[:1])
    real = mask.bool()
    assert (got - expected)[real].abs().max() <= 1e-5
    assert (unpadded - expected[:1]).abs().max() <= 1e-5


def test_reads_what_transformers_writes(tmp_path):
    hf_cfg = transformers.Gemma3TextConfig(
        **{k: v for k, v in hf_decoder_config(CONFIG, torch.float32).items() if k not in ("architectures",)}
    )
    torch.manual_seed(0)
    ref = transformers.Gemma3ForCausalLM(hf_cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    ids = torch.randint(4, CONFIG.vocab_size, (2, 12))
    with torch.no_grad():
        diff = load_decoder(tmp_path / "hf")(ids) - ref(input_ids=ids).logits
    assert diff.abs().max() <= 1e-5


def test_refuses_bidirectional_config(tmp_path):
    save_decoder(random_decoder(), tmp_path / "lm")
    cfg = (
        (tmp_path / "lm" / "config.json")
        .read_text()
        .replace('"use_bidirectional_attention": false', '"use_bidirectional_attention": true')
    )
    (tmp_path / "lm" / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="bidirectional"):
        load_decoder(tmp_path / "lm")
