"""Checkpoint I/O in the Hugging Face / sentence-transformers directory layout.

Read (what `google/embeddinggemma-300m` and sentence-transformers 5.x/6.x write):

    config.json                        gemma3_text config (transformers 4.x or 5.x spelling)
    model.safetensors                  encoder weights, keys with or without a `model.` prefix
      (or model.safetensors.index.json + shards)
    tokenizer.json                     plus tokenizer_config.json when present
    modules.json                       Transformer -> Pooling -> Dense... -> Normalize
    1_Pooling/config.json              must be mean pooling
    2_Dense/, 3_Dense/                 config.json + model.safetensors (`linear.weight`)
    sentence_bert_config.json          max_seq_length
    config_sentence_transformers.json  prompts, default_prompt_name

Written: the same layout with the module type names of the published checkpoint, which every
sentence-transformers release since 2.x resolves. Only safetensors are read: a pickle checkpoint is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, processors

from gemma_embed.dtypes import choose_dtype
from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.files import atomic_directory, write_json
from gemma_embed.io.tables import read_json
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import EmbeddingModel, GemmaEmbedConfig
from gemma_embed.model.gemma3 import skeleton
from gemma_embed.prompts import DEFAULT_PROMPTS
from gemma_embed.quant.weights import MANIFEST as QUANT_MANIFEST
from gemma_embed.quant.weights import (
    SCALE_DTYPE,
    QuantizedTensor,
    apply_quantized,
    holds_quantized,
    is_quantized,
    quantized_state,
    split_quantized,
)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_FIX = (
    "gemma-embed never unpickles weights; convert once in a trusted environment with "
    "`python -c \"import transformers as t; m = t.AutoModel.from_pretrained('DIR'); "
    "m.save_pretrained('DIR', safe_serialization=True)\"` (or `safetensors.torch.save_file`)"
)
PUBLISHED_MATRYOSHKA_DIMS = (768, 512, 256, 128)
MODULE_TYPES = {
    "transformer": "sentence_transformers.models.Transformer",
    "pooling": "sentence_transformers.models.Pooling",
    "dense": "sentence_transformers.models.Dense",
    "normalize": "sentence_transformers.models.Normalize",
}
EXTRA_FILE = "gemma_embed.json"  # our own metadata (Matryoshka dims); other tools ignore it


@dataclass
class Checkpoint:
    model: EmbeddingModel
    tokenizer: TextTokenizer
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    default_prompt_name: str | None = None
    source: Path | None = None
    dtype_reason: str = ""  # why the compute dtype was chosen (`gemma_embed.dtypes.choose_dtype`)


# ---- reading ---------------------------------------------------------------------------------------


def read_checkpoint_json(path: Path, *, required: bool = True) -> Any:
    """A checkpoint's JSON file (`gemma_embed.io.tables.read_json`, raising CheckpointError)."""
    return read_json(path, required=required, error=CheckpointError)


def refuse_pickle(path: Path) -> None:
    raise CheckpointError(f"{path} is a pickle checkpoint; {PICKLE_FIX}")


