"""gemma-embed: EmbeddingGemma in plain PyTorch.

Usage:

    import gemma_embed
    model = gemma_embed.load("path/to/embeddinggemma-300m")
    q = model.encode_query("Which planet is known as the Red Planet?")
    d = model.encode_document(["Mars is the Red Planet.", "Venus is Earth's twin."])
    scores = model.similarity(q, d)
"""

from gemma_embed.encode import Embedder, load
from gemma_embed.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GemmaEmbedError,
    InputError,
    UnsupportedDtypeError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Embedder",
    "GemmaEmbedError",
    "InputError",
    "UnsupportedDtypeError",
    "__version__",
    "load",
]
