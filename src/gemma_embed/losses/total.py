"""EmbeddingGemma's training objective: contrastive + spread-out + distillation (+ parallel distillation).

Schechter Vera et al., 2025, "EmbeddingGemma: Powerful and Lightweight Text Representations",
arXiv:2509.20354. With Matryoshka dims M (the full dim included) and equal weights by default:

    L = w_C * sum_{m in M} L_C^(m) + w_S * sum_{m in M} L_S^(m) + w_D * L_D          (other batches)
    L = w_C * sum_{m in M} L_C^(m) + w_S * sum_{m in M} L_S^(m) + w_PD * L_PD        (parallel batches)

L_C is `nce_loss`, L_S `spread_out_loss` (both on embeddings truncated to m dims and re-normalised by
`Matryoshka`), L_D `embedding_distillation_loss` and L_PD `parallel_distillation_loss` at the full dim.
Inputs: q, p [b, d] and optional hard negatives [b, d] or [b, k, d] of this process; teacher embeddings
{"q", "p", "neg"} in the teacher's dim. A parallel batch (`parallel=True`) pairs source sentences q with
their translations p, which are also each other's contrastive positives; its teacher is {"q": the sources'
vectors}, the target of both sides, and L_D (whose target for p would be the teacher's vector of the
translation) is not computed on it.

Distributed (`gather=True`, the default, and an initialised process group): the in-batch candidates of L_C are
the positives and ids of all ranks, and L_S is computed on the all-gathered q and p; L_C and L_D stay local
means. With DDP's gradient averaging this gives exactly the gradient of the single-process loss on the global
batch (see `gemma_embed.distributed`). Keep this module (it owns the `DistillationProjection`) inside
the DDP-wrapped module so that the projection's gradients are averaged too.
"""

import math
from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from gemma_embed.distributed import all_gather_with_grad, rank, world_size
from gemma_embed.errors import ConfigError, InputError
from gemma_embed.losses.distillation import DistillationProjection, embedding_distillation_loss
from gemma_embed.losses.matryoshka import Matryoshka
from gemma_embed.losses.nce import nce_loss
from gemma_embed.losses.parallel_distillation import parallel_distillation_loss
from gemma_embed.losses.similarity_distillation import RelationalKind
from gemma_embed.losses.spread_out import spread_out_loss


class EmbeddingGemmaLoss(nn.Module):
    """Weighted sum of the three losses; `forward` returns (total, parts) with float parts for logging.

    Args:
        dims: Matryoshka dims for L_C and L_S; the largest must equal the embedding dim.
        tau, alpha: temperature and hardness-weight strength of `nce_loss`.
        contrastive_weight, spread_out_weight, distillation_weight: w_C, w_S, w_D (>= 0); a zero weight skips
            that loss (and its entry in `parts`). w_D defaults to 0 (no teacher needed), as a recipe's
            `[loss] distillation_weight` does.
        parallel_distillation_weight: w_PD (>= 0, default 0) of L_PD on parallel batches.
        projection: `DistillationProjection(student_dim, teacher_dim)` when the teacher's dim differs; trained
            through `self.parameters()`, never saved with the model; used by L_D and L_PD.
        mse_weight, relational, relational_tau: forwarded to `embedding_distillation_loss` (`mse_weight` to
            `parallel_distillation_loss` too).
        distill_negatives: also match the teacher on hard negatives (the paper's choice); False distills
            queries and positives only.
        gather: use every rank's in-batch candidates when torch.distributed is initialised.
    """

    def __init__(
        self,
        *,
        dims: Iterable[int] = (768, 512, 256, 128),
        tau: float = 0.05,
        alpha: float = 5.0,
        contrastive_weight: float = 1.0,
        spread_out_weight: float = 1.0,
        distillation_weight: float = 0.0,
        parallel_distillation_weight: float = 0.0,
        projection: DistillationProjection | None = None,
        mse_weight: float = 0.0,
        relational: RelationalKind | None = None,
        relational_tau: float = 0.05,
        distill_negatives: bool = True,
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.weights = {
            "contrastive": contrastive_weight,
            "spread_out": spread_out_weight,
            "distillation": distillation_weight,
            "parallel_distillation": parallel_distillation_weight,
        }
        for name, w in self.weights.items():
            if not (math.isfinite(w) and w >= 0):
                raise ConfigError(f"{name}_weight must be a finite number >= 0; got {w}")
        if not any(self.weights.values()):
            raise ConfigError(
                "every loss weight is 0: set at least one of the contrastive/spread-out/(parallel) distillation "
                "weights"
            )
        if tau <= 0:
            raise ConfigError(f"tau must be > 0; got {tau}")
        self.contrastive = Matryoshka(nce_loss, dims)
        self.spread_out = Matryoshka(spread_out_loss, self.contrastive.dims)
        self.tau, self.alpha = tau, alpha
        self.projection = projection
        self.distill_options = {
            "mse_weight": mse_weight,
            "relational": relational,
            "relational_tau": relational_tau,
        }
        self.distill_negatives = distill_negatives
        self.gather = gather

    def forward(
        self,
        q: Tensor,
        p: Tensor,
        neg: Tensor | None = None,
        *,
        q_ids: Tensor | None = None,
        p_ids: Tensor | None = None,
        teacher: Mapping[str, Tensor | None] | None = None,
        parallel: bool = False,
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss (float32 scalar) and `parts`: each weighted-in loss unweighted, plus "total".

        `parallel`: q are source sentences and p their translations; the distillation term is L_PD with
        target teacher["q"] for both (weight w_PD) instead of L_D.
        """
        losses: dict[str, Tensor] = {}
        distributed = self.gather and world_size() > 1

        def everywhere(x: Tensor | None) -> Tensor | None:
            return all_gather_with_grad(x) if distributed and x is not None else x

        p_all = everywhere(p) if self.weights["contrastive"] or self.weights["spread_out"] else p
        if self.weights["contrastive"]:
            losses["contrastive"] = self.contrastive(
                q,
                p_all,
                neg,
                tau=self.tau,
                alpha=self.alpha,
                q_ids=everywhere(q_ids),
                p_ids=everywhere(p_ids),
                offset=rank() * q.shape[0] if distributed else 0,
            )
        if self.weights["spread_out"]:
            losses["spread_out"] = self.spread_out(everywhere(q), p_all)
        if parallel:
            if self.weights["parallel_distillation"]:
                source = None if teacher is None else teacher.get("q")
                if source is None:
                    raise InputError(
                        "parallel_distillation_weight > 0 needs the teacher's vectors of the sources: "
                        'pass teacher={"q": ...} or set the weight to 0'
                    )
                losses["parallel_distillation"] = parallel_distillation_loss(
                    q, p, source, projection=self.projection, mse_weight=self.distill_options["mse_weight"]
                )
        elif self.weights["distillation"]:
            if teacher is None:
                raise InputError(
                    "distillation_weight > 0 needs teacher embeddings: pass teacher= or set the weight to 0"
                )
            student = {"q": q, "p": p, "neg": neg}
            if not self.distill_negatives:
                student["neg"] = None
                teacher = {**teacher, "neg": None}
            losses["distillation"] = embedding_distillation_loss(
                student, teacher, projection=self.projection, **self.distill_options
            )
        if not losses:
            raise InputError(
                "no loss applies to this parallel batch: its distillation is parallel_distillation_weight, 0 here"
            )
        total = sum(self.weights[name] * value for name, value in losses.items())
        parts = {name: float(value.detach()) for name, value in losses.items()}
        parts["total"] = float(total.detach())
        return total, parts
