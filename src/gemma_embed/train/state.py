"""Training state as JSON + safetensors (never pickled): nested optimizer / RNG / sampler state flattened to a
JSON tree whose tensors are stored by name, and the process's random generators.

Used by the trainer's `trainer.json` / `trainer.safetensors` and by LM pretraining's state files.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

_TENSOR, _TUPLE, _ARRAY = "__tensor__", "__tuple__", "__ndarray__"


def flatten_state(obj: Any, name: str, tensors: dict[str, Tensor]) -> Any:
    """A JSON-serializable copy of a nested state (optimizer, RNG): tensors move to `tensors` under their path
    and are referenced by name; tuples and numpy arrays are tagged so that `unflatten_state` restores them."""
    if isinstance(obj, Tensor):
        tensors[name] = obj
        return {_TENSOR: name}
    if isinstance(obj, np.ndarray):
        return {_ARRAY: obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {_TUPLE: [flatten_state(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {k: flatten_state(v, f"{name}.{k}", tensors) for k, v in obj.items()}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {name} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """The inverse of `flatten_state`."""
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _TUPLE in obj:
        return tuple(unflatten_state(v, tensors) for v in obj[_TUPLE])
    if _ARRAY in obj:
        return np.array(obj[_ARRAY], dtype=obj["dtype"])
    return {k: unflatten_state(v, tensors) for k, v in obj.items()}


def rng_state() -> dict[str, Any]:
    """Every global random generator of this process."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def flat_items(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} for a nested dict."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_items(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
