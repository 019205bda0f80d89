"""Figures: the registry, every figure of every variant drawn or skipped with a reason, run folders."""

import json

import pytest

from figure_cases import tiny_data  # noqa: F401  (fixture)
from figure_cases import CATEGORICAL_MANIFOLD, METRICS, VARIANTS, make_ctx, png_size, variant_data, variant_model
from vaelab.config import resolve_config
from vaelab.data.views import make_views
from vaelab.figures import FACTOR_FIGURES, FIGURES, FigureSkipped, figure_context, latent_text, make_figures, run_title
from vaelab.runs import RunFolder
from vaelab.training import Trainer


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_every_figure_writes_a_png(tmp_path, tiny_data, name, latent_dim):
    ctx = make_ctx(tmp_path, tiny_data, latent_dim)
    if name == "class-samples":  # an unconditional model: see the variant tests
        with pytest.raises(FigureSkipped, match="need a conditional model"):
            FIGURES[name](ctx)
        return
    if name in FACTOR_FIGURES:  # MNIST-like data: drawn in test_disentanglement_cli.py on a factor grid
        with pytest.raises(FigureSkipped, match=r"its data \(tiny\) has no factors"):
            FIGURES[name](ctx)
        return
    path = FIGURES[name](ctx)
    assert path == tmp_path / "figures" / f"{name}.png"
    height, width = png_size(path)
    assert 200 <= height <= 4000 and 300 <= width <= 4000, (height, width)
    assert not list(path.parent.glob("*.tmp")), "atomic write left a temporary file"


def test_registry_names():
    assert list(FIGURES) == ["samples", "class-samples", "reconstructions", "interpolations", "latent-scatter",
                             "manifold", "curves", "kl-per-dim", "traversals-factors", "mi-matrix"]
    assert all(callable(f) for f in FIGURES.values())


def test_bad_options_are_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="manifold_range"):
        make_ctx(tmp_path, tiny_data, manifold_range="middle")
    with pytest.raises(ValueError, match="scatter_method"):
        make_ctx(tmp_path, tiny_data, scatter_method="umap")
    with pytest.raises(ValueError, match="samples_n"):
        make_ctx(tmp_path, tiny_data, samples_n=0)


# ---------------------------------------------------------------- run folders

def test_unknown_figure_names_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown figure.*nope.*known: samples, class-samples, reconstructions"):
        make_figures(tmp_path / "does-not-exist", ["samples", "nope"])


def test_run_title_names_model_data_and_epoch(tiny_data):
    assert run_title("lab", tiny_data, 2, METRICS, {}) == "lab: tiny (dynamic), 2-D latent, epoch 3"
    assert run_title("lab", tiny_data, 2, METRICS, {"epochs_run": 5, "best_epoch": 4}).endswith("best epoch 4 of 5")
    assert run_title("lab", tiny_data, 2, [], {}).endswith("no epochs recorded")


@pytest.fixture
def tiny_run(tmp_path, tiny_raw):
    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=64", "train.epochs=2",
                                       "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
                                       "train.eval_batch_size=50", "model.latent_dim=3"])
    run_dir = tmp_path / "run"
    RunFolder(run_dir).create(config)
    trainer = Trainer(config, run_dir, make_views(tiny_raw, config.data), progress=False, log=lambda *a: None)
    trainer.fit()
    return trainer


def test_make_figures_on_a_run_folder(tiny_run, tiny_raw, monkeypatch):
    run_dir = tiny_run.run_dir
    old, new = run_dir / "eval-test-k10.json", run_dir / "eval-test-k5.json"
    # The larger K scored other weights (before a resume, say): only the current weights' evaluation counts.
    old.write_text(json.dumps({"kl_per_dim": [9.0, 9.0, 9.0], "weights_sha256": "0" * 64}))
    new.write_text(json.dumps({"kl_per_dim": [1.0, 2.0, 3.0], "weights_sha256": RunFolder(run_dir).fingerprint()}))
    loaded = []

    def fake_load_dataset(name, data_dir=None, **kwargs):
        loaded.append((name, data_dir, kwargs))
        return tiny_raw

    monkeypatch.setattr("vaelab.data.load.load_dataset", fake_load_dataset)
    results = make_figures(run_dir, samples_n=4)
    assert loaded == [("mnist", None, {"progress": False})]
    assert [name for name, _, _ in results] == list(FIGURES)
    for name, path, note in results:
        if name == "class-samples":  # the run's model is unconditional
            assert path is None and "conditional model" in note
            continue
        if name in FACTOR_FIGURES:  # among all figures, skipped for data without factors
            assert path is None and "has no factors" in note
            continue
        assert path == run_dir / "figures" / f"{name}.png" and note, (name, note)
        png_size(path)
    ctx = figure_context(run_dir, data=tiny_run.data)
    assert ctx.title.startswith("mnist-lab: tiny (dynamic), 3-D latent, ")
    assert ctx.title.endswith(("epoch 2", "of 2"))
    assert ctx.kl_per_dim == [1.0, 2.0, 3.0] and ctx.kl_source == "eval-test-k5.json"
    assert len(ctx.metrics) == 2 and ctx.seed == tiny_run.config.train.seed


