"""AdamW with linear warmup then cosine decay. The learning rate is a pure function of the step,
so resuming needs no scheduler state beyond the step itself."""

from __future__ import annotations

import math

import torch

from robo_genie.config import StageTrainConfig


def make_optimizer(model: torch.nn.Module, cfg: StageTrainConfig) -> torch.optim.AdamW:
    # No weight decay on norms, biases, embeddings' position tables: only on >=2-D weight matrices.
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "pos_" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "pos_" in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for the whole update on GPUs; on CPUs the default (foreach) implementation
    on_gpu = all(p.device.type == "cuda" for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=on_gpu or None)


def lr_at(step: int, cfg: StageTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
