"""The table comparing runs: each run's test metrics (nats per image) and key config values.

`compare_runs` gives it as Markdown or CSV (`vaelab compare`, `vaelab.compare`, a sweep's
table.md and table.csv); the sweep's report shows the same rows as HTML. The cell formatting
here is the report's too.
"""

from __future__ import annotations

import csv as csv_module
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .runs import SUMMARY, RunFolder, StudyFolder, is_study, run_folders

COMPARE_COLUMNS = ["run", "name", "latent_dim", "encoder_hidden", "decoder_hidden", "activation", "likelihood",
                   "binarization", "optimizer", "epochs", "elbo", "reconstruction", "kl", "nll", "nll_stderr", "k",
                   "active_units", "elbo_from"]
# The tables read by people show the NLL and its standard error in one cell; the CSV keeps both.
SHOWN_COLUMNS = [c for c in COMPARE_COLUMNS if c != "nll_stderr"]

MARKDOWN_HEADERS = {"elbo": "ELBO (nats)", "reconstruction": "rec. (nats)", "kl": "KL (nats)",
                    "nll": "NLL \u00b1 s.e. (nats)", "k": "K", "active_units": "active units",
                    "epochs": "epochs run", "elbo_from": "ELBO from", "encoder_hidden": "encoder",
                    "decoder_hidden": "decoder", "latent_dim": "latent"}


# ---------------------------------------------------------------- reading a run folder

def dotted_get(tree: Any, dotted: str) -> Any:
    """tree["a"]["b"] for "a.b", or None where any level is missing: runs differ in their keys."""
    for key in dotted.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def binarization_of(evaluation: dict[str, Any] | None, summary: dict[str, Any], config: dict[str, Any]) -> Any:
    """How the run's scored pixels were binarized: as its evaluation, else its summary, else its config says."""
    for value in ((evaluation or {}).get("binarization"), summary.get("binarization"),
                  dotted_get(config, "data.binarization")):
        if value is not None:
            return value
    return None


def _hidden(sizes: Any) -> Any:
    if isinstance(sizes, list):
        return "-".join(str(s) for s in sizes) if sizes else "none"
    return sizes


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One run's facts for `compare_runs`, raw values; a missing key is None.

    Its metrics are those of the weights the folder holds now: the current evaluation with the
    largest K, else the test ELBO training ended with; never an evaluation of earlier weights.
    """
    given, run = str(run_dir), RunFolder(run_dir).check()
    config, summary = run.config_dict(), run.summary()
    found = run.current_evaluation()
    evaluation = found[1] if found else {}
    lr = dotted_get(config, "optim.lr")
    lr = f"{lr:g}" if isinstance(lr, (int, float)) else lr
    optimizer = " ".join(str(v) for v in (dotted_get(config, "optim.name"), lr) if v is not None)
    epochs = summary.get("epochs_run")
    if epochs is None:
        epochs = len(run.metrics()) or None
    row = {
        "run": given, "name": config.get("name"), "latent_dim": dotted_get(config, "model.latent_dim"),
        "encoder_hidden": _hidden(dotted_get(config, "model.encoder_hidden")),
        "decoder_hidden": _hidden(dotted_get(config, "model.decoder_hidden")),
        "activation": dotted_get(config, "model.activation"), "likelihood": dotted_get(config, "model.likelihood"),
        "binarization": binarization_of(evaluation, summary, config), "optimizer": optimizer or None,
        "epochs": epochs,
    } | _own_code_cells(config, summary, evaluation)
    if found:
        row |= {key: evaluation.get(key) for key in ("elbo", "reconstruction", "kl", "nll", "nll_stderr", "k",
                                                      "active_units")}
        row["elbo_from"] = found[0].name
    else:
        row |= {"elbo": summary.get("test_elbo"), "reconstruction": summary.get("test_reconstruction"),
                "kl": summary.get("test_kl"), "nll": None, "nll_stderr": None, "k": None, "active_units": None,
                "elbo_from": SUMMARY if "test_elbo" in summary else None}
    return row


def _class_of(ref: Any) -> str | None:
    """'/home/u/my_vae.py:MyVAE' -> 'MyVAE (my_vae.py)'; None for no reference."""
    if not isinstance(ref, str) or not ref:
        return None
    where, _, name = ref.rpartition(":")
    return f"{name} ({Path(where).name})" if where.endswith(".py") else f"{name} ({where})"


def _own_code_cells(config: dict[str, Any], summary: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """The cells a model of the user's own fills instead of the VAE config's: its class, its latent size."""
    custom = _class_of(dotted_get(config, "model.custom"))
    cells: dict[str, Any] = {}
    if custom:
        cells = {"latent_dim": evaluation.get("latent_dim") or summary.get("latent_size"), "encoder_hidden": custom,
                 "decoder_hidden": custom, "activation": None,
                 "likelihood": evaluation.get("likelihood") or "own"}
    for side in ("encoder", "decoder"):
        own = _class_of(dotted_get(config, f"model.{side}"))
        if own:
            cells[f"{side}_hidden"] = own
    return cells


# ---------------------------------------------------------------- formatting

def cell_text(value: Any, digits: int = 2) -> str:
    """A cell's text: floats rounded, None blank, anything else as text (escaped later)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # Rounded to `digits` places a small number (a learning rate of 0.001) would read as 0.00:
        # it keeps three significant digits instead.
        small = value != 0 and abs(value) < 10.0 ** (1 - digits)
        return f"{value:.3g}" if small else f"{value:.{digits}f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def plus_minus(value: Any, stderr: Any) -> str:
    if value is None:
        return ""
    if isinstance(stderr, (int, float)) and math.isfinite(stderr):
        return f"{cell_text(value)} \u00b1 {cell_text(stderr)}"
    return cell_text(value)


