"""Data-parallel wrapping of the trained modules (DDP or FSDP2) and gradient-sync control for accumulation."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from gemma_embed.distributed import world_size
from gemma_embed.model import EmbeddingModel


def parallelize(module: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """The module wrapped for data parallelism (`ddp` or `fsdp`); unchanged in one process or without
    trainable parameters."""
    if world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    if mode == "fsdp":
        if isinstance(module, EmbeddingModel):
            for layer in module.encoder.layers:
                fully_shard(layer)
        fully_shard(module)
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def set_gradient_sync(module: nn.Module, enabled: bool) -> None:
    """Whether the next backward through `module` averages gradients over ranks (off: accumulate locally)."""
    if isinstance(module, DistributedDataParallel):
        module.require_backward_grad_sync = enabled
    elif isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(enabled)
