"""A run's report (and a sweep's) as one self-contained HTML page.

The report embeds every figure as a base64 data: URI and carries its CSS inline, so the single
file can be mailed, attached to an assignment or opened from disk with no server and no network.
Its Content-Security-Policy forbids anything that is not inline, so a stray external reference
would show up as a broken image rather than as a silent request.

Every number is in nats per image (summed over pixels) and says how the pixels were binarized
and how many importance samples estimated it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from . import webpage
from .comparison import binarization_of, cell_text, compare_table, dotted_get, plus_minus
from .config import ConfigError, config_from_dict
from .storage import atomic_write_bytes
from .runs import REPORT, SELECTED_BY, NotARunError, RunFolder, StudyFolder, SweepFolder, open_folder, selection_key

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Known figures first, in the order a reader wants them; any other PNG follows alphabetically.
FIGURE_CAPTIONS = {
    "samples": "Samples from the prior p(z), shown as the decoder mean E[x|z].",
    "reconstructions": "Test images (top) and their reconstructions from the posterior mean (bottom).",
    "interpolations": "Walks between the posterior means of pairs of test images.",
    "latent-scatter": "Posterior means of test images in latent space.",
    "manifold": "Decoder means over a grid of latent values.",
    "curves": "Training and validation ELBO per epoch.",
    "kl-per-dim": "KL divergence of each latent dimension, averaged over the test set.",
}

CURVE_COLUMNS = {
    "epoch": "epoch", "step": "step",
    "train_elbo": "train ELBO", "train_reconstruction": "train rec.", "train_kl": "train KL",
    "train_objective": "train objective", "val_elbo": "val ELBO", "val_reconstruction": "val rec.",
    "val_kl": "val KL", "val_bound": "val IWAE bound", "lr": "learning rate", "skipped_steps": "skipped steps",
    "seconds": "seconds",
}

SUMMARY_LABELS = {
    "best_epoch": "kept epoch",
    "selected_by": "weights kept by",
    "best_val_elbo": "validation ELBO of the kept epoch",
    "best_val_bound": "validation IWAE bound of the kept epoch",
    "test_bound": "test IWAE bound at the end of training",
    "bound_k": "samples of z in those IWAE bounds",
    "epochs_run": "epochs run",
    "steps": "optimizer steps",
    "stop_reason": "stop reason",
    "test_elbo": "test ELBO at the end of training",
    "test_reconstruction": "test reconstruction at the end of training",
    "test_kl": "test KL at the end of training",
    "elbo_samples": "samples of z in those ELBOs",
    "data_source": "data source",
    "binarization": "pixels",
    "units": "units",
    "device": "device",
    "network_precision": "network products in training steps",
    "threads": "CPU threads (train.threads)",
    "compiled_step": "training step compiled (train.compile)",
    "compile_seconds": "seconds spent compiling it",
    "compile_error": "why it could not be compiled",
    "torch": "torch",
    "finished_at": "finished at",
}

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---------------------------------------------------------------- formatting

def _channels(config: dict[str, Any]) -> int:
    """The image channels the run's data config gives (1 where the config cannot say: an old run's)."""
    from .data.catalog import image_shape

    try:
        return image_shape(config_from_dict(config).data)[0]
    except (ConfigError, KeyError, TypeError, ValueError):
        return 1


_e = webpage.escape  # short: it wraps nearly every value in this module's f-strings


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] = (),
           row_classes: Sequence[str] = ()) -> str:
    """An HTML table; every cell is escaped here, so callers pass plain text."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if i_col < len(numeric) and numeric[i_col] else f"<td>{_e(c)}</td>"
            for i_col, c in enumerate(row))
        css = f' class="{_e(row_classes[i])}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ---------------------------------------------------------------- report sections

def _header(run_dir: Path, config: dict[str, Any], summary: dict[str, Any], binarization: Any) -> str:
    name = config.get("name") or run_dir.name
    data = dotted_get(config, "data.name") or "unknown data"
    facts = [f"Run folder <code>{_e(run_dir.resolve())}</code>",
             f"Data: {_e(data)}, {_e(binarization)}"
             + (f", from {_e(summary['data_source'])}" if summary.get("data_source") else "")]
    trained = [f"on {_e(summary['device'])}" if summary.get("device") else "",
               f"torch {_e(summary['torch'])}" if summary.get("torch") else "",
               f"finished {_e(summary['finished_at'])}" if summary.get("finished_at") else ""]
    if any(trained):
        facts.append("Trained " + ", ".join(t for t in trained if t))
    facts += _own_code_facts(config)
    facts.append(f"Report written {_e(datetime.now().isoformat(timespec='seconds'))}")
    description = f"<p>{_e(config['description'])}</p>" if config.get("description") else ""
    return (f"<h1>{_e(name)}</h1>" + "".join(f'<p class="facts">{f}</p>' for f in facts) + description)


