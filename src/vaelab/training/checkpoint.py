"""What a checkpoint holds, and how it maps onto the file's tensors and metadata and back.

The file is safetensors, written and read by `RunFolder.save_checkpoint` / `load_checkpoint`:
tensors, and metadata that are strings (JSON here), so loading one runs no pickle.

    model.<name>            the weights now
    best.<name>             the weights of the best validation ELBO so far
    optim.<index>.<key>     the optimizer's state tensors (Adam's moments, step counts)
    rng.current             the run's generator now
    rng.epoch_start         the generator when the epoch in progress began
    sums                    the epoch's summed elbo, reconstruction, KL and objective so far
    ema.<name>              the averaged weights and their count n_averaged (train.ema_decay > 0)
    adversary.model.<name>  factorvae: the discriminator's weights now
    adversary.optim.<i>.<k> factorvae: its optimizer's state tensors
    adversary.sums          factorvae: the epoch's summed TC estimates and classifications so far
    metadata "state"        `TrainState`, as JSON
    metadata "optimizer"    the optimizer's param groups and non-tensor state, as JSON
    metadata "schedule"     the learning-rate scheduler's state_dict (numbers only), as JSON
    metadata "adversary_optimizer"  factorvae: its optimizer's param groups and non-tensor state, as JSON

Checkpoints written before schedules and averages were kept have neither: they load with
`schedule` and `ema` None (the trainer then brings its schedule to the checkpoint's epoch).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TrainState:
    """Where training stands; with the tensors in the checkpoint, enough to resume exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # batches of `epoch` already done
    global_step: int = 0
    best_val_elbo: float = -math.inf  # of the kept weights
    best_val_bound: float = -math.inf  # of the kept weights, in a run kept by its IWAE bound (else -inf)
    best_epoch: int = -1
    epochs_since_best: int = 0
    finished: bool = False
    stop_reason: str = ""
    seconds: float = 0.0  # training time spent in `epoch` so far
    train_seconds: float = 0.0  # wall time of the whole run so far, summed over every resume
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient (train.nonfinite = "skip")
    planned_epochs: int = 0  # the run's length the schedule plans for; 0 = train.epochs (see Trainer.planned_epochs)
    first_epoch_seconds: float = 0.0  # under a time budget: the training seconds the first epoch took
    # torch's CPU threads when training (re)started: under train.threads = "start" the count decided
    # when the run started, which a resume keeps (the last bits depend on it); 0 = not recorded
    threads: int = 0
    init_sha256: str = ""  # train.init_from: the fingerprint of the weights the run started from

    def to_json(self) -> str:
        values = dict(self.__dict__)
        for key in _UNBOUNDED:  # JSON has no infinity
            values[key] = None if math.isinf(values[key]) else values[key]
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        values = json.loads(text)
        for key in _UNBOUNDED:  # a checkpoint from before best_val_bound has none: -inf, its default
            if values.get(key) is None:
                values[key] = -math.inf
        return cls(**values)


_UNBOUNDED = ("best_val_elbo", "best_val_bound")  # TrainState's fields that start at -inf


@dataclass
class Checkpoint:
    """Everything a run resumes from, as the trainer holds it."""

    state: TrainState
    weights: dict[str, torch.Tensor]
    best_weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # the optimizer's state_dict
    rng: torch.Tensor  # the generator's state now
    epoch_start_rng: torch.Tensor  # its state when the epoch began: a resumed epoch redraws its order from it
    sums: torch.Tensor
    schedule: dict[str, Any] | None = None  # the scheduler's state_dict
    ema: dict[str, torch.Tensor] | None = None  # the AveragedModel's state_dict
    adversary: dict[str, Any] | None = None  # factorvae.Adversary.state(): weights, optimizer, sums

    def contents(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The file's tensors and metadata."""
        optim_tensors, optim_meta = _optimizer_tensors(self.optimizer)
        tensors = {f"model.{k}": v for k, v in self.weights.items()}
        tensors |= {f"best.{k}": v for k, v in self.best_weights.items()}
        tensors |= optim_tensors
        tensors |= {"rng.current": self.rng, "rng.epoch_start": self.epoch_start_rng, "sums": self.sums}
        tensors |= {f"ema.{k}": v for k, v in (self.ema or {}).items()}
        meta = {"state": self.state.to_json(), "optimizer": optim_meta}
        if self.schedule is not None:
            meta["schedule"] = json.dumps(self.schedule)
        if self.adversary is not None:
            adversary_tensors, meta["adversary_optimizer"] = _adversary_tensors(self.adversary)
            tensors |= adversary_tensors
        return tensors, meta

    @classmethod
    def from_contents(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Checkpoint:
        """Back from the file's tensors and metadata; KeyError or ValueError if something is missing."""
        return cls(state=TrainState.from_json(meta["state"]),
                   weights={k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
                   best_weights={k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")},
                   optimizer=_optimizer_state(tensors, meta["optimizer"]),
                   rng=tensors["rng.current"], epoch_start_rng=tensors["rng.epoch_start"], sums=tensors["sums"],
                   schedule=json.loads(meta["schedule"]) if "schedule" in meta else None,
                   ema={k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")} or None,
                   adversary=_adversary_state(tensors, meta["adversary_optimizer"])
                   if "adversary_optimizer" in meta else None)


def _adversary_tensors(adversary: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The discriminator's weights, optimizer and sums as tensors under "adversary.", and its optimizer's JSON."""
    tensors, meta = _optimizer_tensors(adversary["optimizer"], prefix="adversary.optim.")
    tensors |= {f"adversary.model.{k}": v for k, v in adversary["weights"].items()}
    tensors["adversary.sums"] = adversary["sums"]
    return tensors, meta


def _adversary_state(tensors: dict[str, torch.Tensor], text: str) -> dict[str, Any]:
    """What `_adversary_tensors` split, back as factorvae.Adversary.state() gives it."""
    prefix = "adversary.model."
    return {"weights": {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)},
            "optimizer": _optimizer_state(tensors, text, prefix="adversary.optim."),
            "sums": tensors["adversary.sums"]}


def _optimizer_tensors(state: dict[str, Any], prefix: str = "optim.") -> tuple[dict[str, torch.Tensor], str]:
    """Split an optimizer state_dict into tensors (for safetensors, named `prefix`<index>.<key>) and the
    rest (JSON); no pickle."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, json.dumps({"param_groups": state["param_groups"], "scalars": scalars})


def _optimizer_state(tensors: dict[str, torch.Tensor], text: str, prefix: str = "optim.") -> dict[str, Any]:
    """The optimizer state_dict `_optimizer_tensors` split."""
    meta = json.loads(text)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            index, key = name.removeprefix(prefix).split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    # JSON turned tuples (Adam's betas) into lists; give optimizers back what they wrote.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}
