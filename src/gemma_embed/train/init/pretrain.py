"""Small generative training loops for EmbeddingGemma's initialization path.

* `pretrain_lm`: causal-LM pretraining of a small decoder-only Gemma 3 (next-token prediction over packed
  windows of a JSONL text corpus, rows {"text": ...}, e.g. `runs/corpus/train.jsonl`).
* `train_ul2`: UL2-style adaptation of the T5Gemma encoder-decoder (Tay et al. 2022, "UL2: Unifying Language
  Learning Paradigms"; Zhang et al. 2025, "Encoder-Decoder Gemma"): each example is either T5 span corruption
  (noise spans replaced by sentinel tokens in the input, the target lists sentinel + span) or prefix-LM
  (the encoder reads a random prefix, the decoder continues it).

Both use AdamW with linear warmup and cosine decay (to 10%), bf16 autocast (when enabled), gradient
clipping, and step-level resumption: `WORK/state/` holds `model.safetensors`, `optimizer.safetensors` and
`state.json` (step, losses, held-out curve, training seconds, optimizer structure), written atomically every
`save_every` steps and when a time budget (`max_minutes`) ends a session. Batches come from a generator
seeded by (seed, step), so a resumed run sees the same data as an uninterrupted one and ends with the same
weights. With a held-out corpus, every `eval_every` steps the held-out cross-entropy of a fixed sample is
added to the curve (`gemma_embed.train.init.evaluation`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from gemma_embed.errors import DataError
from gemma_embed.io.checkpoint import read_checkpoint_json, read_tensors, tensors_for_saving
from gemma_embed.io.files import atomic_directory, write_json
from gemma_embed.io.tables import read_jsonl
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model.decoder import GemmaDecoderLM
from gemma_embed.model.encdec import EncoderDecoder
from gemma_embed.train.init.evaluation import IGNORE, Batch, HeldOut, spaced_windows, unigram_log_probs
from gemma_embed.train.optim import decay_groups
from gemma_embed.train.state import flatten_state, unflatten_state

STATE_DIR = "state"
# The seed of the UL2 noise of the held-out examples (fixed: the same examples at every evaluation).
HELDOUT_SEED = 0


@dataclass(frozen=True)
class LoopConfig:
    """Optimization and UL2 mixture settings (defaults suit a small CPU/GPU run)."""

    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    bf16: bool = True
    save_every: int = 200
    # UL2 mixture: share of prefix-LM examples, the rest is span corruption.
    prefix_lm_rate: float = 0.5
    noise_density: float = 0.15
    mean_span: float = 3.0
    # Keep the token embeddings fixed (e.g. a static warm start that later stages rely on).
    freeze_embeddings: bool = False
    # Held-out cross-entropy every `eval_every` steps (0: only at the start and the end) on `eval_windows`
    # windows of `seq_len` held-out tokens (when a held-out corpus is given).
    eval_every: int = 0
    eval_windows: int = 256


# ---- data ----------------------------------------------------------------------------------------------


def corpus_tokens(path: Path, tokenizer: TextTokenizer, max_texts: int | None = None) -> Tensor:
    """All texts of a JSONL corpus tokenized and concatenated, each followed by <eos> (a 1-D int64 stream)."""
    texts = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row.get("text"), str):
            raise DataError(f"{path}, line {lineno}: expected a string 'text' field")
        texts.append(row["text"])
        if max_texts is not None and len(texts) >= max_texts:
            break
    stream = [t for ids in tokenizer.text_ids(texts) for t in (*ids, tokenizer.eos_id)]
    if len(stream) < 8:
        raise DataError(f"{path}: the corpus has too few tokens ({len(stream)}) to train on")
    return torch.tensor(stream, dtype=torch.long)


def sample_windows(stream: Tensor, rng: random.Random, count: int, length: int) -> list[list[int]]:
    """`count` random windows of `length` tokens (shorter when the corpus is)."""
    length = min(length, len(stream))
    starts = [rng.randrange(len(stream) - length + 1) for _ in range(count)]
    return [stream[s : s + length].tolist() for s in starts]


def pad(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def lm_examples(windows: Sequence[Sequence[int]], tokenizer: TextTokenizer) -> Batch:
    """Teacher-forced next-token batch of `windows`: input `<bos> w[:-1]`, labels `w`."""
    inputs = [[tokenizer.bos_id, *w[:-1]] for w in windows]
    return {"input_ids": pad(inputs, tokenizer.pad_id), "labels": pad(windows, IGNORE)}


def lm_batch(stream: Tensor, rng: random.Random, cfg: LoopConfig, tokenizer: TextTokenizer) -> Batch:
    """A next-token batch of `cfg.batch_size` random windows of `cfg.seq_len` tokens."""
    return lm_examples(sample_windows(stream, rng, cfg.batch_size, cfg.seq_len), tokenizer)


def noise_spans(length: int, rng: random.Random, density: float, mean_span: float) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) noise spans covering ~density of `length` tokens (T5's random spans)."""
    noise = min(max(1, round(length * density)), length - 1)
    count = max(1, min(round(noise / mean_span), noise, length - noise))
    noise_lengths = random_partition(noise, count, rng)
    keep_lengths = random_partition(length - noise, count, rng)
    spans, position = [], 0
    for keep, span in zip(keep_lengths, noise_lengths, strict=True):
        position += keep
        spans.append((position, position + span))
        position += span
    return spans


