"""GGUF export for llama.cpp (and Ollama): `gemma-embed export gguf MODEL --out FILE --type f32|bf16|q8_0|q4_0`.

The file is llama.cpp's `gemma-embedding` architecture: the encoder, mean pooling (`pooling_type` MEAN) and
the two Dense layers (`dense_2`, `dense_3`, applied by llama.cpp after pooling), with the tokenizer and the
BOS/EOS flags, so `llama-embedding` / `llama_cpp.Llama(embedding=True)` compute what
`gemma_embed.load(MODEL).encode` does, except two things the caller does in llama.cpp: prepend the prompt
(`"task: search result | query: " + text`) and L2-normalize (`Llama.embed(..., normalize=True)`).

Conversions (as llama.cpp's own `convert_hf_to_gguf.py` makes them for EmbeddingGemma):
* every RMSNorm gain is stored as `1 + w` (Gemma keeps the zero-centred `w`; llama.cpp multiplies by the gain);
* the per-layer sliding/full pattern is written as a list of flags, `sliding_window` as declared (llama.cpp's
  window is symmetric, |i - j| <= sliding_window / 2, like ours); rope bases of full and sliding layers;
* the token list is padded to the embedding table's `vocab_size` rows with unused `[PAD<i>]` tokens.

Tensor types: norms are always F32. `f32`: every matrix F32 (what llama.cpp runs at the same precision as our
float32); `bf16`: matrices BF16; `q8_0`: matrices in llama.cpp's Q8_0 blocks (32 weights, one f16 scale);
`q4_0`: matrices in Q4_0, the token table in Q8_0 (llama.cpp's own `llama-quantize` Q4_0 keeps the table in
Q6_K, which the `gguf` package cannot write). Quantized types need every matrix's input size divisible by 32.

Tokenizer: llama.cpp has two vocabularies that could hold a Gemma tokenizer: "llama" (SentencePiece: the
text's spaces become "▁", then adjacent pieces are merged by piece score over the whole string, with byte
fallback) and "gpt2" (byte-level BPE with one of a fixed, built-in set of pre-tokenizer regexes). A checkpoint
exports when it carries a SentencePiece BPE `tokenizer.model` (as google/embeddinggemma-300m does) whose
`tokenizer.json` normalizes spaces only and agrees with it on probe texts. gemma-embed's own tokenizers
(`gemma_embed.train.tokenizer`) are refused: they are BPE models in tokenizer.json (merge ranks, no piece
scores) that first split the text with a regex (words, single digits, punctuation runs, "▁" runs) and merge
only within a piece; "llama" has no pre-tokenizer and merges any adjacent pair that forms a piece, and
"gpt2" maps bytes to printable characters first (so "▁" and "é" are other strings) and cannot take a custom
regex. Exporting such a model would take a SentencePiece-trained tokenizer (and retraining the model on its
ids), or a new pre-tokenizer + non-byte-level BPE in llama.cpp's llama-vocab.cpp.

Needs the `gguf` extra (`pip install 'gemma-embed[gguf]'`: gguf, sentencepiece, protobuf).
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.files import atomic_write
from gemma_embed.model.config import SLIDING

ARCH = "gemma-embedding"
TYPES = ("f32", "bf16", "q8_0", "q4_0")
QUANT_BLOCK = 32  # weights per Q8_0 / Q4_0 block
EXTRA_HELP = "pip install 'gemma-embed[gguf]'"
SPACE = "▁"
# Texts on which tokenizer.model and tokenizer.json must give the same ids (spaces, digits, punctuation,
# newlines and tabs, bytes outside most vocabularies, characters that Unicode normalization would change).
PROBES = (
    "Which planet is known as the Red Planet?",
    "  two leading spaces,  double  spaces and a trailing one ",
    "numbers 3.14159, 2026-12-03 and 1,000,000; code: def f(x): return x**2",
    "line one\nline two\n\n\ttabbed\r\nwindows",
    "naïve café, ﬁne ligature, full-width Ａ１, Ω≈ç√∫, 東京は日本の首都です。 😶‍🌫️🦙",
    "task: search result | query: what is the capital of France?",
)
# SentencePiece proto enums: ModelType BPE, and the piece types, which GGUF numbers the same way
# (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6).
SPM_BPE = 2
SPM_UNUSED = 5


def _require(module: str) -> Any:
    """Import an optional dependency of the export, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"GGUF export needs {module}: {EXTRA_HELP}") from None


