"""The trainer: turns a `Recipe` into a model, data, a loss and an optimizer, and runs the training loop.

One optimizer step (`Trainer.train_step`):

1. `grad_accum` times: the mixture sampler hands out the next *global* batch (one dataset, the same on every
   rank); each rank keeps its equal shard of rows, adds the dataset's prompts and tokenizes queries, positives
   and hard negatives; the shard is embedded and `EmbeddingGemmaLoss` (contrastive + spread-out +
   distillation, all-gathered over ranks) is backpropagated, scaled by 1 / grad_accum. With
   `loss.parallel_distillation_weight` > 0, a batch of a bitext set (English source -> translation) is a
   parallel batch: both sides are distilled to the teacher's vector of the source (only the sources are
   embedded by the teacher).
   With `train.chunk_size` the embedding uses gradient caching (GradCache, Gao et al., 2021, "Scaling Deep
   Contrastive Learning Batch Size under Memory Limited Setup"): every text is embedded without a graph in
   sub-batches, the loss and its gradient with respect to the embeddings are computed on the whole batch,
   then each sub-batch is embedded again with a graph and backpropagated with its slice of that gradient. The
   parameter gradients equal those of the full batch; peak memory is that of one sub-batch.
2. Gradients are clipped, AdamW steps, the learning rate follows the stage's warmup + decay.

Distributed (`torchrun --nproc-per-node N -m gemma_embed train RECIPE`): `train.parallel = "ddp"` wraps the
model in DistributedDataParallel, `"fsdp"` shards it with `fully_shard` (each encoder layer, then the model).
The loss module (it owns the `DistillationProjection`) gets the same wrapper, so its gradients are averaged
too. Gradients are synchronised only on the last backward of a step (DDP `require_backward_grad_sync`, FSDP
`set_requires_gradient_sync`), so accumulation and gradient caching communicate once per step. With the local
mean loss and the averaging of DDP/FSDP, the gradient is the one of the global batch in one process (see
`gemma_embed.distributed`). Global batches must split evenly over the ranks; a remainder is dropped.

Checkpoints (`<output>/checkpoints/step-NNNNNNNN/`, written atomically by rank 0, the last `keep_last` kept):

    model/                 the model in the standard layout (`save_checkpoint`; `gemma_embed.load` reads it)
    trainer.safetensors    optimizer moments and steps, the loss module's weights, every rank's RNG states
    trainer.json           step, stage, sampler position, scheduler, RNG scalars, the training recipe

Nothing is pickled. A resumed run (`--resume`) restores all of it and continues bitwise where the checkpoint
was written: training killed at any moment and resumed ends with the weights of an uninterrupted run.
At the end, the model (without the distillation projection) is written to `<output>/final`, and metrics and
evaluations are in `<output>/metrics.jsonl`.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from gemma_embed.distributed import (
    all_ranks,
    barrier,
    is_main,
    main_process_first,
    mean_over_ranks,
    rank,
    setup,
    world_size,
)
from gemma_embed.encode import Embedder
from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.eval.embedding import EmbeddingSource
from gemma_embed.eval.encoders import GemmaEmbedEncoder
from gemma_embed.eval.registry import build_task
from gemma_embed.eval.runner import EvalTask, run_task
from gemma_embed.io.checkpoint import (
    Checkpoint,
    atomic_directory,
    load_checkpoint,
    read_checkpoint_json,
    read_tensors,
    save_checkpoint,
    tensors_for_saving,
    write_json,
)
from gemma_embed.io.files import atomic_write
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.losses import DistillationProjection, EmbeddingGemmaLoss
from gemma_embed.model import EmbeddingModel, GemmaEmbedConfig, preset
from gemma_embed.model.gemma3 import skeleton
from gemma_embed.prompts import DEFAULT_PROMPTS, apply_prompt
from gemma_embed.train.data import sources
from gemma_embed.train.data.mixture import Batch, Mixture, MixtureBatchSampler
from gemma_embed.train.data.pairs import PairDataset
from gemma_embed.train.data.teacher import TeacherCache, TeacherTable, load_teacher, package_model_path
from gemma_embed.train.data.tokenizer import save_tokenizer, train_tokenizer
from gemma_embed.train.init.static import load_static, warm_start
from gemma_embed.train.optim import decay_groups
from gemma_embed.train.parallel import parallelize, set_gradient_sync
from gemma_embed.train.recipe import Recipe, StageSection, recorded_training_dict
from gemma_embed.train.state import flat_items, flatten_state, rng_state, set_rng_state, unflatten_state

CHECKPOINTS = "checkpoints"
FINAL = "final"
METRICS = "metrics.jsonl"
STATE_JSON = "trainer.json"
STATE_TENSORS = "trainer.safetensors"
STATE_FORMAT = 1
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)
ModelTransform = Callable[[EmbeddingModel], EmbeddingModel]


# ---- building blocks ---------------------------------------------------------------------------------------


def load_sets(recipe: Recipe) -> dict[str, PairDataset]:
    """The recipe's training sets: pair files, or converters of the shared data (run in memory)."""
    out = {}
    for index, spec in enumerate(recipe.data.sets):
        if spec.file:
            dataset = PairDataset.from_file(spec.file, name=spec.name, task=spec.task or "retrieval")
        else:
            if spec.name not in sources.SOURCES:
                raise ConfigError(
                    f"data.sets[{index}]: {spec.name!r} is not a converter of gemma_embed.train.data.sources "
                    f"(known: {', '.join(sources.SOURCES)}); give a file = ... for your own pairs"
                )
            examples, _ = sources.convert(spec.name)
            query_prompt, document_prompt = sources.SOURCES[spec.name].prompts
            dataset = PairDataset(
                examples, name=spec.name, query_prompt=query_prompt, document_prompt=document_prompt
            )
        dataset = dataset.subset(spec.max_rows, recipe.seed)
        out[spec.name] = dataset
    return out