def random_partition(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` split into `parts` positive integers, uniformly over compositions."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def span_corruption(
    tokens: list[int], rng: random.Random, sentinels: Sequence[int], cfg: LoopConfig, eos: int
) -> tuple[list[int], list[int]]:
    """T5 denoising: (input with each noise span replaced by a sentinel, target `s0 span0 s1 span1 ... eos`)."""
    inputs, target, position = [], [], 0
    for k, (start, end) in enumerate(noise_spans(len(tokens), rng, cfg.noise_density, cfg.mean_span)):
        sentinel = sentinels[k % len(sentinels)]
        inputs += [*tokens[position:start], sentinel]
        target += [sentinel, *tokens[start:end]]
        position = end
    return [*inputs, *tokens[position:]], [*target, eos]


def prefix_lm(tokens: list[int], rng: random.Random, eos: int) -> tuple[list[int], list[int]]:
    """Prefix-LM: (a random non-empty prefix, the rest followed by eos)."""
    split = rng.randrange(1, len(tokens))
    return tokens[:split], [*tokens[split:], eos]


def ul2_batch(
    stream: Tensor, rng: random.Random, cfg: LoopConfig, tokenizer: TextTokenizer, sentinels: Sequence[int]
) -> Batch:
    """A UL2 mixture batch of `cfg.batch_size` random windows of `cfg.seq_len` tokens."""
    windows = sample_windows(stream, rng, cfg.batch_size, cfg.seq_len)
    return ul2_examples(windows, rng, cfg, tokenizer, sentinels)


def ul2_examples(
    windows: Sequence[list[int]],
    rng: random.Random,
    cfg: LoopConfig,
    tokenizer: TextTokenizer,
    sentinels: Sequence[int],
) -> Batch:
    """UL2 mixture examples of `windows` for the encoder-decoder (decoder inputs `<bos> target[:-1]`)."""
    sources, targets = [], []
    for window in windows:
        if rng.random() < cfg.prefix_lm_rate:
            source, target = prefix_lm(window, rng, tokenizer.eos_id)
        else:
            source, target = span_corruption(window, rng, sentinels, cfg, tokenizer.eos_id)
        sources.append(source)
        targets.append(target)
    enc = pad(sources, tokenizer.pad_id)
    return {
        "input_ids": enc,
        "attention_mask": pad([[1] * len(s) for s in sources], 0),
        "decoder_input_ids": pad([[tokenizer.bos_id, *t[:-1]] for t in targets], tokenizer.pad_id),
        "decoder_attention_mask": pad([[1] * len(t) for t in targets], 0),
        "labels": pad(targets, IGNORE),
    }


def sentinel_ids(tokenizer: TextTokenizer, count: int = 100) -> list[int]:
    """Sentinel ids for span corruption: Gemma's `<unused0>`, `<unused1>`, ... when the vocabulary has them
    (distinct T5-style sentinels), otherwise the single `<mask>` token (our trained tokenizer: id 4)."""
    vocab = tokenizer.tokenizer
    unused = [vocab.token_to_id(f"<unused{i}>") for i in range(count)]
    if unused[0] is not None:
        return [i for i in unused if i is not None]
    if (mask := vocab.token_to_id("<mask>")) is not None:
        return [mask]
    raise DataError("the tokenizer has neither <unused0>... nor <mask> tokens to use as span sentinels")


# ---- losses --------------------------------------------------------------------------------------------


def token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over labelled positions, in float32."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def lm_loss(model: nn.Module, batch: Batch) -> Tensor:
    return token_loss(model(batch["input_ids"]), batch["labels"])


def encdec_loss(model: nn.Module, batch: Batch) -> Tensor:
    logits = model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["decoder_input_ids"],
        batch["decoder_attention_mask"],
    )
    return token_loss(logits, batch["labels"])


# ---- loop ----------------------------------------------------------------------------------------------


def unique_state(model: nn.Module) -> dict[str, Tensor]:
    """The state dict without aliases of an earlier tensor (tied embeddings), as safetensors requires."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out[name] = tensor
    return out


def lr_factor(step: int, cfg: LoopConfig) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 10% at `steps`."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class RunState:
    """What a session hands the next: the step reached, per-step losses, the held-out curve (points
    {"step", "tokens", "heldout_ce"}) and the seconds spent in training steps (evaluations excluded)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def save_state(
    work: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: RunState,
    heldout: HeldOut | None = None,
) -> None:
    tensors: dict[str, Tensor] = {}
    raw = optimizer.state_dict()  # per-parameter state is keyed by int; JSON keys are strings
    optim = flatten_state(
        {"state": {str(k): v for k, v in raw["state"].items()}, "param_groups": raw["param_groups"]},
        "optimizer",
        tensors,
    )
    with atomic_directory(work / STATE_DIR, overwrite=True) as out:
        save_file(tensors_for_saving(unique_state(model)), str(out / "model.safetensors"))
        save_file(tensors_for_saving(tensors), str(out / "optimizer.safetensors"))
        write_json(
            out / "state.json",
            {
                **asdict(run),
                "heldout": heldout.summary() if heldout is not None else None,
                "optimizer": optim,
            },
        )


def load_state(work: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> RunState:
    """Restore a saved state into `model` and `optimizer`; a fresh RunState when there is none."""
    root = work / STATE_DIR
    if not (root / "state.json").is_file():
        return RunState()
    state = read_checkpoint_json(root / "state.json")
    weights = read_tensors(root / "model.safetensors")
    expected = set(unique_state(model))
    if set(weights) != expected:
        raise DataError(f"{root}: the saved model does not match this one; use a fresh work directory")
    model.load_state_dict(weights, strict=False)
    optim = unflatten_state(state["optimizer"], read_tensors(root / "optimizer.safetensors"))
    optimizer.load_state_dict({**optim, "state": {int(k): v for k, v in optim["state"].items()}})
    return RunState(
        int(state["step"]),
        list(state["losses"]),
        list(state.get("curve", [])),
        float(state.get("train_seconds", 0.0)),
    )


def train_loop(
    model: nn.Module,
    make_batch: Callable[[random.Random], Batch],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    cfg: LoopConfig,
    work: Path,
    *,
    heldout: HeldOut | None = None,
    max_minutes: float | None = None,
    device: str | torch.device = "cpu",
    desc: str = "train",
) -> list[float]:
    """Train `model` in place towards `cfg.steps` steps (resuming from `work/state`); the per-step losses
    so far. With `max_minutes`, the session saves its state and stops after the first step that ends past
    that budget (call again to continue). With `heldout`, its cross-entropy is added to the saved curve at
    step 0, every `cfg.eval_every` steps, and at the step a session stops."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    if cfg.freeze_embeddings:
        for name, param in model.named_parameters():
            if "embed_tokens" in name:
                param.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        decay_groups(model.parameters(), cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98)
    )
    run = load_state(work, model, optimizer)
    write_json(work / "loop_config.json", asdict(cfg))
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes

    def evaluate() -> None:
        if heldout is not None and (not run.curve or run.curve[-1]["step"] < run.step):
            ce = heldout.cross_entropy(model, loss_fn, device)
            tokens = run.step * cfg.batch_size * cfg.seq_len
            run.curve.append({"step": run.step, "tokens": tokens, "heldout_ce": ce})
            progress.write(f"{desc} step {run.step}: held-out cross-entropy {ce:.4f}")

    progress = tqdm(range(run.step, cfg.steps), initial=run.step, total=cfg.steps, desc=desc, disable=None)
    if run.step == 0:
        evaluate()
    for step in progress:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg)
        batch = {k: v.to(device) for k, v in make_batch(random.Random(cfg.seed * 1_000_003 + step)).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        run.losses.append(loss.item())
        run.step, run.train_seconds = step + 1, run.train_seconds + time.perf_counter() - started
        progress.set_postfix(loss=f"{run.losses[-1]:.3f}")
        stop = deadline is not None and time.monotonic() >= deadline
        if stop or run.step == cfg.steps or (cfg.eval_every and run.step % cfg.eval_every == 0):
            evaluate()
        if stop or run.step % cfg.save_every == 0 or run.step == cfg.steps:
            save_state(work, model, optimizer, run, heldout)
        if stop:
            progress.write(f"{desc}: time budget of {max_minutes:g} min reached at step {run.step}")
            break
    progress.close()
    model.eval()
    return run.losses


def heldout_sample(
    path: Path,
    stream: Tensor,
    tokenizer: TextTokenizer,
    cfg: LoopConfig,
    to_batch: Callable[[list[list[int]]], Batch],
) -> HeldOut:
    """`cfg.eval_windows` evenly spaced windows of the held-out corpus at `path`, in batches of
    `cfg.batch_size` made by `to_batch`, with the unigram baseline of the training `stream`."""
    windows = spaced_windows(corpus_tokens(path, tokenizer), cfg.eval_windows, cfg.seq_len)
    batches = [to_batch(windows[i : i + cfg.batch_size]) for i in range(0, len(windows), cfg.batch_size)]
    return HeldOut.build(batches, unigram_log_probs(stream, tokenizer.vocab_size))


def pretrain_lm(
    model: GemmaDecoderLM,
    tokenizer: TextTokenizer,
    corpus: Path,
    cfg: LoopConfig,
    work: Path,
    heldout: Path | None = None,
    **kw: Any,
) -> list[float]:
    """Causal-LM pretraining of a decoder-only Gemma 3 on a JSONL corpus (held-out cross-entropy on
    `heldout`, a JSONL corpus of held-out texts)."""
    stream = corpus_tokens(corpus, tokenizer)
    if heldout is not None:
        kw["heldout"] = heldout_sample(
            heldout, stream, tokenizer, cfg, lambda windows: lm_examples(windows, tokenizer)
        )
    return train_loop(model, lambda rng: lm_batch(stream, rng, cfg, tokenizer), lm_loss, cfg, work, **kw)


def train_ul2(
    model: EncoderDecoder,
    tokenizer: TextTokenizer,
    corpus: Path,
    cfg: LoopConfig,
    work: Path,
    heldout: Path | None = None,
    **kw: Any,
) -> list[float]:
    """UL2 adaptation (span corruption + prefix-LM) of the encoder-decoder on a JSONL corpus (held-out loss
    on UL2 examples of `heldout` drawn with a fixed seed)."""
    stream, sentinels = corpus_tokens(corpus, tokenizer), sentinel_ids(tokenizer)
    if heldout is not None:
        rng = random.Random(HELDOUT_SEED)
        kw["heldout"] = heldout_sample(
            heldout,
            stream,
            tokenizer,
            cfg,
            lambda windows: ul2_examples(windows, rng, cfg, tokenizer, sentinels),
        )

    def make_batch(rng: random.Random) -> Batch:
        return ul2_batch(stream, rng, cfg, tokenizer, sentinels)

    return train_loop(model, make_batch, encdec_loss, cfg, work, desc="ul2", **kw)


def loop_summary(losses: list[float]) -> str:
    """One JSON line: steps, first and last loss (mean of up to 10)."""
    head, tail = losses[:10], losses[-10:]
    return json.dumps(
        {
            "steps": len(losses),
            "first_loss": sum(head) / max(1, len(head)),
            "last_loss": sum(tail) / max(1, len(tail)),
        }
    )