def read_tensors(path: Path, *, mapped: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file, or a clear error for a missing, corrupt or pickle file.

    `mapped`: copy-on-write memory maps of the file where its layout allows (see `map_tensors`), so a page
    of weights is read when first touched: the rows of a quantized embedding table that no text looks up
    never enter memory. Model weights are read so; other state (optimizer, RNG) is read into memory, as
    some consumers (`torch.set_rng_state`) ignore a tensor's storage offset."""
    if not path.is_file():
        pickles = [p for p in path.parent.glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            refuse_pickle(pickles[0])
        raise CheckpointError(f"{path} is missing")
    try:
        if not mapped:
            return load_file(str(path))
        with safe_open(str(path), framework="pt"):  # validates the header and offsets, reads no data
            pass
        return map_tensors(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file: {exc}") from exc


SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def map_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a (validated) safetensors file as views of one copy-on-write map of it.

    A tensor whose offset is not a multiple of its element size, or of a dtype not listed, is read into memory
    by safetensors instead."""
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    header.pop("__metadata__", None)
    data_size = path.stat().st_size - 8 - header_size
    data = torch.from_numpy(np.memmap(path, np.uint8, "c", 8 + header_size)) if data_size else None
    tensors, unmapped = {}, []
    for name, entry in header.items():
        dtype, (start, end) = SAFETENSORS_DTYPES.get(entry["dtype"]), entry["data_offsets"]
        if data is None or dtype is None or start % dtype.itemsize:
            unmapped.append(name)
            continue
        tensors[name] = data[start:end].view(dtype).view(entry["shape"])
    if unmapped:
        with safe_open(str(path), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in unmapped})
    return tensors


def read_encoder_tensors(root: Path) -> dict[str, torch.Tensor]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_checkpoint_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map")
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_tensors(root / shard, mapped=True))
    else:
        tensors = read_tensors(root / "model.safetensors", mapped=True)
    # Checkpoints saved from a causal-LM wrapper prefix every key with `model.`.
    if tensors and all(k.startswith("model.") for k in tensors if k != "lm_head.weight"):
        tensors = {k.removeprefix("model."): v for k, v in tensors.items() if k != "lm_head.weight"}
    return tensors


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: Path) -> None:
    for name, param in expected.items():
        if name not in found:
            raise CheckpointError(
                f"{where}: tensor {name!r} is missing (expected shape {tuple(param.shape)})"
            )
        if tuple(found[name].shape) != tuple(param.shape):
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(found[name].shape)}, "
                f"the config expects {tuple(param.shape)}"
            )
    if unexpected := sorted(set(found) - set(expected)):
        raise CheckpointError(
            f"{where}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)"
        )


def read_modules(root: Path) -> tuple[list[Path], int | None]:
    """Dense module folders in order, and the pooling dimension; plain HF folders have no modules.json."""
    modules = read_checkpoint_json(root / "modules.json", required=False)
    if modules is None:
        return [], None
    dense_dirs, pooling_dim, kinds = [], None, []
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1].lower()
        path = root / module.get("path", "")
        kinds.append(kind)
        if kind == "pooling":
            pooling_dim = read_pooling(path / "config.json")
        elif kind == "dense":
            dense_dirs.append(path)
        elif kind not in ("transformer", "normalize"):
            raise CheckpointError(
                f"{root / 'modules.json'}: module type {module.get('type')!r} is not supported"
            )
    if not kinds or kinds[0] != "transformer" or "pooling" not in kinds:
        raise CheckpointError(f"{root / 'modules.json'} must list a Transformer then a Pooling module")
    return dense_dirs, pooling_dim


def read_pooling(path: Path) -> int | None:
    pooling = read_checkpoint_json(path)
    mode = pooling.get("pooling_mode")  # sentence-transformers >= 6 spelling
    mean = mode == "mean" if mode is not None else pooling.get("pooling_mode_mean_tokens", False)
    others = [
        k
        for k, v in pooling.items()
        if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"
    ]
    if not mean or others:
        raise CheckpointError(f"{path}: only mean pooling is supported (found {mode or others or 'none'})")
    if pooling.get("include_prompt", True) is False:
        raise CheckpointError(
            f"{path}: include_prompt=false is not supported; EmbeddingGemma pools the prompt too"
        )
    return pooling.get("word_embedding_dimension", pooling.get("embedding_dimension"))


def read_dense(path: Path, quantized_root: Path | None = None) -> tuple[torch.Tensor, QuantizedTensor | None]:
    """A Dense folder's weight, and its stored codes when `quantized_root` (the checkpoint of a quantized
    head) lists them: then the weight is a meta placeholder of its shape (no float copy is made)."""
    cfg = read_checkpoint_json(path / "config.json")
    activation = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
    if not activation.endswith("Identity") or cfg.get("bias", True):
        raise CheckpointError(
            f"{path}: only Dense layers without bias and with identity activation are supported "
            f"(found bias={cfg.get('bias', True)}, activation={activation})"
        )
    tensors = read_tensors(path / "model.safetensors", mapped=True)
    quantized = None
    if quantized_root is not None:
        folder = path.relative_to(quantized_root).as_posix()
        tensors, stored, _ = split_quantized(quantized_root, tensors, folder)
        quantized = stored.get("linear.weight")
    weight = tensors.get("linear.weight")
    if weight is None:
        raise CheckpointError(f"{path / 'model.safetensors'}: tensor 'linear.weight' is missing")
    expected = (cfg.get("out_features"), cfg.get("in_features"))
    if tuple(weight.shape) != expected:
        raise CheckpointError(
            f"{path}: 'linear.weight' has shape {tuple(weight.shape)}, config says {expected}"
        )
    return weight, quantized


def max_seq_length(root: Path, cfg_raw: dict[str, Any]) -> int:
    st_cfg = read_checkpoint_json(root / "sentence_bert_config.json", required=False) or {}
    if "max_seq_length" in st_cfg:
        return int(st_cfg["max_seq_length"])
    tok_cfg = read_checkpoint_json(root / "tokenizer_config.json", required=False) or {}
    limit = int(cfg_raw.get("max_position_embeddings", 2048))
    declared = tok_cfg.get("model_max_length")
    return min(int(declared), limit) if isinstance(declared, int | float) and declared > 0 else limit


def load_checkpoint(path: str | Path, *, dtype: Any = None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory into a ready (eval-mode) model, tokenizer and prompts."""
    root = Path(path)
    if root.is_file():
        if root.suffix in PICKLE_SUFFIXES:
            refuse_pickle(root)
        raise CheckpointError(f"{root} is a file; pass the checkpoint directory that holds config.json")
    if not root.is_dir():
        raise CheckpointError(f"{root} does not exist")
    cfg_raw = read_checkpoint_json(root / "config.json")
    dense_dirs, pooling_dim = read_modules(root)
    quantized_root = root if is_quantized(root) else None  # a `gemma-embed quantize` checkpoint
    dense_read = [read_dense(d, quantized_root) for d in dense_dirs]
    dense = [weight for weight, _ in dense_read]
    head_quantized = {f"dense.{i}.weight": q for i, (_, q) in enumerate(dense_read) if q is not None}
    extra = read_checkpoint_json(root / EXTRA_FILE, required=False) or {}
    try:
        head = {
            "dense_dims": tuple(w.shape[0] for w in dense),
            "max_seq_length": max_seq_length(root, cfg_raw),
        }
        config = GemmaEmbedConfig.from_hf_dict(cfg_raw, **head)
        out_dim = config.embedding_dim
        dims = extra.get("matryoshka_dims") or [
            out_dim,
            *(d for d in PUBLISHED_MATRYOSHKA_DIMS if d < out_dim),
        ]
        config = config.replace(matryoshka_dims=tuple(int(d) for d in dims))
    except ConfigError as exc:
        raise CheckpointError(f"{root / 'config.json'}: {exc}") from exc
    if pooling_dim is not None and pooling_dim != config.hidden_size:
        raise CheckpointError(f"{root}: pooling dimension {pooling_dim} != hidden_size {config.hidden_size}")

    tensors = read_encoder_tensors(root)

    quantized = None
    stored = next(iter(tensors.values())).dtype if tensors else None
    if quantized_root is not None:  # "as stored" is its scales' bfloat16
        tensors, quantized, scheme = split_quantized(root, tensors)
        stored = SCALE_DTYPE
    choice = choose_dtype(dtype, stored=stored, device=device)
    target = choice.dtype
    with skeleton():
        model = EmbeddingModel(config)
    check_state(model.encoder.state_dict(), tensors, root / "model.safetensors")
    for i, (layer, weight) in enumerate(zip(model.head.dense, dense, strict=True)):
        if tuple(weight.shape) != tuple(layer.weight.shape):
            raise CheckpointError(
                f"{dense_dirs[i]}: 'linear.weight' has shape {tuple(weight.shape)}, "
                f"the previous layer needs {tuple(layer.weight.shape)}"
            )
    head_state = {f"dense.{i}.weight": w for i, w in enumerate(dense)}
    model.encoder.load_state_dict({k: v.to(target) for k, v in tensors.items()}, assign=True)
    model.head.load_state_dict({k: v.to(target) for k, v in head_state.items()}, assign=True)
    if quantized is not None:
        apply_quantized(model, quantized, scheme, head_quantized)
    model.to(device).eval()

    tokenizer = TextTokenizer.from_file(
        root / "tokenizer.json",
        bos_id=config.bos_token_id,
        eos_id=config.eos_token_id,
        pad_id=config.pad_token_id,
        max_length=config.max_seq_length,
    )
    st_config = read_checkpoint_json(root / "config_sentence_transformers.json", required=False) or {}
    prompts = {**DEFAULT_PROMPTS, **(st_config.get("prompts") or {})}
    default_prompt = st_config.get("default_prompt_name")
    if default_prompt is not None and default_prompt not in prompts:
        raise CheckpointError(f"{root}: default_prompt_name {default_prompt!r} is not one of its prompts")
    return Checkpoint(model, tokenizer, prompts, default_prompt, root, dtype_reason=choice.reason)


# ---- writing ---------------------------------------------------------------------------------------


def tensors_for_saving(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def write_tokenizer(ckpt: Checkpoint, out: Path) -> None:
    tok = ckpt.tokenizer
    bos, eos = tok.tokenizer.id_to_token(tok.bos_id), tok.tokenizer.id_to_token(tok.eos_id)
    pad = tok.tokenizer.id_to_token(tok.pad_id)
    # transformers >= 5 takes special tokens from tokenizer.json's post-processor, 4.x from add_*_token.
    saved = Tokenizer.from_str(tok.tokenizer.to_str())
    saved.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tok.bos_id), (eos, tok.eos_id)],
    )
    saved.save(str(out / "tokenizer.json"))
    source_cfg = (
        read_checkpoint_json(ckpt.source / "tokenizer_config.json", required=False) if ckpt.source else None
    )
    tok_cfg = dict(source_cfg or {"tokenizer_class": "GemmaTokenizer"})
    if unk := getattr(saved.model, "unk_token", None):
        tok_cfg.setdefault("unk_token", unk)
    tok_cfg.update(
        {
            "bos_token": bos,
            "eos_token": eos,
            "pad_token": pad,
            "add_bos_token": True,
            "add_eos_token": True,
            "padding_side": "right",
            "model_max_length": tok.max_length,
        }
    )
    write_json(out / "tokenizer_config.json", tok_cfg)


