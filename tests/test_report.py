"""The run report (one self-contained HTML page) and the table comparing runs."""

from __future__ import annotations

import base64
import csv
import importlib.resources
import io
import json
import os
import re
from pathlib import Path

import pytest
import torch
from browser import image_states, open_page
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vaelab.comparison import compare_runs
from vaelab.config import resolve_config
from vaelab.report import write_report
from vaelab.runs import RunFolder

EVAL_K100 = {"elbo": -98.7654, "reconstruction": -90.1234, "kl": 8.642, "nll": 94.3219, "nll_stderr": 0.4567,
             "k": 100, "n": 100, "active_units": 2, "kl_per_dim": [5.1, 3.542], "split": "test",
             "binarization": "dynamic", "latent_dim": 2, "seconds": 1.5}
EVAL_K10 = dict(EVAL_K100, elbo=-111.1111, nll=105.5555, k=10)


def png_bytes(color: str = "tab:blue") -> bytes:
    fig = Figure(figsize=(2, 1.5), dpi=50)
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2], color=color)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def make_run(folder: Path, name: str = "lab", evaluations: tuple[dict, ...] = (EVAL_K100,),
             figures: tuple[str, ...] = ("samples", "curves"), summary: dict | None = None) -> Path:
    """A run folder as training and evaluation leave it, written by hand."""
    folder.mkdir(parents=True)
    config = resolve_config().to_dict() | {"name": name}
    (folder / "config.json").write_text(json.dumps(config))
    records = [{"epoch": e, "step": 10 * e, "train_elbo": -200.0 + 10 * e, "train_reconstruction": -190.0 + 10 * e,
                "train_kl": 10.0, "val_elbo": -201.5 + 10 * e, "val_reconstruction": -191.5, "val_kl": 10.0,
                "seconds": 1.25} for e in (1, 2, 3)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"test_elbo": -171.25, "test_reconstruction": -160.0, "test_kl": 11.25, "best_val_elbo": -171.5,
               "best_epoch": 3, "epochs_run": 3, "steps": 30, "stop_reason": "completed 3 epochs",
               "units": "nats per image (summed over pixels)", "binarization": "dynamic", "elbo_samples": 1,
               "data_source": "generated", "device": "cpu", "torch": "2.x",
               "finished_at": "2026-11-21T10:00:00"} if summary is None else summary
    digest = RunFolder(folder).save_weights({"w": torch.arange(3.0)})  # the weights the numbers describe
    if summary:
        (folder / "summary.json").write_text(json.dumps(summary | {"weights_sha256": digest}))
    for evaluation in evaluations:
        evaluation = evaluation | {"weights_sha256": digest}
        (folder / f"eval-test-k{evaluation['k']}.json").write_text(json.dumps(evaluation))
    (folder / "figures").mkdir()
    for i, figure in enumerate(figures):
        (folder / "figures" / f"{figure}.png").write_bytes(png_bytes(["tab:blue", "tab:red", "tab:green"][i % 3]))
    return folder


def img_sources(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"https?://", page), "no external URL anywhere"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page.lower()
    assert len(re.findall(r"<img\b", page)) == len(img_sources(page))
    assert all(src.startswith("data:image/png;base64,") for src in img_sources(page))


# ---------------------------------------------------------------- the report page

def test_report_is_one_self_contained_page_with_the_metrics(tmp_path):
    run = make_run(tmp_path / "run", evaluations=(EVAL_K100, EVAL_K10))
    os.utime(run / "eval-test-k10.json")  # newer, but the K=100 one is the better estimate
    path = write_report(run, evaluate=False, figures=False, progress=False)
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    sources = img_sources(page)
    assert len(sources) == 2
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in sources}
    assert embedded == {(run / "figures" / f"{n}.png").read_bytes() for n in ("samples", "curves")}
    assert page.index('alt="samples"') < page.index('alt="curves"')  # known figures in reading order
    for text in ("-98.77", "-90.12", "8.64", "94.32 \u00b1 0.46", "K = 100 importance samples", "nats per image",
                 "dynamic binarization", "eval-test-k100.json", "completed 3 epochs", "-171.25", "generated",
                 "model.latent_dim", "optim.lr", "train ELBO", "-170.00"):
        assert text in page, text
    assert "-111.11" not in page and "105.56" not in page
    metrics_rows = re.search(r"Test-set metrics</h2>(.*?)</table>", page, re.DOTALL).group(1).split("<tr>")[2:]
    assert len(metrics_rows) == 5
    for row in metrics_rows:  # every line says its units, binarization and K
        assert "dynamic binarization" in row and "K = 100" in row
    assert "nats per image" in "".join(metrics_rows[:4])


