"""Trained models shipped in the package: their cards, the list of them, and how one is built.

A shipped model is a trimmed, read-only run folder, src/vaelab/pretrained/NAME/ (`runs.SHIPPED_ROOT`;
the file names are `runs.SHIPPED_FILES`): the best weights (no checkpoint), the run's config,
summary and metrics, its test evaluation, and a model card (card.json, card.md). `pretrained:NAME`
names it wherever a run folder is taken (see `runs.shipped_run`, `runs.working_copy`).

The card's "check" ties it to its weights: the NLL and ELBO at a small K on a fixed slice of the
test set with a fixed seed, computed when the card was built from the weights shipped. Scoring it
again (`score_check`) must give the same numbers up to float rounding; tests/test_pretrained.py
does so for every card, within `tolerance_nats`.

`ship` builds a shipped folder from a finished run (benchmarks/ship_pretrained.py is its command line).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import VaelabError
from .runs import (CARD, CARD_TEXT, PRETRAINED, SHIPPED_ROOT, SUMMARY, WEIGHTS, RunFolder, evaluation_name,
                   read_card, shipped_files, shipped_names, shipped_run)
from .storage import atomic_write_bytes, load_tensors, write_json

# The check every card carries: K importance samples on test images [start, stop), drawn with seed,
# in chunks of memory_mb (which fixes how the random draws fall, so the same numbers come back).
CHECK = {"k": 100, "start": 0, "stop": 1000, "seed": 0, "memory_mb": 64.0}
TOLERANCE_SE = 3  # the check must come back within this many of its standard errors
HALF_DTYPES = ("float16", "bfloat16")
MAX_HALF_SHIFT = 0.1  # nats: half-precision weights ship only where the test NLL moves less than this


class ShipError(VaelabError, ValueError):
    """A run that cannot be shipped as asked; the message says why."""


# ---------------------------------------------------------------- reading the shipped models

def pretrained(name: str | None = None) -> list[dict[str, Any]] | dict[str, Any]:
    """The cards of the trained models shipped in the package (card.json each), sorted by name; with
    `name`, that model's card. Open one with `vaelab.open_run("pretrained:NAME")` or load its model
    with `vaelab.load_run("pretrained:NAME")`."""
    if name is not None:
        return read_card(shipped_run(name))
    return [read_card(shipped_run(n)) for n in shipped_names()]


def folder_bytes(folder: RunFolder) -> int:
    """What a shipped model adds to the package: the bytes of its files."""
    return sum(path.stat().st_size for path in shipped_files(folder))


def listing() -> str:
    """`vaelab pretrained`: a line per shipped model (name, test NLL +- s.e. with K, minutes, size, description)."""
    names = shipped_names()
    if not names:
        return f"no trained models are shipped in this install ({SHIPPED_ROOT} holds none)\n"
    width = max(20, *map(len, names))  # the name column as wide as the longest name
    lines = [f"{'name':{width}s} {'test NLL (nats)':>24s} {'minutes':>8s} {'size':>8s}  description"]
    for name in names:
        folder = shipped_run(name)
        card = read_card(folder)
        test = card.get("test", {})
        nll = f"{test.get('nll', float('nan')):.2f} \u00b1 {test.get('nll_stderr', float('nan')):.2f}, K={test.get('k')}"
        minutes = card.get("training", {}).get("minutes", float("nan"))
        size = f"{folder_bytes(folder) / 2**20:.1f} MB"
        lines.append(f"{name:{width}s} {nll:>24s} {minutes:8.1f} {size:>8s}  {card.get('description', '')}")
    lines.append(f"open one: vaelab explore {PRETRAINED}NAME, or `vaelab pretrained NAME` for its card")
    return "\n".join(lines) + "\n"


def card_text(card: dict[str, Any]) -> str:
    """The card for people (card.md): every fact of card.json, in sentences and a table."""
    test, check, training = card["test"], card["check"], card["training"]
    machine, software, data = card["machine"], card["software"], card["data"]
    seed = data.get("test_binarization_seed")
    given = " (of x given its label)" if data.get("conditional_on_labels") else ""
    binarized = (f"{data['binarization']} binarization; test images binarized once with seed {seed}"
                 if seed is not None else f"{data['binarization']} binarization")
    commit = software.get("commit") or "unknown"
    return "\n".join([
        f"# {PRETRAINED}{card['name']}",
        "",
        card.get("description", ""),
        "",
        f"Trained with `{card['command']}`: {training['minutes']:.1f} minutes, {training['epochs']} epochs "
        f"(weights of epoch {training['best_epoch']} kept; stopped: {training['stop_reason']}), on "
        f"{machine['cpu']} with {machine['threads']} thread(s) ({machine['device']}), torch {software['torch']}, "
        f"vaelab {software['vaelab']} (commit {commit}).{_started_from(training)}",
        "",
        "| | nats per image |",
        "|---|---|",
        f"| data | {data['name']}, {binarized} |",
        f"| test ELBO | {test['elbo']:.2f} |",
        f"| test NLL{given} | {test['nll']:.2f} \u00b1 {test['nll_stderr']:.2f} (K = {test['k']}, {test['n']} images, "
        f"seed {test['seed']}) |",
        f"| check: NLL | {check['nll']:.2f} \u00b1 {check['nll_stderr']:.2f} (K = {check['k']}, test images "
        f"{check['start']}-{check['stop'] - 1}, seed {check['seed']}) |",
        f"| check: ELBO | {check['elbo']:.2f} |",
        "",
        f"{card['parameters']:,} parameters, shipped as {card['dtype']} ({card['weights_bytes'] / 2**20:.2f} MB); "
        f"weights' SHA-256 `{card['weights_sha256']}` (`sha256sum {WEIGHTS}`).",
        "",
        f"The check is scored again from these weights by tests/test_pretrained.py and must come back "
        f"within {check['tolerance_nats']:.2f} nats ({TOLERANCE_SE} standard errors).",
        "",
    ])


def _started_from(training: dict[str, Any]) -> str:
    """The sentence saying which weights a fine-tuned model started from (train.init_from), or ""."""
    init = training.get("init")
    if not init:
        return ""
    return (f" It started from the kept weights of `{init['from']}` (SHA-256 `{init['weights_sha256']}`), not a "
            "random draw: the minutes that trained those come on top of these.")


# ---------------------------------------------------------------- the check

def score_check(run_dir: str | Path, check: dict[str, Any], raw: Any = None, data_dir: str | None = None
                ) -> dict[str, Any]:
    """Score the card's check again from a folder's weights: {"nll", "nll_stderr", "elbo", ...} of
    `evaluate_images` with K = check["k"] on test images [check["start"], check["stop"]) with
    check["seed"] and check["memory_mb"]. `raw`: the data set, if already loaded (else the run's data
    config finds it, as `vaelab evaluate` does)."""
    from .data import load_data
    from .data.views import make_views
    from .evaluate import evaluate_images
    from .runs import load_run

    model = load_run(run_dir)
    config = model.run_config
    if raw is None:
        raw = load_data(config.data, data_dir, progress=False)
    test = make_views(raw, config.data).test
    part = slice(check["start"], check["stop"])
    if check["stop"] > len(test):
        raise ShipError(f"the check asks for test images up to {check['stop']}, the test split has {len(test)}")
    images = dataclasses.replace(test, pixels=test.pixels[part], labels=test.labels[part], _uncertain=None)
    return evaluate_images(model, images, check["k"], check["seed"], check["memory_mb"], threads=1)


# ---------------------------------------------------------------- building a shipped folder

def ship(run_dir: str | Path, name: str, *, command: str, machine: dict[str, Any], software: dict[str, Any],
         samples: int | None = None, half: str | None = None, root: str | Path = SHIPPED_ROOT, raw: Any = None,
         check: dict[str, Any] | None = None, log: Any = print) -> dict[str, Any]:
    """Write the shipped folder ROOT/NAME of a finished run and return its card.

    The run's test evaluation of its current weights with the largest K is shipped; with none,
    `samples` (K) scores one now (on all test images; the run folder is not written). `half`
    ("float16" or "bfloat16") ships the weights in that dtype, scored again at the same K, and only
    if the test NLL moves less than MAX_HALF_SHIFT nats. The folder is built beside its place,
    checked (fingerprint, check scored again), then renamed into place, replacing an older one.
    """
    source = RunFolder(run_dir).check()
    if not source.file(WEIGHTS).is_file() or not source.file(SUMMARY).is_file():
        raise ShipError(f"{source.path}: not a finished run (it has no {WEIGHTS} or {SUMMARY})")
    if half is not None and half not in HALF_DTYPES:
        raise ShipError(f"--half: {half!r} is not one of {', '.join(HALF_DTYPES)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the package's files are everyone's to read
    try:
        folder = RunFolder(staging)
        evaluation = _test_evaluation(source, samples, raw, log)
        for path in (source.file(n) for n in ("config.json", "metrics.jsonl", SUMMARY, WEIGHTS)):
            shutil.copyfile(path, staging / path.name)
        write_json(folder.file(evaluation_name("test", evaluation["k"])), evaluation)
        if half is not None:
            evaluation = _halve(folder, half, evaluation, raw, log)
        log(f"scoring the check (K = {(check or CHECK)['k']} on test images "
            f"{(check or CHECK)['start']}-{(check or CHECK)['stop'] - 1})")
        card = _card(folder, name, command, machine, software, evaluation, check or CHECK, raw)
        write_json(folder.file(CARD), card)
        atomic_write_bytes(folder.file(CARD_TEXT), card_text(card).encode("utf-8"))
        _verify(folder, card, raw)
        _publish(staging, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card


def _test_evaluation(source: RunFolder, samples: int | None, raw: Any, log: Any) -> dict[str, Any]:
    """The run's test evaluation of its current weights with the largest K, or one scored now with `samples`."""
    from .evaluate import evaluate_run

    found = source.current_evaluation("test")
    if found is not None and (samples is None or found[1]["k"] >= samples):
        log(f"test evaluation: {found[0]}")
        return found[1]
    if samples is None:
        raise ShipError(f"{source.path}: no test evaluation of its current weights; give --samples 5000 to score "
                        f"one (or run vaelab evaluate {source.path} first)")
    log(f"scoring the test NLL with K = {samples} (the run folder is not written)")
    return evaluate_run(source.path, "test", samples, 0, progress=True, data=_views(source, raw), save=False)


