"""`gemma-embed export gguf`: the file read back with gguf's own reader holds llama.cpp's gemma-embedding
metadata, the tokenizer and every weight (dequantized within its type's rounding); bad input is refused with
a typed error. The slow test runs the file in llama.cpp itself (llama-cpp-python) against gemma-embed."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.model import EmbeddingModel, preset
from helpers import random_text, randomize

gguf = pytest.importorskip("gguf")
pytest.importorskip("sentencepiece")

PEER = Path(__file__).resolve().parents[2] / "bench" / "peer.py"
# The tiny preset with an embedding table larger than the tokenizer (the padding rows are exported too).
CONFIG = preset("tiny").replace(vocab_size=1024)
PROMPT = "task: search result | query: "
TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars is red because of iron oxide on its surface, and its two moons are small and irregular.",
    "  leading spaces, double  spaces, digits 31415 and a tab\there",
    "naïve café 東京 😶 " + " ".join(["long text past the sliding window"] * 12),
]


def peer_module():
    spec = importlib.util.spec_from_file_location("bench_peer", PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spm_checkpoint(tmp_path_factory) -> Path:
    """Random weights (norm gains included, so a missing +1 shows) and a SentencePiece tokenizer."""
    rng = random.Random(0)
    corpus = [random_text(rng, 24) for _ in range(2000)] + TEXTS
    model = randomize(EmbeddingModel(CONFIG), seed=4)
    out = tmp_path_factory.mktemp("spm") / "ckpt"
    return peer_module().write_sentencepiece_checkpoint(out, model, corpus, vocab=900)


def read(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray], dict[str, object]]:
    """Scalar/array fields, dequantized tensors (in PyTorch's [out, in] order) and tensor types."""
    reader = gguf.GGUFReader(str(path))
    fields = {}
    for name, field in reader.fields.items():
        if not field.types:
            continue
        fields[name] = field.contents()
    tensors, types = {}, {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.asarray(values, dtype=np.float32).reshape(tuple(reversed(t.shape.tolist())))
        types[t.name] = t.tensor_type
    return fields, tensors, types


# llama.cpp's per-layer tensor names -> our modules (written out here, apart from the exporter's own table).
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_output": "self_attn.o_proj",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def expected_tensors(checkpoint: Path) -> dict[str, np.ndarray]:
    """What each GGUF tensor must hold: the float weights, norm gains as 1 + w (llama.cpp's convention)."""
    from gemma_embed.io.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, dtype=torch.float32).model
    encoder = model.encoder
    out = {
        "token_embd.weight": encoder.embed_tokens.weight,
        "output_norm.weight": encoder.norm.weight + 1,
        "dense_2.weight": model.head.dense[0].weight,
        "dense_3.weight": model.head.dense[1].weight,
    }
    for i, layer in enumerate(encoder.layers):
        for name, module in LAYER_TENSORS.items():
            weight = layer.get_submodule(module).weight
            out[f"blk.{i}.{name}.weight"] = weight + 1 if name.endswith("norm") else weight
    return {name: weight.detach().numpy() for name, weight in out.items()}


def test_f32_file_holds_the_architecture_tokenizer_and_weights(spm_checkpoint: Path, tmp_path: Path) -> None:
    from gemma_embed.export.gguf import export_gguf

    out = export_gguf(spm_checkpoint, tmp_path / "model.gguf", gguf_type="f32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]  # no temporary file left
    fields, tensors, types = read(out)
    arch = "gemma-embedding"
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.block_count"] == CONFIG.num_hidden_layers
    assert fields[f"{arch}.embedding_length"] == CONFIG.hidden_size
    assert fields[f"{arch}.attention.head_count_kv"] == CONFIG.num_key_value_heads
    assert fields[f"{arch}.attention.key_length"] == CONFIG.head_dim
    assert fields[f"{arch}.attention.sliding_window"] == CONFIG.sliding_window
    assert fields[f"{arch}.attention.sliding_window_pattern"] == [
        t == "sliding_attention" for t in CONFIG.layer_types
    ]
    assert fields[f"{arch}.rope.freq_base"] == CONFIG.rope_theta
    assert fields[f"{arch}.rope.freq_base_swa"] == CONFIG.rope_local_base_freq
    assert fields[f"{arch}.pooling_type"] == gguf.PoolingType.MEAN.value
    assert fields[f"{arch}.dense_2_feat_in"] == CONFIG.hidden_size
    assert fields[f"{arch}.dense_2_feat_out"] == CONFIG.dense_dims[0]
    assert fields[f"{arch}.dense_3_feat_out"] == CONFIG.hidden_size
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.add_eos_token"] is True
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (2, 1)
    assert (fields["tokenizer.ggml.padding_token_id"], fields["tokenizer.ggml.unknown_token_id"]) == (0, 3)

    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(spm_checkpoint / "tokenizer.model"))
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == CONFIG.vocab_size  # padded to the embedding rows
    n = processor.get_piece_size()
    assert n < CONFIG.vocab_size
    assert tokens[:n] == [processor.id_to_piece(i) for i in range(n)]
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, CONFIG.vocab_size)]
    token_types = fields["tokenizer.ggml.token_type"]
    assert token_types[:4] == [3, 3, 3, 2]  # pad, eos, bos: control; unk: unknown
    assert set(token_types[n:]) == {5}  # unused

    expected = expected_tensors(spm_checkpoint)
    assert set(tensors) == set(expected)
    for name, values in tensors.items():
        assert types[name] == gguf.GGMLQuantizationType.F32, name
        # The same float32 numbers written and read back: exact.
        np.testing.assert_array_equal(values, expected[name], err_msg=name)


