"""EmbeddingGemma's task prompts and how a prompt is chosen for a call.

The defaults are the 14 prompts of the published `config_sentence_transformers.json`; a checkpoint's own
file overrides them. As in sentence-transformers, the prompt is prepended to the text and the result is
stripped of surrounding whitespace before tokenization.
"""

from __future__ import annotations

from collections.abc import Mapping

from gemma_embed.errors import InputError

DEFAULT_PROMPTS: dict[str, str] = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}


def resolve_prompt(
    prompts: Mapping[str, str], task: str | None, prompt: str | None, default_task: str | None = None
) -> str:
    """The prompt string for a call: an explicit `prompt` wins, then `task`, then the checkpoint default."""
    if task is not None and prompt is not None:
        raise InputError("pass either task= or prompt=, not both")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        return prompt
    name = task if task is not None else default_task
    if name is None:
        return ""
    if name not in prompts:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(prompts))}")
    return prompts[name]


def apply_prompt(prompt: str, text: str) -> str:
    """Prompt + text, stripped, exactly as sentence-transformers builds the model input."""
    return (prompt + text).strip()
