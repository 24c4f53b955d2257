"""`gemma-embed adapt DECODER --out DIR`: a decoder-only Gemma 3 -> an EmbeddingGemma init checkpoint.

EmbeddingGemma (Vera et al. 2025) is initialized from the encoder of a T5Gemma encoder-decoder (Zhang et
al. 2025, "Encoder-Decoder Gemma"), itself adapted from a decoder-only Gemma 3 with UL2 (Tay et al. 2022).
This command reproduces that path for any `Gemma3ForCausalLM` directory in the Hugging Face layout (a local
gemma-3-270m, or one written by `gemma-embed pretrain-lm`):

1. load the decoder-only LM and its tokenizer.json;
2. build the encoder-decoder (`EncoderDecoder.from_decoder`) and, with `--steps N`, adapt it with UL2;
3. write the encoder trunk plus a freshly initialized Dense head (`--dense-dims`, default 4*hidden, hidden
   like EmbeddingGemma's 768 -> 3072 -> 768) in the standard sentence-transformers layout, with the
   default prompts: what `gemma_embed.load` and a recipe's `[model] init` read.

`gemma-embed pretrain-lm TOKENIZER_DIR --out DIR` trains a small decoder-only Gemma 3 from scratch (preset
trunk, vocabulary from the tokenizer) and writes it in the `Gemma3ForCausalLM` layout, ready for `adapt`.

Both train in resumable sessions: `--max-minutes M` ends a session after M minutes with its state saved in
`--work` (exit code 75, nothing written to OUT); the same command continues it. Both score a fixed held-out
sample (`--heldout`, default `heldout.jsonl` beside the corpus) every `--eval-every` steps, and
`gemma-embed lm-curve WORK --out FILE.json --plot FILE.png` writes that curve with the unigram baseline.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from gemma_embed.cli_args import add_device_arg, add_out_arg
from gemma_embed.errors import CheckpointError, ConfigError
from gemma_embed.io.checkpoint import Checkpoint, save_checkpoint
from gemma_embed.io.decoder import load_decoder, save_decoder
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import EmbeddingModel, GemmaEmbedConfig, preset
from gemma_embed.model.decoder import GemmaDecoderLM
from gemma_embed.model.encdec import EncoderDecoder
from gemma_embed.paths import runs_dir
from gemma_embed.train.init.evaluation import write_curve
from gemma_embed.train.init.pretrain import LoopConfig, loop_summary, pretrain_lm, train_ul2
from gemma_embed.train.init.static import load_static, token_table


def decoder_tokenizer(root: Path, config: GemmaEmbedConfig) -> TextTokenizer:
    return TextTokenizer.from_file(
        root / "tokenizer.json",
        bos_id=config.bos_token_id,
        eos_id=config.eos_token_id,
        pad_id=config.pad_token_id,
        max_length=config.max_seq_length,
    )


def embedding_config(trunk: GemmaEmbedConfig, dense_dims: tuple[int, ...] | None) -> GemmaEmbedConfig:
    """The trunk config with an embedding head: Dense (4h, h) by default and halving Matryoshka dims."""
    dims = dense_dims if dense_dims is not None else (4 * trunk.hidden_size, trunk.hidden_size)
    out = dims[-1] if dims else trunk.hidden_size
    matryoshka = tuple(d for d in (out, out // 2, out // 4, out // 8) if d >= 8) or (out,)
    return trunk.replace(dense_dims=tuple(dims), matryoshka_dims=matryoshka)


def encoder_checkpoint(
    encdec: EncoderDecoder,
    tokenizer: TextTokenizer,
    dense_dims: tuple[int, ...] | None,
    seed: int,
    source: Path,
) -> Checkpoint:
    """The embedding model: the adapted encoder trunk and a normal(0, 0.02) Dense head, float32."""
    model = EmbeddingModel(embedding_config(encdec.config, dense_dims)).initialize(seed)
    model.encoder.load_state_dict({k: v.float() for k, v in encdec.encoder.state_dict().items()})
    return Checkpoint(model.eval(), tokenizer, source=source)


def adapt(
    decoder_dir: str | Path,
    out: str | Path,
    *,
    corpus: Path | None = None,
    loop: LoopConfig | None = None,
    work: Path | None = None,
    heldout: Path | None = None,
    max_minutes: float | None = None,
    dense_dims: tuple[int, ...] | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> Path | None:
    """Decoder-only Gemma 3 -> (UL2-adapted) encoder-decoder -> embedding init checkpoint at `out`; None when
    `max_minutes` ended the session before `loop.steps` (its state is in `work`: call again to continue)."""
    root, out = Path(decoder_dir), Path(out)
    loop = loop or LoopConfig(steps=0)
    lm = load_decoder(root)
    tokenizer = decoder_tokenizer(root, lm.config)
    encdec = EncoderDecoder.from_decoder(lm)
    del lm
    if loop.steps > 0:
        if corpus is None:
            raise CheckpointError("--steps needs --corpus (a JSONL file of {'text': ...} rows)")
        work = work or out.with_name(out.name + "-ul2")
        losses = train_ul2(
            encdec, tokenizer, corpus, loop, work, heldout, max_minutes=max_minutes, device=device
        )
        print(loop_summary(losses))
        if len(losses) < loop.steps:
            return None
        encdec.to("cpu")
    return save_checkpoint(
        encoder_checkpoint(encdec, tokenizer, dense_dims, loop.seed, root), out, overwrite=overwrite
    )


def pretrain(
    tokenizer_dir: Path,
    out: Path,
    corpus: Path,
    loop: LoopConfig,
    *,
    trunk: str = "tiny",
    static: Path | None = None,
    work: Path | None = None,
    heldout: Path | None = None,
    max_minutes: float | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> Path | None:
    """Train a decoder-only Gemma 3 (the `trunk` preset, vocabulary from the tokenizer) and save it; None when
    `max_minutes` ended the session first (call again to continue). `static`: start the token embeddings from
    a `fit-static` folder (`static_init.token_table`)."""
    probe = TextTokenizer.from_file(
        tokenizer_dir / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0, max_length=8
    )
    config = preset(trunk).replace(vocab_size=probe.vocab_size)
    model = GemmaDecoderLM(config).initialize(loop.seed)
    if static is not None:
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(token_table(load_static(static), config.hidden_size))
    tokenizer = decoder_tokenizer(tokenizer_dir, config)
    work = work or out.with_name(out.name + "-lm")
    losses = pretrain_lm(
        model, tokenizer, corpus, loop, work, heldout, max_minutes=max_minutes, device=device
    )
    print(loop_summary(losses))
    if len(losses) < loop.steps:
        return None
    return save_decoder(model.to("cpu"), out, tokenizer_dir=tokenizer_dir, overwrite=overwrite)


# ---- CLI -----------------------------------------------------------------------------------------------


def dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d.strip())


# The exit code of a session that its time budget ended (EX_TEMPFAIL: run the same command again).
UNFINISHED = 75


def add_loop_args(parser: argparse.ArgumentParser, steps: int) -> None:
    parser.add_argument("--corpus", type=Path, help="JSONL corpus (default: runs/corpus/train.jsonl)")
    parser.add_argument(
        "--heldout",
        type=Path,
        help="held-out JSONL corpus scored during training (default: heldout.jsonl beside the corpus, "
        "when it exists)",
    )
    parser.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=20, help="linear warmup steps (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-every", type=int, default=0, help="held-out evaluation every N steps (0: start and end)"
    )
    parser.add_argument(
        "--eval-windows", type=int, default=256, help="held-out windows of --seq-len tokens (default 256)"
    )
    parser.add_argument(
        "--save-every", type=int, default=200, help="save the resumable state every N steps (default 200)"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="end this session after M minutes, state saved (exit code 75); run again to continue",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (no bf16 autocast)")
    parser.add_argument("--freeze-embeddings", action="store_true", help="keep the token embeddings fixed")
    parser.add_argument("--work", type=Path, help="resumable training state (default: OUT-ul2 / OUT-lm)")
    add_device_arg(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    add_out_arg(parser, type=Path, required=True, help="output checkpoint directory")


def loop_config(args: argparse.Namespace) -> LoopConfig:
    return LoopConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        seed=args.seed,
        bf16=not args.no_bf16,
        freeze_embeddings=args.freeze_embeddings,
        warmup=args.warmup,
        save_every=max(1, min(args.save_every, args.steps)),
        eval_every=args.eval_every,
        eval_windows=args.eval_windows,
    )


def corpus_path(args: argparse.Namespace) -> Path:
    return args.corpus or runs_dir() / "corpus" / "train.jsonl"


def heldout_path(args: argparse.Namespace) -> Path | None:
    beside = corpus_path(args).with_name("heldout.jsonl")
    return args.heldout or (beside if beside.is_file() else None)


def set_threads(args: argparse.Namespace) -> None:
    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 (default) or a positive integer, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)


def finished(out: Path | None) -> int:
    if out is None:
        print("the time budget ended this session; run the same command again to continue", file=sys.stderr)
        return UNFINISHED
    print(out)
    return 0


def run_adapt(args: argparse.Namespace) -> int:
    set_threads(args)
    corpus = corpus_path(args) if args.steps > 0 else None
    out = adapt(
        args.decoder,
        args.out,
        corpus=corpus,
        loop=loop_config(args),
        work=args.work,
        heldout=heldout_path(args) if corpus is not None else None,
        max_minutes=args.max_minutes,
        dense_dims=args.dense_dims,
        device=args.device,
        overwrite=args.overwrite,
    )
    return finished(out)


def run_pretrain(args: argparse.Namespace) -> int:
    set_threads(args)
    out = pretrain(
        args.tokenizer,
        args.out,
        corpus_path(args),
        loop_config(args),
        trunk=args.trunk,
        static=args.static,
        work=args.work,
        heldout=heldout_path(args),
        max_minutes=args.max_minutes,
        device=args.device,
        overwrite=args.overwrite,
    )
    return finished(out)


def run_curve(args: argparse.Namespace) -> int:
    options = [("--plot", args.plot), ("--title", args.title)]
    command = shlex.join(
        ["gemma-embed", "lm-curve", str(args.work), "--out", str(args.out)]
        + [str(part) for flag, value in options if value is not None for part in (flag, value)]
    )
    results = write_curve(args.work, args.out, args.plot, args.title or args.work.name, command)
    print(
        f"held-out cross-entropy {results['final']['heldout_ce']:.4f} at step {results['step']} "
        f"(unigram {results['heldout']['unigram_ce']:.4f}, target {results['target_ce']:.4f}): {args.out}"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `adapt` and `pretrain-lm`."""
    parser = subparsers.add_parser(
        "adapt",
        help="decoder-only Gemma 3 -> T5Gemma encoder-decoder (+UL2) -> embedding init checkpoint",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("decoder", type=Path, help="Gemma3ForCausalLM directory (config.json, safetensors)")
    parser.add_argument(
        "--dense-dims", type=dims, default=None, help="comma-separated Dense sizes (default: 4*hidden,hidden)"
    )
    add_loop_args(parser, steps=0)
    parser.set_defaults(func=run_adapt)

    lm = subparsers.add_parser(
        "pretrain-lm", help="pretrain a small decoder-only Gemma 3 (causal LM) for `adapt`"
    )
    lm.add_argument("tokenizer", type=Path, help="directory with tokenizer.json (e.g. the trained one)")
    lm.add_argument("--trunk", default="tiny", help="model preset for the trunk (tiny, mini, ...)")
    lm.add_argument("--static", type=Path, help="fit-static folder: start the token embeddings from it")
    add_loop_args(lm, steps=1000)
    lm.set_defaults(func=run_pretrain)

    curve = subparsers.add_parser(
        "lm-curve",
        help="held-out cross-entropy curve of a pretrain-lm / adapt run (results JSON, PNG plot)",
    )
    curve.add_argument("work", type=Path, help="the run's --work folder (with state/state.json)")
    add_out_arg(curve, type=Path, required=True, help="results JSON to write")
    curve.add_argument("--plot", type=Path, help="PNG plot to write (needs matplotlib)")
    curve.add_argument("--title", help="plot title (default: the work folder's name)")
    curve.set_defaults(func=run_curve)
