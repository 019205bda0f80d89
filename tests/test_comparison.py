"""The table comparing runs: the keys they differ in, validation before test, in every format."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from browser import open_page
from test_report import make_run

import vaelab
from vaelab import cli
from vaelab.comparison import MAX_KEY_COLUMNS, CompareError, compare_table, config_settings, setting_text
from vaelab.config import resolve_config
from vaelab.pipeline import sweep_run
from vaelab.report import write_report
from vaelab.runs import RunFolder

TINY = ["data.val_size=100", "train.batch_size=50", "train.epochs=2", "model.encoder_hidden=[16]",
        "model.decoder_hidden=[16]", "train.eval_batch_size=100", "figures.names=[\"samples\"]"]
# A member that differs from beta=1 in six keys: as many as get a column each, with a long folder name.
WIDE = "objective.beta=1; optim.lr=3e-3; model.latent_dim=3; train.seed=1; model.activation=tanh; train.batch_size=60"
WIDE_NAME = "beta=1_lr=3e-3_latent_dim=3_seed=1_activation=tanh_batch_size=60"


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, one_thread) -> Path:
    """A trained tiny sweep: members beta=4, beta=1 and WIDE; its table.md and table.csv written."""
    from conftest import make_tiny_raw

    members = json.dumps(["objective.beta=4", "objective.beta=1", WIDE])
    config = resolve_config(overrides=TINY + [f"sweep.members={members}"])
    out = tmp_path_factory.mktemp("compare") / "sweep"
    sweep_run(config, out, raw=make_tiny_raw(n_train=300, n_test=60), log=quiet)
    return out


def markdown_rows(table: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as {header: cell}) of the Markdown table at the top of `table`."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert set(lines[1]) <= set("|-:"), table  # the rule under the header
    cells = [[c.strip() for c in line[2:-2].split(" | ")] for line in lines[:1] + lines[2:]]
    assert len({len(row) for row in cells}) == 1 and all(len(line) == len(lines[0]) for line in lines), table
    return cells[0], [dict(zip(cells[0], row)) for row in cells[1:]]


def setting_headers(header: list[str]) -> list[str]:
    """The columns between the run and the validation numbers: the config keys that differ."""
    return header[1:header.index("kept epoch")]


def best_record(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return max(records, key=lambda r: r["val_elbo"])


def test_a_beta_4_and_a_beta_1_run_show_their_beta(sweep):
    runs = [sweep / "beta=4", sweep / "beta=1"]
    header, rows = markdown_rows(compare_table(runs))
    assert setting_headers(header) == ["objective.beta"]
    assert [r["objective.beta"] for r in rows] == ["4", "1"]
    assert [r["run"] for r in rows] == [str(r) for r in runs]


def test_runs_with_the_same_config_show_no_setting_columns(sweep, tmp_path):
    again = Path(shutil.copytree(sweep / "beta=1", tmp_path / "again"))
    table = compare_table([sweep / "beta=1", again])
    header, _ = markdown_rows(table)
    assert setting_headers(header) == [] and "The runs' configs are the same." in table


def test_the_val_elbo_is_that_of_the_kept_epoch_in_metrics_jsonl(sweep):
    runs = [sweep / "beta=4", sweep / "beta=1", sweep / WIDE_NAME]
    _, rows = markdown_rows(compare_table(runs))
    table = list(csv.DictReader(io.StringIO(compare_table(runs, fmt="csv"))))
    for run, row, line in zip(runs, rows, table):
        best, summary = best_record(run), RunFolder(run).summary()
        assert row["val ELBO (kept epoch)"] == f"{best['val_elbo']:.2f}"
        assert float(line["val_elbo"]) == best["val_elbo"] == summary["best_val_elbo"]
        assert int(line["kept_epoch"]) == best["epoch"] == summary["best_epoch"]
        assert row["kept epoch"] == f"{best['epoch']} of {summary['epochs_run']}"
        assert float(line["test_elbo"]) == summary["test_elbo"]


def test_validation_columns_come_before_the_test_columns_and_a_note_says_why(sweep):
    table = compare_table(sweep)
    header, rows = markdown_rows(table)
    assert header.index("val ELBO (kept epoch)") < min(i for i, h in enumerate(header) if h.startswith("test"))
    assert "Choose between runs by the validation columns" in table and "test set" in table
    assert setting_headers(header) == ["model.latent_dim", "model.activation", "objective.beta", "optim.lr",
                                       "train.batch_size", "train.seed"]
    assert [r["run"] for r in rows] == [str(sweep / name) for name in ("beta=4", "beta=1", WIDE_NAME)]
    assert rows[2]["optim.lr"] == "0.003" and rows[2]["model.activation"] == "tanh" and rows[0]["train.seed"] == "0"


def test_csv_has_the_markdown_columns_at_full_precision(sweep):
    planted = plant_evaluations(sweep)  # every column shown
    try:
        header, rows = markdown_rows(compare_table(sweep))
        lines = list(csv.DictReader(io.StringIO(compare_table(sweep, fmt="csv"))))
    finally:
        for file in planted:
            file.unlink()
    names = {"run": ["run"], "kept epoch": ["kept_epoch", "epochs"], "val ELBO (kept epoch)": ["val_elbo"],
             "val NLL \u00b1 s.e.": ["val_nll", "val_nll_stderr"], "val K": ["val_k"],
             "test ELBO": ["test_elbo"], "test rec.": ["test_reconstruction"], "test KL": ["test_kl"],
             "test NLL \u00b1 s.e.": ["test_nll", "test_nll_stderr"], "active units": ["active_units"],
             "test from": ["test_from", "test_k"]}
    assert set(names) <= set(header), header
    assert list(lines[0]) == [name for h in header for name in names.get(h, [h])]
    assert [float(line["objective.beta"]) for line in lines] == [4.0, 1.0, 1.0]
    assert [line["run"] for line in lines] == [r["run"] for r in rows]
    assert float(lines[2]["val_nll_stderr"]) == 10.5 and rows[2]["val NLL \u00b1 s.e."] == "193.12 \u00b1 10.50"
    assert lines[0]["test_from"] == "eval-test-k5000.json" and rows[0]["test from"] == "K=5000"


def test_the_sweep_tables_and_the_python_api_give_the_same_tables(sweep):
    assert (sweep / "table.md").read_text() == compare_table(sweep) == vaelab.open_run(sweep).table()
    assert (sweep / "table.csv").read_text() == compare_table(sweep, fmt="csv") == vaelab.compare(sweep, csv=True)
    first = vaelab.open_run(sweep / "beta=4")
    assert first.compare(sweep / "beta=1") == compare_table([sweep / "beta=4", sweep / "beta=1"])


def test_sorted_by_val_elbo_the_best_run_comes_first(sweep, capsys):
    lines = list(csv.DictReader(io.StringIO(compare_table(sweep, fmt="csv", sort="val_elbo"))))
    values = [float(line["val_elbo"]) for line in lines]
    assert values == sorted(values, reverse=True) and len(values) == 3
    assert cli.main(["compare", str(sweep), "--sort", "val_elbo"]) == 0
    printed = capsys.readouterr().out
    assert printed == compare_table(sweep, sort="val_elbo") and "Sorted by val ELBO, best first." in printed
    with pytest.raises(CompareError, match="sort: 'test_elbo' is not one of val_elbo, val_nll"):
        compare_table(sweep, sort="test_elbo")
    with pytest.raises(SystemExit):
        cli.main(["compare", str(sweep), "--sort", "test_elbo"])


def test_a_validation_evaluation_adds_the_val_nll(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    held = RunFolder(a).fingerprint()
    (a / "eval-val-k10.json").write_text(json.dumps({"split": "val", "k": 10, "nll": 93.125, "nll_stderr": 0.5,
                                                      "weights_sha256": held}))
    header, rows = markdown_rows(compare_table([a, b]))
    assert header.index("val NLL \u00b1 s.e.") < header.index("test ELBO")
    assert rows[0]["val NLL \u00b1 s.e."] == "93.12 \u00b1 0.50" and rows[0]["val K"] == "10"
    assert rows[1]["val NLL \u00b1 s.e."] == ""
    lines = list(csv.DictReader(io.StringIO(compare_table([b, a], fmt="csv", sort="val_nll"))))
    assert [line["run"] for line in lines] == [str(a), str(b)]  # a run without one goes last


def edit_config(run: Path, **sections) -> Path:
    config = json.loads((run / "config.json").read_text())
    for section, values in sections.items():
        config[section] = config[section] | values if isinstance(values, dict) else values
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_many_differing_keys_share_one_settings_cell_but_not_in_csv(tmp_path):
    a = make_run(tmp_path / "a")
    b = edit_config(make_run(tmp_path / "b"), model={"latent_dim": 3, "activation": "tanh", "encoder_hidden": [
        8, 8, 8, 8, 8, 8]}, optim={"lr": 0.003}, train={"seed": 7, "batch_size": 64}, objective={"beta": 4.0})
    header, rows = markdown_rows(compare_table([a, b]))
    assert setting_headers(header) == ["settings that differ"]
    cell = rows[1]["settings that differ"]
    assert cell.split("; ")[:3] == ["model.latent_dim = 3", "model.encoder_hidden = [8, 8, 8, 8, \u2026 6 items]",
                                    "model.activation = tanh"]
    assert "objective.beta = 4" in cell and "train.seed = 7" in cell
    lines = list(csv.DictReader(io.StringIO(compare_table([a, b], fmt="csv"))))
    keys = [k for k in lines[0] if "." in k]
    assert len(keys) == 7 > MAX_KEY_COLUMNS and lines[1]["model.encoder_hidden"] == "[8, 8, 8, 8, 8, 8]"


def test_runs_of_two_objectives_show_each_its_own_section_only(tmp_path):
    """A capacity run and a DIP-VAE run: each row shows its own objective's settings, not the other
    objective's defaults (objective.capacity.steps = 100000 of a DIP-VAE run means nothing)."""
    capacity = edit_config(make_run(tmp_path / "capacity"), objective={"name": "capacity"})
    edit_config(capacity, objective={"capacity": {"gamma": 1000.0, "max_nats": 25.0, "steps": 12000}})
    dipvae = edit_config(make_run(tmp_path / "dipvae"), objective={"name": "dipvae"})
    lines = list(csv.DictReader(io.StringIO(compare_table([capacity, dipvae], fmt="csv"))))
    keys = [k for k in lines[0] if k.startswith("objective.")]
    assert set(keys) == {"objective.name"} | {f"objective.capacity.{k}" for k in ("gamma", "max_nats", "steps")} | \
        {f"objective.dipvae.{k}" for k in ("type", "lambda_od", "lambda_d")}, keys
    assert lines[0]["objective.capacity.steps"] == "12000" and lines[1]["objective.capacity.steps"] == ""
    assert lines[1]["objective.dipvae.lambda_od"] == "10.0" and lines[0]["objective.dipvae.lambda_od"] == ""
    assert config_settings(json.loads((dipvae / "config.json").read_text()))["objective.name"] == "dipvae"