def bitext_sets(recipe: Recipe) -> set[str]:
    """Names of the recipe's bitext sets (task "bitext": the query is the English source, the positive its
    translation), the parallel sets of `loss.parallel_distillation_weight`."""
    return {
        spec.name
        for spec in recipe.data.sets
        if (spec.task if spec.file else sources.SOURCES[spec.name].task) == "bitext"
    }


def role_texts(datasets: dict[str, PairDataset]) -> Iterator[tuple[str, str]]:
    """(prompt, text) of every query, positive and hard negative, in a fixed order."""
    for dataset in datasets.values():
        for example in dataset.examples:
            yield dataset.query_prompt, example.query
            yield dataset.document_prompt, example.positive
            for negative in example.negatives:
                yield dataset.document_prompt, negative


def model_config(recipe: Recipe, vocab_size: int) -> GemmaEmbedConfig:
    """The preset with the recipe's overrides (TOML arrays become tuples) and the tokenizer's vocabulary."""
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.model.config.items()}
    try:
        return preset(recipe.model.preset).replace(vocab_size=vocab_size, **overrides)
    except TypeError as exc:
        raise ConfigError(f"model.config: {exc}") from None


def text_tokenizer(tokenizer: Tokenizer, config: GemmaEmbedConfig, max_length: int) -> TextTokenizer:
    """The model's tokenization contract (`<bos> text <eos>`, truncated to max_length) over `tokenizer`."""
    return TextTokenizer(
        tokenizer,
        bos_id=config.bos_token_id,
        eos_id=config.eos_token_id,
        pad_id=config.pad_token_id,
        max_length=max_length,
    )


def load_transform(spec: str) -> ModelTransform:
    """The callable named by "module:function"."""
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model.transform {spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"model.transform {spec!r} is not callable")
    return fn


def teacher_path(recipe: Recipe) -> str:
    if recipe.teacher.path:
        return recipe.teacher.path
    try:
        return package_model_path(recipe.teacher.package)
    except ConfigError as exc:
        raise ConfigError(f"teacher.package: {exc}") from None


