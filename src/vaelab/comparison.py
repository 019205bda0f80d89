"""The table comparing runs: the settings they differ in, then validation, then test numbers.

`compare_table(folders, fmt=...)` gives it as Markdown (aligned, so it reads in a terminal too:
`vaelab compare`, a sweep's table.md, `vaelab.compare`), CSV (`--csv`, table.csv) or an HTML
fragment (the sweep's report; a study's). Every format has the same columns:

    run | each config key whose value differs between the runs | kept epoch | val ELBO | [val NLL, K]
        | test ELBO, rec., KL | [test NLL +- s.e., active units] | test from (an evaluation's K, or training)
        | [MIG, beta-VAE, FactorVAE, DCI disentanglement, SAP, scored on (factor samples, seed)]

(the bracketed ones where some run has such an evaluation).

The validation columns come first, and a note under the table says so, because a run should be
chosen on validation numbers; the test columns report the chosen run. The cell formatting here is
the report's too.
"""

from __future__ import annotations

import csv as csv_module
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import VaelabError
from .runs import SUMMARY, RunFolder, StudyFolder, is_study, run_folders, run_label
from .webpage import escape, pixels_text

# Config parts that are no setting of the run itself: prose, and the plans of the sweep or study
# that made it (a sweep member's own [sweep] is emptied; a trial's sampled values are in its keys).
NOT_COMPARED = ("description", "sweep", "tune")
# Above this many differing keys, the Markdown and HTML tables put them in one "settings" cell a
# row (one line each): a column per key would not fit a terminal or a 1200-px page. CSV never does.
MAX_KEY_COLUMNS = 6
LONG_LIST, LONG_TEXT = 4, 32  # items and characters a Markdown or HTML cell shows of a value
# What `sort` may name, and whether a larger value is better: only validation numbers, on purpose.
SORTS = {"val_elbo": True, "val_nll": False}
FORMATS = ("markdown", "csv", "html")


class CompareError(VaelabError, ValueError):
    """A comparison that cannot be made as asked (no runs, an unknown sort or format)."""


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