def _views(folder: RunFolder, raw: Any) -> Any:
    """The run's data views when `raw` is given, else None (the evaluation loads them)."""
    if raw is None:
        return None
    from .data.views import make_views

    return make_views(raw, folder.config().data)


def _halve(folder: RunFolder, dtype: str, evaluation: dict[str, Any], raw: Any, log: Any) -> dict[str, Any]:
    """Rewrite the folder's weights in `dtype` and score them again at the evaluation's K; refuse a
    conversion that moves the test NLL by MAX_HALF_SHIFT nats or more."""
    import torch

    from .evaluate import evaluate_run
    from .storage import read_json

    tensors, _ = load_tensors(folder.file(WEIGHTS))
    halved = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in tensors.items()}
    digest = folder.save_weights(halved)
    log(f"scoring the {dtype} weights again with K = {evaluation['k']}")
    again = evaluate_run(folder.path, "test", evaluation["k"], evaluation.get("seed", 0), progress=True,
                         data=_views(folder, raw), save=False)
    shift = again["nll"] - evaluation["nll"]
    if not abs(shift) < MAX_HALF_SHIFT:
        raise ShipError(f"--half {dtype}: the test NLL moves by {shift:+.3f} nats (limit {MAX_HALF_SHIFT}); "
                        "ship float32")
    log(f"{dtype} weights: test NLL {again['nll']:.3f} ({shift:+.3f} nats from float32)")
    summary = read_json(folder.file(SUMMARY))
    summary |= {"weights_sha256": digest, "converted_from_sha256": summary.get("weights_sha256"), "dtype": dtype}
    write_json(folder.file(SUMMARY), summary)
    folder.file(evaluation_name("test", evaluation["k"])).unlink()
    write_json(folder.file(evaluation_name("test", again["k"])), again)
    return again


