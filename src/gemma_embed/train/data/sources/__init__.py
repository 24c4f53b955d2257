"""Training sets from the shared data, split by job: dataset file layouts (`files`), the held-out filter
(`held_out`), the registered converters (`converters`), all raw text (`raw_texts`) and conversion + writing
(`build`)."""

from gemma_embed.train.data.sources.build import (
    ConversionStats,
    convert,
    default_sets,
    load_source,
    write_training_sets,
)
from gemma_embed.train.data.sources.converters import SOURCES, Source
from gemma_embed.train.data.sources.heldout import HeldOut, HeldOutGroup, held_out, text_key
from gemma_embed.train.data.sources.raw import RAW_TEXTS, raw_texts

__all__ = [
    "RAW_TEXTS",
    "SOURCES",
    "ConversionStats",
    "HeldOut",
    "HeldOutGroup",
    "Source",
    "convert",
    "default_sets",
    "held_out",
    "load_source",
    "raw_texts",
    "text_key",
    "write_training_sets",
]
