"""Optimisers and learning-rate schedules, registered by name for the ``optimizer`` config section.

``BertAdam`` is written by hand because the reference methods train with its exact update (no bias
correction, per-tensor clipping, decay added to the update, schedule evaluated per tensor); AdamW is
PyTorch's own with a schedule from the same table.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from common.register import registry
from common.schema import NonNegativeFloat, PositiveFloat


@registry.register_scheduler("warmup_cosine")
def warmup_cosine(progress: float, warmup: float) -> float:
    """BertAdam's schedule: x/warmup during warm-up, then 0.5(1 + cos(pi x)) on the raw progress x."""
    return progress / warmup if progress < warmup else 0.5 * (1.0 + math.cos(math.pi * progress))


@registry.register_scheduler("warmup_linear")
def warmup_linear(progress: float, warmup: float) -> float:
    """BertAdam's linear schedule: x/warmup, then decays linearly to 0 at x = 1."""
    return progress / warmup if progress < warmup else max((progress - 1.0) / (warmup - 1.0), 0.0)


@registry.register_scheduler("warmup_constant")
def warmup_constant(progress: float, warmup: float) -> float:
    return progress / warmup if progress < warmup else 1.0


@registry.register_scheduler("cosine_with_warmup")
def cosine_with_warmup(progress: float, warmup: float) -> float:
    """Linear warm-up, then a cosine over the remaining fraction (reaches 0 at the end of training)."""
    if progress < warmup:
        return progress / warmup
    rest = (progress - warmup) / max(1.0 - warmup, 1e-12)
    return 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))


@registry.register_scheduler("warmup_cosine_floor")
def warmup_cosine_floor(progress: float, warmup: float) -> float:
    """The two-tower baseline's schedule (BASELINE spec §B4): linear warm-up from 0.1x to 1x, then a cosine
    over the remaining fraction down to a floor of 0.01x of each group's rate."""
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    return 0.01 + 0.99 * cosine_with_warmup(progress, warmup)


@registry.register_scheduler("constant")
def constant(progress: float, warmup: float) -> float:
    return 1.0