def test_report_carries_the_package_stylesheet_verbatim(tmp_path):
    css = importlib.resources.files("vaelab").joinpath("report.css").read_text(encoding="utf-8")
    assert css.strip()
    path = write_report(make_run(tmp_path / "run", figures=()), evaluate=False, figures=False, progress=False)
    assert f"<style>{css}</style>" in path.read_text(encoding="utf-8")


def test_report_escapes_text_from_the_run_folder(tmp_path):
    evil = '<script>alert("x")</script>'
    run = make_run(tmp_path / "run", name=evil, figures=("samples",),
                   summary={"stop_reason": '<img src=x onerror="alert(1)">', "best_epoch": 1})
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 4, "note": "</td></table><b>bold</b>"}) + "\n")
    (run / "figures" / "<i>odd<i>.png").write_bytes(png_bytes())
    page = write_report(run, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    assert "<script" not in page and "<b>bold" not in page and "<img src=x" not in page and "<i>odd" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert len(img_sources(page)) == 2
    assert_self_contained(page)


def test_report_without_evaluation_or_summary_says_so(tmp_path):
    run = make_run(tmp_path / "run", evaluations=(), figures=(), summary={})
    (run / "figures" / "broken.png").write_bytes(b"not a png")
    page = write_report(run, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    assert "No evaluation of the weights this run holds" in page
    assert "training has not finished" in page
    assert "broken.png" in page and "not a PNG" in page and img_sources(page) == []


def test_report_evaluates_and_draws_when_asked(tmp_path, monkeypatch, capsys):
    import vaelab.evaluate
    import vaelab.figures

    run = make_run(tmp_path / "run", evaluations=(), figures=())
    calls = []

    def fake_evaluate(run_dir, k=5000, progress=True, **kwargs):
        calls.append(("evaluate", k))
        assert kwargs["save"] is False  # the report keeps it itself, once it has it
        return dict(EVAL_K100, k=k, nll=77.7777, weights_sha256=RunFolder(run_dir).fingerprint())

    def fake_figures(run_dir, names=None, **kwargs):
        calls.append(("figures", None))
        drawn = Path(run_dir) / "figures" / "manifold.png"
        drawn.write_bytes(png_bytes())
        new = Path(run_dir) / "figures" / "posterior-grid.png"
        new.write_bytes(png_bytes())
        return [("manifold", drawn, "Drawer's description."), ("posterior-grid", new, "A grid of posteriors."),
                ("latent-scatter", None, "needs labels")]

    monkeypatch.setattr(vaelab.evaluate, "evaluate_run", fake_evaluate)
    monkeypatch.setattr(vaelab.figures, "make_figures", fake_figures)
    page = write_report(run, k=50).read_text(encoding="utf-8")
    assert calls == [("evaluate", 50), ("figures", None)]  # evaluation first: kl-per-dim reads it
    assert "77.78 \u00b1 0.46" in page and "K = 50 importance samples" in page
    assert "Decoder means over a grid of latent values." in page and "A grid of posteriors." in page
    assert "latent-scatter" in page and "needs labels" in page and len(img_sources(page)) == 2
    out = capsys.readouterr().out
    assert "evaluating the test set with K = 50" in out and "latent-scatter: skipped" in out and "wrote" in out

    calls.clear()  # the evaluation now in the folder is reused, and a larger K asked for is pointed out
    write_report(run, k=50, figures=False, progress=False)
    page = write_report(run, k=500, figures=False, progress=False).read_text(encoding="utf-8")
    assert calls == [] and "to report K = 500 instead of K = 50" in page


def test_an_evaluation_that_refuses_becomes_a_note(tmp_path, monkeypatch):
    import vaelab.evaluate

    def refuse(run_dir, **kwargs):
        raise vaelab.evaluate.EvaluationError("a Bernoulli of grey pixels is not a likelihood")

    monkeypatch.setattr(vaelab.evaluate, "evaluate_run", refuse)
    run = make_run(tmp_path / "run", evaluations=())
    page = write_report(run, figures=False, progress=False).read_text(encoding="utf-8")
    assert "a Bernoulli of grey pixels is not a likelihood" in page
    assert "-171.25" in page  # the end-of-training ELBO is still shown


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_a_folder_that_is_not_a_run_is_refused(tmp_path, make):
    folder = make(tmp_path / "not-a-run")
    if folder.name != "missing":
        folder.mkdir()
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        write_report(folder, progress=False)
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        compare_runs([make_run(tmp_path / "ok"), folder])


def test_current_evaluation_prefers_the_largest_k(tmp_path):
    run = make_run(tmp_path / "run", evaluations=(EVAL_K10, EVAL_K100))
    (run / "eval-test-k5000.json.tmp").write_text("{}")
    (run / "eval-val-k9000.json").write_text("{}")
    path, result = RunFolder(run).current_evaluation()
    assert path.name == "eval-test-k100.json" and result["nll"] == EVAL_K100["nll"]


# ---------------------------------------------------------------- comparing runs

def two_different_runs(tmp_path: Path) -> list[Path]:
    a = make_run(tmp_path / "z2")
    b = make_run(tmp_path / "z10", name="wide", evaluations=())
    config = json.loads((b / "config.json").read_text())
    config["model"] |= {"latent_dim": 10, "encoder_hidden": [256, 128]}
    del config["model"]["activation"]  # an older run without the key
    (b / "config.json").write_text(json.dumps(config))
    summary = json.loads((b / "summary.json").read_text())
    del summary["epochs_run"]
    (b / "summary.json").write_text(json.dumps(summary))
    return [a, b]


def test_compare_runs_as_markdown(tmp_path):
    table = compare_runs(two_different_runs(tmp_path))
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert len(lines) == 4 and "Choose between runs by the validation columns" in table
    cells = [[c.strip() for c in line[2:-2].split(" | ")] for line in lines[:1] + lines[2:]]
    assert len({len(row) for row in cells}) == 1
    header, first, second = cells
    row_a, row_b = dict(zip(header, first)), dict(zip(header, second))
    assert header[1:5] == ["name", "model.latent_dim", "model.encoder_hidden", "model.activation"]  # what differs
    assert row_a["run"] == str(tmp_path / "z2") and row_a["name"] == "lab" and row_a["model.latent_dim"] == "2"
    assert row_a["test NLL \u00b1 s.e."] == "94.32 \u00b1 0.46" and row_a["test ELBO"] == "-98.77"
    assert row_a["test from"] == "K=100" and row_a["active units"] == "2" and row_a["val ELBO (kept epoch)"] == "-171.50"
    assert row_a["model.activation"] == "relu" and row_a["model.encoder_hidden"] == "[512]"
    assert row_a["kept epoch"] == "3 of 3"
    assert row_b["model.latent_dim"] == "10" and row_b["model.encoder_hidden"] == "[256, 128]"
    assert row_b["model.activation"] == ""  # an older run without the key
    assert row_b["test ELBO"] == "-171.25" and row_b["test from"] == "training"
    assert row_b["test NLL \u00b1 s.e."] == "" and row_b["active units"] == ""
    assert row_b["kept epoch"] == "3 of 3"  # counted from metrics.jsonl


def test_compare_runs_as_csv(tmp_path):
    rows = list(csv.DictReader(io.StringIO(compare_runs(two_different_runs(tmp_path), csv=True))))
    assert [r["run"] for r in rows] == [str(tmp_path / "z2"), str(tmp_path / "z10")]
    assert float(rows[0]["test_nll"]) == EVAL_K100["nll"] and float(rows[0]["test_nll_stderr"]) == EVAL_K100["nll_stderr"]
    assert "binarization" not in rows[0] and rows[0]["test_k"] == "100"  # the same in both: the note says it
    assert rows[1]["test_nll"] == "" and rows[1]["model.activation"] == "" and float(rows[1]["test_elbo"]) == -171.25
    assert rows[1]["test_from"] == "summary.json" and float(rows[1]["val_elbo"]) == -171.5


def test_compare_needs_runs():
    with pytest.raises(ValueError, match="no run folders"):
        compare_runs([])


# ---------------------------------------------------------------- in a browser

def test_every_image_of_the_report_loads_in_a_browser(tmp_path):
    run = make_run(tmp_path / "run", figures=("samples", "reconstructions", "curves"))
    path = write_report(run, evaluate=False, figures=False, progress=False)
    with open_page(path) as (page, requests):
        images = image_states(page)
        assert page.title() == "vaelab report: lab"
    assert len(images) == 3
    assert all(image["loaded"] for image in images), images
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_the_browser_check_sees_a_broken_image(tmp_path):
    page_path = tmp_path / "broken.html"
    good = base64.b64encode(png_bytes()).decode()
    page_path.write_text(f'<img alt="good" src="data:image/png;base64,{good}">'
                         '<img alt="bad" src="data:image/png;base64,bm90IGEgcG5n">')
    with open_page(page_path) as (page, _):
        assert {i["alt"]: i["loaded"] for i in image_states(page)} == {"good": True, "bad": False}


# ---------------------------------------------------------------- end to end

def test_report_of_a_trained_run_end_to_end(tmp_path, tiny_raw):
    from vaelab.data.views import make_views
    from vaelab.runs import RunFolder
    from vaelab.training import Trainer

    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=32", "train.epochs=2",
                                       "model.encoder_hidden=[32]", "model.decoder_hidden=[32]",
                                       "train.eval_batch_size=50"])
    run = tmp_path / "trained"
    RunFolder(run).create(config)
    data = make_views(tiny_raw, config.data)
    Trainer(config, run, data, progress=False, log=lambda *a: None).fit()
    path = write_report(run, k=5, data=data, progress=False)
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    evaluation = json.loads((run / "eval-test-k5.json").read_text())
    assert f"{evaluation['nll']:.2f} \u00b1 {evaluation['nll_stderr']:.2f}" in page
    drawn = sorted(p.stem for p in (run / "figures").glob("*.png"))
    assert len(img_sources(page)) == len(drawn) >= 3
    with open_page(path) as (browser_page, _):
        images = image_states(browser_page)
    assert len(images) == len(drawn) and all(image["loaded"] for image in images), images