def _card(folder: RunFolder, name: str, command: str, machine: dict[str, Any], software: dict[str, Any],
          evaluation: dict[str, Any], check: dict[str, Any], raw: Any) -> dict[str, Any]:
    """card.json of a staged folder: how it was trained, its test numbers, its check, its fingerprint."""
    from .data.views import binarization_seed
    from .storage import read_json

    from .contract import n_labels
    from .runs import load_run

    config, summary = folder.config(), read_json(folder.file(SUMMARY))
    labels = n_labels(load_run(folder.path))  # a conditional model's NLL is -log p(x|y), given the label
    tensors, _ = load_tensors(folder.file(WEIGHTS))
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()})
    scored = score_check(folder.path, check, raw)
    return {
        "name": name, "description": config.description, "preset": config.name, "command": command,
        "training": {"minutes": round(summary["train_seconds"] / 60, 1), "epochs": summary["epochs_run"],
                     "best_epoch": summary.get("best_epoch"), "steps": summary.get("steps"),
                     "stop_reason": summary.get("stop_reason"), "finished_at": summary.get("finished_at")}
                    | ({"init": summary["init"]} if summary.get("init") else {}),  # train.init_from: where it started
        "machine": machine | {"threads": summary.get("threads"), "device": summary.get("device")},
        "software": {"torch": summary.get("torch")} | software,
        "data": {"name": config.data.name, "binarization": config.data.binarization,
                 "test_binarization_seed": binarization_seed(config.data, "test"), "conditional_on_labels": labels > 0},
        "parameters": summary.get("parameters") or sum(t.numel() for t in tensors.values()),
        "weights_sha256": folder.fingerprint(), "dtype": "/".join(dtypes),
        "weights_bytes": folder.file(WEIGHTS).stat().st_size,
        "units": "nats per image (summed over pixels)",
        "test": {key: evaluation.get(key) for key in ("elbo", "reconstruction", "kl", "nll", "nll_stderr", "k", "n",
                                                      "seed", "active_units")}
                | {"evaluation": evaluation_name("test", evaluation["k"])},
        "check": check | {"nll": scored["nll"], "nll_stderr": scored["nll_stderr"], "elbo": scored["elbo"],
                          "tolerance_nats": TOLERANCE_SE * scored["nll_stderr"]},
    }


def _verify(folder: RunFolder, card: dict[str, Any], raw: Any) -> None:
    """Before the folder is published: its weights are the card's, its evaluation is current, its check comes back."""
    if folder.fingerprint() != card["weights_sha256"] or folder.current_evaluation("test") is None:
        raise ShipError(f"{folder.path}: the staged weights or evaluation do not match the card; nothing shipped")
    again = score_check(folder.path, card["check"], raw)
    if abs(again["nll"] - card["check"]["nll"]) > card["check"]["tolerance_nats"]:
        raise ShipError(f"the check does not come back: {again['nll']:.3f} against {card['check']['nll']:.3f}")


def _publish(staging: Path, target: Path) -> None:
    """Rename the staged folder onto `target`, replacing an older shipped folder of that name."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

