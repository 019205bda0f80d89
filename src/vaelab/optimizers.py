"""Optimizers and learning-rate schedules, registered by name (`optim.name`, `optim.schedule`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .config import ConfigError, OptimConfig

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


def _burda_stage(config: OptimConfig, epoch: int) -> int:
    """Burda et al. (2016): stage i lasts 3^i epochs (times schedule_scale) at lr * 10^(-i/7)."""
    stage, end = 0, 0
    while True:
        end += _stage_length(config, stage)
        if epoch < end:
            return stage
        stage += 1


def _burda_factor(config: OptimConfig, epoch: int, planned_epochs: int) -> float:
    """Burda et al.'s factor on optim.lr: 10^(-stage/7); it ignores the run's length."""
    return 10 ** (-_burda_stage(config, epoch) / 7)


def _warmup_cosine(config: OptimConfig, epoch: int, planned_epochs: int) -> float:
    """The factor on optim.lr: (e+1)/(W+1) over the W warm-up epochs (LinearLR with start_factor
    1/(W+1)), then a cosine from 1 down to min_lr_ratio, reached in the last planned epoch and kept
    after it (CosineAnnealingLR over planned - W - 1 epochs, which would rise again past its end)."""
    warmup, ratio = config.warmup_epochs, config.min_lr_ratio
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    length = max(1, planned_epochs - warmup - 1)
    progress = min(1.0, (epoch - warmup) / length)
    return ratio + (1 - ratio) * (1 + math.cos(math.pi * progress)) / 2


def _plateau(optimizer: torch.optim.Optimizer, config: OptimConfig, planned_epochs: Callable[[], int]) -> Any:
    """lr times plateau_factor after plateau_patience epochs without a better validation ELBO,
    down to lr * min_lr_ratio; stepped with that ELBO (on validated epochs only, so under
    train.validate_every the patience counts validations)."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience,
        min_lr=config.lr * config.min_lr_ratio)


@dataclass(frozen=True)
class Schedule:
    """One `optim.schedule`: a factor on optim.lr that depends on the epoch alone, (config, epoch,
    planned epochs) -> factor, run by a LambdaLR; or, for a schedule that follows something else
    (the validation ELBO), a scheduler of its own, (optimizer, config, planned_epochs) -> scheduler."""

    lr_factor: Callable[[OptimConfig, int, int], float] | None = None
    build: Callable[[torch.optim.Optimizer, OptimConfig, Callable[[], int]], Any] | None = None

    def scheduler(self, optimizer: torch.optim.Optimizer, config: OptimConfig,
                  planned_epochs: Callable[[], int]) -> Any:
        """A torch.optim.lr_scheduler stepped once per epoch (`step_schedule`); `planned_epochs()` is the
        run's length in epochs as known so far, asked each epoch, as a time budget may set it late."""
        if self.build is not None:
            return self.build(optimizer, config, planned_epochs)
        lr_factor = self.lr_factor

        # a plain function (not a callable object): LambdaLR's state_dict then holds numbers only
        def factor(epoch: int) -> float:
            return lr_factor(config, epoch, planned_epochs())
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(lr_factor=lambda config, epoch, planned_epochs: 1.0),
    "burda": Schedule(lr_factor=_burda_factor),
    "warmup_cosine": Schedule(lr_factor=_warmup_cosine),
    "plateau": Schedule(build=_plateau),
}


def build_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, planned_epochs: Callable[[], int]) -> Any:
    """The configured schedule, having set the lr of epoch 0."""
    return SCHEDULES[config.schedule].scheduler(optimizer, config, planned_epochs)


def step_schedule(schedule: Any, val_elbo: float | None) -> None:
    """Move the schedule on to the next epoch; a plateau schedule is told the epoch's validation ELBO,
    and stays where it is after an epoch that was not validated (`val_elbo` None, train.validate_every):
    its plateau_patience counts validations."""
    with warnings.catch_warnings():
        # the compiled whole-Adam step updates the weights without optimizer.step(), which torch takes for a mistake
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if val_elbo is not None:
                schedule.step(val_elbo)
        else:
            schedule.step()


def learning_rate(config: OptimConfig, epoch: int, planned_epochs: int = 0) -> float:
    """The learning rate of `epoch` (0-based) under `optim.schedule`, in a run of `planned_epochs`
    (for warmup_cosine); "plateau" has none: it follows the validation ELBO."""
    lr_factor = SCHEDULES[config.schedule].lr_factor
    if lr_factor is None:
        raise ConfigError(f"optim.schedule: {config.schedule!r} follows the validation ELBO, not the epoch")
    return config.lr * lr_factor(config, epoch, planned_epochs)


def schedule_epochs(config: OptimConfig, stages: int = 8) -> int:
    """Epochs in the first `stages` stages of the burda schedule (3280 for 8 stages at scale 1)."""
    return sum(_stage_length(config, i) for i in range(stages))