@dataclass
class Vocabulary:
    """What GGUF's "llama" (SentencePiece) tokenizer keys hold."""

    tokens: list[bytes]
    scores: list[float]
    types: list[int]
    unk_id: int


def sentencepiece_vocabulary(root: Path, checkpoint: Any) -> Vocabulary:
    """The checkpoint's SentencePiece vocabulary, padded to the embedding rows; refuses what llama.cpp's
    "llama" tokenizer would encode differently from the checkpoint's tokenizer.json."""
    model_file = root / "tokenizer.model"
    tokenizer_json = root / "tokenizer.json"
    if not model_file.is_file():
        raise ConfigError(f"{root}: " + unsupported_tokenizer_reason(tokenizer_json))
    sp_pb2 = _require("sentencepiece.sentencepiece_model_pb2")
    spm = _require("sentencepiece")
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise CheckpointError(f"{model_file} is not a SentencePiece model: {exc}") from None
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    problems = []
    if trainer.model_type != SPM_BPE:
        problems.append("it is not a BPE model (llama.cpp merges pieces by score, as SentencePiece BPE does)")
    if not trainer.byte_fallback:
        problems.append("it has no byte fallback")
    if normalizer.add_dummy_prefix or normalizer.remove_extra_whitespaces or normalizer.precompiled_charsmap:
        problems.append(
            "it normalizes text (dummy prefix, whitespace removal or a character map); llama.cpp only "
            "replaces spaces with '▁'"
        )
    if trainer.treat_whitespace_as_suffix:
        problems.append("it treats whitespace as a suffix")
    raw = json.loads(tokenizer_json.read_text(encoding="utf-8")) if tokenizer_json.is_file() else {}
    normalizer_json = raw.get("normalizer")
    if normalizer_json != {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}:
        problems.append(f"tokenizer.json's normalizer {json.dumps(normalizer_json)} is not spaces -> '▁'")
    if problems:
        raise ConfigError(f"{model_file} cannot be written as llama.cpp's tokenizer: " + "; ".join(problems))

    processor = spm.SentencePieceProcessor(model_file=str(model_file))
    ours = checkpoint.tokenizer.text_ids(PROBES)
    for text, ids in zip(PROBES, ours, strict=True):
        if processor.encode(text) != ids:
            raise ConfigError(
                f"{model_file} and tokenizer.json tokenize {text!r} differently; llama.cpp would follow "
                "tokenizer.model, so its token ids would not be the model's"
            )
    rows = checkpoint.model.config.vocab_size
    pieces = list(proto.pieces)
    if len(pieces) > rows:
        raise CheckpointError(f"{model_file} has {len(pieces)} pieces for {rows} embedding rows")
    tokens = [p.piece.encode("utf-8") for p in pieces]
    scores = [float(p.score) for p in pieces]
    types = [int(p.type) for p in pieces]
    for i in range(len(pieces), rows):  # unused rows of the table, as llama.cpp's converter names them
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(SPM_UNUSED)
    return Vocabulary(tokens, scores, types, int(trainer.unk_id))


def unsupported_tokenizer_reason(tokenizer_json: Path) -> str:
    """One line: why a checkpoint without a SentencePiece tokenizer.model cannot be exported."""
    detail = ""
    if tokenizer_json.is_file():
        raw = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        model_type = (raw.get("model") or {}).get("type")
        pre = (raw.get("pre_tokenizer") or {}).get("type")
        detail = f" (tokenizer.json: {model_type} model, pre-tokenizer {pre})"
    return (
        f"no SentencePiece tokenizer.model{detail}: llama.cpp's tokenizers "
        "cannot reproduce a tokenizer.json BPE with merge ranks and a pre-tokenizer (its SentencePiece "
        "vocabulary merges by piece score without pre-tokenization, its BPE vocabulary is byte-level with "
        "built-in pre-tokenizers), so its token ids would differ; see `gemma_embed.export.gguf`"
    )


