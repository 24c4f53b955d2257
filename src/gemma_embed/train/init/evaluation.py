"""Held-out evaluation of the generative initialization stages (`pretrain-lm` and `adapt`'s UL2 loop).

* **The held-out sample**: `count` windows of `seq_len` tokens of the held-out corpus (`heldout.jsonl`, the texts
  `build-corpus` keeps out of training), packed like the training stream and taken at evenly spaced offsets, so
  every source of the corpus is in it; each stage turns them into its own batches (next-token prediction for
  the LM, UL2 examples drawn with a fixed seed for the encoder-decoder). The same tokens at every evaluation and
  in every session.
* **The unigram baseline**: token frequencies of the training stream with add-one smoothing,
  p(t) = (n_t + 1) / (N + V), scored on the same labelled held-out tokens: what a model that only learned
  which tokens are common achieves (ln V is what a uniform guess scores).
* **The curve**: (step, tokens seen, held-out cross-entropy) points, kept in the run's `state.json` so that it
  continues across resumed sessions. `gemma-embed lm-curve WORK --out FILE.json --plot FILE.png` writes them,
  with the baseline and the training speed, as a results file and a plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gemma_embed.errors import DataError
from gemma_embed.io.checkpoint import read_checkpoint_json
from gemma_embed.io.files import write_json

IGNORE = -100
# How far below the unigram cross-entropy (nats) the issue asks the LM stage to get.
TARGET_GAP = 2.0
Batch = dict[str, Tensor]


def spaced_windows(stream: Tensor, count: int, length: int) -> list[list[int]]:
    """`count` windows of `length` tokens at evenly spaced offsets of `stream` (overlapping when it is short)."""
    length = min(length, len(stream))
    last = len(stream) - length
    starts = [round(i * last / max(1, count - 1)) for i in range(count)]
    return [stream[s : s + length].tolist() for s in starts]


def unigram_log_probs(stream: Tensor, vocab_size: int) -> Tensor:
    """log p(t) of every token id under add-one-smoothed unigram frequencies of `stream` (float64)."""
    counts = torch.bincount(stream, minlength=vocab_size).double()
    return torch.log((counts + 1) / (counts.sum() + vocab_size))


@dataclass(frozen=True)
class HeldOut:
    """Fixed held-out batches, scored by a stage's loss, and the unigram baseline on their labels."""

    batches: list[Batch]
    unigram_ce: float
    tokens: int
    ln_vocab: float

    @classmethod
    def build(cls, batches: Sequence[Batch], log_probs: Tensor) -> HeldOut:
        labels = torch.cat([b["labels"].flatten() for b in batches])
        labels = labels[labels != IGNORE]
        if not len(labels):
            raise DataError("the held-out sample has no labelled tokens")
        return cls(list(batches), -float(log_probs[labels].mean()), len(labels), math.log(len(log_probs)))

    @torch.no_grad()
    def cross_entropy(
        self, model: nn.Module, loss_fn: Callable[[nn.Module, Batch], Tensor], device: torch.device
    ) -> float:
        """Token-weighted mean cross-entropy (nats) of `model` on the batches, in float32, in eval mode."""
        training = model.training
        model.eval()
        total = 0.0
        for batch in self.batches:
            labelled = int((batch["labels"] != IGNORE).sum())
            total += float(loss_fn(model, {k: v.to(device) for k, v in batch.items()})) * labelled
        model.train(training)
        return total / self.tokens

    def summary(self) -> dict[str, float | int]:
        return {"tokens": self.tokens, "unigram_ce": self.unigram_ce, "ln_vocab": self.ln_vocab}


def curve_results(work: Path) -> dict[str, Any]:
    """The results of a run folder (`WORK/state/state.json` + `WORK/loop_config.json`): the held-out curve,
    the baselines, the training speed, and whether the held-out CE got `TARGET_GAP` nats below unigram."""
    state_path = work / "state" / "state.json"
    if not state_path.is_file():
        raise DataError(f"{state_path}: no training state; pass the --work folder of pretrain-lm or adapt")
    state, loop = read_checkpoint_json(state_path), read_checkpoint_json(work / "loop_config.json")
    curve, heldout = state.get("curve") or [], state.get("heldout")
    if not curve or heldout is None:
        raise DataError(f"{state_path}: the run has no held-out evaluations (it ran without --heldout)")
    best = min(curve, key=lambda p: p["heldout_ce"])
    seconds = state["train_seconds"]
    return {
        "work": str(work),
        "loop": loop,
        "step": state["step"],
        "finished": state["step"] >= loop["steps"],
        "heldout": heldout,
        "target_ce": heldout["unigram_ce"] - TARGET_GAP,
        "final": curve[-1],
        "best": best,
        "reached_target": best["heldout_ce"] <= heldout["unigram_ce"] - TARGET_GAP,
        "train_seconds": seconds,
        "tokens_per_second": state["step"] * loop["batch_size"] * loop["seq_len"] / seconds
        if seconds
        else None,
        "curve": curve,
    }


def plot_curve(results: dict[str, Any], path: Path, title: str) -> Path:
    """Held-out cross-entropy vs tokens seen, with the unigram, target and ln V lines, as a PNG."""
    from gemma_embed.eval.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    tokens = [p["tokens"] for p in results["curve"]]
    ax.plot(tokens, [p["heldout_ce"] for p in results["curve"]], marker=".", label="held-out cross-entropy")
    heldout = results["heldout"]
    for value, style, label in (
        (heldout["ln_vocab"], ":", f"uniform, ln V = {heldout['ln_vocab']:.2f}"),
        (heldout["unigram_ce"], "--", f"unigram (add-one) = {heldout['unigram_ce']:.2f}"),
        (results["target_ce"], "-.", f"target: unigram - {TARGET_GAP:g} = {results['target_ce']:.2f}"),
    ):
        ax.axhline(value, linestyle=style, color="gray", label=label)
    ax.set(title=title, xlabel="training tokens seen", ylabel="nats per token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def write_curve(work: Path, out: Path, plot: Path | None, title: str, command: str) -> dict[str, Any]:
    """Write the results JSON of `work` to `out` (and its plot to `plot`); the results."""
    results = {**curve_results(work), "command": command}
    if plot is not None:
        results["plot"] = str(plot)
        plot_curve(results, plot, title)
    write_json(out, results)
    return results
