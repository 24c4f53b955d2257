"""Static warm start: per-token vectors fitted to a teacher, built into a Gemma 3 embedding model.

A static ("bag of tokens") embedding of a text is the mean of one vector per token. Fitting those vectors to a
teacher is ridge regression with a closed-form optimum (model2vec and the calibration note in
`../shared/notes` do the same):

    minimize_W  || X W - Y ||^2 + l2 * || W ||^2

where row i of X is the token histogram of text i divided by its length (the model's mean pooling: `<bos>`,
prompt, text and `<eos>` all count) and Y holds the teacher's L2-normalized vectors. It is solved by conjugate
gradients on the normal equations with a sparse X, so a 32k vocabulary costs seconds, not a dense 32k x 32k
factorization. Texts get a random prompt of the model's task prompts, so prompt tokens learn to add little.

`warm_start` then sets a Gemma 3 `EmbeddingModel` so that, before any training, it computes exactly this
static model (projected on the teacher's top principal directions):

* token embeddings = the fitted vectors in the top `hidden - 1` principal directions of the teacher's space,
  plus one "null" coordinate chosen so that every token vector has norm 1. The final RMSNorm divides each
  token state by its norm, which would discard the vector lengths a ridge fit relies on (frequent tokens get
  short vectors); with equal norms it divides by the same number everywhere and the mean stays exact.
* every residual branch is gated to `gate` through Gemma's post-norm gains (`1 + w`; gate 0 is ReZero's
  start: the layers add nothing yet, but their gains get gradients, so training opens them);
* the two dense layers map the principal coordinates back to the teacher's space and drop the null one.

The layers keep their own initialization (random, decoder-only or encoder-decoder), which is what the
initialization ablation compares.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm import tqdm

from gemma_embed.errors import CheckpointError, ConfigError, InputError
from gemma_embed.io.checkpoint import Checkpoint, save_checkpoint
from gemma_embed.io.files import atomic_write, write_json
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import preset
from gemma_embed.model.head import EmbeddingModel
from gemma_embed.paths import runs_dir
from gemma_embed.prompts import apply_prompt
from gemma_embed.train.data.corpus import TRAIN_FILE, read_corpus, sample_texts
from gemma_embed.train.data.pairs import TASK_PROMPTS
from gemma_embed.train.data.teacher import MODEL_SPEC_HELP, TeacherCache, load_teacher

STATIC_FILE = "static.safetensors"
# Every prompt the model is trained or evaluated with, so the fit sees the prompt tokens in use.
PROMPTS = tuple(sorted({p for pair in TASK_PROMPTS.values() for p in pair}))


def token_bags(
    tokenizer: TextTokenizer, texts: Sequence[str], prompts: Sequence[str] = PROMPTS, seed: int = 0
) -> Tensor:
    """Sparse CSR [len(texts), vocab]: row i is the token histogram of `<bos> prompt text <eos>` divided by its
    length, with a seeded random prompt per text (no prompt when `prompts` is empty)."""
    rng = random.Random(seed)
    prompted = [apply_prompt(rng.choice(prompts), t) if prompts else t for t in texts]
    sequences, _ = tokenizer.encode(prompted)
    crow = np.zeros(len(sequences) + 1, dtype=np.int64)
    crow[1:] = np.cumsum([len(s) for s in sequences])
    cols = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(crow[-1]))
    values = np.repeat(1.0 / np.diff(crow), np.diff(crow)).astype(np.float32)
    with warnings.catch_warnings():  # torch calls its (well-tested) CSR support "beta" on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(cols),
            torch.from_numpy(values),
            size=(len(sequences), tokenizer.vocab_size),
            check_invariants=False,
        )


def ridge_fit(
    bags: Tensor,
    targets: Tensor,
    l2: float = 1e-3,
    iters: int = 300,
    tol: float = 1e-4,
    show_progress: bool = False,
) -> Tensor:
    """W [vocab, dim] minimizing ||bags W - targets||^2 + l2 ||W||^2, by conjugate gradients (one independent
    CG per target column, run together) preconditioned by the diagonal of the normal matrix (token weights
    span orders of magnitude between frequent and rare tokens; Jacobi scaling evens them out, so a corpus
    of 650k texts converges in tens of iterations, not hundreds). `l2` is relative to the mean squared row
    weight of `bags`. `show_progress` shows the iterations with the worst column's residual relative to `tol`
    (the fit stops when it reaches 1)."""
    if bags.shape[0] != targets.shape[0]:
        raise InputError(f"{bags.shape[0]} token bags for {targets.shape[0]} targets")
    transposed = bags.to_sparse_coo().t().coalesce().to_sparse_csr()
    values = bags.values()
    lam = l2 * float((values**2).sum()) / bags.shape[1]
    diagonal = (
        torch.zeros(bags.shape[1], dtype=values.dtype).index_add_(0, bags.col_indices(), values**2) + lam
    )
    inverse_diagonal = (1.0 / diagonal).unsqueeze(1)

    def normal(v: Tensor) -> Tensor:
        return transposed @ (bags @ v) + lam * v

    rhs = transposed @ targets
    w = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = inverse_diagonal * residual
    direction = preconditioned.clone()
    rz = (residual * preconditioned).sum(0)
    stop = tol**2 * (rhs**2).sum(0)
    progress = tqdm(total=iters, desc="ridge (conjugate gradients)", unit="iter", disable=not show_progress)
    for _ in range(iters):
        product = normal(direction)
        step = rz / (direction * product).sum(0).clamp_min(1e-30)
        w += step * direction
        residual -= step * product
        worst = float(((residual**2).sum(0) / stop.clamp_min(1e-30)).max().sqrt())
        progress.update()
        progress.set_postfix(residual_over_tol=f"{worst:.3g}", refresh=False)
        if worst <= 1.0:
            break
        preconditioned = inverse_diagonal * residual
        new_rz = (residual * preconditioned).sum(0)
        direction = preconditioned + (new_rz / rz.clamp_min(1e-30)) * direction
        rz = new_rz
    progress.close()
    return w


def principal_directions(targets: Tensor) -> Tensor:
    """Orthonormal columns [dim, dim]: eigenvectors of the (uncentred) second moment of the targets, largest
    first (uncentred so that the mean direction, which cosine similarity sees, is kept)."""
    moment = targets.T.double() @ targets.double() / targets.shape[0]
    _, vectors = torch.linalg.eigh(moment)
    return vectors.flip(1).float()


def fit_static(
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    *,
    l2: float = 1e-3,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, Tensor]:
    """The static model of `texts` -> teacher `targets`: {"vectors": [vocab, dim], "directions": [dim, dim]}."""
    y = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    vectors = ridge_fit(token_bags(tokenizer, texts, seed=seed), y, l2=l2, show_progress=show_progress)
    return {"vectors": vectors.contiguous(), "directions": principal_directions(y).contiguous()}


def save_static(fit: dict[str, Tensor], out: Path, meta: dict[str, Any]) -> Path:
    """Write `out/static.safetensors` (and `static.json` with how it was made) atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / STATIC_FILE, "wb") as handle:
        handle.write(save({k: v.contiguous() for k, v in fit.items()}))
    write_json(out / "static.json", meta)
    return out / STATIC_FILE