def stage_at(stages: list[StageSection], step: int) -> tuple[int, int]:
    """(stage index, step within the stage) of a global step; past the end: the last stage's end."""
    for index, stage in enumerate(stages):
        if step < stage.steps:
            return index, step
        step -= stage.steps
    return len(stages) - 1, stages[-1].steps


def lr_schedule(recipe: Recipe) -> Callable[[int], float]:
    """Learning-rate factor of each global step (for LambdaLR): per stage, linear warmup to the stage's peak,
    then cosine or linear decay to min_lr_ratio of it, or constant."""
    opt = recipe.optimizer

    def factor(step: int) -> float:
        index, t = stage_at(recipe.stages, step)
        stage = recipe.stages[index]
        peak = (stage.lr or opt.lr) / opt.lr
        warmup = min(opt.warmup_steps, stage.steps)
        if t < warmup:
            return peak * (t + 1) / warmup
        if opt.schedule == "constant":
            return peak
        progress = (t - warmup) / max(1, stage.steps - warmup)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if opt.schedule == "cosine" else 1.0 - progress
        return peak * (opt.min_lr_ratio + (1.0 - opt.min_lr_ratio) * shape)

    return factor


def checkpoint_dirs(output: Path) -> list[Path]:
    """Complete training checkpoints, oldest first (atomic writes leave only hidden temporary folders)."""
    return sorted(p for p in (output / CHECKPOINTS).glob("step-*") if p.is_dir())


@dataclass
class LocalBatch:
    """This rank's rows of a global batch, tokenized: queries, then positives, then the k negatives per row."""

    sequences: list[list[int]]
    rows: int
    negatives: int
    query_ids: Tensor
    positive_ids: Tensor
    teacher: dict[str, Tensor | None] | None
    parallel: bool = False  # a parallel batch: teacher holds the sources' vectors only, {"q": ...}


class MetricsLog:
    """metrics.jsonl, written by rank 0. A resumed run drops the lines after its checkpoint's step."""

    def __init__(self, path: Path, resumed_step: int | None) -> None:
        self.path = path
        if not is_main():
            return
        kept = []
        if resumed_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                if record.get("step", math.inf) <= resumed_step:
                    kept.append(line + "\n")
        with atomic_write(path) as f:
            f.writelines(kept)

    def write(self, record: dict[str, Any]) -> None:
        if is_main():
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# ---- the trainer -------------------------------------------------------------------------------------------


