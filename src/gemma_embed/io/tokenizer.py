"""Tokenization with `tokenizers` from a checkpoint's tokenizer.json.

Every input becomes `<bos> + tokens(text) + <eos>`; truncation keeps both specials, so at most
`max_length - 2` text tokens survive. The tokenizer file's own post-processor, truncation and padding
settings are ignored: the model's contract is fixed here, whatever the file was saved with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from gemma_embed.errors import CheckpointError


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] int64, right-padded with pad_id
    attention_mask: torch.Tensor  # [B, L] int64, 1 for real tokens


class TextTokenizer:
    def __init__(
        self, tokenizer: Tokenizer, *, bos_id: int, eos_id: int, pad_id: int, max_length: int
    ) -> None:
        if max_length < 3:
            raise CheckpointError(
                f"max_seq_length {max_length} leaves no room for text between <bos> and <eos>"
            )
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.max_length = max_length

    @classmethod
    def from_file(
        cls, path: Path, *, bos_id: int, eos_id: int, pad_id: int, max_length: int
    ) -> TextTokenizer:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; a checkpoint needs its tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise CheckpointError(f"{path} is not a valid tokenizer.json: {exc}") from exc
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        for name, token_id in (("bos", bos_id), ("eos", eos_id), ("pad", pad_id)):
            if not 0 <= token_id < size:
                raise CheckpointError(
                    f"{name}_token_id {token_id} is outside the tokenizer's vocabulary ({size})"
                )
        return cls(tokenizer, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def text_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens and without truncation."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Model inputs `<bos> ids <eos>` (truncated to max_length) and how many texts were cut."""
        room = self.max_length - 2
        out, cut = [], 0
        for ids in self.text_ids(texts):
            cut += len(ids) > room
            out.append([self.bos_id, *ids[:room], self.eos_id])
        return out, cut

    def split_spans(self, text: str, window: int, overlap: int) -> list[tuple[int, int]]:
        """Character spans of overlapping windows of `window` tokens (stride window - overlap) over text."""
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        if len(offsets) <= window:
            return [(0, len(text))]
        stride = max(1, window - overlap)
        spans = []
        for start in range(0, len(offsets), stride):
            end = min(start + window, len(offsets))
            spans.append((offsets[start][0], offsets[end - 1][1]))
            if end == len(offsets):
                break
        return spans

    def pad(self, sequences: Sequence[Sequence[int]]) -> Batch:
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return Batch(ids, mask)
