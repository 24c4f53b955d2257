"""The Matryoshka dims a model card states, checked against the checkpoint it ships with.

`gemma-embed convert --card CARD` writes CARD as the checkpoint's README.md (the `ship` stage of
recipes/mini/pipeline.toml). A card states Matryoshka dims in two ways: a dim list after the word
"Matryoshka" (`Matryoshka: 384 / 192 / 96 / 48`, a table cell after `Matryoshka dims`), and the first column
of the table under a heading that names Matryoshka (its scores by dim). Every one must be the dims the
checkpoint was trained at (its config's `matryoshka_dims`, stored in gemma_embed.json), so a card cannot ship
with dims the model was not trained at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gemma_embed.errors import InputError

_MENTION = re.compile(r"Matryoshka(?: dims)?[\s:|]*((?:\d+\s*[/,]\s*)+\d+)")
_HEADING = re.compile(r"^#+\s.*Matryoshka")


def stated_matryoshka_dims(card: str) -> list[tuple[int, ...]]:
    """Each dim list the card states: the mentions in text order, then its Matryoshka table's dim column."""
    stated = [tuple(int(d) for d in re.findall(r"\d+", m.group(1))) for m in _MENTION.finditer(card)]
    lines = card.splitlines()
    heading = next((i for i, line in enumerate(lines) if _HEADING.match(line)), None)
    if heading is not None:
        start = next((i for i in range(heading + 1, len(lines)) if lines[i].startswith("|")), None)
        if start is not None:
            rows = []
            for line in lines[start + 2 :]:  # after the header and its separator
                if not line.startswith("|"):
                    break
                cell = line.strip("|").split("|")[0].replace("*", "").strip()
                if not cell.isdigit():
                    raise InputError(f"the Matryoshka table's row {line!r} does not start with a dim")
                rows.append(int(cell))
            stated.append(tuple(rows))
    return stated


def check_card_dims(card: str, dims: Sequence[int], where: str) -> None:
    """InputError when any dim list the card states differs from `dims` (the checkpoint's Matryoshka dims)."""
    trained = tuple(int(d) for d in dims)
    for stated in stated_matryoshka_dims(card):
        if stated != trained:
            raise InputError(
                f"{where} states Matryoshka dims {' / '.join(map(str, stated))}, but the model was trained "
                f"at {' / '.join(map(str, trained))} (its gemma_embed.json); correct the card"
            )