def test_descriptions_plans_and_code_do_not_flood_the_table(tmp_path):
    a = edit_config(make_run(tmp_path / "a"), code={"/home/u/my_vae.py": "a" * 64},
                    model={"custom": "/home/u/my_vae.py:TinyVAE"})
    b = edit_config(make_run(tmp_path / "b"), code={"/home/u/my_vae.py": "b" * 64}, description="another text",
                    sweep={"members": ["model.latent_dim=3"]}, model={"custom": "/home/u/my_vae.py:TinyVAE"})
    header, rows = markdown_rows(compare_table([a, b]))
    assert setting_headers(header) == ["code"]
    assert [r["code"] for r in rows] == ["my_vae.py aaaaaaaa", "my_vae.py bbbbbbbb"]
    assert setting_text("model.custom", "/home/u/my_vae.py:TinyVAE") == "TinyVAE (my_vae.py)"
    assert setting_text("data.data_dir", "/a/very/long/path/to/where/the/images/are") == "\u2026" + \
        "/a/very/long/path/to/where/the/images/are"[-31:]
    assert setting_text("optim.lr", 1e-4) == "0.0001" and setting_text("model.conditional", True) == "true"


def test_compare_needs_runs_and_a_known_format(tmp_path):
    with pytest.raises(CompareError, match="no run folders"):
        compare_table([])
    with pytest.raises(CompareError, match="fmt: 'latex' is not one of markdown, csv, html"):
        compare_table([make_run(tmp_path / "a")], fmt="latex")


