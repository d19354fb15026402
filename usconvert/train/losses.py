"""Losses: labels for the largest width, the teacher's detached output for the others."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``-sum(softmax(teacher) * log_softmax(student))``, averaged over the batch (T = 1)."""
    return -(F.softmax(teacher, dim=-1) * F.log_softmax(student, dim=-1)).sum(-1).mean()


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), reduction="batchmean",
                    log_target=True)


DISTILL_LOSSES: dict[str, Loss] = {
    "soft-ce": soft_cross_entropy,
    "kl": kl_divergence,
    "l1": F.l1_loss,  # regression (super-resolution): distil on outputs
    "l2": F.mse_loss,
}


def label_loss(smoothing: float = 0.0) -> Loss:
    if smoothing > 0:
        from timm.loss import LabelSmoothingCrossEntropy
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return F.cross_entropy


class TeacherDistillation:
    """The distillation term of a frozen teacher (Once-for-All's knowledge distillation), added
    to each width's label loss: ``kd_ratio * T^2 * soft-CE(student / T, teacher / T)`` for
    classifiers (``kl`` likewise), ``kd_ratio * L1/L2(student, teacher)`` for regression."""

    def __init__(self, loss: str = "soft-ce", ratio: float = 1.0, temperature: float = 1.0):
        self.loss, self.ratio, self.temperature = DISTILL_LOSSES[loss], ratio, temperature
        self.tempered = loss in ("soft-ce", "kl")

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if not self.tempered:
            return self.ratio * self.loss(student, teacher)
        t = self.temperature
        return self.ratio * t * t * self.loss(student / t, teacher / t)
