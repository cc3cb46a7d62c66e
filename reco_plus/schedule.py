"""Optimiser and learning-rate schedule of ReCo+ (SPEC 12.2)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler


class PolyLR(LRScheduler):
    """lr_t = max(base_lr * (1 - t / max_iters) ** power, min_lr) for every group, t = scheduler steps.

    The floor applies to both parameter groups, so the backbone group (10x smaller base lr) reaches it
    earlier (SPEC 15.17). Stepping past max_iters keeps the floor.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_iters: int, power: float = 0.9,
                 min_lr: float = 1e-6, last_epoch: int = -1) -> None:
        if max_iters < 1:
            raise ValueError(f"max_iters must be positive, got {max_iters}")
        self.max_iters = max_iters
        self.power = power
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        # Without torch's _step_count: it counts the steps of this object since it was built (for its
        # warning about the call order), not those of the schedule. A scheduler built at a resumed
        # iteration has taken fewer, and its last.pt would differ from an uninterrupted run's.
        state = super().state_dict()
        state.pop("_step_count", None)
        return state

    def get_lr(self) -> list[float]:
        return self._lrs_at(self.last_epoch)

    def _lrs_at(self, step: int) -> list[float]:
        factor = max(1.0 - step / self.max_iters, 0.0) ** self.power
        return [max(base_lr * factor, self.min_lr) for base_lr in self.base_lrs]


def build_optimizer(model: nn.Module, lr: float = 5e-4, backbone_lr_ratio: float = 0.1,
                    weight_decay: float = 2e-4) -> torch.optim.Adam:
    """Adam with two groups: `model.backbone` at lr * backbone_lr_ratio, `model.classifier` (head) at lr.

    weight_decay is Adam's coupled L2 (not AdamW), betas (0.9, 0.999), as the original.
    """
    model = getattr(model, "module", model)  # DistributedDataParallel
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.classifier.parameters() if p.requires_grad]
    n_total = sum(1 for p in model.parameters() if p.requires_grad)
    if len(backbone) + len(head) != n_total:
        raise ValueError("the segmentor has trainable parameters outside .backbone and .classifier")
    return torch.optim.Adam(
        [{"params": backbone, "lr": lr * backbone_lr_ratio}, {"params": head, "lr": lr}],
        lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay,
    )