def load_static(path: str | Path) -> dict[str, Tensor]:
    """A static fit written by `save_static` (a folder or the file itself)."""
    file = Path(path)
    file = file / STATIC_FILE if file.is_dir() else file
    if not file.is_file():
        raise CheckpointError(f"{file}: no static fit; make one with `gemma-embed fit-static`")
    tensors = load_file(str(file))
    if set(tensors) != {"vectors", "directions"}:
        raise CheckpointError(f"{file}: expected tensors 'vectors' and 'directions', got {sorted(tensors)}")
    return tensors


def token_table(fit: dict[str, Tensor], hidden: int) -> Tensor:
    """[vocab, hidden] unit-norm token vectors: the fit in the top hidden - 1 principal directions, scaled by the
    largest row norm, plus the null coordinate sqrt(1 - |row|^2)."""
    vectors, directions = fit["vectors"], fit["directions"]
    if hidden - 1 > directions.shape[1]:
        raise ConfigError(f"hidden size {hidden} exceeds the teacher dimension {directions.shape[1]} + 1")
    coords = vectors @ directions[:, : hidden - 1]
    coords = coords / coords.norm(dim=1).max().clamp_min(1e-12)
    null = (1 - coords.pow(2).sum(1, keepdim=True)).clamp_min(0).sqrt()
    return torch.cat([coords, null], dim=1)