def test_the_report_says_it_starts_an_evaluation_and_how_to_shorten_it():
    from vaelab.report import SHORTER_CLI, evaluating_line

    assert evaluating_line(5000, SHORTER_CLI).endswith("shorter: --samples 1000, or --no-evaluate to skip it)")
    assert "K = 5000" in evaluating_line(5000) and "shorter: samples=1000, or evaluate=False" in evaluating_line(5000)
    assert "shorter: --samples 100," in evaluating_line(500, SHORTER_CLI)


def test_the_curve_table_shows_small_numbers_and_names_every_column(tmp_path):
    run = make_run(tmp_path / "run")
    records = [json.loads(line) | {"lr": 0.001 / e, "train_objective": -190.25, "val_kl": 0.004}
               for e, line in enumerate((run / "metrics.jsonl").read_text().splitlines(), 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = write_report(run, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    curve = page[page.index("<h2>Training curve</h2>"):page.index("<h2>Figures</h2>")]
    assert "<th>learning rate</th>" in curve and "<th>train objective</th>" in curve
    assert "train_objective" not in curve and "<th>lr</th>" not in curve
    assert ">0.001<" in curve and ">0.0005<" in curve and ">0.000333<" in curve  # not 0.00
    assert ">0.004<" in curve and ">-190.25<" in curve


def test_the_summary_table_says_how_colour_pixels_were_modelled(tmp_path):
    run = make_run(tmp_path / "run", evaluations=())
    config = json.loads((run / "config.json").read_text())
    config["data"] |= {"name": "cifar10", "binarization": "grey"}
    (run / "config.json").write_text(json.dumps(config))
    summary = json.loads((run / "summary.json").read_text()) | {"binarization": "grey"}
    (run / "summary.json").write_text(json.dumps(summary))
    page = write_report(run, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    training = page[page.index("<h2>Training</h2>"):page.index("<h2>Training curve</h2>")]
    assert "<td>pixels</td><td>colour pixels in their levels (not binarized)</td>" in training
    assert ">grey<" not in training
