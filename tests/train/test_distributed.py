"""all_gather_with_grad and the loss scaling: 2 gloo processes reproduce the single-process global-batch
loss and gradients (inputs: W * single-process gradient before DDP's average; DDP parameters: equal)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from gemma_embed import distributed
from gemma_embed.errors import InputError
from gemma_embed.losses import EmbeddingGemmaLoss, nce_loss
from helpers import free_port

WORLD, LOCAL_B, K, D_IN, D = 2, 3, 2, 6, 8
GLOBAL_B = WORLD * LOCAL_B


def _global_batch():
    g = torch.Generator().manual_seed(0)
    x = {
        "q": torch.randn(GLOBAL_B, D_IN, generator=g, dtype=torch.float64),
        "p": torch.randn(GLOBAL_B, D_IN, generator=g, dtype=torch.float64),
        "neg": torch.randn(GLOBAL_B, K, D_IN, generator=g, dtype=torch.float64),
        "teacher_q": torch.randn(GLOBAL_B, D, generator=g, dtype=torch.float64),
        "teacher_p": torch.randn(GLOBAL_B, D, generator=g, dtype=torch.float64),
        "teacher_neg": torch.randn(GLOBAL_B, K, D, generator=g, dtype=torch.float64),
    }
    # Rows 0 (rank 0) and 4 (rank 1) share a query, rows 1 and 3 a passage: the mask crosses ranks.
    ids = {"q_ids": torch.tensor([0, 1, 2, 3, 0, 5]), "p_ids": torch.tensor([10, 11, 12, 11, 14, 15])}
    return x, ids


def _check_nce_input_gradients(rank: int) -> None:
    x, ids = _global_batch()
    rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
    q, p, neg = (x[k][rows].clone().requires_grad_() for k in ("q", "p", "neg"))
    local = nce_loss(
        q,
        distributed.all_gather_with_grad(p),
        neg,
        q_ids=distributed.all_gather_with_grad(ids["q_ids"][rows]),
        p_ids=distributed.all_gather_with_grad(ids["p_ids"][rows]),
        offset=distributed.rank() * LOCAL_B,
    )
    local.backward()

    q_full, p_full, neg_full = (x[k].clone().requires_grad_() for k in ("q", "p", "neg"))
    full = nce_loss(q_full, p_full, neg_full, **ids)
    full.backward()

    mean_loss = local.detach().clone()
    dist.all_reduce(mean_loss)
    torch.testing.assert_close(mean_loss / WORLD, full.detach())
    for shard, whole in ((q, q_full), (p, p_full), (neg, neg_full)):
        # Each rank's input gradient is W * dL/dx_shard; DDP's average over W ranks removes the factor.
        torch.testing.assert_close(shard.grad / WORLD, whole.grad[rows])


def _check_ddp_parameter_gradients(rank: int) -> None:
    x, ids = _global_batch()
    rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
    torch.manual_seed(0)
    reference = torch.nn.Linear(D_IN, D).double()
    model = DistributedDataParallel(torch.nn.Linear(D_IN, D).double())
    model.module.load_state_dict(reference.state_dict())
    options = {"dims": (D, 4), "tau": 0.1, "alpha": 2.0, "distillation_weight": 1.0}

    def encode(net, q, p, neg):
        out = net(torch.cat([q, p, neg.flatten(0, 1)]))  # one forward per DDP step
        return out[: len(q)], out[len(q) : len(q) + len(p)], out[len(q) + len(p) :].unflatten(0, (len(q), K))

    q, p, neg = encode(model, x["q"][rows], x["p"][rows], x["neg"][rows])
    teacher = {k: x[f"teacher_{k}"][rows] for k in ("q", "p", "neg")}
    local, _ = EmbeddingGemmaLoss(**options)(
        q, p, neg, **{k: v[rows] for k, v in ids.items()}, teacher=teacher
    )
    local.backward()

    q, p, neg = encode(reference, x["q"], x["p"], x["neg"])
    teacher = {k: x[f"teacher_{k}"] for k in ("q", "p", "neg")}
    full, _ = EmbeddingGemmaLoss(**options, gather=False)(q, p, neg, **ids, teacher=teacher)
    full.backward()

    mean_loss = local.detach().clone()
    dist.all_reduce(mean_loss)
    torch.testing.assert_close(mean_loss / WORLD, full.detach())
    for name, param in model.module.named_parameters():
        torch.testing.assert_close(param.grad, dict(reference.named_parameters())[name].grad)


def _worker(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert distributed.setup() == torch.device("cpu")
    try:
        assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (
            rank,
            WORLD,
            rank == 0,
        )
        _check_nce_input_gradients(rank)
        _check_ddp_parameter_gradients(rank)
        with pytest.raises(InputError, match="drop_last"):
            distributed.all_gather_with_grad(torch.zeros(rank + 1, 2))
    finally:
        distributed.teardown()


@pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")
def test_two_process_gathered_loss_and_gradients_equal_the_global_batch():
    mp.spawn(_worker, args=(free_port(),), nprocs=WORLD, join=True)


def test_single_process_helpers_are_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup() == (
        torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    )
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
    distributed.teardown()