@torch.no_grad()
def warm_start(model: EmbeddingModel, fit: dict[str, Tensor], gate: float = 0.0) -> EmbeddingModel:
    """Set `model` to compute the static fit (see the module docstring); its layers keep their weights."""
    cfg = model.config
    vocab, teacher_dim = fit["vectors"].shape
    if vocab != cfg.vocab_size:
        raise ConfigError(
            f"static fit has {vocab} tokens, the model {cfg.vocab_size}; fit it with its tokenizer"
        )
    dense = model.head.dense
    if len(dense) != 2 or dense[1].out_features != teacher_dim or dense[0].out_features < cfg.hidden_size - 1:
        raise ConfigError(
            f"warm start needs two dense layers hidden -> (>= hidden - 1) -> {teacher_dim} (the teacher's "
            f"dimension); this model has dense_dims {cfg.dense_dims}"
        )
    k = cfg.hidden_size - 1
    model.encoder.embed_tokens.weight.copy_(token_table(fit, cfg.hidden_size))
    for layer in model.encoder.layers:
        layer.post_attention_layernorm.weight.fill_(gate - 1.0)
        layer.post_feedforward_layernorm.weight.fill_(gate - 1.0)
    model.encoder.norm.weight.zero_()
    dense[0].weight.zero_()
    dense[0].weight[:k, :k] = torch.eye(k)
    dense[1].weight.zero_()
    dense[1].weight[:, :k] = fit["directions"][:, :k]
    return model


# ---- CLI -----------------------------------------------------------------------------------------------


def static_model(fit: dict[str, Tensor], tokenizer: TextTokenizer, preset_name: str = "mini") -> Checkpoint:
    """A checkpoint of the `preset_name` model warm-started from the fit (computing exactly the static model),
    so that `gemma-embed eval` scores the static fit as a model."""
    config = preset(preset_name).replace(vocab_size=tokenizer.vocab_size)
    model = warm_start(EmbeddingModel(config).initialize(0), fit).eval()
    contract = TextTokenizer(
        tokenizer.tokenizer,
        bos_id=config.bos_token_id,
        eos_id=config.eos_token_id,
        pad_id=config.pad_token_id,
        max_length=config.max_seq_length,
    )
    return Checkpoint(model, contract)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    texts = sample_texts([row.text for row in read_corpus(args.corpus / TRAIN_FILE)], args.sample, args.seed)
    teacher, identity = load_teacher(args.teacher)
    cache = TeacherCache(teacher, identity, args.teacher_cache, batch_size=128)
    if args.cached_only:  # fit on what a (possibly still running) `cache-teacher` pass has stored so far
        found, cached = cache.cached(texts)
        if cached is None:
            raise InputError(f"no text of the sample is in the teacher cache {args.teacher_cache}")
        texts = [t for t, hit in zip(texts, found, strict=True) if hit]
        targets = cached
        print(f"{len(texts)} of the sampled texts are cached; fitting on them")
    else:
        targets = cache.embed(texts, show_progress=True)
    tokenizer = TextTokenizer.from_file(
        args.tokenizer / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0, max_length=args.max_length
    )
    fit_start = time.perf_counter()
    fit = fit_static(tokenizer, texts, targets, l2=args.l2, seed=args.seed, show_progress=True)
    fit_seconds = time.perf_counter() - fit_start
    meta = {
        "teacher": identity,
        "texts": len(texts),
        "l2": args.l2,
        "seed": args.seed,
        "tokenizer": str(args.tokenizer),
        "max_length": args.max_length,
        "cached_only": args.cached_only,
        "fit_seconds": round(fit_seconds, 1),
    }
    path = save_static(fit, args.out, meta)
    if args.model_out:
        save_checkpoint(static_model(fit, tokenizer, args.preset), args.model_out, overwrite=True)
        print(f"warm-started {args.preset} model (the static fit as a model): {args.model_out}")
    print(
        f"static fit of {len(texts)} texts -> {tuple(fit['vectors'].shape)} in {time.perf_counter() - start:.1f} s "
        f"(ridge fit {fit_seconds:.1f} s): {path}"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `fit-static TOKENIZER --teacher DIR --out DIR [--sample N]`."""
    parser = subparsers.add_parser(
        "fit-static",
        help="fit per-token vectors to a teacher (ridge); `train` warm-starts a model from them",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("tokenizer", type=Path, help="directory with the model's tokenizer.json")
    parser.add_argument(
        "--teacher",
        required=True,
        help=MODEL_SPEC_HELP,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (static.safetensors)")
    parser.add_argument(
        "--corpus", type=Path, default=runs_dir() / "corpus", help="corpus folder (runs/corpus)"
    )
    parser.add_argument("--sample", type=int, default=80_000, help="seeded sample of corpus texts (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l2", type=float, default=1e-3, help="ridge strength, relative (default 1e-3)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text, as in training")
    parser.add_argument(
        "--teacher-cache", type=Path, default=runs_dir() / "teacher_cache", help="teacher cache root"
    )
    parser.add_argument(
        "--cached-only", action="store_true", help="fit on the sampled texts already cached (no teacher pass)"
    )
    parser.add_argument(
        "--model-out", type=Path, help="also write the warm-started model (scored by `gemma-embed eval`)"
    )
    parser.add_argument("--preset", default="mini", help="model preset of --model-out (default mini)")
    parser.set_defaults(func=_run)