def test_make_figures_with_a_given_model_reports_skips_and_restores_its_mode(tiny_run):
    model = tiny_run.model.train()
    results = make_figures(tiny_run.run_dir, ["manifold", "latent-scatter"], model=model, data=tiny_run.data,
                           scatter_method="tsne", manifold_dims=(0, 2))
    assert model.training
    (manifold, scatter) = results
    assert manifold[1] == tiny_run.run_dir / "figures" / "manifold.png"
    if scatter[1] is None:  # no scikit-learn here
        assert "scikit-learn" in scatter[2]
    with pytest.raises(ValueError, match="unknown figure option.*manifold_size"):
        make_figures(tiny_run.run_dir, ["manifold"], model=model, data=tiny_run.data, manifold_size=3)


# ---------------------------------------------------------------- every model variant

EXPECTED_SKIPS = {  # variant -> {figure: the start of its note}
    "categorical": {"manifold": CATEGORICAL_MANIFOLD},
    "cvae-categorical": {"manifold": CATEGORICAL_MANIFOLD},
    "two-layer": {"kl-per-dim": "no KL per dimension for a two-layer model"},
    "cvae-two-layer": {"kl-per-dim": "no KL per dimension for a two-layer model"},
    "two-layer-top-down-vampprior": {"kl-per-dim": "no KL per dimension for a two-layer model"},
}
UNCONDITIONAL_CLASS_SAMPLES = "class samples need a conditional model (model.conditional = true)"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_figure_of_every_variant_draws_or_says_why_not(tmp_path, tiny_raw, variant):
    data = variant_data(variant, tiny_raw)
    model = variant_model(variant, data.image_shape)
    run_dir = tmp_path / "run"
    RunFolder(run_dir).create(resolve_config())  # the run's config; the figures draw the model given
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    results = make_figures(run_dir, model=model, data=data, samples_n=4, manifold_n=5, interpolation_steps=6)
    expected = dict(EXPECTED_SKIPS.get(variant, {}))
    if not VARIANTS[variant].get("conditional"):
        expected["class-samples"] = UNCONDITIONAL_CLASS_SAMPLES
    expected |= {name: "its data" for name in FACTOR_FIGURES}  # no factor grid in these data
    assert [name for name, _, _ in results] == list(FIGURES)
    for name, path, note in results:
        if name in expected:
            assert path is None and note.startswith(expected[name]), (name, note)
        else:
            assert path == run_dir / "figures" / f"{name}.png", (name, note)
            png_size(path)
    assert model.training is False


def test_titles_name_the_latent_variant(tmp_path, tiny_raw):
    texts = {name: latent_text(variant_model(name)) for name in VARIANTS if not name.startswith("colour")}
    assert texts["normal"] == "2-D latent"
    assert texts["laplace"] == "2-D Laplace latent"
    assert texts["normal-q-laplace-p"] == "2-D latent, Laplace(0, 1) prior"
    assert texts["categorical"] == "3 x 4-class categorical latent"
    assert texts["two-layer"] == "two-layer 3-D + 2-D latent"
    assert texts["cvae"] == "2-D latent, conditioned on the label"


def test_each_figure_is_described_in_one_whole_sentence():
    from vaelab.figures import describe

    for name in FIGURES:
        text = describe(name)
        assert text.endswith(".") and "\n" not in text and "  " not in text, (name, text)
    assert describe("latent-scatter").endswith("2-D directly, more dims through PCA or t-SNE.")