class Trainer:
    """Everything a run needs, built from a recipe; `fit()` trains and returns a summary.

    Args:
        recipe: the validated recipe.
        output: the run folder (checkpoints, metrics, final model).
        resume: continue from the newest checkpoint in `output` (start fresh when there is none).
        max_steps: stop after this global step (the schedule keeps the recipe's length, so a later
            `--resume` with a larger limit continues the same run).
        model_transform: applied to the model before training (the QAT hook); default: recipe.model.transform.
    """

    def __init__(
        self,
        recipe: Recipe,
        output: str | Path,
        *,
        resume: bool = False,
        max_steps: int | None = None,
        model_transform: ModelTransform | None = None,
    ) -> None:
        if max_steps is not None and max_steps < 0:
            raise ConfigError(f"--max-steps must be >= 0, got {max_steps}")
        self.recipe = recipe
        self.output = Path(output)
        self.end = recipe.total_steps if max_steps is None else min(max_steps, recipe.total_steps)
        self.device = setup()
        existing = checkpoint_dirs(self.output)
        if existing and not resume:
            raise ConfigError(
                f"{self.output} already holds checkpoints; pass --resume to continue that run or choose "
                "another --output"
            )
        resume_from = existing[-1] if existing else None
        if is_main():
            for stale in (self.output / CHECKPOINTS).glob(".step-*"):  # left by a kill during a write
                shutil.rmtree(stale, ignore_errors=True)

        # Everything up to the optimizer is built identically on every rank, then each rank gets its own RNG.
        torch.manual_seed(recipe.seed)
        self.sets = load_sets(recipe)
        self.parallel = bitext_sets(recipe) if recipe.loss.parallel_distillation_weight else set()
        if recipe.loss.parallel_distillation_weight and not self.parallel:
            raise ConfigError(
                "loss.parallel_distillation_weight > 0 needs a bitext set in data.sets (a converter such as "
                'multi30k_de, or a file with task = "bitext"); set it to 0 otherwise'
            )
        model, tokenizer = self._build_model(resume_from)
        if recipe.model.static:  # a resumed run then loads its checkpoint over this
            warm_start(model, load_static(recipe.model.static), recipe.model.gate)
        self.config: GemmaEmbedConfig = model.config
        self.tokenizer = text_tokenizer(tokenizer, self.config, self.config.max_seq_length)
        self.train_tokenizer = text_tokenizer(
            tokenizer, self.config, recipe.train.max_length or self.config.max_seq_length
        )
        transform = model_transform or (
            load_transform(recipe.model.transform) if recipe.model.transform else None
        )
        self.model = (transform(model) if transform else model).to(self.device).train()
        self.teacher = self._build_teacher()
        self.loss_fn = self._build_loss().to(self.device)
        self.wrapped_model = parallelize(self.model, recipe.train.parallel, self.device)
        self.wrapped_loss = parallelize(self.loss_fn, recipe.train.parallel, self.device)
        self.modules = nn.ModuleDict({"model": self.wrapped_model, "loss": self.wrapped_loss})
        self.optimizer = self._build_optimizer()
        self.scheduler = LambdaLR(self.optimizer, lr_schedule(recipe))
        torch.manual_seed(recipe.seed + rank())
        random.seed(recipe.seed + rank())
        np.random.seed(recipe.seed + rank())

        self.eval_tasks: list[EvalTask] = [
            build_task(name, split=recipe.eval.split) for name in recipe.eval.tasks
        ]
        self.step, self.stage = 0, 0
        sampler_state = self._restore(resume_from) if resume_from is not None else None
        self.sampler = self._make_sampler(self.stage, sampler_state)
        self.last_saved = self.step if resume_from is not None else -1
        self.metrics = MetricsLog(self.output / METRICS, self.step if resume_from is not None else None)
        if is_main():
            write_json(self.output / "recipe.json", recipe.to_dict())

    # ---- construction --------------------------------------------------------------------------------------

    def _build_model(self, resume_from: Path | None) -> tuple[EmbeddingModel, Tokenizer]:
        """The model (random preset or init checkpoint) and its tokenizer; when resuming, the tokenizer saved
        in the checkpoint. Also sets the prompts and the folder whose tokenizer_config.json is kept."""
        recipe = self.recipe
        self.prompts, self.default_prompt = dict(DEFAULT_PROMPTS), None
        self.tokenizer_source: Path | None = None
        if recipe.model.init:
            init = load_checkpoint(recipe.model.init, dtype=torch.float32)
            self.prompts, self.default_prompt = init.prompts, init.default_prompt_name
            self.tokenizer_source = Path(recipe.model.init)
            return init.model, init.tokenizer.tokenizer
        if recipe.tokenizer.path:
            path = Path(recipe.tokenizer.path)
            path = path / "tokenizer.json" if path.is_dir() else path
            if not path.is_file():
                raise ConfigError(f"tokenizer.path: {path} does not exist")
        else:
            path = self.output / "tokenizer" / "tokenizer.json"
        self.tokenizer_source = path.parent
        if resume_from is not None:
            path = resume_from / "model" / "tokenizer.json"  # exactly the tokenizer the run was trained with
        elif recipe.tokenizer.vocab_size:
            with main_process_first():
                if is_main():
                    texts = list(dict.fromkeys(text for _, text in role_texts(self.sets)))
                    trained = train_tokenizer(
                        texts[: recipe.tokenizer.max_texts], recipe.tokenizer.vocab_size, show_progress=False
                    )
                    save_tokenizer(trained, self.tokenizer_source)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise ConfigError(f"{path} is not a valid tokenizer.json: {exc}") from exc
        config = model_config(recipe, tokenizer.get_vocab_size(with_added_tokens=True))
        return EmbeddingModel(config).initialize(recipe.seed), tokenizer

    def _teacher_key(self, prompt: str, text: str) -> str:
        return apply_prompt(prompt, text) if self.recipe.teacher.prompts else text

    def _teacher_texts(self) -> Iterator[tuple[str, str]]:
        """(prompt, text) the teacher embeds: the English sources of the parallel sets (the target of both
        sides), and with loss.distillation_weight every text of the other sets."""
        for name, dataset in self.sets.items():
            if name in self.parallel:
                yield from ((dataset.query_prompt, example.query) for example in dataset.examples)
            elif self.recipe.loss.distillation_weight:
                yield from role_texts({name: dataset})

    def _build_teacher(self) -> TeacherTable | None:
        """Teacher embeddings of the distilled texts, computed once (rank 0 first) through the teacher cache."""
        if not (self.recipe.loss.distillation_weight or self.parallel):
            return None
        spec = self.recipe.teacher
        keys = list(dict.fromkeys(self._teacher_key(p, t) for p, t in self._teacher_texts()))
        with main_process_first():
            teacher, identity = load_teacher(teacher_path(self.recipe), device=str(self.device))
            cache = TeacherCache(teacher, identity, spec.cache_dir or None, batch_size=spec.batch_size)
            return cache.table(keys, show_progress=is_main() and self.recipe.log.progress)

    def _build_loss(self) -> EmbeddingGemmaLoss:
        spec = self.recipe.loss
        dims = tuple(spec.dims) or self.config.matryoshka_dims
        if max(dims) != self.config.embedding_dim:
            raise ConfigError(
                f"loss.dims {list(dims)} must include the embedding dim {self.config.embedding_dim}"
            )
        projection = None
        if self.teacher is not None and self.teacher.vectors.shape[1] != self.config.embedding_dim:
            projection = DistillationProjection(self.config.embedding_dim, self.teacher.vectors.shape[1])
            if world_size() > 1 and not spec.distillation_weight:
                raise ConfigError(
                    "a distillation projection trained by parallel batches alone is unused on other batches, "
                    "which DDP/FSDP refuse: set loss.distillation_weight > 0 or use a teacher of the student's dim"
                )
        return EmbeddingGemmaLoss(
            dims=dims,
            tau=spec.tau,
            alpha=spec.alpha,
            contrastive_weight=spec.contrastive_weight,
            spread_out_weight=spec.spread_out_weight,
            distillation_weight=spec.distillation_weight,
            parallel_distillation_weight=spec.parallel_distillation_weight,
            projection=projection,
            mse_weight=spec.mse_weight,
            relational=spec.relational or None,
            relational_tau=spec.relational_tau,
            distill_negatives=spec.distill_negatives,
        )

    def _build_optimizer(self) -> torch.optim.AdamW:
        """AdamW with the project's weight-decay rule (`gemma_embed.train.optim.decay_groups`)."""
        opt = self.recipe.optimizer
        groups = decay_groups((p for p in self.modules.parameters() if p.requires_grad), opt.weight_decay)
        return torch.optim.AdamW(groups, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)

    def _make_sampler(self, index: int, state: dict[str, Any] | None = None) -> MixtureBatchSampler:
        stage = self.recipe.stages[index]
        data = stage.preset()
        names = list(stage.mixture) or list(self.sets)
        mixture = Mixture(
            [self.sets[n] for n in names],
            [stage.mixture[n] for n in names] if stage.mixture else None,
            size_exponent=data.size_exponent,
        )
        sampler = MixtureBatchSampler(
            mixture, data.batch_size, num_negatives=data.num_negatives, seed=self.recipe.seed + index
        )
        if state is not None:
            sampler.load_state_dict(state)
        return sampler

    # ---- one step ------------------------------------------------------------------------------------------

    def local_batch(self, batch: Batch) -> LocalBatch:
        """This rank's equal share of a global batch, with prompts, tokenized; teacher vectors looked up."""
        per_rank = len(batch.queries) // world_size()
        if per_rank == 0:
            raise ConfigError(
                f"a batch of {len(batch.queries)} rows from {batch.dataset!r} cannot be split over "
                f"{world_size()} processes"
            )
        rows = slice(rank() * per_rank, (rank() + 1) * per_rank)
        k = len(batch.negatives[0]) if batch.negatives else 0
        roles = (
            [(batch.query_prompt, t) for t in batch.queries[rows]]
            + [(batch.document_prompt, t) for t in batch.positives[rows]]
            + [(batch.document_prompt, t) for row in batch.negatives[rows] for t in row]
        )
        sequences, _ = self.train_tokenizer.encode([apply_prompt(p, t) for p, t in roles])
        teacher: dict[str, Tensor | None] | None = None
        parallel = batch.dataset in self.parallel
        if self.teacher is not None and (parallel or self.recipe.loss.distillation_weight):
            looked_up = roles[:per_rank] if parallel else roles  # a parallel batch: its sources only
            vectors = torch.from_numpy(self.teacher.get([self._teacher_key(p, t) for p, t in looked_up]))
            vectors = vectors.to(self.device)
            q, p, neg = vectors[:per_rank], vectors[per_rank : 2 * per_rank], vectors[2 * per_rank :]
            teacher = {"q": q}
            if not parallel:
                teacher |= {"p": p, "neg": neg.view(per_rank, k, -1) if k else None}
        return LocalBatch(
            sequences=sequences,
            rows=per_rank,
            negatives=k,
            query_ids=torch.from_numpy(batch.query_ids[rows]).to(self.device),
            positive_ids=torch.from_numpy(batch.positive_ids[rows]).to(self.device),
            teacher=teacher,
            parallel=parallel,
        )

    def embed(self, sequences: list[list[int]]) -> Tensor:
        """Float32 embeddings [n, d] of token sequences through the (wrapped) model, under bf16 autocast when
        the recipe asks for it."""
        padded = self.train_tokenizer.pad(sequences)
        bf16 = self.recipe.train.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.wrapped_model(padded.input_ids.to(self.device), padded.attention_mask.to(self.device))

    def compute_loss(self, embeddings: Tensor, batch: LocalBatch) -> tuple[Tensor, dict[str, float]]:
        b, k = batch.rows, batch.negatives
        return self.wrapped_loss(
            embeddings[:b],
            embeddings[b : 2 * b],
            embeddings[2 * b :].view(b, k, -1) if k else None,
            q_ids=batch.query_ids,
            p_ids=batch.positive_ids,
            teacher=batch.teacher,
            parallel=batch.parallel,
        )

    def forward_backward(self, batch: LocalBatch, *, sync: bool, scale: float) -> dict[str, float]:
        """Add the gradient of `scale * loss(batch)` to the parameters; with `sync`, average it over ranks.

        With train.chunk_size smaller than the number of texts, gradient caching: embed all without a graph,
        take the gradient of the loss with respect to the embeddings, then backpropagate it sub-batch by
        sub-batch through a second, recorded forward pass.
        """
        sequences = batch.sequences
        chunk = self.recipe.train.chunk_size or len(sequences)
        spans = [(start, min(start + chunk, len(sequences))) for start in range(0, len(sequences), chunk)]
        set_gradient_sync(self.wrapped_loss, sync)
        if len(spans) == 1:
            set_gradient_sync(self.wrapped_model, sync)
            total, parts = self.compute_loss(self.embed(sequences), batch)
            (total * scale).backward()
            return parts
        with torch.no_grad():
            cached = torch.cat([self.embed(sequences[a:b]) for a, b in spans])
        cached.requires_grad_(True)
        total, parts = self.compute_loss(cached, batch)
        (total * scale).backward()
        for i, (a, b) in enumerate(spans):
            set_gradient_sync(self.wrapped_model, sync and i == len(spans) - 1)
            self.embed(sequences[a:b]).backward(cached.grad[a:b])
        return parts

    def accumulate(self) -> dict[str, float]:
        """The gradients of one optimizer step (grad_accum global batches), synchronised over ranks; returns
        this rank's loss parts averaged over the batches."""
        accum = self.recipe.train.grad_accum
        parts: dict[str, float] = defaultdict(float)
        for micro in range(accum):
            batch = self.local_batch(self.sampler.next_batch())
            for name, value in self.forward_backward(batch, sync=micro == accum - 1, scale=1 / accum).items():
                parts[name] += value / accum
        return dict(parts)

    def apply_gradients(self) -> float:
        """Clip the accumulated gradients, step AdamW and the schedule, clear the gradients; returns the norm
        before clipping."""
        params = [p for p in self.modules.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.recipe.optimizer.grad_clip or math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns this rank's loss parts, the gradient norm and the learning rate used."""
        lr = self.optimizer.param_groups[0]["lr"]
        parts = self.accumulate()
        return {**parts, "grad_norm": self.apply_gradients(), "lr": lr}

    # ---- the loop ------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to the end (or max_steps); returns steps, seconds, first and last evaluation, output paths."""
        recipe, start = self.recipe, time.perf_counter()
        initial = self.evaluate() if self.step == 0 and self.eval_tasks else None
        last_eval, evaluated = initial, self.step if initial is not None else -1
        bar = tqdm(
            total=self.end,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not (is_main() and recipe.log.progress),
        )
        busy, interval_steps = 0.0, 0  # seconds in train_step since the last log line, and steps
        while self.step < self.end:
            index, _ = stage_at(recipe.stages, self.step)
            if index != self.stage:
                self.stage, self.sampler = index, self._make_sampler(index)
            tick = time.perf_counter()
            values = self.train_step()
            busy, interval_steps = busy + time.perf_counter() - tick, interval_steps + 1
            bar.update()
            if self.step % recipe.log.every == 0 or self.step == self.end:
                values = mean_over_ranks(values, self.device)
                batch = self.sampler.batch_size * recipe.train.grad_accum
                record = {
                    "step": self.step,
                    "stage": recipe.stages[self.stage].name,
                    "epoch": round(self.sampler.epoch, 4),
                    **values,
                    "examples_per_s": round(batch * interval_steps / busy, 2),
                }
                self.metrics.write(record)
                bar.set_postfix(loss=f"{values['total']:.4f}", lr=f"{values['lr']:.2e}")
                busy, interval_steps = 0.0, 0
            if recipe.eval.every and self.step % recipe.eval.every == 0 and self.eval_tasks:
                last_eval, evaluated = self.evaluate(), self.step
            if recipe.checkpoint.every and self.step % recipe.checkpoint.every == 0:
                self.save()
        bar.close()
        if self.last_saved != self.step:
            self.save()
        if self.eval_tasks and evaluated != self.step:
            last_eval = self.evaluate()
        final = self.export(self.output / FINAL)
        return {
            "steps": self.step,
            "seconds": round(time.perf_counter() - start, 1),
            "initial_eval": initial,
            "final_eval": last_eval,
            "final": str(final),
            "metrics": str(self.metrics.path),
        }

    def evaluate(self) -> dict[str, float]:
        """Main score of each eval task (mean over its subsets), computed by rank 0 and logged to metrics.jsonl.
        A sharded (FSDP) model is gathered into a full copy first (every rank takes part)."""
        if isinstance(self.wrapped_model, FSDPModule):
            state = get_model_state_dict(self.modules, options=FULL_STATE)
            checkpoint = self._model_checkpoint(state) if is_main() else None
        else:
            checkpoint = Checkpoint(self.model, self.tokenizer, self.prompts, self.default_prompt)
        scores: dict[str, float] = {}
        if checkpoint is not None and is_main():
            checkpoint.model.to(self.device)
            encoder = GemmaEmbedEncoder(Embedder(checkpoint, name_or_path=str(self.output)), identity="")
            source = EmbeddingSource(encoder, batch_size=self.recipe.eval.batch_size, progress=False)
            for task in self.eval_tasks:
                entries = run_task(task, source)["scores"][task.split]
                scores[task.name] = float(np.mean([entry["main_score"] for entry in entries]))
            self.metrics.write({"step": self.step, "eval": scores})
            if self.recipe.log.progress:
                tqdm.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return scores

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def _model_checkpoint(self, state: dict[str, Tensor]) -> Checkpoint:
        """A standalone CPU model holding the full weights of `state` (keys "model.*"), ready for saving."""
        with skeleton():
            model = EmbeddingModel(self.config)
        weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        model.load_state_dict(weights, assign=True)
        return Checkpoint(model, self.tokenizer, self.prompts, self.default_prompt, self.tokenizer_source)

    def save(self) -> Path:
        """Write a resumable checkpoint of this step atomically (every rank takes part) and prune old ones."""
        path = self.output / CHECKPOINTS / f"step-{self.step:08d}"
        state = get_model_state_dict(self.modules, options=FULL_STATE)
        optimizer = get_optimizer_state_dict(self.modules, self.optimizer, options=FULL_STATE)
        rngs = all_ranks(rng_state())
        if is_main():
            tensors = {k: v for k, v in state.items() if k.startswith("loss.")}
            meta = {
                "format": STATE_FORMAT,
                "step": self.step,
                "stage": self.stage,
                "world_size": world_size(),
                "sampler": self.sampler.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "optimizer": flatten_state(optimizer, "optimizer", tensors),
                "rng": flatten_state(rngs, "rng", tensors),
                "recipe": self.recipe.training_dict(),
            }
            with atomic_directory(path, overwrite=True) as tmp:
                save_checkpoint(self._model_checkpoint(state), tmp / "model")
                save_file(tensors_for_saving(tensors), str(tmp / STATE_TENSORS))
                write_json(tmp / STATE_JSON, meta)
            for old in checkpoint_dirs(self.output)[: -self.recipe.checkpoint.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        self.last_saved = self.step
        return path

    def _restore(self, path: Path) -> dict[str, Any]:
        """Load model, loss, optimizer, scheduler and RNG states from a checkpoint written by `save`; set the
        step and stage; return the sampler position."""
        meta = read_checkpoint_json(path / STATE_JSON)
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise CheckpointError(
                f"{path / STATE_JSON}: not a gemma-embed training state (format {STATE_FORMAT})"
            )
        # states written before stage values were resolved record None; older ones lack keys added since
        saved_recipe = recorded_training_dict(dict(meta.get("recipe") or {}))
        saved, current = flat_items(saved_recipe), flat_items(self.recipe.training_dict())
        if differ := sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k)):
            raise CheckpointError(
                f"{path} was written by a different recipe (differs in {', '.join(differ[:5])}); resume with "
                "the recipe of that run, or start a new run in another --output"
            )
        if meta.get("world_size") != world_size():
            raise CheckpointError(
                f"{path} was written by {meta.get('world_size')} processes; resume it with as many "
                f"(now {world_size()})"
            )
        loaded = load_checkpoint(path / "model", dtype=torch.float32)
        if loaded.model.config != self.config:
            theirs, ours = vars(loaded.model.config), vars(self.config)
            differ = [k for k in ours if theirs[k] != ours[k]]
            raise CheckpointError(
                f"{path / 'model'}: the model differs from the recipe's in {', '.join(differ)}"
            )
        tensors = read_tensors(path / STATE_TENSORS)
        state = {f"model.{k}": v for k, v in loaded.model.state_dict().items()}
        state.update((k, v) for k, v in tensors.items() if k.startswith("loss."))
        try:
            set_model_state_dict(self.modules, state, options=StateDictOptions(full_state_dict=True))
            optimizer = unflatten_state(meta["optimizer"], tensors)
            set_optimizer_state_dict(
                self.modules, self.optimizer, optimizer, options=StateDictOptions(full_state_dict=True)
            )
            self.scheduler.load_state_dict(meta["scheduler"])
            set_rng_state(unflatten_state(meta["rng"], tensors)[rank()])
            self.step, self.stage = int(meta["step"]), int(meta["stage"])
            return meta["sampler"]
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: training state does not fit this run ({exc})") from exc

    def export(self, path: Path) -> Path:
        """The trained model in the standard layout (no distillation projection), written by rank 0."""
        state = get_model_state_dict(self.modules, options=FULL_STATE)
        if is_main():
            save_checkpoint(self._model_checkpoint(state), path, overwrite=True)
        barrier()
        return path