def _own_code_facts(config: dict[str, Any]) -> list[str]:
    """A line per reference to the user's own code (model.custom/encoder/decoder) with its file's digest."""
    code = config.get("code") or {}
    facts = []
    for key, what in (("custom", "Own model"), ("encoder", "Own encoder"), ("decoder", "Own decoder")):
        ref = dotted_get(config, f"model.{key}")
        if ref:
            file, _, name = ref.rpartition(":")
            sha = code.get(file)
            facts.append(f"{what}: <code>{_e(name)}</code> from <code>{_e(file)}</code>"
                         + (f" (sha256 {_e(sha[:12])}...)" if sha else ""))
    return facts


def _metrics_section(evaluation: tuple[Path, dict[str, Any]] | None, eval_note: str,
                     summary: dict[str, Any], binarization: Any) -> str:
    parts = ["<h2>Test-set metrics</h2>"]
    if evaluation is None:
        parts.append(f'<p class="warn">{_e(eval_note or "No evaluation in this run folder.")}</p>')
        if "test_elbo" in summary:
            samples = summary.get("elbo_samples", "?")
            where = f"{binarization}, {samples} sample(s) of z"
            parts.append(_table(["quantity", "value", "units", "measured with"], [
                ["ELBO (from training)", cell_text(summary.get("test_elbo")), "nats per image", where],
                ["reconstruction", cell_text(summary.get("test_reconstruction")), "nats per image", where],
                ["KL", cell_text(summary.get("test_kl")), "nats per image", where],
            ], numeric=[False, True]))
        return "".join(parts)
    path, result = evaluation
    k, n = result.get("k", "?"), result.get("n", "?")
    where = f"{binarization}, K = {k} importance samples"
    latent = result.get("latent_dim")
    rows = [
        ["ELBO", cell_text(result.get("elbo")), "nats per image", where],
        ["reconstruction E_q[log p(x|z)]", cell_text(result.get("reconstruction")), "nats per image", where],
        ["KL(q(z|x) \u2016 p(z))", cell_text(result.get("kl")), "nats per image", where],
        ["NLL \u2212log p(x) \u00b1 standard error", plus_minus(result.get("nll"), result.get("nll_stderr")),
         "nats per image", where],
        ["active units", cell_text(result.get("active_units")),
         f"of {latent} latent dimensions" if latent is not None else "latent dimensions", where],
    ]
    parts.append(_table(["quantity", "value", "units", "measured with"], rows, numeric=[False, True]))
    seconds = f", {cell_text(result.get('seconds'), 1)} s" if result.get("seconds") is not None else ""
    device = f" on {result['device']}" if result.get("device") else ""
    parts.append(f'<p class="note">From <code>{_e(path.name)}</code>: {_e(n)} test images{_e(device)}'
                 f"{_e(seconds)}. {_e(eval_note)}</p>")
    parts.append(_kl_per_dim(result.get("kl_per_dim")))
    return "".join(parts)


def _disentanglement_section(found: tuple[Path, dict[str, Any]] | None, factors: Sequence[str] = ()) -> str:
    """The disentanglement scores of the current weights, with the factor samples and seed they came from;
    for a run on factor data (`factors`, its data.factor_names) never scored, how to score it; else nothing."""
    from .evaluate import SCORE_NAMES, flat_scores

    if found is None:
        if not factors:
            return ""
        return ('<h2>Disentanglement</h2><p class="note">Not scored yet: <code>vaelab evaluate RUN '
                "--disentanglement</code> (or <code>run.evaluate_disentanglement()</code>) scores this run's latent "
                f"against its data's factors ({_e(', '.join(factors))}).</p>")
    path, result = found
    values = flat_scores(result)
    where = f"{result.get('samples', '?')} factor samples, seed {result.get('seed', '?')}"
    rows = [[name, cell_text(values[key], 3), where] for key, name in SCORE_NAMES if values[key] is not None]
    factors = ", ".join(f"{n} ({s})" for n, s in zip(result.get("factors", []), result.get("factor_sizes", [])))
    return ("<h2>Disentanglement</h2>" + _table(["score", "value", "measured with"], rows, numeric=[False, True])
            + f'<p class="note">From <code>{_e(path.name)}</code>: the {_e(result.get("latent_dim", "?"))}-D latent '
            f"against the factors of {_e(result.get('data', '?'))}: {_e(factors)}.</p>")


