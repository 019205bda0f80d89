"""The facts and the one JSON of benchmarks/gpu.sh: the machine it ran on, then every section's numbers.

    python benchmarks/gpu_summary.py env OUT_DIR        # writes OUT_DIR/env.json, prints it
    python benchmarks/gpu_summary.py summary OUT_DIR    # writes OUT_DIR/gpu.json from what the sections left

`summary` reads only files: the sections' --json outputs, the preset runs' folders and
sections.tsv (name, exit status, seconds, limit of each section, as gpu.sh recorded them).
Whatever a section did not leave is null, with the section's status saying why (failed,
timed out, skipped), so a run that went wrong halfway still reports what it measured.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

# The goals for a GPU: vaelab >= 20x the PyTorch example and <= 0.2 s an epoch.
GOAL_SPEEDUP, GOAL_SECONDS = 20.0, 0.2
# vaelab's dependencies (pyproject.toml) and the build backend an editable install needs: the
# lent machine cannot install anything, so which of these it lacks says what a section will miss.
MODULES = ("torch", "numpy", "matplotlib", "safetensors", "tqdm", "PIL", "setuptools")


def environment(out: Path) -> dict[str, Any]:
    """What the machine offers: Python, torch and its CUDA, the GPU, vaelab and its dependencies, MNIST."""
    facts: dict[str, Any] = {"python": sys.version.split()[0], "machine": platform.machine(),
                             "platform": platform.platform(), "modules": {}}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            facts["modules"][name] = getattr(module, "__version__", "present")
        except Exception as exc:  # noqa: BLE001 -- any failure to import is the fact to record
            facts["modules"][name] = None
            facts.setdefault("import_errors", {})[name] = f"{type(exc).__name__}: {exc}"
    try:
        import torch

        facts |= {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads(),
                  "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            facts |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                      "gpu_capability": f"{props.major}.{props.minor}", "gpu_count": torch.cuda.device_count()}
    except Exception as exc:  # noqa: BLE001
        facts["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import vaelab
        from vaelab.data import load_dataset

        facts["vaelab"] = vaelab.__file__
        started = time.perf_counter()
        raw = load_dataset("mnist", progress=False, mirrors=[], use_pypi=False)  # no network: local sources only
        facts["mnist"] = {"source": raw.source, "seconds": round(time.perf_counter() - started, 2)}
    except Exception as exc:  # noqa: BLE001
        facts["vaelab_error"] = f"{type(exc).__name__}: {exc}"
    (out / "env.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def read_json(path: Path) -> Any:
    """A section's JSON; None when it is missing or unreadable (the section failed before writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sections(out: Path) -> dict[str, dict[str, Any]]:
    """sections.tsv as {name: {rc, seconds, limit_s, status}}."""
    table = {}
    try:
        lines = (out / "sections.tsv").read_text().splitlines()
    except OSError:
        return table
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        name, rc, seconds, limit = fields
        rc_value = int(rc) if rc.lstrip("-").isdigit() else None
        status = {0: "ok", 124: "timed out", 137: "killed after timing out", None: rc}.get(rc_value, "failed")
        table[name] = {"rc": rc_value, "seconds": int(seconds), "limit_s": int(limit), "status": status}
    return table