def architecture_problems(cfg: Any) -> list[str]:
    """What llama.cpp's gemma-embedding graph would compute differently for this config."""
    problems = []
    if cfg.query_pre_attn_scalar != cfg.head_dim:
        problems.append(
            f"query_pre_attn_scalar {cfg.query_pre_attn_scalar} != head_dim {cfg.head_dim} "
            "(llama.cpp scales attention by 1/sqrt(head_dim))"
        )
    if len(cfg.dense_dims) not in (0, 2):
        problems.append(f"{len(cfg.dense_dims)} Dense layers (llama.cpp has slots for none or two)")
    elif cfg.dense_dims and cfg.dense_dims[-1] != cfg.hidden_size:
        problems.append(
            f"the last Dense layer outputs {cfg.dense_dims[-1]} != hidden_size {cfg.hidden_size} "
            "(llama.cpp requires dense_3_feat_out == n_embd)"
        )
    return problems


def gguf_tensors(model: Any) -> list[tuple[str, Tensor, bool]]:
    """(GGUF name, float32 tensor, is a matrix) for every weight; norm gains already shifted by +1."""
    gguf = _require("gguf")
    t = gguf.MODEL_TENSOR

    def name(kind: Any, bid: int | None = None) -> str:
        return gguf.TENSOR_NAMES[kind].format(bid=bid) + ".weight"

    encoder = model.encoder
    out = [(name(t.TOKEN_EMBD), encoder.embed_tokens.weight, True)]
    for i, layer in enumerate(encoder.layers):
        attn, mlp = layer.self_attn, layer.mlp
        out += [
            (name(t.ATTN_NORM, i), layer.input_layernorm.weight, False),
            (name(t.ATTN_Q, i), attn.q_proj.weight, True),
            (name(t.ATTN_K, i), attn.k_proj.weight, True),
            (name(t.ATTN_V, i), attn.v_proj.weight, True),
            (name(t.ATTN_Q_NORM, i), attn.q_norm.weight, False),
            (name(t.ATTN_K_NORM, i), attn.k_norm.weight, False),
            (name(t.ATTN_OUT, i), attn.o_proj.weight, True),
            (name(t.ATTN_POST_NORM, i), layer.post_attention_layernorm.weight, False),
            (name(t.FFN_NORM, i), layer.pre_feedforward_layernorm.weight, False),
            (name(t.FFN_GATE, i), mlp.gate_proj.weight, True),
            (name(t.FFN_UP, i), mlp.up_proj.weight, True),
            (name(t.FFN_DOWN, i), mlp.down_proj.weight, True),
            (name(t.FFN_POST_NORM, i), layer.post_feedforward_layernorm.weight, False),
        ]
    out.append((name(t.OUTPUT_NORM), encoder.norm.weight, False))
    for kind, layer in zip((t.DENSE_2_OUT, t.DENSE_3_OUT), model.head.dense, strict=False):
        out.append((name(kind), layer.weight, True))
    # Matrices are the model's own float32 storage (no copy: the 300m token table alone is 805 MB).
    return [(n, w.detach().float() if matrix else w.detach().float() + 1.0, matrix) for n, w, matrix in out]


def tensor_type(name: str, gguf_type: str) -> Any:
    """The GGML type of a matrix under `--type`."""
    gguf = _require("gguf")
    q = gguf.GGMLQuantizationType
    if gguf_type == "q4_0" and name.startswith("token_embd"):
        return q.Q8_0
    return {"f32": q.F32, "bf16": q.BF16, "q8_0": q.Q8_0, "q4_0": q.Q4_0}[gguf_type]


