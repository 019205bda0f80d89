"""Optimizers and learning-rate schedules, by name."""

from __future__ import annotations

import pytest
import torch

from vaelab import training as train
from vaelab.config import OptimConfig
from vaelab.optimizers import OPTIMIZERS, SCHEDULES, build_optimizer, learning_rate, schedule_epochs


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