# Rounding error of a tensor relative to its size: bf16 keeps 8 significant bits, Q8_0 about 7, Q4_0 about 3.
RELATIVE_ERROR = {"BF16": 2**-8, "Q8_0": 0.01, "Q4_0": 0.15}


@pytest.mark.parametrize(
    ("gguf_type", "embed_type", "matrix_type"),
    [("bf16", "BF16", "BF16"), ("q8_0", "Q8_0", "Q8_0"), ("q4_0", "Q8_0", "Q4_0")],
)
def test_lower_precision_types_round_within_their_blocks(
    spm_checkpoint: Path, tmp_path: Path, gguf_type: str, embed_type: str, matrix_type: str
) -> None:
    from gemma_embed.export.gguf import export_gguf

    _, tensors, types = read(
        export_gguf(spm_checkpoint, tmp_path / f"m-{gguf_type}.gguf", gguf_type=gguf_type)
    )
    expected = expected_tensors(spm_checkpoint)
    q = gguf.GGMLQuantizationType
    for name, values in tensors.items():
        want = expected[name]
        if want.ndim == 1:
            assert types[name] == q.F32, name  # norm gains stay float32
            np.testing.assert_array_equal(values, want, err_msg=name)
            continue
        kind = embed_type if name.startswith("token_embd") else matrix_type
        assert types[name] == q[kind], name
        error = np.linalg.norm(values - want) / np.linalg.norm(want)
        assert 0 < error < RELATIVE_ERROR[kind], (name, error)


def test_refuses_bad_input(spm_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from gemma_embed.export.gguf import export_gguf
    from gemma_embed.io.checkpoint import save_quantized

    out = tmp_path / "x.gguf"
    with pytest.raises(ConfigError, match="not one of f32, bf16, q8_0, q4_0"):
        export_gguf(spm_checkpoint, out, gguf_type="q5_k")
    with pytest.raises(CheckpointError, match="not found"):
        export_gguf(tmp_path / "missing", out)
    with pytest.raises(ConfigError, match=r"no SentencePiece tokenizer\.model"):
        export_gguf(tiny_checkpoint, out)  # gemma-embed's own BPE tokenizer.json
    import gemma_embed

    quantized = save_quantized(
        gemma_embed.load(spm_checkpoint, dtype="float32").checkpoint, "int8", tmp_path / "q"
    )
    with pytest.raises(ConfigError, match="quantized weights"):
        export_gguf(quantized, out)
    with pytest.raises(ConfigError, match="is a directory"):
        export_gguf(spm_checkpoint, tmp_path)
    assert not out.exists() and not list(tmp_path.glob(".x.gguf.*"))


def test_refuses_the_shipped_model_and_dims_off_the_quant_block(tmp_path: Path) -> None:
    """The shipped mini model: its head ends at 384 != hidden 256 and its tokenizer is our regex BPE."""
    from gemma_embed.cli import main

    out = tmp_path / "mini.gguf"
    assert main(["export", "gguf", "default", "--out", str(out)]) == 2
    assert not out.exists()

    from gemma_embed.export.gguf import export_gguf

    rng = random.Random(1)
    odd = CONFIG.replace(hidden_size=48, dense_dims=(96, 48))  # 48 inputs: not a multiple of 32
    model = randomize(EmbeddingModel(odd), seed=5)
    ckpt = peer_module().write_sentencepiece_checkpoint(
        tmp_path / "odd", model, [random_text(rng, 24) for _ in range(500)], vocab=600
    )
    export_gguf(ckpt, tmp_path / "odd-f32.gguf", gguf_type="f32")  # float types take any size
    with pytest.raises(ConfigError, match="divisible by 32"):
        export_gguf(ckpt, tmp_path / "odd-q8.gguf", gguf_type="q8_0")


def test_cli_prints_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from gemma_embed.cli import main

    assert main(["export", "gguf", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.slow
def test_llama_cpp_embeds_like_gemma_embed(spm_checkpoint: Path, tmp_path: Path) -> None:
    """llama.cpp's f32 vectors of prompt + text: mean cosine >= 0.9999 to gemma-embed's float32, identical
    token ids; our q8_0 / q4_0 files load and stay close (random weights: a stress test for q4_0)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import gemma_embed
    from gemma_embed.export.gguf import export_gguf

    ours = gemma_embed.load(spm_checkpoint, dtype="float32")
    inputs = [PROMPT + t for t in TEXTS]
    expected = ours.encode(inputs, batch_size=2)
    expected_ids = ours.tokenizer.encode(inputs)[0]
    assert max(len(i) for i in expected_ids) > CONFIG.sliding_window  # the window is exercised
    floor = {"f32": 0.9999, "q8_0": 0.99, "q4_0": 0.9}
    for gguf_type, minimum in floor.items():
        path = export_gguf(spm_checkpoint, tmp_path / f"{gguf_type}.gguf", gguf_type=gguf_type)
        llm = llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=CONFIG.max_seq_length,
            n_batch=CONFIG.max_seq_length,
            n_ubatch=CONFIG.max_seq_length,
            n_threads=1,
            verbose=False,
        )
        assert [llm.tokenize(t.encode("utf-8")) for t in inputs] == expected_ids
        got = np.asarray(llm.embed(inputs, normalize=True), dtype=np.float32)
        cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        assert cosine.mean() >= minimum, (gguf_type, cosine)
        llm.close()
