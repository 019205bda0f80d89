"""Optimizers and learning-rate schedules, registered by name (`optim.name`, `optim.schedule`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .config import OptimConfig

# name -> (parameters, config, fused) -> optimizer; `fused` is only Adam's to use
OPTIMIZERS: dict[str, Callable[[Any, OptimConfig, bool], torch.optim.Optimizer]] = {
    "adam": lambda params, c, fused: torch.optim.Adam(params, lr=c.lr, betas=(0.9, c.beta2), eps=c.eps,
                                                      weight_decay=c.weight_decay, fused=fused or None),
    "rmsprop": lambda params, c, fused: torch.optim.RMSprop(params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay,
                                                     momentum=c.momentum),
    "adagrad": lambda params, c, fused: torch.optim.Adagrad(params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay),
    "sgd": lambda params, c, fused: torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum),
}


def build_optimizer(model: torch.nn.Module, config: OptimConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; Adam fused: one kernel a step instead of several a tensor (CPU and CUDA)."""
    return OPTIMIZERS[config.name](model.parameters(), config, fused)


def _stage_length(config: OptimConfig, stage: int) -> int:
    """Epochs in stage `stage` of the burda schedule: 3^stage, scaled, at least 1."""
    return max(1, round(3**stage * config.schedule_scale))


def _burda(config: OptimConfig, epoch: int) -> float:
    """Stage i lasts 3^i epochs (times schedule_scale) at lr * 10^(-i/7) (Burda et al., 2016)."""
    stage, end = 0, 0
    while True:
        end += _stage_length(config, stage)
        if epoch < end:
            return config.lr * 10 ** (-stage / 7)
        stage += 1


# name -> (config, epoch) -> the learning rate of that epoch
SCHEDULES: dict[str, Callable[[OptimConfig, int], float]] = {
    "constant": lambda config, epoch: config.lr,
    "burda": _burda,
}


def learning_rate(config: OptimConfig, epoch: int) -> float:
    """The learning rate of `epoch` (0-based) under `optim.schedule`."""
    return SCHEDULES[config.schedule](config, epoch)


def schedule_epochs(config: OptimConfig, stages: int = 8) -> int:
    """Epochs in the first `stages` stages of the burda schedule (3280 for 8 stages at scale 1)."""
    return sum(_stage_length(config, i) for i in range(stages))