def save_checkpoint(ckpt: Checkpoint, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the checkpoint atomically; sentence-transformers and `load_checkpoint` both read the result."""
    model, config = ckpt.model, ckpt.model.config

    if holds_quantized(model):
        raise CheckpointError(
            "this model holds quantized weights; save the float checkpoint and run `gemma-embed quantize` on it"
        )
    dtype = next(model.parameters()).dtype
    dtype_name = str(dtype).removeprefix("torch.")
    with atomic_directory(Path(path), overwrite=overwrite, error=CheckpointError) as out:
        write_json(
            out / "config.json", {**config.to_hf_dict(), "dtype": dtype_name, "torch_dtype": dtype_name}
        )
        save_file(
            tensors_for_saving(model.encoder.state_dict()), str(out / "model.safetensors"), {"format": "pt"}
        )
        write_tokenizer(ckpt, out)
        modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPES["transformer"]}]
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": MODULE_TYPES["pooling"]})
        write_json(
            out / "1_Pooling" / "config.json",
            {
                "word_embedding_dimension": config.hidden_size,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": False,
                "include_prompt": True,
            },
        )
        for layer in model.head.dense:
            idx = len(modules)
            folder = out / f"{idx}_Dense"
            modules.append({"idx": idx, "name": str(idx), "path": folder.name, "type": MODULE_TYPES["dense"]})
            write_json(
                folder / "config.json",
                {
                    "in_features": layer.in_features,
                    "out_features": layer.out_features,
                    "bias": False,
                    "activation_function": "torch.nn.modules.linear.Identity",
                },
            )
            save_file(tensors_for_saving({"linear.weight": layer.weight}), str(folder / "model.safetensors"))
        idx = len(modules)
        (out / f"{idx}_Normalize").mkdir()
        modules.append(
            {"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": MODULE_TYPES["normalize"]}
        )
        write_json(out / "modules.json", modules)
        write_json(
            out / "sentence_bert_config.json",
            {"max_seq_length": config.max_seq_length, "do_lower_case": False},
        )
        write_json(
            out / "config_sentence_transformers.json",
            {
                "model_type": "SentenceTransformer",
                "__version__": {"pytorch": torch.__version__},
                "prompts": ckpt.prompts,
                "default_prompt_name": ckpt.default_prompt_name,
                "similarity_fn_name": "cosine",
            },
        )
        write_json(out / EXTRA_FILE, {"matryoshka_dims": list(config.matryoshka_dims)})
    return Path(path)


def save_quantized(checkpoint: Checkpoint, scheme: str, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write `checkpoint` (a float `Checkpoint`) quantized with `scheme` as a checkpoint directory.

    The whole directory appears atomically: the float layout is written by `save_checkpoint` into a
    temporary directory, whose `model.safetensors` and Dense folders' `model.safetensors` are then replaced
    by the quantized tensors (`gemma_embed.quant.weights.quantized_state`).
    """
    with atomic_directory(Path(out), overwrite=overwrite, error=CheckpointError) as tmp:
        save_checkpoint(checkpoint, tmp, overwrite=True)  # tmp is empty: only the layout is written
        dense_dirs, _ = read_modules(tmp)
        head = {
            d.name: layer.weight for d, layer in zip(dense_dirs, checkpoint.model.head.dense, strict=True)
        }
        tensors, head_tensors, manifest = quantized_state(checkpoint.model.encoder.state_dict(), scheme, head)
        metadata = {"format": "pt", "quantization": scheme}
        save_file(tensors_for_saving(tensors), str(tmp / "model.safetensors"), metadata)
        for folder, folder_tensors in head_tensors.items():
            save_file(tensors_for_saving(folder_tensors), str(tmp / folder / "model.safetensors"), metadata)
        write_json(tmp / QUANT_MANIFEST, manifest)
    return Path(out)
