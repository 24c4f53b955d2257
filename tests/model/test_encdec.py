"""The T5Gemma-style encoder-decoder built from a decoder-only Gemma 3."""

from __future__ import annotations

import torch
from test_decoder import CONFIG, random_decoder

from gemma_embed.model.encdec import EncoderDecoder


def test_initialized_from_the_decoder():
    lm = random_decoder()
    model = EncoderDecoder.from_decoder(lm)
    trunk = lm.model.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, trunk[name]), name
    for name, value in model.decoder.state_dict().items():
        source = name.replace("pre_cross_attn_layernorm", "input_layernorm")
        source = source.replace("post_cross_attn_layernorm", "post_attention_layernorm")
        source = source.replace("cross_attn", "self_attn")
        assert torch.equal(value, trunk[source]), name
    assert model.decoder.embed_tokens.weight is model.encoder.embed_tokens.weight


def test_decoder_is_causal_and_ignores_encoder_padding():
    model = EncoderDecoder.from_decoder(random_decoder())
    gen = torch.Generator().manual_seed(3)
    enc = torch.randint(4, CONFIG.vocab_size, (2, 9), generator=gen)
    dec = torch.randint(4, CONFIG.vocab_size, (2, 11), generator=gen)
    mask = torch.ones_like(enc)
    mask[1, 6:] = 0
    with torch.no_grad():
        logits = model(enc, mask, dec)
        changed = dec.clone()
        changed[:, 8:] = 5
        assert torch.allclose(model(enc, mask, changed)[:, :8], logits[:, :8], atol=1e-6)
        assert not torch.allclose(model(enc, mask, changed)[:, 8:], logits[:, 8:])
        padded = enc.clone()
        padded[1, 6:] = 7  # padding content must not matter
        assert torch.allclose(model(padded, mask, dec), logits, atol=1e-6)
        alone = model(enc[1:, :6], None, dec[1:])
        assert torch.allclose(alone, logits[1:], atol=1e-5)
    assert logits.shape == (2, 11, CONFIG.vocab_size)