def config_settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as {dotted key: value}, in the config's order, without `NOT_COMPARED`.

    `code` (file -> SHA-256 of the user's own source files) stays one value: its keys are paths.
    Only the run's own objective's section is kept (objective.btcvae for btcvae, ...): the others
    hold their defaults (the config refuses anything else) and say nothing about the run.
    """
    objective = config.get("objective") if not prefix else None
    if isinstance(objective, dict):
        config = config | {"objective": {key: value for key, value in objective.items()
                                         if not isinstance(value, dict) or key == objective.get("name")}}
    settings: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in NOT_COMPARED:
            continue
        if isinstance(value, dict) and value and name != "code":
            settings |= config_settings(value, name + ".")
        else:
            settings[name] = value
    return settings


def differing_keys(settings: Sequence[dict[str, Any]]) -> list[str]:
    """The keys whose values are not the same in every run (a key a run lacks counts as differing)."""
    keys = list(dict.fromkeys(key for one in settings for key in one))
    missing = object()
    return [key for key in keys if len({json.dumps(one.get(key, missing), sort_keys=True, default=id)
                                        for one in settings}) > 1]


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One run's facts for the table, raw values; a missing one is None.

    Validation: the metrics.jsonl record of the epoch whose weights the run keeps (`kept_epoch`),
    and the current validation evaluation with the largest K, if any. Test: the current test
    evaluation with the largest K, else the test ELBO training ended with; never numbers of
    earlier weights.
    """
    given, run = run_label(run_dir), RunFolder(run_dir).check()  # a shipped model: pretrained:NAME
    config, summary = run.config_dict(), run.summary()
    found, val_found = run.current_evaluation(), run.current_evaluation("val")
    evaluation, val = (found[1] if found else {}), (val_found[1] if val_found else {})
    kept, records = run.kept_epoch(), run.metrics()
    row = {"run": given, "settings": config_settings(config),
           "binarization": binarization_of(evaluation, summary, config),
           "epochs": summary.get("epochs_run") or (max((r.get("epoch", 0) for r in records), default=None)),
           "kept_epoch": (kept or {}).get("epoch"), "val_elbo": (kept or {}).get("val_elbo"),
           "val_bound": (kept or {}).get("val_bound"),
           "val_nll": val.get("nll"), "val_nll_stderr": val.get("nll_stderr"), "val_k": val.get("k")}
    if found:
        row |= {f"test_{key}": evaluation.get(key) for key in ("elbo", "reconstruction", "kl", "nll", "nll_stderr",
                                                                "k")}
        row |= {"active_units": evaluation.get("active_units"), "test_from": found[0].name}
    else:
        row |= {"test_elbo": summary.get("test_elbo"), "test_reconstruction": summary.get("test_reconstruction"),
                "test_kl": summary.get("test_kl"), "test_nll": None, "test_nll_stderr": None, "test_k": None,
                "active_units": None, "test_from": SUMMARY if "test_elbo" in summary else None}
    return row | disentanglement_cells(run)


def disentanglement_cells(run: RunFolder) -> dict[str, Any]:
    """dis_<score> (see evaluate.SCORE_NAMES), dis_samples, dis_seed of the current weights' scores; None without."""
    from .evaluate import flat_scores

    found = run.current_disentanglement()
    result = found[1] if found else {}
    return ({f"dis_{key}": value for key, value in flat_scores(result).items()}
            | {"dis_samples": result.get("samples"), "dis_seed": result.get("seed")})


# ---------------------------------------------------------------- formatting cells

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


def _class_of(ref: str) -> str:
    """'/home/u/my_vae.py:MyVAE' -> 'MyVAE (my_vae.py)'."""
    where, _, name = ref.rpartition(":")
    return f"{name} ({Path(where).name})" if where.endswith(".py") else f"{name} ({where})"


def setting_text(key: str, value: Any, short: bool = True) -> str:
    """A config value as TOML writes it, strings bare: 4, 0.001, [512, 256], relu, true.

    `short` (Markdown, HTML) keeps a cell narrow: a long list shows its first items and its length,
    a long string its end, a reference to the user's code its class and file, `code` each file's
    name and digest prefix. CSV cells are never shortened.
    """
    if value is None:
        return ""
    if key == "code" and isinstance(value, dict):
        return ", ".join(f"{Path(path).name if short else path} {sha[:8] if short else sha}"
                         for path, sha in value.items()) or "none"
    if short and key in ("model.custom", "model.encoder", "model.decoder") and isinstance(value, str) and value:
        return _class_of(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        items = [setting_text("", v, short) for v in value]
        more = len(items) - LONG_LIST
        if short and more > 0:
            items = items[:LONG_LIST] + [f"\u2026 {len(items)} items"]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {setting_text('', v, short)}" for k, v in value.items()) + "}"
    text = str(value)
    return "\u2026" + text[-(LONG_TEXT - 1):] if short and len(text) > LONG_TEXT else text


# ---------------------------------------------------------------- the table's columns

@dataclass(frozen=True)
class Column:
    """One column as people read it (`header`, `text`) and as CSV holds it (`csv`: name -> value,
    full precision; the NLL's cell is two CSV columns, the value and its standard error)."""

    header: str
    group: str  # "run", "settings", "val" or "test": the HTML table heads each group
    text: Any  # row -> str
    csv: tuple[tuple[str, Any], ...]  # (CSV column, row -> raw value)
    numeric: bool = False


def _raw(value: Any, key: str = "") -> Any:
    """A CSV value: numbers and strings as they are, anything else as `setting_text` writes it unshortened."""
    if _is_number(value) or isinstance(value, str):
        return value
    return setting_text(key, value, short=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _setting_columns(keys: list[str], rows: list[dict[str, Any]]) -> list[Column]:
    """A column per differing key; past `MAX_KEY_COLUMNS` keys, one "settings" column of `key = value` lines."""
    def csv_of(key: str) -> tuple[str, Any]:
        return key, lambda r: _raw(r["settings"].get(key), key)

    if len(keys) <= MAX_KEY_COLUMNS:
        return [Column(key, "settings", lambda r, key=key: setting_text(key, r["settings"].get(key)), (csv_of(key),),
                       numeric=all(_is_number(r["settings"].get(key)) for r in rows))
                for key in keys]
    return [Column("settings that differ", "settings",
                   lambda r: "\n".join(f"{key} = {setting_text(key, r['settings'].get(key)) or '(none)'}"
                                       for key in keys),
                   tuple(csv_of(key) for key in keys))]


def _metric_columns(rows: list[dict[str, Any]]) -> list[Column]:
    def number(key: str, header: str, group: str) -> Column:
        return Column(header, group, lambda r: cell_text(r[key]), ((key, lambda r: r[key]),), numeric=True)

    def with_stderr(key: str, header: str, group: str) -> Column:
        return Column(header, group, lambda r: plus_minus(r[key], r[f"{key}_stderr"]),
                      ((key, lambda r: r[key]), (f"{key}_stderr", lambda r: r[f"{key}_stderr"])), numeric=True)

    kept = Column("kept epoch", "val", lambda r: _of(r["kept_epoch"], r["epochs"]),
                  (("kept_epoch", lambda r: r["kept_epoch"]), ("epochs", lambda r: r["epochs"])), numeric=True)
    columns = [kept, number("val_elbo", "val ELBO (kept epoch)", "val")]
    if any(r["val_bound"] is not None for r in rows):  # an IWAE run: the bound it kept its weights by
        columns.append(number("val_bound", "val IWAE bound (kept epoch)", "val"))
    # The numbers of an importance-sampled evaluation only where some run has one: blank columns
    # would only make the table wider.
    if any(r["val_k"] is not None for r in rows):
        columns += [with_stderr("val_nll", "val NLL \u00b1 s.e.", "val"), number("val_k", "val K", "val")]
    columns += [number("test_elbo", "test ELBO", "test"), number("test_reconstruction", "test rec.", "test"),
                number("test_kl", "test KL", "test")]
    if any(r["test_k"] is not None for r in rows):
        columns += [with_stderr("test_nll", "test NLL \u00b1 s.e.", "test"),
                    number("active_units", "active units", "test")]
    source = (("test_from", lambda r: r["test_from"]), ("test_k", lambda r: r["test_k"]))
    return columns + [Column("test from", "test", _test_from, source)] + _disentanglement_columns(rows)


# Disentanglement scores a table shows, by their evaluate.SCORE_NAMES key; the others are in its CSV only.
SHOWN_SCORES = {"mig": "MIG", "beta_vae": "β-VAE", "factor_vae": "FactorVAE", "dci_disentanglement": "DCI dis.",
                "sap": "SAP"}


def _disentanglement_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The scores of `vaelab evaluate --disentanglement`, where some run has them, then their samples and seed."""
    from .evaluate import SCORE_NAMES

    if all(r.get("dis_samples") is None for r in rows):
        return []
    columns = [Column(header, "disentanglement", lambda r, k=f"dis_{key}": cell_text(r.get(k), 3),
                      ((f"dis_{key}", lambda r, k=f"dis_{key}": r.get(k)),), numeric=True)
               for key, header in SHOWN_SCORES.items()]
    hidden = tuple((f"dis_{key}", lambda r, k=f"dis_{key}": r.get(k)) for key, _ in SCORE_NAMES if key not in SHOWN_SCORES)
    scored = Column("scored on", "disentanglement",
                    lambda r: "" if r["dis_samples"] is None else f"N={r['dis_samples']}, seed {r['dis_seed']}",
                    (("dis_samples", lambda r: r["dis_samples"]), ("dis_seed", lambda r: r["dis_seed"])) + hidden)
    return columns + [scored]


def _test_from(row: dict[str, Any]) -> str:
    """"K=100" for an evaluation with 100 importance samples, "training" for the ELBO training ended with."""
    if row["test_k"] is not None:
        return f"K={row['test_k']}"
    return "training" if row["test_from"] == SUMMARY else cell_text(row["test_from"])


def _of(kept: Any, epochs: Any) -> str:
    if kept is None:
        return ""
    return f"{kept} of {epochs}" if epochs is not None else str(kept)


def _columns(rows: list[dict[str, Any]]) -> list[Column]:
    keys = differing_keys([r["settings"] for r in rows])
    columns = [Column("run", "run", lambda r: r["run"], (("run", lambda r: r["run"]),))]
    columns += _setting_columns(keys, rows)
    if len({r["binarization"] for r in rows}) > 1:  # else the note under the table names it
        columns.append(Column("pixels", "settings", lambda r: cell_text(r["binarization"]),
                              (("binarization", lambda r: r["binarization"]),)))
    return columns + _metric_columns(rows)


# ---------------------------------------------------------------- order and notes

def sort_rows(rows: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    """The rows best first by a validation number (`SORTS`), runs without it last; as given for None."""
    if sort is None:
        return rows
    if sort not in SORTS:
        raise CompareError(f"sort: {sort!r} is not one of {', '.join(SORTS)} (runs are chosen on validation numbers)")
    sign = -1 if SORTS[sort] else 1
    return sorted(rows, key=lambda r: (r[sort] is None, sign * r[sort] if r[sort] is not None else 0))


def best_rows(rows: list[dict[str, Any]]) -> set[int]:
    """The indices of the rows with the highest val ELBO, where there is a choice to make."""
    values = [r["val_elbo"] for r in rows]
    known = [v for v in values if v is not None]
    if len(set(known)) < 2:  # one run, or all alike: nothing to point at
        return set()
    return {i for i, v in enumerate(values) if v == max(known)}


def _pixels(binarization: Any) -> str:
    # the table's note is shorter than a page's for grey levels; every other view as pages say it
    return "pixels not binarized" if binarization == "grey" else pixels_text(binarization)


def table_notes(rows: list[dict[str, Any]], sort: str | None) -> list[str]:
    """The sentences under the table: how to choose, the units, what is not shown, the order."""
    notes = ["Choose between runs by the validation columns (val ELBO of the epoch whose weights each run "
             "keeps); the test columns report the chosen run: choosing by them fits the choice to the test set."]
    binarizations = {r["binarization"] for r in rows}
    pixels = f", {_pixels(next(iter(binarizations)))}" if len(binarizations) == 1 else ""
    notes.append(f"Nats per image (summed over pixels){pixels}; test numbers from an evaluation with K "
                 "importance samples, or from the end of training (summary.json).")
    if len(rows) > 1:
        same = not differing_keys([r["settings"] for r in rows])
        notes.append("The runs' configs are the same." if same else "Config keys not shown are the same in every run.")
    if sort is not None:
        notes.append(f"Sorted by {sort.replace('_', ' ').replace('elbo', 'ELBO').replace('nll', 'NLL')}, best first.")
    return notes


# ---------------------------------------------------------------- the three formats

def _markdown(columns: list[Column], rows: list[dict[str, Any]], notes: list[str]) -> str:
    """A Markdown table padded to its columns' widths, so that it also reads as text in a terminal."""
    texts = [[c.text(r).replace("\n", "; ").replace("|", "\\|") for c in columns] for r in rows]
    widths = [max([len(c.header), 3] + [len(t[i]) for t in texts]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(w) if c.numeric else cell.ljust(w)
                                 for cell, w, c in zip(cells, widths, columns)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if c.numeric else "-" * (w + 2) for w, c in zip(widths, columns)) + "|"
    lines = [line([c.header for c in columns]), rule] + [line(t) for t in texts]
    return "\n".join(lines) + "\n\n" + _wrap(" ".join(notes)) + "\n"


def _wrap(text: str, width: int = 100) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _csv(columns: list[Column], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv_module.writer(buffer, lineterminator="\n")
    writer.writerow([name for c in columns for name, _ in c.csv])
    # Full precision: a CSV is for further computation, not for reading.
    writer.writerows([["" if (v := get(r)) is None else v for c in columns for _, get in c.csv] for r in rows])
    return buffer.getvalue()


GROUP_HEADS = {"trial": "trial", "settings": "config", "val": "validation: choose by these",
               "test": "test: report the chosen run's", "disentanglement": "disentanglement: the latent vs. the factors"}


def _breakable(text: str, after: str) -> str:
    """Escaped text that may break after each of `after`: `objective.beta` takes two short lines, a
    member named `beta=1_lr=3e-3_seed=1` one per setting, rather than one long line."""
    escaped = escape(text)
    for char in after:
        escaped = escaped.replace(char, char + "<wbr>")
    return escaped


def _html_head(columns: list[Column]) -> str:
    """Two header rows: the groups (config, validation, test) over the columns' own headers."""
    groups: list[list[Any]] = []
    for c in columns[1:]:
        if groups and groups[-1][0] == c.group:
            groups[-1][1] += 1
        else:
            groups.append([c.group, 1])
    top = '<th rowspan="2">run</th>' + "".join(f'<th colspan="{n}" class="group">{escape(GROUP_HEADS[g])}</th>'
                                               for g, n in groups)
    heads = "".join(f"<th>{_breakable(c.header, '._') if c.group == 'settings' else escape(c.header)}</th>"
                    for c in columns[1:])
    return f"<thead><tr>{top}</tr><tr>{heads}</tr></thead>"


def _html_cell(column: Column, row: dict[str, Any]) -> str:
    kind = "num" if column.numeric else ("setting" if column.group == "settings" else "")
    # A standard error goes under its value: "193.12 \u00b1 10.50" on one line is the widest cell.
    lines = column.text(row).replace(" \u00b1 ", "\n\u00b1 ").split("\n")
    text = "<br>".join(_breakable(line, ",/") for line in lines)
    return f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>"


def _html(columns: list[Column], rows: list[dict[str, Any]], notes: list[str]) -> str:
    """An HTML fragment: the table (class "compare", styled by report.css) and its notes.

    Runs are named by their paths below the folder they share; the best val ELBO's row is highlighted.
    """
    best, names = best_rows(rows), _short_runs([r["run"] for r in rows])
    body = []
    for i, row in enumerate(rows):
        cells = f'<td class="run">{_breakable(names[i], "._/=")}</td>'
        cells += "".join(_html_cell(c, row) for c in columns[1:])
        body.append(f'<tr class="best">{cells}</tr>' if i in best else f"<tr>{cells}</tr>")
    if best:
        notes = notes + ["The highlighted row has the best val ELBO."]
    return (f'<table class="compare">{_html_head(columns)}<tbody>{"".join(body)}</tbody></table>'
            f'<p class="note">{escape(" ".join(notes))}</p>')


def _short_runs(paths: list[str]) -> list[str]:
    """Each run's path below the folder all of them share (a sweep's members: their names)."""
    resolved = [os.path.abspath(p) for p in paths if p]  # "": a trial with no run folder yet
    if len(resolved) < 2:
        return [Path(p).name if p else "" for p in paths]
    common = os.path.commonpath(resolved)
    return [(os.path.relpath(os.path.abspath(p), common) if os.path.abspath(p) != common else Path(p).name) if p else ""
            for p in paths]


def compare_table(folders: str | Path | Sequence[str | Path], fmt: str = "markdown", sort: str | None = None) -> str:
    """One table of runs: the config keys they differ in, validation, then test numbers (nats per image).

    `folders`: run folders (or one folder); a sweep folder stands for its started members. `fmt`: "markdown"
    (aligned; with notes under it), "csv" (full precision, the same columns, the NLL's standard
    error in a column of its own) or "html" (a fragment: the table and its notes). `sort`: None
    keeps the order given; "val_elbo" or "val_nll" puts the best run first. Numbers are those of
    each run's current weights (see `run_row`); a run still training shows its best epoch so far.
    """
    if fmt not in FORMATS:
        raise CompareError(f"fmt: {fmt!r} is not one of {', '.join(FORMATS)}")
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise CompareError("compare: no run folders given")
    study = len(folders) == 1 and is_study(folders[0])
    rows = sort_rows(study_rows(folders[0]) if study else [run_row(run.path) for run in run_folders(list(folders))],
                     sort)
    columns = _study_columns(rows) if study else _columns(rows)
    if fmt == "csv":
        return _csv(columns, rows)
    notes = table_notes(rows, sort) + ([STUDY_NOTE] if study else [])
    return _markdown(columns, rows, notes) if fmt == "markdown" else _html(columns, rows, notes)


def compare_runs(run_dirs: Sequence[str | Path], *, csv: bool = False, sort: str | None = None) -> str:
    """`compare_table` as Markdown, or CSV with `csv` (what `vaelab compare` prints)."""
    return compare_table(run_dirs, "csv" if csv else "markdown", sort)


# ---------------------------------------------------------------- a study's trials (vaelab tune)

STUDY_NOTE = ("State: complete; pruned (stopped early by the pruner); fail (the trial raised, or its worker "
              "died: \"re-run of\" names the failed trial a later one repeats with the same values); running.")


def study_rows(study_dir: str | Path) -> list[dict[str, Any]]:
    """A row per trial of a study, in trial order, as `run_row` reads the trial's run folder, plus
    `trial`, `state` (Optuna's, lower case) and `retry_of` (the failed trial it re-runs, or None).

    A trial with no run folder yet (waiting, or its worker died before making one) shows the values
    it was given over the settings of the first trial that has a folder, and no numbers.
    """
    from .tuning import study_of

    folder = StudyFolder(study_dir).check()
    trials = study_of(folder).get_trials(deepcopy=False)
    runs = {t.number: folder.path / t.user_attrs["run_dir"] for t in trials
            if t.user_attrs.get("run_dir") and RunFolder(folder.path / t.user_attrs["run_dir"]).exists}
    read = {number: run_row(path) for number, path in runs.items()}
    base = next(iter(read.values()))["settings"] if read else config_settings(folder.config().to_dict())
    rows = []
    for trial in trials:
        row = read.get(trial.number) or _no_run_row(base | dict(trial.params))
        rows.append(row | {"trial": trial.number, "state": trial.state.name.lower(),
                           "retry_of": trial.system_attrs.get("failed_trial")})
    return rows


def _no_run_row(settings: dict[str, Any]) -> dict[str, Any]:
    """`run_row`'s keys for a trial without a run folder: its settings, no numbers."""
    keys = ("binarization", "epochs", "kept_epoch", "val_elbo", "val_bound", "val_nll", "val_nll_stderr", "val_k", "test_elbo",
            "test_reconstruction", "test_kl", "test_nll", "test_nll_stderr", "test_k", "active_units", "test_from",
            "dis_samples", "dis_seed")
    return {"run": "", "settings": settings} | dict.fromkeys(keys)


def _study_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """`_columns` with the trial's number, state and the trial it re-runs after the run's name."""
    def plain(key: str, header: str) -> Column:
        return Column(header, "trial", lambda r: cell_text(r[key]), ((key, lambda r: r[key]),))

    columns = _columns(rows)
    return columns[:1] + [plain("trial", "trial"), plain("state", "state"), plain("retry_of", "re-run of")] + columns[1:]
