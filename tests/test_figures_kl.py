"""The KL-per-dimension figure: bars that add up to the model's KL, or an evaluation's values; active units."""

import pytest
import torch

from figure_cases import tiny_data  # noqa: F401  (fixture)
from figure_cases import make_ctx, tiny_model, variant_ctx
from vaelab.figures import FigureSkipped
from vaelab.evaluate import evaluate_images
from vaelab.figures.kl import active_units, draw_kl_per_dim, kl_per_dim_from_model
from vaelab.latents import unit_activity
from vaelab.training import dataset_elbo


def test_kl_per_dim_from_the_model_adds_up_to_the_elbo_kl(tmp_path, tiny_data):
    ctx = make_ctx(tmp_path, tiny_data, 3)
    kl = kl_per_dim_from_model(ctx)
    q = ctx.model.posterior(tiny_data.test.batch(slice(None))).base_dist
    by_hand = (0.5 * (q.loc**2 + q.scale**2 - 1) - q.scale.log()).mean(0)
    assert kl.shape == (3,) and torch.allclose(kl, by_hand, atol=1e-5)
    assert kl.sum().item() == pytest.approx(dataset_elbo(ctx.model, tiny_data.test, 50)["kl"], rel=1e-4)
    heights = [bar.get_height() for bar in draw_kl_per_dim(ctx).axes[0].patches]
    assert heights == pytest.approx(kl.tolist())


def test_kl_per_dim_from_an_evaluation(tmp_path, tiny_data):
    ctx = make_ctx(tmp_path, tiny_data, 3, kl_per_dim=[0.5, 0.0, 2.0], kl_source="eval-test-k5.json")
    fig = draw_kl_per_dim(ctx)
    assert [bar.get_height() for bar in fig.axes[0].patches] == [0.5, 0.0, 2.0]
    assert "from eval-test-k5.json" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="2 values; the model has 3"):
        draw_kl_per_dim(make_ctx(tmp_path, tiny_data, 3, kl_per_dim=[0.5, 1.0]))


def test_active_units_are_those_whose_posterior_mean_varies():
    means = torch.stack([torch.linspace(-2, 2, 100), torch.full((100,), 0.3), 0.05 * torch.linspace(-1, 1, 100)], 1)
    assert active_units(tiny_model(3), means).tolist() == [True, False, False]


def test_the_figure_and_the_evaluation_count_the_same_active_units(tmp_path, tiny_data):
    ctx = make_ctx(tmp_path, tiny_data, 4)
    with torch.no_grad():  # two units the encoder uses, two whose mean ignores x
        last = ctx.model.encoder.last
        last.weight *= 20
        last.weight[1] = 0
        last.weight[3] = 0
    result = evaluate_images(ctx.model, tiny_data.test, k=2)
    evaluated = torch.tensor(result["unit_activity"], dtype=torch.float64)
    torch.testing.assert_close(unit_activity(ctx.test_means()), evaluated, rtol=1e-5, atol=1e-9)
    assert result["active_units"] == 2
    legend = draw_kl_per_dim(ctx).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["active (2)", "inactive (2)"]


# ---------------------------------------------------------------- model variants

@pytest.mark.parametrize("variant", ["laplace", "laplace-q-normal-p", "normal-q-laplace-p", "categorical", "cvae"])
def test_kl_per_dim_adds_up_to_the_models_kl(tmp_path, tiny_raw, variant):
    ctx = variant_ctx(tmp_path, variant, tiny_raw)
    kl = kl_per_dim_from_model(ctx)
    model, test = ctx.model, ctx.data.test
    assert kl.shape == ((3,) if variant == "categorical" else (2,))  # per variable, or per dimension
    y = test.labels if model.n_labels else None
    q = model.posterior(test.batch(slice(None)), y)
    assert kl.sum().item() == pytest.approx(model.kl(q, model.prior()).mean().item(), rel=1e-4)
    heights = [bar.get_height() for bar in draw_kl_per_dim(ctx).axes[0].patches]
    assert heights == pytest.approx(kl.tolist())


def test_kl_per_dim_of_categorical_variables_from_an_evaluation(tmp_path, tiny_raw):
    ctx = variant_ctx(tmp_path, "categorical", tiny_raw, kl_per_dim=[0.5, 1.0, 0.0], kl_source="eval-test-k5.json")
    fig = draw_kl_per_dim(ctx)
    assert [bar.get_height() for bar in fig.axes[0].patches] == [0.5, 1.0, 0.0]
    assert fig.axes[0].get_xlabel() == "categorical variable j"


def test_two_layer_kl_per_dim_is_skipped_unless_evaluated(tmp_path, tiny_raw):
    with pytest.raises(FigureSkipped, match="no KL per dimension for a two-layer model"):
        draw_kl_per_dim(variant_ctx(tmp_path, "two-layer", tiny_raw))
    fig = draw_kl_per_dim(variant_ctx(tmp_path, "two-layer", tiny_raw, kl_per_dim=[1.0, 2.0, 0.0, 0.5, 0.1]))
    assert len(fig.axes[0].patches) == 5 and "z2: 3..4" in fig.axes[0].get_xlabel()