def _kl_per_dim(values: Any) -> str:
    """A small table with a bar per latent dimension, numbered from 0 as the figures number them."""
    if not isinstance(values, list) or not values:
        return ""
    numbers = [v if isinstance(v, (int, float)) and math.isfinite(v) else 0.0 for v in values]
    largest = max(max(numbers), 1e-12)
    rows = "".join(
        f'<tr><td class="num">z{i}</td><td class="num">{_e(cell_text(v, 3))}</td>'
        f'<td><span class="bar" style="width:{200 * max(x, 0.0) / largest:.1f}px"></span></td></tr>'
        for i, (v, x) in enumerate(zip(values, numbers)))
    opened = " open" if len(values) <= 20 else ""
    return (f"<details{opened}><summary>KL per latent dimension (nats per image)</summary>"
            f"<table><thead><tr><th>dimension</th><th>KL</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _summary_section(summary: dict[str, Any], pixels: str = "") -> str:
    """summary.json as a table; `pixels` says how the pixels were modelled (colour photos' "grey"
    view is "colour pixels in their levels", not "grey")."""
    if not summary:
        return '<h2>Training</h2><p class="warn">No summary.json: training has not finished.</p>'
    keys = [k for k in SUMMARY_LABELS if k in summary] + [k for k in summary if k not in SUMMARY_LABELS]
    rows = [[SUMMARY_LABELS.get(k, k), pixels if k == "binarization" and pixels else cell_text(summary[k])]
            for k in keys]
    return "<h2>Training</h2>" + _table(["fact", "value"], rows)


def _curve_section(records: list[dict[str, Any]], best_epoch: Any) -> str:
    if not records:
        return '<h2>Training curve</h2><p class="note">No metrics.jsonl.</p>'
    seen = {k for r in records for k in r}
    keys = [k for k in CURVE_COLUMNS if k in seen] + sorted(seen - set(CURVE_COLUMNS))
    rows = [[cell_text(r.get(k), 1 if k == "seconds" else 2) for k in keys] for r in records]
    classes = ["best" if r.get("epoch") == best_epoch else "" for r in records]
    skipped = "val_elbo" in seen and any("val_elbo" not in r for r in records)
    note = ('<p class="note">Nats per image; the highlighted row is the best epoch by validation '
            f"{SELECTED_BY[selection_key(records)]}, whose weights the run keeps"
            + ("; epochs with no validation numbers were not validated (train.validate_every)" if skipped else "")
            + ".</p>")
    return ("<h2>Training curve</h2>" + note
            + _table([CURVE_COLUMNS.get(k, k) for k in keys], rows, numeric=[True] * len(keys), row_classes=classes))


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, name + ".")
        else:
            items.append((name, value))
    return items


def _config_section(config: dict[str, Any]) -> str:
    rows = [[key, json.dumps(value) if not isinstance(value, str) else value] for key, value in _flatten(config)]
    return "<h2>Config</h2>" + _table(["key", "value"], rows)


def _figure_order(path: Path) -> tuple[int, str]:
    names = list(FIGURE_CAPTIONS)
    return (names.index(path.stem) if path.stem in names else len(names), path.name)