def train_speed(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """One train_speed.py run: its JSON, with vaelab's best contender against the goals."""
    if result is None:
        return None
    vaelab_times = {name: s for name, s in result["seconds_per_epoch"].items() if name != "example"}
    best = min(vaelab_times, key=vaelab_times.get)
    seconds = vaelab_times[best]
    speedup = result["seconds_per_epoch"]["example"] / seconds
    scale = 60000 / result["train_images"]  # a smoke run on fewer images: the goal is for the full epoch
    return result | {"best": {"contender": best, "seconds_per_epoch": seconds, "speedup_over_example": speedup,
                              "meets_goal": speedup >= GOAL_SPEEDUP and seconds * scale <= GOAL_SECONDS}}


def preset(out: Path) -> dict[str, Any] | None:
    """The preset trained for a fixed time: how far it got, and its test evaluation."""
    run = out / "runs" / "preset"
    plan = read_json(out / "preset_plan.json")
    if plan is None and not run.exists():
        return None
    epochs = []
    try:
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        pass
    evaluation = read_json(out / "preset_eval.json")
    found: dict[str, Any] = {"run": str(run), **(plan or {}), "epochs_completed": len(epochs),
                             "steps": epochs[-1]["step"] if epochs else 0,
                             "train_seconds_in_epochs": round(sum(e["seconds"] for e in epochs), 1),
                             # epochs left unvalidated (train.validate_every) have no val_elbo
                             "last_val_elbo": next((e["val_elbo"] for e in reversed(epochs) if "val_elbo" in e),
                                                   None),
                             "best_val_elbo": max((e["val_elbo"] for e in epochs if "val_elbo" in e), default=None)}
    if evaluation:
        found["test"] = evaluation_facts(evaluation)
    return found


def evaluation_facts(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {key: evaluation.get(key) for key in ("split", "nll", "nll_stderr", "elbo", "reconstruction", "kl", "k",
                                                  "n", "active_units", "seconds", "device", "binarization")}


# The long presets gpu.sh trains for fixed minutes: its section name -> the preset.
LONG_PRESETS = {"burda": "mnist-burda-vae", "vampprior": "mnist-vampprior", "vampprior10": "mnist-vampprior-10min"}


def long_preset(out: Path, name: str) -> dict[str, Any] | None:
    """A long preset trained for fixed minutes through its time budget: its plan, how its training
    ended (summary.json) and its K = 5000 test evaluation; None when it was not selected."""
    plan = read_json(out / f"{name}_plan.json")
    if plan is None:
        return None
    run = out / "runs" / name
    summary = read_json(run / "summary.json") or {}
    evaluation = read_json(out / f"{name}_eval.json")
    found: dict[str, Any] = {"run": str(run), **plan, "finished": bool(summary)}
    found |= {key: summary.get(key) for key in ("epochs_run", "steps", "train_seconds", "stop_reason", "best_epoch",
                                                 "best_val_elbo", "test_elbo", "weights_sha256",
                                                 "network_precision", "compiled_step")}
    found["test"] = evaluation_facts(evaluation) if evaluation else None
    return found


def summary(out: Path, dry_run: bool) -> dict[str, Any]:
    speed = {name: train_speed(read_json(out / f"train_speed_{name}.json")) for name in ("eager", "compiled")}
    met = [s["best"] for s in speed.values() if s]
    preset_result = preset(out)
    test = (preset_result or {}).get("test") or {}
    full_set = ({"split": test["split"], "images": test["n"], "k": test["k"], "seconds": test["seconds"],
                 "images_per_s": test["n"] / test["seconds"]} if test.get("seconds") else None)
    result = {
        "schema": 1, "dry_run": dry_run, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sections": sections(out),
        "environment": read_json(out / "env.json"),
        "train_speed": {
            **speed,
            "goal": {"speedup_over_example_at_least": GOAL_SPEEDUP, "seconds_per_epoch_at_most": GOAL_SECONDS,
                     # a dry run times a CPU on a few images: no verdict on a GPU goal
                     "met": any(b["meets_goal"] for b in met) if met and not dry_run else None},
        },
        "nll_throughput": {"preset_evaluation": full_set, "loop_vs_batched": read_json(out / "nll_speed.json")},
        "preset": preset_result,
        "long_presets": {name: long_preset(out, name) for name in LONG_PRESETS},
        "selected": _selected(out),
    }
    (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _selected(out: Path) -> list[str] | None:
    """The sections GPU_SECTIONS selected, as gpu.sh wrote them down."""
    try:
        return (out / "selected_sections.txt").read_text().split()
    except OSError:
        return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("env", "summary"):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if argv[0] == "env":
        print(json.dumps(environment(out), indent=2))
    else:
        result = summary(out, dry_run="--dry-run" in argv[2:])
        print(json.dumps({"sections": result["sections"], "goal met": result["train_speed"]["goal"]["met"],
                          "preset test": (result["preset"] or {}).get("test"),
                          "long presets' test": {name: (found or {}).get("test")
                                                 for name, found in result["long_presets"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
