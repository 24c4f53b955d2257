"""Model souping: the weighted parameter average of fine-tuned checkpoints of one architecture.

EmbeddingGemma's final model is a soup of checkpoints fine-tuned on different training mixtures (Schechter
Vera et al., 2025, arXiv:2509.20354; Wortsman et al., 2022, "Model soups"). A checkpoint is a directory in the
Hugging Face / sentence-transformers layout (config.json, model.safetensors or shards + index, modules.json,
1_Pooling/, 2_Dense/model.safetensors, 3_Dense/model.safetensors, tokenizer files, ...):

    soup[t] = cast_to_stored_dtype( sum_c w_c * float32(ckpt_c[t]) ),   w normalised to sum 1

for every tensor t of every safetensors file. Tensors are matched by name within their component (a
`*.safetensors` file, or the sharded model an `*.safetensors.index.json` describes), so a sharded checkpoint
soups with a single-file one; the output keeps the first checkpoint's files and sharding. Integer and bool
tensors are not averaged: they must be equal in every checkpoint. Every other file is copied from the first
checkpoint. Pickle weight files are refused, never read.
"""

import argparse
import json
import math
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gemma_embed.cli_args import add_out_arg
from gemma_embed.errors import CheckpointError, InputError
from gemma_embed.io.files import atomic_directory

# config.json keys that do not describe the architecture (tensor dtypes are compared tensor by tensor).
NON_ARCHITECTURE_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "_attn_implementation"}
)
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
INDEX_SUFFIX = ".index.json"

# (component, tensor name): component is a safetensors file's path or a sharded model's index path minus
# ".index.json", both relative to the checkpoint directory.
TensorKey = tuple[str, str]


