"""Optimizers and learning-rate schedules, by name."""

from __future__ import annotations

import json

import pytest
import torch

from vaelab import training as train
from vaelab.config import OptimConfig
from vaelab.optimizers import (OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule, learning_rate,
                               schedule_epochs, step_schedule)


def test_constant_schedule():
    config = OptimConfig(lr=0.01)
    assert [learning_rate(config, e) for e in (0, 5, 5000)] == [0.01] * 3


def test_burda_stages_last_3_to_the_i_epochs_at_lr_times_10_to_the_minus_i_over_7():
    config = OptimConfig(lr=1e-3, schedule="burda")
    stages = [0] + [1] * 3 + [2] * 9 + [3]  # epochs 0, 1-3, 4-12, 13
    assert [learning_rate(config, e) for e in range(14)] == pytest.approx([1e-3 * 10 ** (-i / 7) for i in stages])
    assert schedule_epochs(config) == 3280


def test_burda_scale_shortens_every_stage_to_at_least_one_epoch():
    config = OptimConfig(lr=1.0, schedule="burda", schedule_scale=0.1)
    assert schedule_epochs(config, 4) == 1 + 1 + 1 + 3  # max(1, round(3^i / 10))
    assert learning_rate(config, 3) == pytest.approx(10 ** (-3 / 7))


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop),
                                       ("adagrad", torch.optim.Adagrad), ("sgd", torch.optim.SGD)])
def test_build_optimizer(name, cls):
    optimizer = build_optimizer(torch.nn.Linear(2, 1), OptimConfig(name=name, lr=0.5))
    assert type(optimizer) is cls and optimizer.param_groups[0]["lr"] == 0.5


def test_train_re_exports_the_moved_names():
    assert train.OPTIMIZERS is OPTIMIZERS and train.build_optimizer is build_optimizer
    assert train.learning_rate is learning_rate and train.schedule_epochs is schedule_epochs
    assert set(SCHEDULES) == {"constant", "burda", "warmup_cosine", "plateau"}


def _dummy_optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(schedule, optimizer, epochs, val_elbos=None):
    """The lr of each epoch, the schedule stepped after each (with that epoch's validation ELBO)."""
    out = []
    for epoch in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        step_schedule(schedule, val_elbos[epoch] if val_elbos else 0.0)
    return out


@pytest.mark.parametrize("warmup, planned", [(0, 10), (3, 12), (2, 4)])
def test_warmup_cosine_is_torchs_linear_warmup_then_cosine(warmup, planned):
    config = OptimConfig(lr=0.01, schedule="warmup_cosine", warmup_epochs=warmup, min_lr_ratio=0.05)
    optimizer = _dummy_optimizer(config.lr)
    ours = _lrs(build_schedule(optimizer, config, lambda: planned), optimizer, planned)
    reference = _dummy_optimizer(config.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=planned - warmup - 1,
                                                         eta_min=config.lr * config.min_lr_ratio)
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(reference, start_factor=1 / (warmup + 1), total_iters=warmup)
        torch_schedule = torch.optim.lr_scheduler.SequentialLR(reference, [linear, cosine], milestones=[warmup])
    else:
        torch_schedule = cosine
    expected = []
    for _ in range(planned):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()  # no gradients: no update, but the order torch expects
        torch_schedule.step()
    assert ours == pytest.approx(expected, rel=1e-12)
    assert ours[-1] == pytest.approx(config.lr * config.min_lr_ratio)  # the last planned epoch is at the floor
    assert [learning_rate(config, e, planned) for e in range(planned)] == ours


def test_warmup_cosine_stays_at_its_floor_after_the_planned_epochs():
    config = OptimConfig(lr=1.0, schedule="warmup_cosine", min_lr_ratio=0.1)
    assert [learning_rate(config, e, 5) for e in (4, 5, 50)] == pytest.approx([0.1] * 3)


@pytest.mark.parametrize("schedule", ["constant", "burda"])
def test_epoch_schedules_through_lambda_lr_give_their_function_exactly(schedule):
    config = OptimConfig(lr=1e-3, schedule=schedule, schedule_scale=0.5)
    optimizer = _dummy_optimizer(config.lr)
    assert _lrs(build_schedule(optimizer, config, lambda: 20), optimizer, 20) == [
        learning_rate(config, e) for e in range(20)]


def test_plateau_is_torchs_reduce_lr_on_plateau_on_the_validation_elbo():
    config = OptimConfig(lr=0.1, schedule="plateau", plateau_factor=0.5, plateau_patience=1, min_lr_ratio=0.2)
    val_elbos = [-100.0, -99.0, -99.5, -99.2, -98.0, -98.5, -98.4, -98.3, -98.9, -99.0]
    optimizer = _dummy_optimizer(config.lr)
    ours = _lrs(build_schedule(optimizer, config, lambda: 10), optimizer, 10, val_elbos)
    reference = _dummy_optimizer(config.lr)
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(reference, mode="max", factor=0.5, patience=1,
                                                                min_lr=config.lr * config.min_lr_ratio)
    expected = []
    for value in val_elbos:
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        torch_schedule.step(value)
    assert ours == expected and min(ours) == pytest.approx(0.02) and ours[0] == 0.1
    with pytest.raises(ValueError, match="optim.schedule"):
        learning_rate(config, 3)


@pytest.mark.parametrize("schedule", ["warmup_cosine", "plateau", "burda"])
def test_a_schedules_state_goes_through_json_and_continues_the_same(schedule):
    config = OptimConfig(lr=0.1, schedule=schedule, warmup_epochs=2, plateau_patience=0, schedule_scale=0.3)
    val_elbos = [-10.0, -9.0, -9.5, -9.6, -8.0, -8.1, -8.2, -8.3]
    optimizer = _dummy_optimizer(config.lr)
    whole = _lrs(build_schedule(optimizer, config, lambda: 8), optimizer, 8, val_elbos)
    first = _dummy_optimizer(config.lr)
    schedule_1 = build_schedule(first, config, lambda: 8)
    head = _lrs(schedule_1, first, 4, val_elbos)
    saved = json.loads(json.dumps(schedule_1.state_dict()))  # what a checkpoint keeps
    second = _dummy_optimizer(config.lr)
    schedule_2 = build_schedule(second, config, lambda: 8)  # in the order the Trainer restores them
    second.load_state_dict(first.state_dict())
    schedule_2.load_state_dict(saved)
    assert head + _lrs(schedule_2, second, 4, val_elbos[4:]) == whole
