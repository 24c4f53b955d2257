"""Running gemma-embed models inside mteb: `MTEBModel` implements mteb's `EncoderProtocol` (encode,
similarity, similarity_pairwise, mteb_model_meta) over any harness `Encoder`.

    import mteb
    from gemma_embed.eval.mteb_adapter import MTEBModel
    results = mteb.evaluate(MTEBModel.load("path/to/checkpoint"), tasks=mteb.get_tasks(["STSBenchmark"]))

Prompts are chosen exactly as the harness chooses them (`resolve_prompt_name`, MTEB's order of
priority), texts go through the same embedding cache, and `dim` evaluates one Matryoshka truncation.
mteb is imported only inside methods; it is an optional dependency (`pip install mteb`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gemma_embed.errors import ConfigError
from gemma_embed.eval.cache import EmbeddingCache
from gemma_embed.eval.embedding import EmbeddingSource, truncate
from gemma_embed.eval.encoders import Encoder, load_encoder


def _similarity_functions() -> Any:
    try:
        from mteb import similarity_functions
    except ImportError:
        raise ConfigError("the mteb integration needs the mteb package (pip install mteb)") from None
    return similarity_functions


class MTEBModel:
    """An `Encoder` as an mteb encoder model (cosine similarity; optional fixed Matryoshka `dim`)."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        dim: int | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 32,
        name: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.encoder = encoder
        self.dim = dim
        self.source = EmbeddingSource(encoder, cache, batch_size=batch_size, progress=False)
        stem = Path(encoder.name).name or "model"
        self.name = name or f"gemma-embed/{stem}"
        self.revision = revision or encoder.identity[:12]

    @classmethod
    def load(cls, path_or_name: str, *, backend: str = "auto", **kwargs: Any) -> MTEBModel:
        """Load a model (see `load_encoder`) and wrap it; kwargs go to `MTEBModel`."""
        return cls(load_encoder(path_or_name, backend=backend), **kwargs)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of mteb's DataLoader (batches with a "text" list) with the task's prompt."""
        texts = [text for batch in inputs for text in batch["text"]]
        role = getattr(prompt_type, "value", prompt_type)
        prompt = self.source.prompt(task_metadata.type, role, task_metadata.name)
        self.source.clear()  # mteb asks for each list once; keep memory flat across tasks
        return truncate(self.source.encode(texts, prompt), self.dim)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        """Cosine similarity matrix (mteb's `cos_sim`)."""
        return _similarity_functions().cos_sim(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Any:
        """Cosine similarity of each row pair (mteb's `pairwise_cos_sim`)."""
        return _similarity_functions().pairwise_cos_sim(embeddings1, embeddings2)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb `ModelMeta` of this model (name "gemma-embed/<checkpoint folder>", revision from identity)."""
        from mteb.models.model_meta import ModelMeta

        return ModelMeta(
            loader=None,
            name=self.name,
            revision=self.revision,
            release_date=None,
            languages=None,
            n_parameters=None,
            memory_usage_mb=None,
            max_tokens=None,
            embed_dim=self.dim or self.source.full_dim,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name="cosine",
            use_instructions=any(self.encoder.prompts.values()),
            training_datasets=None,
        )