class _Checkpoint:
    """One checkpoint directory: where each tensor lives, opened lazily for reading."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        if not root.is_dir():
            raise CheckpointError(
                f"checkpoint {root} is not a directory: pass checkpoint directories to soup"
            )
        self.root, self._stack = root, stack
        files = sorted(p for p in root.rglob("*") if p.is_file())
        pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(
                f"{pickles[0]} is a pickle file; soup reads safetensors only: "
                "delete it or re-save the checkpoint with safetensors"
            )
        self.tensor_files = [p.relative_to(root).as_posix() for p in files if p.suffix == ".safetensors"]
        if not self.tensor_files:
            raise CheckpointError(
                f"checkpoint {root} has no *.safetensors file: is it a checkpoint directory?"
            )
        self.other_files = [p for p in files if p.suffix != ".safetensors"]
        component = {rel: rel for rel in self.tensor_files}
        for index in root.rglob(f"*.safetensors{INDEX_SUFFIX}"):
            name = index.relative_to(root).as_posix()[: -len(INDEX_SUFFIX)]
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (ValueError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{index} is not a safetensors index with a weight_map: {e}") from e
            for shard in shards:
                rel = (index.parent / shard).relative_to(root).as_posix()
                if rel not in component:
                    raise CheckpointError(
                        f"{index} lists shard {shard}, which is missing: re-copy the checkpoint"
                    )
                component[rel] = name
        self.component = component
        self._handles: dict[str, Any] = {}
        self.location: dict[TensorKey, str] = {}
        for rel in self.tensor_files:
            for name in self.open(rel).keys():  # noqa: SIM118 (safe_open is not a Mapping)
                self.location[(component[rel], name)] = rel

    def open(self, rel: str) -> Any:
        if rel not in self._handles:
            try:
                self._handles[rel] = self._stack.enter_context(safe_open(self.root / rel, framework="pt"))
            except Exception as e:
                raise CheckpointError(f"cannot read {self.root / rel}: {e}; re-save the checkpoint") from e
        return self._handles[rel]

    def signature(self, key: TensorKey) -> tuple[list[int], str]:
        tensor = self.open(self.location[key]).get_slice(key[1])
        return list(tensor.get_shape()), str(tensor.get_dtype())

    def tensor(self, key: TensorKey) -> torch.Tensor:
        return self.open(self.location[key]).get_tensor(key[1])


def _normalized_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise InputError(f"got {len(weights)} weights for {n} checkpoints: give one weight per checkpoint")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"soup weights must be finite, >= 0 and not all 0; got {list(weights)}")
    return [w / sum(weights) for w in weights]


def _architecture_files(ckpt: Path) -> dict[str, dict[str, Any]]:
    """config.json (root and module dirs) and modules.json, minus the non-architecture keys."""
    found = {}
    for path in sorted([*ckpt.rglob("config.json"), *ckpt.glob("modules.json")]):
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path} is not valid JSON: {e}") from e
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in NON_ARCHITECTURE_KEYS}
        else:
            data = {"modules": data}
        found[path.relative_to(ckpt).as_posix()] = data
    return found


def _check_compatible(ckpts: list[_Checkpoint]) -> None:
    first = ckpts[0]
    reference = _architecture_files(first.root)
    for other in ckpts[1:]:
        configs = _architecture_files(other.root)
        for rel in sorted(reference.keys() | configs.keys()):
            if rel not in reference or rel not in configs:
                owner, lacking = (first, other) if rel in reference else (other, first)
                raise CheckpointError(
                    f"{lacking.root} lacks {rel} that {owner.root} has: soup one architecture only"
                )
            a, b = reference[rel], configs[rel]
            for field in sorted(a.keys() | b.keys()):
                if a.get(field) != b.get(field):
                    raise CheckpointError(
                        f"{rel} field {field!r} differs: {a.get(field)!r} in {first.root} "
                        f"vs {b.get(field)!r} in {other.root}; soup only checkpoints of one architecture"
                    )
        for key in sorted(first.location.keys() | other.location.keys()):
            where = f"tensor {key[1]!r} of {key[0]}"
            if key not in other.location or key not in first.location:
                owner, lacking = (first, other) if key in first.location else (other, first)
                raise CheckpointError(
                    f"{lacking.root} lacks {where} that {owner.root} has: checkpoints differ"
                )
            (shape_a, dtype_a), (shape_b, dtype_b) = first.signature(key), other.signature(key)
            if shape_a != shape_b:
                raise CheckpointError(
                    f"{where} has shape {shape_a} in {first.root} but {shape_b} in {other.root}"
                )
            if dtype_a != dtype_b:
                raise CheckpointError(
                    f"{where} is {dtype_a} in {first.root} but {dtype_b} in {other.root}: "
                    "convert one checkpoint to the other's dtype"
                )


def _average(ckpts: list[_Checkpoint], weights: list[float], key: TensorKey) -> torch.Tensor:
    first = ckpts[0].tensor(key)
    if not (first.is_floating_point() or first.is_complex()):
        for ckpt in ckpts[1:]:
            if not torch.equal(ckpt.tensor(key), first):
                raise CheckpointError(
                    f"integer tensor {key[1]!r} of {key[0]} differs in {ckpt.root}: it cannot be averaged"
                )
        return first
    acc = torch.promote_types(first.dtype, torch.float32)
    total = sum(w * ckpt.tensor(key).to(acc) for w, ckpt in zip(weights, ckpts, strict=True))
    return total.to(first.dtype)


def soup_checkpoints(
    paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None, *, overwrite: bool = False
) -> Path:
    """Average the checkpoints `paths` (weights normalised to sum 1; default uniform) into directory `out`.

    Refuses incompatible checkpoints (CheckpointError naming the first differing config field or tensor:
    missing key, shape or dtype) before writing anything. The soup is written into a temporary directory next
    to `out` and renamed into place, so `out` is either absent, the old content or the complete soup. An
    existing non-empty `out` is replaced only with `overwrite=True`. Returns `out`.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    if not paths:
        raise InputError("soup needs at least one checkpoint directory")
    weights = _normalized_weights(weights, len(paths))
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: pass a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty: choose another directory or pass --overwrite")
    with ExitStack() as stack:
        ckpts = [_Checkpoint(p, stack) for p in paths]
        _check_compatible(ckpts)
        with atomic_directory(out, overwrite=overwrite, error=InputError) as tmp:
            first = ckpts[0]
            for src in first.other_files:
                dst = tmp / src.relative_to(first.root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            for rel in first.tensor_files:
                handle = first.open(rel)
                keys = [(first.component[rel], name) for name in handle.keys()]  # noqa: SIM118
                tensors = {name: _average(ckpts, weights, (component, name)) for component, name in keys}
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                save_file(tensors, tmp / rel, metadata=handle.metadata())
    return out


def searched_checkpoints(search_dir: Path) -> list[Path]:
    """The final checkpoints of the mixtures a `mixture-search` kept (best first)."""
    from gemma_embed.train.orchestration.mixture_search import MIXTURES_FILE, read_mixtures, trial_dir

    return [trial_dir(search_dir, r.trial) / "final" for r in read_mixtures(search_dir / MIXTURES_FILE)]


def _run(args: argparse.Namespace) -> int:
    checkpoints = list(args.checkpoints)
    if args.from_search:
        checkpoints += searched_checkpoints(args.from_search)
    if not checkpoints:
        raise InputError("name checkpoint directories, or a mixture search with --from-search")
    out = soup_checkpoints(checkpoints, args.out, args.weights, overwrite=args.overwrite)
    print(f"wrote the soup of {len(checkpoints)} checkpoints to {out}")
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `gemma-embed soup [CKPT ...] [--from-search DIR] --out DIR [--weights W ...] [--overwrite]`."""
    parser = subparsers.add_parser(
        "soup",
        help="average fine-tuned checkpoints into one model (model souping)",
        description="Weighted parameter average of checkpoints of one architecture (safetensors only).",
    )
    parser.add_argument("checkpoints", nargs="*", type=Path, metavar="CKPT", help="checkpoint directories")
    parser.add_argument(
        "--from-search",
        type=Path,
        metavar="DIR",
        help="also the final checkpoints of the mixtures a `mixture-search --out DIR` kept",
    )
    add_out_arg(parser, required=True, type=Path, metavar="DIR", help="output checkpoint directory")
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        help="one weight per checkpoint (normalised; default equal)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.set_defaults(func=_run)
