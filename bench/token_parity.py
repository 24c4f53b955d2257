"""Tokens a translation needs relative to its English source, per language, on the parallel training data.

    .venv/bin/python bench/token_parity.py runs/tokenizer                      # prints
    .venv/bin/python bench/token_parity.py runs/tokenizer --out docs/results/tokenizer-parity.json

Parallel data (train splits only; see ../shared/data SOURCE.txt files): Multi30k task1 train (en -> de, fr,
cs; 29,000 line-aligned captions) and the stsb_multi_mt train translations (en -> de es fr it nl pl pt ru zh;
5,749 pairs, both sentences). The ratio of a language is (tokens of all its translations) / (tokens of their
English sources), without `<bos>`/`<eos>`; the issue's bound is 1.5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from gemma_embed.paths import data_root
from gemma_embed.train.data.sources.files import aligned, required_file, stsb_multi_mt

MULTI30K = ("de", "fr", "cs")
STSB_MT = ("de", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")
BOUND = 1.5


def parallel_pairs(root: Path) -> dict[str, list[tuple[str, str]]]:
    """{"multi30k:<lang>" / "stsb_multi_mt:<lang>": [(english, translation), ...]} of the train splits."""
    out: dict[str, list[tuple[str, str]]] = {}
    base = root / "multi30k" / "data" / "task1" / "raw"
    for lang in MULTI30K:
        out[f"multi30k:{lang}"] = list(
            aligned(required_file(base, "train.en.gz"), required_file(base, f"train.{lang}.gz"))
        )
    english = list(stsb_multi_mt(root, "en", "train"))
    for lang in STSB_MT:
        pairs = []
        for (e1, e2, _), (t1, t2, _) in zip(english, stsb_multi_mt(root, lang, "train"), strict=True):
            pairs += [(e1, t1), (e2, t2)]
        out[f"stsb_multi_mt:{lang}"] = pairs
    return out


def token_ratios(tokenizer: Tokenizer, pairs: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per set: pairs, English tokens, translation tokens, and their ratio."""
    report = {}
    for name, rows in pairs.items():
        count = lambda texts: sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))  # noqa: E731
        english, other = count([e for e, _ in rows]), count([t for _, t in rows])
        report[name] = {
            "pairs": len(rows),
            "en_tokens": english,
            "tokens": other,
            "ratio": round(other / english, 4),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokenizer", type=Path, help="folder with tokenizer.json")
    parser.add_argument("--out", type=Path, help="results JSON")
    args = parser.parse_args()
    file = args.tokenizer / "tokenizer.json"
    if not file.is_file():
        sys.exit(f"error: {file} not found")
    report = token_ratios(Tokenizer.from_file(str(file)), parallel_pairs(data_root()))
    for name, row in report.items():
        flag = "" if row["ratio"] <= BOUND else f"  > {BOUND}"
        print(f"{name:<18} {row['pairs']:>6} pairs  ratio {row['ratio']:.3f}{flag}")
    worst = max(report, key=lambda k: report[k]["ratio"])
    print(f"worst: {worst} {report[worst]['ratio']:.3f} (bound {BOUND})")
    if args.out:
        from gemma_embed.io.files import write_json

        write_json(
            args.out,
            {
                "tokenizer": str(args.tokenizer),
                "bound": BOUND,
                "worst": worst,
                "within_bound": report[worst]["ratio"] <= BOUND,
                "by_set": report,
                "command": "bench/token_parity.py " + " ".join(sys.argv[1:]),
            },
        )


if __name__ == "__main__":
    main()
