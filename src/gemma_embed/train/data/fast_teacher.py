"""The teacher in its fast forms: a BERT-style sentence-transformers model (all-MiniLM-L6-v2) as plain
BertModel + mean pooling + L2 norm, fed length-sorted batches cut by a token budget, in PyTorch or as an
ONNX Runtime graph (float32 or dynamic int8, optionally with ORT's transformer fusions).

Why: the teacher pass is the cost of distillation and of the static fit. `SentenceTransformer.encode` pads
every batch of a fixed count to its longest text; corpus texts are short (median 21 teacher tokens, 1.2%
longer than 256), so batches of a fixed token budget (`budget_batches`) let short texts go in large batches
with almost no padding. `bench/teacher_speed.py` measures every form against the float32
sentence-transformers teacher; the results are in docs/results/teacher_speed.json.

Tokenization is the teacher's own: `[CLS] text [SEP]` by its tokenizer.json, truncated to its
max_seq_length (256), as sentence-transformers does. `windows` cuts a long text into overlapping windows of
that length for document vectors.

Needs `transformers` (the `reference` extra) for the PyTorch form and `onnx` + `onnxruntime` (the `onnx`
extra) for the ONNX forms; both are imported where used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gemma_embed.errors import ConfigError, InputError

_THREADS = {"n": 0}  # 0: library default; set_threads() also sizes the ONNX Runtime sessions made after it


def set_threads(threads: int) -> None:
    """Intra-op threads for torch and for ONNX Runtime sessions created afterwards."""
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    _THREADS["n"] = threads


class TeacherTokenizer:
    """The teacher's tokenizer.json: `[CLS] text [SEP]` ids, truncated to the teacher's max_seq_length."""

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(model_dir)
        if not (folder / "tokenizer.json").is_file():
            raise InputError(f"{folder}: no tokenizer.json (a sentence-transformers BERT teacher is needed)")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        config = folder / "sentence_bert_config.json"
        self.max_length = int(json.loads(config.read_text())["max_seq_length"]) if config.is_file() else 256
        self.cls_id = self.tokenizer.token_to_id("[CLS]")
        self.sep_id = self.tokenizer.token_to_id("[SEP]")
        if self.cls_id is None or self.sep_id is None:
            raise InputError(f"{folder}: tokenizer has no [CLS]/[SEP] tokens")

    def content_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text without [CLS]/[SEP] and without truncation."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def wrap(self, content: np.ndarray) -> np.ndarray:
        """`[CLS] content [SEP]`, content cut to max_length - 2 tokens."""
        body = content[: self.max_length - 2]
        return np.concatenate([[self.cls_id], body, [self.sep_id]]).astype(np.int64)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Model inputs of each text, truncated as sentence-transformers truncates."""
        return [self.wrap(ids) for ids in self.content_ids(texts)]


