"""LM pretraining and UL2 adaptation: held-out evaluation, the unigram baseline, time-budgeted sessions that
resume exactly, and the curve's results file and plot."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer

from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.decoder import GemmaDecoderLM
from gemma_embed.train.init import adapt as adapt_cli
from gemma_embed.train.init.evaluation import IGNORE, HeldOut, spaced_windows, unigram_log_probs
from gemma_embed.train.init.pretrain import LoopConfig, pretrain_lm
from helpers import build_tokenizer, random_text

TRUNK = GemmaEmbedConfig(
    vocab_size=401,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    query_pre_attn_scalar=16,
    sliding_window=8,
    sliding_window_pattern=2,
    max_position_embeddings=128,
    max_seq_length=128,
)
LOOP = LoopConfig(
    steps=6, batch_size=4, seq_len=24, lr=3e-3, warmup=2, save_every=4, eval_every=2, eval_windows=6
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(tokenizer dir, train corpus, held-out corpus) of random sentences; the tokenizer has <mask> (id 400)
    for UL2's span corruption."""
    root = tmp_path_factory.mktemp("lm")
    path = build_tokenizer(root / "tok", vocab_size=400)
    tok = Tokenizer.from_file(str(path))
    tok.add_special_tokens(["<mask>"])
    tok.save(str(path))
    rng = random.Random(0)
    for name, count in (("train.jsonl", 300), ("heldout.jsonl", 40)):
        (root / name).write_text(
            "".join(json.dumps({"text": random_text(rng, 12)}) + "\n" for _ in range(count))
        )
    return path.parent, root / "train.jsonl", root / "heldout.jsonl"


def test_unigram_baseline_is_add_one_smoothed_on_the_labelled_tokens() -> None:
    log_probs = unigram_log_probs(torch.tensor([0, 0, 0, 1]), vocab_size=3)
    torch.testing.assert_close(log_probs.exp(), torch.tensor([4 / 7, 2 / 7, 1 / 7], dtype=torch.float64))
    batch = {"labels": torch.tensor([[0, 2, IGNORE], [1, IGNORE, IGNORE]])}
    heldout = HeldOut.build([batch], log_probs)
    assert heldout.tokens == 3 and heldout.ln_vocab == pytest.approx(math.log(3))
    assert heldout.unigram_ce == pytest.approx(-(math.log(4 / 7) + math.log(1 / 7) + math.log(2 / 7)) / 3)


def test_spaced_windows_span_the_stream() -> None:
    stream = torch.arange(100)
    windows = spaced_windows(stream, count=4, length=10)
    assert [w[0] for w in windows] == [0, 30, 60, 90] and windows[-1][-1] == 99
    assert spaced_windows(torch.arange(5), count=2, length=10) == [[0, 1, 2, 3, 4]] * 2


def train(files, work, **kw) -> tuple[GemmaDecoderLM, list[float]]:
    """Train a fresh seed-0 decoder in `work` (resuming its state) for one session."""
    tok_dir, corpus, heldout = files
    tokenizer = TextTokenizer.from_file(
        tok_dir / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0, max_length=128
    )
    model = GemmaDecoderLM(TRUNK).initialize(0)
    losses = pretrain_lm(model, tokenizer, corpus, kw.pop("loop", LOOP), work, heldout, **kw)
    return model, losses


def test_sessions_ended_by_the_time_budget_resume_exactly(files, tmp_path) -> None:
    torch.set_num_threads(1)
    whole, losses = train(files, tmp_path / "whole")
    # A budget of 0 minutes ends each session after its first step: sessions of 1, 1 and 4 steps.
    assert len(train(files, tmp_path / "split", max_minutes=0)[1]) == 1
    assert len(train(files, tmp_path / "split", max_minutes=0)[1]) == 2
    split, split_losses = train(files, tmp_path / "split")
    assert split_losses == losses and len(losses) == LOOP.steps
    for (name, a), b in zip(whole.state_dict().items(), split.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    curves = [
        json.loads((tmp_path / w / "state" / "state.json").read_text())["curve"] for w in ("whole", "split")
    ]
    assert [p["step"] for p in curves[0]] == [0, 2, 4, 6]
    assert [p["step"] for p in curves[1]] == [0, 1, 2, 4, 6]  # plus the end of the first session
    common = {p["step"]: p["heldout_ce"] for p in curves[1]}
    assert all(common[p["step"]] == p["heldout_ce"] for p in curves[0])
    assert curves[0][-1]["tokens"] == LOOP.steps * LOOP.batch_size * LOOP.seq_len


def test_pretrain_then_adapt_in_sessions_with_falling_heldout_curves(files, tmp_path) -> None:
    torch.set_num_threads(1)
    tok_dir, corpus, _ = files  # heldout.jsonl beside the corpus is found by default
    parser = argparse.ArgumentParser()
    adapt_cli.register(parser.add_subparsers())
    loop = ["--corpus", str(corpus), "--batch-size", "8", "--seq-len", "32", "--lr", "3e-3", "--warmup", "2"]
    loop += ["--eval-every", "4", "--eval-windows", "8", "--threads", "1", "--no-bf16"]
    lm = ["pretrain-lm", str(tok_dir), "--trunk", "tiny", "--out", str(tmp_path / "lm"), "--steps", "8"]
    lm += loop

    def run(argv: list[str]) -> int:
        args = parser.parse_args(argv)
        return args.func(args)

    assert run([*lm, "--max-minutes", "0"]) == adapt_cli.UNFINISHED
    assert not (tmp_path / "lm").exists()
    assert run(lm) == 0 and (tmp_path / "lm" / "config.json").is_file()
    init = ["adapt", str(tmp_path / "lm"), "--out", str(tmp_path / "init"), "--steps", "8", *loop]
    assert run(init) == 0 and (tmp_path / "init" / "config.json").is_file()

    for work in ("lm-lm", "init-ul2"):
        out, plot = tmp_path / f"{work}.json", tmp_path / f"{work}.png"
        assert run(["lm-curve", str(tmp_path / work), "--out", str(out), "--plot", str(plot)]) == 0
        results = json.loads(out.read_text())
        curve = [p["heldout_ce"] for p in results["curve"]]
        assert results["finished"] and results["step"] == 8 and results["curve"][-1]["step"] == 8
        assert all(b < a for a, b in itertools.pairwise(curve)) and curve[-1] < curve[0] - 0.3, curve
        assert results["target_ce"] == pytest.approx(results["heldout"]["unigram_ce"] - 2)
        assert results["heldout"]["unigram_ce"] < results["heldout"]["ln_vocab"]
        assert results["command"].startswith(f"gemma-embed lm-curve {tmp_path / work} --out")
        assert plot.read_bytes()[:4] == b"\x89PNG"


def test_curve_needs_a_run_with_heldout_evaluations(files, tmp_path) -> None:
    from gemma_embed.errors import DataError
    from gemma_embed.train.init.evaluation import curve_results

    with pytest.raises(DataError, match="no training state"):
        curve_results(tmp_path)
    tok_dir, corpus, _ = files
    tokenizer = TextTokenizer.from_file(
        tok_dir / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0, max_length=128
    )
    pretrain_lm(GemmaDecoderLM(TRUNK).initialize(0), tokenizer, corpus, replace(LOOP, steps=1), tmp_path)
    with pytest.raises(DataError, match="no held-out evaluations"):
        curve_results(tmp_path)
