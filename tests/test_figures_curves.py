"""The training-curves figure: every epoch of both splits, or a reason it is skipped."""

import pytest

from figure_cases import tiny_data  # noqa: F401  (fixture)
from figure_cases import METRICS, make_ctx
from vaelab.figures import FIGURES, FigureSkipped
from vaelab.figures.curves import draw_curves


def test_curves_plot_every_epoch_of_both_splits(tmp_path, tiny_data):
    fig = draw_curves(make_ctx(tmp_path, tiny_data))
    panels = fig.axes
    assert len(panels) == 3
    for ax, key in zip(panels, ("elbo", "reconstruction", "kl")):
        train, val = ax.get_lines()[:2]
        assert list(train.get_xdata()) == [1, 2, 3] and list(train.get_ydata()) == [r[f"train_{key}"] for r in METRICS]
        assert list(val.get_ydata()) == [r[f"val_{key}"] for r in METRICS]
        assert ax.get_xlabel() == "epoch"


def test_no_curves_without_metrics(tmp_path, tiny_data):
    with pytest.raises(FigureSkipped, match="no training curves"):
        FIGURES["curves"](make_ctx(tmp_path, tiny_data, metrics=[]))


def test_epochs_without_validation_have_train_points_only_and_the_best_is_a_validated_one(tmp_path, tiny_data):
    # train.validate_every = 2 over 3 epochs: epochs 2 and 3 validated, epoch 1 not
    metrics = [{k: v for k, v in r.items() if r["epoch"] != 1 or not k.startswith("val_")} for r in METRICS]
    fig = draw_curves(make_ctx(tmp_path, tiny_data, metrics=metrics))
    for ax, key in zip(fig.axes, ("elbo", "reconstruction", "kl")):
        train, val, best = ax.get_lines()[:3]
        assert list(train.get_xdata()) == [1, 2, 3]
        assert list(val.get_xdata()) == [2, 3] and list(val.get_ydata()) == [r[f"val_{key}"] for r in METRICS[1:]]
        assert list(best.get_xdata()) == [3, 3]  # the best validation ELBO's epoch is marked