def window_starts(n_tokens: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` content tokens every `stride` tokens covering n_tokens; the last
    window ends at the end (so it may overlap its neighbour by more than window - stride)."""
    if not 0 < stride <= window:
        raise InputError(f"need 0 < stride <= window, got stride {stride}, window {window}")
    if n_tokens <= window:
        return [0]
    starts = list(range(0, n_tokens - window, stride))
    starts.append(n_tokens - window)
    return starts


def budget_batches(lengths: Sequence[int], token_budget: int) -> list[np.ndarray]:
    """Indices of length-sorted batches (longest first) whose padded size, count x longest, stays within
    `token_budget` (a text longer than the budget goes alone)."""
    if token_budget < 1:
        raise InputError(f"token_budget must be >= 1, got {token_budget}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        count = max(1, token_budget // max(longest, 1))
        batches.append(order[start : start + count])
        start += count
    return batches


def pad_batch(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 [batch, longest], right-padded with 0 ([PAD] of BERT)."""
    longest = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), longest), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


class _BudgetEncoder:
    """Shared driver: tokenize, batch by token budget, run `_forward` per batch, return rows in input order."""

    def __init__(self, model_dir: str | Path, token_budget: int) -> None:
        self.tokenizer = TeacherTokenizer(model_dir)
        self.token_budget = token_budget

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_ids(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized float32 vectors [len(sequences), dim] of model inputs (`TeacherTokenizer.encode`)."""
        if not sequences:
            raise InputError("no texts to embed")
        out: np.ndarray | None = None
        for rows in budget_batches([len(s) for s in sequences], self.token_budget):
            ids, mask = pad_batch([sequences[i] for i in rows])
            vectors = self._forward(ids, mask)
            if out is None:
                out = np.empty((len(sequences), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.tokenizer.encode(texts))


class TorchTeacher(_BudgetEncoder):
    """The teacher as a transformers BertModel in `dtype`, mean pooling and L2 norm in float32."""

    def __init__(
        self, model_dir: str | Path, dtype: torch.dtype = torch.float32, token_budget: int = 8192
    ) -> None:
        super().__init__(model_dir, token_budget)
        try:
            from transformers import AutoModel
        except ImportError:
            raise ConfigError(
                "the PyTorch teacher needs transformers: pip install 'gemma-embed[reference]'"
            ) from None
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(dtype).eval()
        self.dtype = dtype

    @torch.inference_mode()
    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        attention = torch.from_numpy(mask)
        hidden = self.model(input_ids=torch.from_numpy(ids), attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).float()
        pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


class _Pooled(torch.nn.Module):
    """BertModel + mean pooling over real tokens + L2 norm, as one graph (token_type_ids are all 0)."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the ONNX teacher needs {module}: pip install 'gemma-embed[onnx]'") from None


def export_teacher_onnx(model_dir: str | Path, out_dir: str | Path, *, int8: bool, fused: bool) -> Path:
    """The teacher as ONNX under out_dir (reused when already there): `teacher.onnx` (float32), with
        `-fused` ORT's BERT fusions (attention, layer norm, gelu), with `-int8` dynamic int8 weights (per output channel: on 300 corpus texts mean cosine 0.990 to float32,
    per tensor 0.939)."""
    _require("onnx")
    ort = _require("onnxruntime")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "teacher.onnx"
    if not base.is_file():
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
        example = torch.ones(2, 8, dtype=torch.int64)
        tmp = base.with_suffix(".tmp.onnx")
        with torch.no_grad():
            torch.onnx.export(
                _Pooled(bert.eval()),
                (example, torch.ones_like(example)),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
                opset_version=17,
                dynamo=False,
            )
        tmp.replace(base)
    path = base
    if fused:
        fused_path = out / "teacher-fused.onnx"
        if not fused_path.is_file():
            from onnxruntime.transformers.optimizer import optimize_model

            config = json.loads((Path(model_dir) / "config.json").read_text())
            optimized = optimize_model(
                str(base),
                model_type="bert",
                num_heads=config["num_attention_heads"],
                hidden_size=config["hidden_size"],
                opt_level=1,
            )
            tmp = fused_path.with_suffix(".tmp.onnx")
            optimized.save_model_to_file(str(tmp))
            tmp.replace(fused_path)
        path = fused_path
    if int8:
        quant_path = path.with_name(path.stem + "-int8.onnx")
        if not quant_path.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = quant_path.with_suffix(".tmp.onnx")
            onnx = _require("onnx")
            # Shape inference cannot type the outputs of ORT's fused ops; they are all float32 here.
            quantize_dynamic(
                str(path),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            tmp.replace(quant_path)
        path = quant_path
    del ort
    return path


class OnnxTeacher(_BudgetEncoder):
    """An `export_teacher_onnx` graph run by ONNX Runtime on CPU."""

    def __init__(self, onnx_path: str | Path, model_dir: str | Path, token_budget: int = 8192) -> None:
        super().__init__(model_dir, token_budget)
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _THREADS["n"] or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (vectors,) = self.session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(vectors, dtype=np.float32)