def _figures_section(run_dir: Path, notes: dict[str, str], skipped: dict[str, str], heading: str = "h2") -> str:
    parts = [f"<{heading}>Figures</{heading}>"]
    run = RunFolder(run_dir)
    folder, log, held = run.figures_dir, run.figure_log(), run.fingerprint()
    paths = sorted(folder.glob("*.png"), key=_figure_order) if folder.is_dir() else []
    left_out = dict(skipped)
    for path in paths:
        drawn_from = log.get(path.stem, {}).get("weights_sha256")
        if drawn_from and drawn_from != held:
            left_out[path.name] = "drawn from earlier weights of this run; left out (draw it again with vaelab figures)"
            continue
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            left_out[path.name] = "not a PNG file; left out"
            continue
        # Our captions are written for readers; the drawer's description covers figures we do not know.
        text = FIGURE_CAPTIONS.get(path.stem) or notes.get(path.stem, "")
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        dash = f" \u2014 {_e(text)}" if text else ""
        parts.append(f'<figure><img src="{uri}" alt="{_e(path.stem)}">'
                     f"<figcaption><b>{_e(path.name)}</b>{dash}</figcaption></figure>")
    if not paths:
        parts.append('<p class="note">No figures in this run folder.</p>')
    if left_out:
        items = "".join(f"<li><b>{_e(name)}</b>: {_e(note)}</li>" for name, note in left_out.items())
        parts.append(f'<p class="note">Not drawn:</p><ul class="note">{items}</ul>')
    return "".join(parts)


def render_report(run_dir: Path, config: dict[str, Any], summary: dict[str, Any], records: list[dict[str, Any]],
                  evaluation: tuple[Path, dict[str, Any]] | None, eval_note: str = "",
                  figure_notes: dict[str, str] | None = None, skipped: dict[str, str] | None = None,
                  disentanglement: tuple[Path, dict[str, Any]] | None = None) -> str:
    """The report page as text, from what was read out of the run folder (`disentanglement`: the current
    weights' scores, `RunFolder.current_disentanglement`)."""
    binarization = webpage.pixels_text(binarization_of(evaluation[1] if evaluation else None, summary, config),
                                    _channels(config))
    name = config.get("name") or run_dir.name
    body = "".join([
        _header(run_dir, config, summary, binarization),
        _metrics_section(evaluation, eval_note, summary, binarization),
        _disentanglement_section(disentanglement, dotted_get(config, "data.factor_names") or ()),
        _summary_section(summary, binarization),
        _curve_section(records, summary.get("best_epoch")),
        _figures_section(run_dir, figure_notes or {}, skipped or {}),
        _config_section(config),
    ])
    return _page(name, body)


def _page(name: str, body: str) -> str:
    return webpage.page(f"vaelab report: {name}", body, CSP, css=webpage.read_asset(__package__, "report.css"))


# ---------------------------------------------------------------- the two entry points

def _evaluate(run_dir: Path, k: int, progress: bool, **given: Any) -> tuple[tuple[Path, dict[str, Any]] | None, str]:
    """Run the importance-sampled evaluation; a refusal (e.g. a Bernoulli on grey pixels) becomes a note."""
    from .evaluate import EvaluationError, evaluate_run

    try:
        result = evaluate_run(run_dir, k=k, progress=progress, save=False, **given)
    except EvaluationError as err:
        return None, f"Not evaluated: {err}"
    return (RunFolder(run_dir).save_evaluation(result), result), ""


