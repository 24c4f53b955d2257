"""The weight-decay rule shared by every optimizer the project builds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: matrices (embeddings, projections) decayed by `weight_decay`, 1-D parameters
    (norm gains, biases) not. The order of the parameters within each group is kept, so optimizer state
    files written before stay aligned."""
    params = list(params)
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