def shown_cells(row: dict[str, Any]) -> list[str]:
    """A `run_row` as the text of its `SHOWN_COLUMNS` cells."""
    return [plus_minus(row.get("nll"), row.get("nll_stderr")) if c == "nll" else cell_text(row.get(c))
            for c in SHOWN_COLUMNS]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(rows: list[dict[str, Any]]) -> str:
    header = [MARKDOWN_HEADERS.get(c, c) for c in SHOWN_COLUMNS]
    numeric = {"latent_dim", "epochs", "elbo", "reconstruction", "kl", "nll", "k", "active_units"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in SHOWN_COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(c) for c in shown_cells(row)) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv_module.writer(buffer, lineterminator="\n")
    writer.writerow(COMPARE_COLUMNS)
    # Full precision: a CSV is for further computation, not for reading.
    writer.writerows([["" if row.get(c) is None else row[c] for c in COMPARE_COLUMNS] for row in rows])
    return buffer.getvalue()


def compare_runs(run_dirs: Sequence[str | Path], *, csv: bool = False) -> str:
    """One table of the runs' test metrics (nats per image) and key config values.

    A sweep folder stands for its members. Metrics are those of each run's current weights (see
    `run_row`); a run still training shows blanks. Markdown by default, CSV with `csv`.
    """
    if not run_dirs:
        raise ValueError("compare: no run folders given")
    if len(run_dirs) == 1 and is_study(run_dirs[0]):
        return compare_study(run_dirs[0], csv=csv)
    rows = [run_row(run.path) for run in run_folders(list(run_dirs))]
    return _csv(rows) if csv else _markdown(rows)


# ---------------------------------------------------------------- a study's trials (vaelab tune)

def study_rows(study_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a study's trials as its storage records them: number, state, the values
    drawn (a column per `tune.space` key), validation ELBO, the metric, the retried trial, the
    run folder, then the test metrics of the trial's run as `run_row` reads them."""
    from .tuning import study_of

    folder = StudyFolder(study_dir).check()
    config, study = folder.config(), study_of(folder)
    metric = config.tune.metric
    columns = ["trial", "state", *config.tune.space, "val_elbo", metric] if metric != "val_elbo" else \
        ["trial", "state", *config.tune.space, "val_elbo"]
    columns += ["retry_of", "run", "elbo", "nll", "nll_stderr", "k"]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower(), **trial.params,
                               "val_elbo": trial.user_attrs.get("val_elbo"),
                               "retry_of": trial.system_attrs.get("failed_trial")}
        if metric != "val_elbo":
            row[metric] = trial.value
        run_dir = trial.user_attrs.get("run_dir") if trial.state.name != "WAITING" else None
        run = RunFolder(folder.path / run_dir) if run_dir else None
        if run is not None and run.exists:
            row["run"] = str(run.path)
            found = run_row(run.path)
            row |= {key: found.get(key) for key in ("elbo", "nll", "nll_stderr", "k")}
        rows.append(row)
    return columns, rows


def compare_study(study_dir: str | Path, *, csv: bool = False) -> str:
    """A study's trials table (see `study_rows`), Markdown or CSV."""
    columns, rows = study_rows(study_dir)
    if csv:
        buffer = io.StringIO()
        writer = csv_module.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
        return buffer.getvalue()
    shown = [c for c in columns if c != "nll_stderr"]
    header = [MARKDOWN_HEADERS.get(c, c) for c in shown]
    lines = ["| " + " | ".join(_markdown_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        cells = [plus_minus(row.get("nll"), row.get("nll_stderr")) if c == "nll" else cell_text(row.get(c))
                 for c in shown]
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