def _draw_figures(run_dir: Path, progress: bool, options: dict[str, Any], **given: Any
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """Draw every figure; (notes of the drawn ones, notes of the skipped ones) by figure name."""
    from .figures import make_figures

    notes, skipped = {}, {}
    for name, path, note in make_figures(run_dir, **given, **options):
        if path is None:
            skipped[name] = note or "skipped"
        else:
            notes[Path(path).stem] = note
        if progress:
            print(f"  {name}: skipped ({note})" if path is None else f"  {name}: {path}")
    return notes, skipped


def _stale_note(run: RunFolder) -> str:
    """A plain line about evaluations in the folder that describe weights it no longer holds."""
    stale = run.stale_evaluations()
    if not stale:
        return ""
    names = ", ".join(path.name for path, _ in stale)
    return (f"Not shown: {names}, which scored earlier weights of this run (before it was resumed, or "
            "while it was training) or does not say which weights it scored.")


# How a caller asks for a shorter evaluation, by where the report was asked for: the API's keywords
# or the command line's flags (`vaelab report` passes SHORTER_CLI).
SHORTER_API = ("samples={k}", "evaluate=False")
SHORTER_CLI = ("--samples {k}", "--no-evaluate")


def evaluating_line(k: int, shorter: tuple[str, str] = SHORTER_API) -> str:
    """That the report starts an evaluation of K samples (minutes at K = 5000), and how to make it shorter."""
    fewer = 1000 if k > 1000 else max(1, k // 5)
    hint = f"; shorter: {shorter[0].format(k=fewer)}, or {shorter[1]} to skip it" if k > 1 else ""
    return (f"evaluating the test set with K = {k} importance samples per image (the run's weights have "
            f"no evaluation yet{hint})")


def _find_evaluation(run: RunFolder, k: int, evaluate: bool, progress: bool, say: Any,
                     given: dict[str, Any], shorter: tuple[str, str] = SHORTER_API) -> tuple[tuple[Path, dict[str, Any]] | None, str]:
    """The current weights' evaluation (run one if there is none and `evaluate`) and a note on it."""
    evaluation, eval_note = run.current_evaluation(), ""
    if evaluation is not None:
        found_k = evaluation[1].get("k")
        say(f"using the evaluation in {evaluation[0].name}")
        if evaluate and isinstance(found_k, int) and found_k < k:
            eval_note = (f"The report evaluates only a run folder with no evaluation of its weights; to report "
                         f"K = {k} instead of K = {found_k}, evaluate with that K first.")
            say(f"  note: it has K = {found_k}, fewer than the K = {k} asked for; evaluate with K = {k} first "
                "to report that")
    elif evaluate:
        say(evaluating_line(k, shorter))
        evaluation, eval_note = _evaluate(run.path, k, progress, **given)
        if eval_note:
            say(f"  {eval_note}")
    else:
        eval_note = "No evaluation of the weights this run holds (evaluation was not asked for)."
        say("no evaluation of the run's weights in its folder; skipping it as asked")
    stale = _stale_note(run)
    return evaluation, " ".join(note for note in (eval_note, stale) if note)


def write_report(run_dir: str | Path, *, k: int = 5000, evaluate: bool = True, figures: bool = True,
                 progress: bool = True, data: Any = None, model: Any = None,
                 shorter: tuple[str, str] = SHORTER_API, **figure_options: Any) -> Path:
    """Write RUN_DIR/report.html (a sweep: SWEEP_DIR/report.html over its members) and return its path.

    Uses the test evaluation of the run's current weights with the largest K; with none and
    `evaluate`, runs one with `k` importance samples, saying so and how to ask for a shorter one
    (`shorter`: SHORTER_API or SHORTER_CLI). With `figures`, draws every figure first, with
    the run's [figures] settings overridden by `figure_options`. `data` (an ImageData) and `model`
    (as `load_run` returns it), when given, are used instead of loading them.
    """
    folder = open_folder(run_dir)
    if isinstance(folder, StudyFolder):
        return write_study_report(folder, k=k, evaluate=evaluate, figures=figures, progress=progress,
                                  shorter=shorter, **figure_options)
    if isinstance(folder, SweepFolder):
        return write_sweep_report(folder, k=k, evaluate=evaluate, figures=figures, progress=progress,
                                  shorter=shorter, **figure_options)
    run = folder
    given = {key: value for key, value in (("data", data), ("model", model)) if value is not None}
    say = print if progress else (lambda *args: None)
    say(f"writing the report of {run.path}")
    evaluation, eval_note = _find_evaluation(run, k, evaluate, progress, say, given, shorter)
    figure_notes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if figures:
        say("drawing figures")
        figure_notes, skipped = _draw_figures(run.path, progress, figure_options, **given)
    page = render_report(run.path, run.config_dict(), run.summary(), run.metrics(), evaluation, eval_note,
                         figure_notes, skipped, run.current_disentanglement())
    atomic_write_bytes(run.report_path, page.encode("utf-8"))
    say(f"wrote {run.report_path} ({len(page) / 1e6:.1f} MB)")
    return run.report_path


def write_sweep_report(sweep: SweepFolder, *, k: int = 5000, evaluate: bool = True, figures: bool = True,
                       progress: bool = True, shorter: tuple[str, str] = SHORTER_API, **figure_options: Any) -> Path:
    """SWEEP_DIR/report.html: the members compared in one table, then each member's figures.

    Each member also gets its own report.html, linked from the sweep's page.
    """
    members = [m for m in sweep.members() if m.exists]
    if not members:
        raise NotARunError(f"{sweep.path}: the sweep has no member runs yet; train it first")
    for member in members:
        write_report(member.path, k=k, evaluate=evaluate, figures=figures, progress=progress, shorter=shorter,
                     **figure_options)
    config = sweep.config().to_dict()
    parts = [f"<h1>{_e(config.get('name') or sweep.path.name)}: a sweep of {len(members)} runs</h1>",
             f'<p class="facts">Sweep folder <code>{_e(sweep.path.resolve())}</code></p>',
             "<h2>Members compared</h2>", compare_table([m.path for m in members], fmt="html"),
             '<p class="note">Test numbers are each from the evaluation of that member\'s current weights '
             "with the largest K (else from the end of training, summary.json).</p>"]
    for member in members:
        parts.append(f'<h2>{_e(member.path.name)} <a href="{_e(member.path.name)}/{REPORT}">(its report)</a></h2>')
        parts.append(_figures_section(member.path, {}, {}, heading="h3"))
    page = _page(config.get("name") or sweep.path.name, "".join(parts))
    path = sweep.path / REPORT
    atomic_write_bytes(path, page.encode("utf-8"))
    if progress:
        print(f"wrote {path} ({len(page) / 1e6:.1f} MB)")
    return path


# ---------------------------------------------------------------- a study (vaelab tune)

def write_study_report(study: StudyFolder, *, k: int = 5000, evaluate: bool = True, figures: bool = True,
                       progress: bool = True, shorter: tuple[str, str] = SHORTER_API, **figure_options: Any) -> Path:
    """STUDY_DIR/report.html: the trials' table, the optimization history and the parameters'
    importances (figures in STUDY_DIR/figures/), links to best.toml and to each completed trial's
    own report.html, which is written first."""
    from .comparison import compare_table, study_rows
    from .tuning import study_of, write_best

    rows = study_rows(study.path)
    optuna_study = study_of(study)
    completed = [row for row in rows if row["state"] == "complete" and row["run"]]
    for row in completed:
        write_report(row["run"], k=k, evaluate=evaluate, figures=figures, progress=progress, shorter=shorter,
                     **figure_options)
    best = write_best(study, optuna_study)
    config = study.config()
    table = compare_table(study.path, "html")  # after the trials' reports: their evaluations are in it
    links = "".join(f'<li><a href="{_e(Path(r["run"]).name)}/{REPORT}">trial {r["trial"]}</a></li>' for r in completed)
    best_line = (f'<p>The best trial\'s config: <a href="{_e(best.name)}">{_e(best.name)}</a> '
                 f"(<code>vaelab train --config {_e(best)}</code>)</p>" if best else
                 '<p class="note">No trial has completed yet: no best config.</p>')
    parts = [f"<h1>{_e(config.name)}: a study of {len(rows)} trials</h1>",
             f'<p class="facts">Study folder <code>{_e(study.path.resolve())}</code>; {_e(config.tune.sampler)} '
             f"sampler, {_e(config.tune.pruner)} pruner, metric {_e(config.tune.metric)} "
             f"({_e(optuna_study.direction.name.lower())})</p>", best_line,
             "<h2>Trials</h2>", table,
             _study_figures(study, optuna_study)]
    if links:
        parts.append(f"<h2>Completed trials' reports</h2><ul>{links}</ul>")
    page = _page(config.name, "".join(parts))
    path = study.path / REPORT
    atomic_write_bytes(path, page.encode("utf-8"))
    if progress:
        print(f"wrote {path} ({len(page) / 1e6:.1f} MB)")
    return path


def _study_figures(study: StudyFolder, optuna_study: Any) -> str:
    """The history and importance figures, drawn into STUDY_DIR/figures/, as a page section."""
    from .tuning import draw_history, draw_importances

    parts = ["<h2>Figures</h2>"]
    for name, draw, caption in (("history", draw_history, "Each completed trial's value (dots) and the best so far "
                                 "(line), by trial number."),
                                ("importances", draw_importances, "How much each searched value explains the "
                                 "metric (Optuna's fANOVA importance over the completed trials).")):
        path, note = draw(optuna_study, study.figures_dir / f"{name}.png")
        if path is None:
            parts.append(f'<p class="note">{_e(name)}: {_e(note)}</p>')
            continue
        uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption><b>{_e(path.name)}</b> '
                     f"\u2014 {_e(caption)}</figcaption></figure>")
    return "".join(parts)