def export_gguf(model_path: str | Path, out: str | Path, *, gguf_type: str = "f32") -> Path:
    """Write a float checkpoint (directory or a name `gemma_embed.load` resolves) as one GGUF file `out`,
    atomically; returns its path."""
    from gemma_embed.encode import resolve_model_path
    from gemma_embed.io.checkpoint import load_checkpoint
    from gemma_embed.quant.weights import is_quantized

    if gguf_type not in TYPES:
        raise ConfigError(f"--type {gguf_type!r} is not one of {', '.join(TYPES)}")
    gguf = _require("gguf")
    if not hasattr(gguf.MODEL_ARCH, "GEMMA_EMBEDDING"):
        raise ConfigError(
            f"the installed gguf package predates the {ARCH} architecture: {EXTRA_HELP} --upgrade"
        )
    source = resolve_model_path(model_path)
    if is_quantized(source):
        raise ConfigError(f"{source} holds quantized weights; export its float checkpoint instead")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the .gguf file to write")
    checkpoint = load_checkpoint(source, dtype=torch.float32)
    cfg = checkpoint.model.config
    problems = architecture_problems(cfg)
    if not (source / "tokenizer.model").is_file():
        problems.append(unsupported_tokenizer_reason(source / "tokenizer.json"))
    if problems:
        raise ConfigError(f"{source} cannot be exported to llama.cpp: " + "; ".join(problems))
    vocab = sentencepiece_vocabulary(source, checkpoint)
    tensors = gguf_tensors(checkpoint.model)
    if gguf_type in ("q8_0", "q4_0"):
        odd = [f"{n} {tuple(w.shape)}" for n, w, matrix in tensors if matrix and w.shape[-1] % QUANT_BLOCK]
        if odd:
            raise ConfigError(
                f"--type {gguf_type} needs every matrix's input size divisible by {QUANT_BLOCK}; "
                f"not: {', '.join(odd)}"
            )

    writer = gguf.GGUFWriter(None, ARCH)
    write_metadata(writer, gguf, cfg, vocab, gguf_type, source.name)
    for name, weight, matrix in tensors:
        array = weight.numpy()
        qtype = tensor_type(name, gguf_type) if matrix else gguf.GGMLQuantizationType.F32
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    with atomic_write(out, "wb") as handle:
        # The writer opens its path itself; handing it the temporary file instead keeps the write atomic.
        writer.fout = [handle]
        writer.state = gguf.gguf_writer.WriterState.EMPTY
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.fout = None
    return out


def write_metadata(writer: Any, gguf: Any, cfg: Any, vocab: Vocabulary, gguf_type: str, name: str) -> None:
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }
    writer.add_name(name)
    writer.add_file_type(file_types[gguf_type])
    if gguf_type in ("q8_0", "q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_rope_freq_base_swa(cfg.rope_local_base_freq)
    writer.add_sliding_window(cfg.sliding_window)
    writer.add_sliding_window_pattern([t == SLIDING for t in cfg.layer_types])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    if cfg.dense_dims:
        (mid, final) = cfg.dense_dims
        writer.add_dense_features_dims("dense_2", cfg.hidden_size, mid)
        writer.add_dense_features_dims("dense_3", mid, final)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_unk_token_id(vocab.unk_id)
    # The model's input contract is `<bos> text <eos>` (gemma_embed.io.tokenizer), whatever the files say.
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_space_prefix(False)


def add_format(formats: argparse._SubParsersAction) -> None:
    """Add `export gguf` to the `export` command's formats."""
    p = formats.add_parser(
        "gguf",
        help="one GGUF file for llama.cpp / Ollama (gemma-embedding architecture, Dense layers, tokenizer)",
        description="Write the encoder, mean pooling, both Dense layers and the SentencePiece tokenizer as "
        "llama.cpp's gemma-embedding GGUF. llama.cpp leaves prompts and L2 normalization to the caller.",
    )
    p.add_argument("model", help="float checkpoint directory (or a name `load` resolves)")
    p.add_argument("--out", required=True, help="the .gguf file to write (replaced atomically)")
    # Free text, checked by export_gguf, so a bad value is one `error:` line like every other bad input.
    p.add_argument("--type", default="f32", help=f"tensor type: {', '.join(TYPES)} (default f32)")
    p.set_defaults(func=cmd_export_gguf)


def cmd_export_gguf(args: argparse.Namespace) -> int:
    path = export_gguf(args.model, args.out, gguf_type=args.type)
    print(f"wrote {path} ({args.type}, {path.stat().st_size / 2**20:.1f} MiB)")
    return 0