# ---------------------------------------------------------------- in a browser

def plant_evaluations(sweep: Path) -> list[Path]:
    """A test evaluation of every member and a validation one of WIDE: the widest table a sweep of six
    differing keys gives (each number column shown)."""
    planted = []
    for name in ("beta=4", "beta=1", WIDE_NAME):
        held = RunFolder(sweep / name).fingerprint()
        planted.append(sweep / name / "eval-test-k5000.json")
        planted[-1].write_text(json.dumps({"split": "test", "k": 5000, "elbo": -512.125, "reconstruction": -500.5,
                                           "kl": 11.625, "nll": 498.25, "nll_stderr": 0.42, "active_units": 3,
                                           "weights_sha256": held}))
    planted.append(sweep / WIDE_NAME / "eval-val-k10.json")
    planted[-1].write_text(json.dumps({"split": "val", "k": 10, "nll": 193.125, "nll_stderr": 10.5,
                                       "weights_sha256": held}))
    return planted


def test_the_sweep_report_fits_a_1200_pixel_page(sweep):
    planted = plant_evaluations(sweep)
    try:
        path = write_report(sweep, evaluate=False, figures=False, progress=False)
        with open_page(path, width=1200) as (page, _):
            widths = page.evaluate("""() => {
                const t = document.querySelector('table.compare');
                return {page: document.documentElement.scrollWidth, table: t.scrollWidth,
                        right: t.getBoundingClientRect().right, heads: t.querySelectorAll('th').length,
                        best: t.querySelectorAll('tr.best').length};
            }""")
    finally:
        for file in planted:
            file.unlink()
    assert widths["page"] <= 1200 and widths["right"] <= 1200, widths
    # run, 3 group heads, 6 keys, kept epoch / val ELBO / val NLL / val K, 6 test columns
    assert widths["heads"] == 1 + 3 + 6 + 4 + 6 and widths["best"] == 1, widths


