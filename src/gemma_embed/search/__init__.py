"""Search at scale: embed a corpus into Parquet shards (locally or on Ray Data), build a versioned vector
index (usearch HNSW over float32, int8 or binary vectors, float rescoring; exact numpy search for small
corpora) and answer queries with ranked titles and scores.

Modules: `corpus` (reading documents, `embed_corpus`), `vectors` (quantization), `index` (`VectorIndex`),
`demo` (`scifact_demo`), `bench` (ANN recall and latency), `cli` (`register` for the command line).
Heavy packages (pyarrow, usearch, ray) are imported only inside the functions that use them.
"""

from gemma_embed.search.demo import scifact_demo
from gemma_embed.search.index import ModelMismatchError, VectorIndex, build_index, open_index

__all__ = ["ModelMismatchError", "VectorIndex", "build_index", "open_index", "scifact_demo"]