class BertAdam(torch.optim.Optimizer):
    """The BertAdam update the DCMHT family trains with (DCMHT spec §4.1), reproduced exactly.

    Per tensor with a gradient: clip the tensor's own gradient to ``max_grad_norm``; update the moments with
    no bias correction; ``u = m / (sqrt(v) + e) + weight_decay * p``; ``p -= lr * schedule(step / t_total) * u``
    where ``step`` counts this tensor's previous updates (so the first update has factor 0 under warm-up).
    """

    def __init__(self, params, lr: float, t_total: int, schedule: str = "warmup_cosine", warmup: float = 0.1,
                 b1: float = 0.9, b2: float = 0.98, e: float = 1e-6, weight_decay: float = 0.2,
                 max_grad_norm: float = 1.0):
        if t_total <= 0:
            raise ValueError(f"BertAdam needs t_total > 0 (training steps), got {t_total}")
        defaults = dict(lr=lr, t_total=t_total, schedule=registry.get("scheduler", schedule), warmup=warmup,
                        b1=b1, b2=b2, e=e, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    def scheduled_lr(self, group: dict, step: int) -> float:
        return group["lr"] * group["schedule"](step / group["t_total"], group["warmup"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["max_grad_norm"] > 0:
                    norm = grad.norm()
                    if norm > group["max_grad_norm"]:
                        grad.mul_(group["max_grad_norm"] / (norm + 1e-6))
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
                update = m / (v.sqrt() + group["e"])
                if group["weight_decay"] > 0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-self.scheduled_lr(group, state["step"]))
                state["step"] += 1
        return loss

    def current_lrs(self) -> dict[str, float]:
        """Scheduled lr of each group (read from its first tensor's step count), for logging."""
        out = {}
        for i, group in enumerate(self.param_groups):
            state = self.state.get(group["params"][0], {})
            out[group.get("group", str(i))] = self.scheduled_lr(group, state.get("step", 0))
        return out

    def state_dict(self):
        """The schedule is a function looked up by name; store the name so checkpoints stay plain data."""
        sd = super().state_dict()
        for group in sd["param_groups"]:
            group["schedule"] = group["schedule"].__name__
        return sd

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if isinstance(group["schedule"], str):
                group["schedule"] = registry.get("scheduler", group["schedule"])


def _split_lrs(param_groups: list[dict], lr: float, backbone_lr: float) -> list[dict]:
    """Give the ``backbone`` group ``backbone_lr`` and every other group ``lr``."""
    return [dict(g, lr=backbone_lr if g.get("group") == "backbone" else lr) for g in param_groups]


@registry.register_optimizer("BertAdam")
def build_bert_adam(param_groups: list[dict], total_steps: int, lr: PositiveFloat = 1e-3,
                    backbone_lr: PositiveFloat = 1e-5, schedule: str = "warmup_cosine", warmup: NonNegativeFloat = 0.1,
                    b1: NonNegativeFloat = 0.9, b2: NonNegativeFloat = 0.98, e: PositiveFloat = 1e-6,
                    weight_decay: NonNegativeFloat = 0.2, max_grad_norm: NonNegativeFloat = 1.0):
    """BertAdam with its built-in per-tensor schedule; returns (optimizer, None)."""
    opt = BertAdam(_split_lrs(param_groups, lr, backbone_lr), lr=lr, t_total=total_steps, schedule=schedule,
                   warmup=warmup, b1=b1, b2=b2, e=e, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    return opt, None


@registry.register_optimizer("AdamW")
def build_adamw(param_groups: list[dict], total_steps: int, lr: PositiveFloat = 1e-4,
                backbone_lr: PositiveFloat = 1e-5, schedule: str = "cosine_with_warmup",
                warmup: NonNegativeFloat = 0.05, betas: tuple[NonNegativeFloat, NonNegativeFloat] = (0.9, 0.999),
                eps: PositiveFloat = 1e-8, weight_decay: NonNegativeFloat = 0.01):
    """torch AdamW plus a per-step LambdaLR from the schedule table; returns (optimizer, scheduler)."""
    opt = torch.optim.AdamW(_split_lrs(param_groups, lr, backbone_lr), lr=lr, betas=tuple(betas), eps=eps,
                            weight_decay=weight_decay)
    return opt, _lambda_schedule(opt, schedule, warmup, total_steps)


@registry.register_optimizer("Adam")
def build_adam(param_groups: list[dict], total_steps: int, steps_per_epoch: int, lr: PositiveFloat = 1e-5,
               backbone_lr: PositiveFloat = 1e-5, schedule: str = "cosine_with_warmup", warmup: NonNegativeFloat = 0.0,
               step_every: Literal["step", "epoch"] = "epoch",
               betas: tuple[NonNegativeFloat, NonNegativeFloat] = (0.9, 0.999), eps: PositiveFloat = 1e-8,
               weight_decay: NonNegativeFloat = 0.0):
    """torch Adam plus a LambdaLR from the schedule table; returns (optimizer, scheduler).

    ``step_every: epoch`` holds the rate for a whole epoch, as a scheduler stepped once per epoch does: with
    the defaults the rate of epoch e (from 0) of E is lr * (1 + cos(pi e / E)) / 2, torch's
    ``CosineAnnealingLR(T_max=E, eta_min=0)`` stepped per epoch (WCH spec §11). The runner still steps the
    scheduler after every optimiser step, so checkpoints and resumes need nothing new.
    """
    opt = torch.optim.Adam(_split_lrs(param_groups, lr, backbone_lr), lr=lr, betas=tuple(betas), eps=eps,
                           weight_decay=weight_decay)
    return opt, _lambda_schedule(opt, schedule, warmup, total_steps, steps_per_epoch if step_every == "epoch" else 1)


def _lambda_schedule(opt: torch.optim.Optimizer, schedule: str, warmup: float, total_steps: int,
                     every: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR of a registered schedule whose progress advances once every ``every`` steps."""
    factor = registry.get("scheduler", schedule)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: factor(step // every * every / total_steps, warmup))