def test_pixels_get_a_column_only_where_runs_differ_in_them(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", evaluations=({"k": 10, "elbo": -90.0, "binarization": "static", "split": "test"},))
    table = compare_table([a, b])
    header, rows = markdown_rows(table)
    assert [r["pixels"] for r in rows] == ["dynamic", "static"] and "dynamic binarization" not in table
    assert "dynamic binarization" in compare_table([a])


def test_a_run_validated_every_other_epoch_keeps_and_shows_a_validated_epoch(tmp_path, one_thread):
    from conftest import make_tiny_raw
    from vaelab.data.views import make_views
    from vaelab.training import Trainer

    config = resolve_config(overrides=TINY + ["train.epochs=3", "train.validate_every=2"])
    run = tmp_path / "sparse"
    RunFolder(run).create(config)
    summary = Trainer(config, run, make_views(make_tiny_raw(n_train=300, n_test=60), config.data), progress=False,
                      log=quiet).fit()
    records = RunFolder(run).metrics()
    assert [("val_elbo" in r) for r in records] == [False, True, True]
    _, rows = markdown_rows(compare_table([run]))
    (line,) = csv.DictReader(io.StringIO(compare_table([run], fmt="csv")))
    assert summary["best_epoch"] in (2, 3) and rows[0]["kept epoch"] == f"{summary['best_epoch']} of 3"
    assert int(line["kept_epoch"]) == summary["best_epoch"] and float(line["val_elbo"]) == summary["best_val_elbo"]
    page = write_report(run, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    curve = page[page.index("<h2>Training curve</h2>"):page.index("<h2>Figures</h2>")]
    assert curve.count("<tr") == 4 and curve.count('class="best"') == 1  # a header, 3 epochs, the kept one marked
    epoch_1 = curve[curve.index('<tr><td class="num">1</td>'):]
    epoch_1 = epoch_1[:epoch_1.index("</tr>")]
    assert f'<td class="num">{records[0]["train_elbo"]:.2f}</td>' in epoch_1
    assert epoch_1.count('<td class="num"></td>') == 3  # its validation ELBO, reconstruction and KL: blank
    assert "not validated (train.validate_every)" in curve


def test_an_iwae_run_shows_the_bound_it_kept_its_weights_by(tmp_path, one_thread):
    from conftest import make_tiny_raw
    from vaelab.data.views import make_views
    from vaelab.training import Trainer

    config = resolve_config(overrides=TINY + ["train.epochs=3", "objective.name=iwae", "objective.samples=4"])
    run = tmp_path / "iwae"
    RunFolder(run).create(config)
    summary = Trainer(config, run, make_views(make_tiny_raw(n_train=300, n_test=60), config.data), progress=False,
                      log=quiet).fit()
    kept = max(RunFolder(run).metrics(), key=lambda r: r["val_bound"])
    (line,) = csv.DictReader(io.StringIO(compare_table([run], fmt="csv")))
    _, rows = markdown_rows(compare_table([run]))
    assert float(line["val_bound"]) == kept["val_bound"] == summary["best_val_bound"]
    assert rows[0]["val IWAE bound (kept epoch)"] == f"{kept['val_bound']:.2f}"
    page = write_report(run, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    assert "the best epoch by validation IWAE bound, whose weights the run keeps" in page
    assert "val IWAE bound" in page and "weights kept by" in page
    elbo_only = tmp_path / "elbo"
    config = resolve_config(overrides=TINY + ["train.epochs=1"])
    RunFolder(elbo_only).create(config)
    Trainer(config, elbo_only, make_views(make_tiny_raw(n_train=300, n_test=60), config.data), progress=False,
            log=quiet).fit()
    assert "val IWAE bound (kept epoch)" not in markdown_rows(compare_table([elbo_only]))[0]
