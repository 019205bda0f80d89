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


def test_an_iwae_runs_validation_bound_is_drawn_and_its_best_epoch_is_the_one_marked(tmp_path, tiny_data):
    # the bound rises while the ELBO falls after epoch 1: the kept epoch is the bound's best, 3
    metrics = [r | {"val_bound": r["val_elbo"] + 2 * r["epoch"] + (10 if r["epoch"] == 3 else 0)} for r in METRICS]
    metrics[0]["val_elbo"] = max(r["val_elbo"] for r in METRICS) + 1
    elbo_panel, kl_panel = draw_curves(make_ctx(tmp_path, tiny_data, metrics=metrics)).axes[::2]
    train, val, bound, kept = elbo_panel.get_lines()[:4]
    assert list(bound.get_ydata()) == [r["val_bound"] for r in metrics]
    assert list(kept.get_xdata()) == [3, 3] and "IWAE bound" in kept.get_label()
    assert len(kl_panel.get_lines()) == 3  # train, validation, the kept epoch: the bound is an ELBO panel's


def _long_run(epochs: int) -> list[dict]:
    """A run whose first epochs sit far below where it ends: ELBO -300 at epoch 1 rising to about -85."""
    records = []
    for epoch in range(1, epochs + 1):
        elbo = -85.0 - 215.0 * 0.5 ** (epoch - 1) - 2.0 / epoch
        records.append({"epoch": epoch, "train_elbo": elbo, "val_elbo": elbo - 0.5,
                        "train_reconstruction": elbo + 25, "val_reconstruction": elbo + 24.5,
                        "train_kl": 25.0, "val_kl": 25.0})
    return records


def test_a_long_runs_elbo_axis_holds_its_later_epochs_and_says_the_first_are_off_the_scale(tmp_path, tiny_data):
    metrics = _long_run(200)
    elbo_panel, _, kl_panel = draw_curves(make_ctx(tmp_path, tiny_data, metrics=metrics)).axes
    later = [r[k] for r in metrics if r["epoch"] > 20 for k in ("train_elbo", "val_elbo")]
    low, high = elbo_panel.get_ylim()
    assert low <= min(later) and max(later) <= high  # every later point is on the axis
    assert low > -95 and "off the scale" in elbo_panel.get_title()  # epoch 1's -300 is not
    train = elbo_panel.get_lines()[0]
    assert len(train.get_xdata()) == 200  # drawn, only beyond the axis
    assert "off the scale" not in kl_panel.get_title()  # a flat KL keeps its whole range


@pytest.mark.parametrize("epochs", [3, 15])
def test_a_short_runs_axes_show_every_epoch(tmp_path, tiny_data, epochs):
    metrics = _long_run(epochs)
    for ax in draw_curves(make_ctx(tmp_path, tiny_data, metrics=metrics)).axes:
        values = [y for line in ax.get_lines()[:2] for y in line.get_ydata()]
        low, high = ax.get_ylim()
        assert low <= min(values) and max(values) <= high and "off the scale" not in ax.get_title()
