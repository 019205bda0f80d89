"""Training: the loop, early stopping, checkpoints that resume exactly.

The Trainer runs epochs of `step.TrainingStep`; `guard` decides what a NaN does and
`checkpoint` what a checkpoint holds. What it writes goes through the run folder's owner,
`runs.RunFolder`. All randomness (shuffling, binarization, reparameterization noise) comes
from one `torch.Generator` whose state is checkpointed, so a resumed run continues the same
stream.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import FINE_TUNE_MODEL_KEYS, RunConfig
from ..data.views import ImageData, ImageSet
from ..device import network_dtype, resolve_device
from ..contract import Model, device_of, latent_size, n_labels
from ..model import VAE, build_model
from ..usercode import names_object
from ..factorvae import Adversary
from ..objectives import OBJECTIVES, elbo, iwae_bound, validation_bound_k
from ..optimizers import OPTIMIZERS, build_optimizer, learning_rate, schedule_epochs  # noqa: F401  (re-exported)
from ..optimizers import build_schedule, step_schedule
from ..parallel import Parallel
from ..progress import count
from ..progress import progress as progress_bar
from ..runs import CHECKPOINT, SELECTED_BY, NotARunError, RunFolder, RunFolderError, readable_run
from ..threads import ThreadAdapter
from ..tracking import Tracker
from .checkpoint import Checkpoint, TrainState
from .guard import NonFiniteGuard
from .step import TrainingStep


# ---------------------------------------------------------------- evaluation used during training

@torch.no_grad()
def dataset_elbo(model: Model, images: ImageSet, batch_size: int, samples: int = 1, seed: int = 0,
                 parallel: Parallel | None = None, threads: ThreadAdapter | None = None,
                 bound_k: int = 0) -> dict[str, float]:
    """Mean ELBO, reconstruction and KL over a whole split, nats per image; with `bound_k` > 0 also
    "bound", the k-sample IWAE bound, from the same draws (the KL beside it is then the k-sample
    average of log q - log p, as an IWAE run's training terms are).

    The noise comes from a generator seeded with `seed`, so the same weights give the same number.
    Under torchrun each rank scores its share and the sums are added up. `threads`, if given, is
    ticked between batches.
    """
    parallel = parallel or Parallel()
    was_training = model.training
    model.eval()
    generator = torch.Generator(device_of(model)).manual_seed(seed + parallel.rank)
    sums = torch.zeros(4 if bound_k else 3, device=device_of(model))
    share = parallel.shard(len(images))
    for start in range(share.start, share.stop, batch_size):
        stop = min(start + batch_size, share.stop)
        index = slice(start, stop)
        x, y = images.batch(index, generator), images.labels[index] if n_labels(model) else None
        terms = iwae_bound(model, x, bound_k, generator, y) if bound_k else elbo(model, x, samples, generator, y)
        parts = [terms.elbo, terms.reconstruction, terms.kl] + ([terms.objective] if bound_k else [])
        sums += torch.stack([part.sum() for part in parts])
        if threads is not None:
            threads.tick()
    model.train(was_training)
    total = (parallel.sum_(sums).cpu() / len(images)).tolist()
    return dict(zip(("elbo", "reconstruction", "kl", "bound"), total))


# ---------------------------------------------------------------- the trainer

@dataclass
class Trainer:
    """Trains one run into its folder: epochs of optimizer steps, each followed by validation (every
    train.validate_every-th and the last), early stopping and a checkpoint from which a resumed run
    ends bit for bit like an uninterrupted one; at the end the best weights, scored on the test set."""

    config: RunConfig
    run_dir: Path
    data: ImageData
    progress: bool | None = None  # None: a bar when stderr is a terminal
    log: Any = field(default=print)
    parallel: Parallel = field(default_factory=Parallel)  # this process's rank under torchrun
    # called with each epoch's metrics record once its checkpoint is written; what it raises stops
    # training there (a tuning trial that is pruned)
    on_epoch: Any = None

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.device = resolve_device(self.config.train.device)
        if not self.parallel.is_main:
            self.log = lambda *args: None
            self.progress = False
        if self.progress is None:  # a bar on a terminal, a line every few seconds in a log
            self.progress = True
        self.init_sha256 = ""  # train.init_from: the fingerprint of the weights _new_model started from
        self.model = self._new_model()
        self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.optimizer = build_optimizer(self.model, self.config.optim, fused=True)
        # train.ema_decay: the weights validated, kept and evaluated are this average of the steps' weights
        decay = self.config.train.ema_decay
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None
        # `generator` orders the data (the same on every rank); `noise` binarizes and samples z.
        # In one process they are one stream, which is what makes a resumed run exact.
        self.generator = torch.Generator(self.device).manual_seed(self.config.train.seed)
        self.noise = (torch.Generator(self.device).manual_seed(self._rank_seed(0)) if self.parallel.active
                      else self.generator)
        self.epoch_start_rng = self.generator.get_state()
        self.sums = torch.zeros(4, device=self.device)  # elbo, reconstruction, kl, objective summed over the epoch
        self.state = TrainState(init_sha256=self.init_sha256)
        self.schedule = build_schedule(self.optimizer, self.config.optim, self.planned_epochs)  # asks the state
        self.network_dtype = network_dtype(self.config.train.precision, self.device)
        self.guard = NonFiniteGuard(self.config, list(self.model.parameters()), self.device, self.steps_per_epoch,
                                    self.folder, lambda: self.state)
        self.tracker = Tracker(self.config, self.run_dir, enabled=self.parallel.is_main)  # log.backends; rank 0 logs
        # The epoch's summed gradient norms and their count, only where a tracker will read them
        self.grad_norms = torch.zeros(2, device=self.device) if self.tracker.names else None
        self.adversary = self._new_adversary()  # factorvae's discriminator; None for other objectives
        self.step = TrainingStep(self.model, self.optimizer, self.config, self.parallel, self.guard, self.noise,
                                 self.kl_weight, self.sums, self.network_dtype, self.planned_steps(),
                                 lambda message: self.log(message),  # looked up each time: log may be replaced
                                 after_update=self._average, grad_norms=self.grad_norms,
                                 dataset_size=len(self.data.train), global_step=lambda: self.state.global_step,
                                 adversary=self.adversary)
        self.stop_requested = False  # set by the first Ctrl-C: stop after this step
        self._clock = time.perf_counter()  # when train_seconds was last brought up to date
        self._epoch_pixels: torch.Tensor | None = None  # the buffer each epoch's images are drawn into
        # torch's CPU threads: decided when fit() starts (before a compiled step is compiled), kept on resume
        self.threads = ThreadAdapter(self.config.train.threads)

    def _new_model(self) -> Model:
        """The model with its initial weights: drawn from train.seed, or train.init_from's."""
        if self.config.train.init_from and not self.folder.has_checkpoint():  # resuming: the checkpoint's weights
            return self._initialized_model()
        with torch.random.fork_rng(devices=[]):  # seeds the weight init without touching global state
            torch.manual_seed(self.config.train.seed)
            model = build_model(self.config.model, self.data.image_shape).to(self.device)
            # the user's own model, or a model object given in Python, which may be trained already
            # (vaelab.train(model=vaelab.load_run(...)) trains it further): nothing of the VAE's set-up applies
            if not isinstance(model, VAE) or names_object(self.config.model.custom):
                return model
            if self.config.model.pseudo_inputs:  # the VampPrior starts at random training images
                train = self.data.train
                index = torch.randint(len(train), (self.config.model.pseudo_inputs,))
                model.init_pseudo_inputs(train.probabilities(index).to(self.device))
        if self.config.model.output_bias == "data_mean":
            model.init_output_bias(self.data.train.mean_image())
        return model

    def _initialized_model(self) -> Model:
        """The model with train.init_from's kept weights, whose fingerprint state.init_sha256 records (a
        resumed run loads its checkpoint over them)."""
        source = self.config.train.init_from
        try:
            folder = readable_run(source)
        except NotARunError as err:
            raise RunFolderError(f"train.init_from: {err}") from None
        theirs, ours = folder.config().model.__dict__, self.config.model.__dict__
        differ = [key for key in ours if theirs.get(key) != ours[key] and key not in FINE_TUNE_MODEL_KEYS]
        if differ:
            key = differ[0]
            raise RunFolderError(f"train.init_from: {source} has another model (model.{key} = {theirs.get(key)!r}, "
                                 f"this run's {ours[key]!r}); its model section must be this run's")
        weights, digest, path = folder.weights()
        model = build_model(self.config.model, self.data.image_shape)
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            raise RunFolderError(f"train.init_from: {path}: weights do not fit the model ({err})") from None
        self.init_sha256 = digest
        return model.to(self.device)

    def _new_adversary(self) -> Adversary | None:
        """The discriminator an objective trains beside the model (factorvae), its init drawn from train.seed."""
        objective, cfg = self.config.objective, self.config.train
        if not getattr(OBJECTIVES[objective.name], "adversary", False):
            return None
        return Adversary(latent_size(self.model), objective.factorvae.discriminator_hidden,
                         objective.factorvae.discriminator_lr, self.device, cfg.seed,
                         self.parallel if self.parallel.active else None)

    @property
    def bound_k(self) -> int:
        """k of the IWAE bound validation keeps the weights by, or 0: by the ELBO (objectives.validation_bound_k)."""
        objective = self.config.objective
        return validation_bound_k(objective.name, objective.samples)

    @property
    def selection_key(self) -> str:
        """The metrics.jsonl key the kept weights, early stopping and a plateau schedule follow."""
        return "val_bound" if self.bound_k else "val_elbo"

    @property
    def folder(self) -> RunFolder:
        """The run folder, through which everything training writes goes."""
        return RunFolder(self.run_dir)

    @property
    def precision_name(self) -> str:
        """"bfloat16" or "float32": the dtype the networks multiply in during training steps."""
        return str(self.network_dtype or torch.float32).removeprefix("torch.")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.config.train.batch_size)

    @property
    def epochs(self) -> int:
        """The epochs the run trains: train.epochs, raised so that a small data set's short epochs
        still add up to train.min_steps optimizer steps (few steps learn nothing, however many epochs)."""
        cfg = self.config.train
        return max(cfg.epochs, math.ceil(cfg.min_steps / self.steps_per_epoch))

    def planned_steps(self) -> int:
        """Optimizer steps the whole run will take, if nothing stops it early."""
        cfg = self.config.train
        steps = self.epochs * self.steps_per_epoch
        return min(steps, cfg.max_steps) if cfg.max_steps else steps

    def epoch_limit(self) -> int:
        """The epochs the run trains (`epochs`), or fewer under train.max_steps."""
        cfg = self.config.train
        return min(self.epochs, math.ceil(cfg.max_steps / self.steps_per_epoch)) if cfg.max_steps else self.epochs

    def early_stop_due(self) -> bool:
        """Whether train.patience epochs have passed without a better validation ELBO, once
        train.min_steps steps have run (a small validation set is noisy; it may not stop a run early)."""
        cfg, state = self.config.train, self.state
        return bool(cfg.patience) and state.epochs_since_best >= cfg.patience and state.global_step >= cfg.min_steps

    def planned_epochs(self) -> int:
        """The run's length in epochs, as far as known: `epoch_limit`, or under a time budget what
        is left of the budget holds of epochs at the pace so far (`_plan_to_budget`)."""
        return self.state.planned_epochs or self.epoch_limit()

    def kl_weight(self) -> float:
        """beta, reached linearly over the warm-up epochs (counted in steps, so it resumes exactly)."""
        objective = self.config.objective
        if not objective.warmup_epochs:
            return objective.beta
        return objective.beta * min(1.0, self.state.global_step / (objective.warmup_epochs * self.steps_per_epoch))

    # -- checkpoints

    def _rank_seed(self, step: int) -> int:
        """The seed of this rank's noise from `step` on, under torchrun (where it is not checkpointed)."""
        return ((self.config.train.seed * 1_000_003 + self.parallel.rank) * 1_000_003 + step) % 2**63

    def save_checkpoint(self) -> None:
        """Write the checkpoint (rank 0), after making sure no NaN or infinity is in what it keeps."""
        self.guard.check()
        now = time.perf_counter()
        self.state.train_seconds += now - self._clock
        self._clock = now
        if not self.parallel.is_main:
            return
        checkpoint = Checkpoint(self.state, self.model.state_dict(), self.best_weights, self.optimizer.state_dict(),
                                self.generator.get_state(), self.epoch_start_rng, self.sums,
                                self.schedule.state_dict(), self.ema.state_dict() if self.ema else None,
                                self.adversary.state() if self.adversary else None)
        self.folder.save_checkpoint(*checkpoint.contents())

    def load_checkpoint(self) -> None:
        contents = self.folder.load_checkpoint()
        try:
            saved = Checkpoint.from_contents(*contents)
            self.model.load_state_dict(saved.weights)
            self.best_weights = {k: v.to(self.device) for k, v in saved.best_weights.items()}
            self.optimizer.load_state_dict(saved.optimizer)
            self.generator.set_state(saved.rng)
            self.epoch_start_rng = saved.epoch_start_rng
            # noise and sums are restored in place: the step holds them
            if self.parallel.active:  # other ranks' noise is not saved: reseed it from the step
                self.noise.manual_seed(self._rank_seed(saved.state.global_step))
            self.sums.copy_(saved.sums)
            self.state = saved.state
            self.threads.recorded = saved.state.threads  # train.threads = "start" resumes with this count
            self._restore_schedule(saved.schedule)
            if self.ema is not None:
                self.ema.load_state_dict(saved.ema if saved.ema is not None else {})
            if self.adversary is not None:
                if saved.adversary is None:
                    raise KeyError("no discriminator in it")
                self.adversary.load_state(saved.adversary)
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            path = self.folder.file(CHECKPOINT)
            raise RunFolderError(f"{path}: checkpoint does not match the run's config ({err})") from None
        self.folder.drop_metrics_after(self.state.epoch)

    def _restore_schedule(self, saved: dict[str, Any] | None) -> None:
        """The scheduler as checkpointed; a checkpoint from before they were kept is brought to its
        epoch by stepping (its schedules, constant and burda, depend on the epoch alone)."""
        if saved is not None:
            self.schedule.load_state_dict(saved)
            return
        for _ in range(self.state.epoch):
            step_schedule(self.schedule, math.nan)

    def reopen(self) -> bool:
        """Let a finished run train on when its config now allows it (more epochs, steps or patience).

        Returns whether it did.
        """
        state, cfg = self.state, self.config.train
        more = (state.epoch < self.epochs and not (cfg.max_steps and state.global_step >= cfg.max_steps)
                and not self.early_stop_due()
                and not (cfg.time_budget and state.train_seconds >= cfg.time_budget * 60))
        if state.finished and more:
            state.finished, state.stop_reason = False, ""
        return not state.finished

    def forget_partial_metrics(self) -> None:
        """Starting over in a folder whose run stopped before its first checkpoint."""
        self.folder.drop_metrics_after(0)

    # -- the loop

    def fit(self) -> dict[str, Any]:
        """Train until the epochs run out, early stopping triggers or max_steps is reached.

        Ctrl-C is deferred to the end of the current step, so the checkpoint it leaves is
        consistent; a second Ctrl-C interrupts at once.
        """
        self.model.train()
        if self.parallel.is_main and not self.folder.exists:  # a Trainer made from Python, not through the CLI
            self.folder.create(self.config)
        self.parallel.barrier()
        self.tracker.start(self)
        self._clock = time.perf_counter()
        with self.threads.active(), _flush_denormals():  # scoring the test set in finish() too
            self.state.threads = self.threads.count
            self.log(f"CPU threads: {self.threads.count} ({self.threads.reason})")
            with self.folder.lock(self.parallel.is_main), _deferred_sigint(self):
                while not self.state.finished and self.state.epoch < self.epochs:
                    self._end_epoch(stop_reason=self.train_epoch())
            if not self.state.finished:
                self.state.finished, self.state.stop_reason = True, f"completed {count(self.epochs, 'epoch')}"
                self.save_checkpoint()
            return self.finish()

    def train_epoch(self) -> str:
        """The optimizer steps of the current epoch (from where it stands), at the lr the schedule
        set; why the run stops if max_steps cut the epoch short or the time budget is spent, else ""."""
        cfg, state = self.config.train, self.state
        if hasattr(self.model, "start_epoch"):  # a schedule of the model's own (e.g. a Gumbel-softmax temperature)
            self.model.start_epoch(state.epoch)
        images = self._epoch_images()
        n_batches = math.ceil(len(images) / cfg.batch_size)
        bar = progress_bar(n_batches, f"epoch {state.epoch + 1}/{self.epochs}", "batch", enabled=self.progress,
                           initial=state.step_in_epoch)
        started = time.perf_counter() - state.seconds  # resumed mid-epoch, the epoch's clock goes on
        while state.step_in_epoch < n_batches:
            rows, batch_total = self._batch_rows(len(images))
            labels = images.labels[rows] if n_labels(self.model) else None
            self.step(images.batch(rows), labels, batch_total)
            state.step_in_epoch += 1
            state.global_step += 1
            state.seconds = time.perf_counter() - started
            self.threads.tick()
            bar.update()
            if self.stop_requested:
                bar.close()
                self.save_checkpoint()
                self.log(f"interrupted at epoch {state.epoch + 1}, step {state.step_in_epoch}; checkpoint "
                         f"saved. Continue with: vaelab train --resume {self.run_dir}")
                raise KeyboardInterrupt
            if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if cfg.max_steps and state.global_step >= cfg.max_steps:
                break
            if cfg.time_budget and self._elapsed() >= cfg.time_budget * 60:
                bar.close()
                return f"time budget of {cfg.time_budget:g} min spent"
        bar.close()
        return f"reached train.max_steps={cfg.max_steps}" if state.step_in_epoch < n_batches else ""

    def _elapsed(self) -> float:
        """Seconds of training so far, summed over resumes; under torchrun the ranks' mean, so that
        what they decide from it (stopping, the planned epochs) they decide together."""
        seconds = self.state.train_seconds + time.perf_counter() - self._clock
        if not self.parallel.active:
            return seconds
        total = self.parallel.sum_(torch.tensor([seconds], device=self.device))
        return total.item() / self.parallel.world

    def _average(self) -> None:
        """After each update of the weights: fold them into the moving average (train.ema_decay)."""
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def evaluated_model(self) -> Model:
        """The model whose weights are validated and kept: the moving average when train.ema_decay is on."""
        if self.ema is None:
            return self.model
        with torch.no_grad():  # the average is of parameters; buffers (a temperature) are the model's
            for mine, theirs in zip(self.ema.module.buffers(), self.model.buffers()):
                mine.copy_(theirs)
        return self.ema.module

    def _epoch_images(self) -> ImageSet:
        """This epoch's training images in order, drawn once (binarized, for a dynamic view).

        The permutation and the binarization are drawn at the start of the epoch; when resuming
        mid-epoch both are re-drawn from the epoch's starting RNG state, so they are the same.
        """
        n = len(self.data.train)
        resuming = self.state.step_in_epoch > 0
        if resuming:
            current = self.generator.get_state()
            self.generator.set_state(self.epoch_start_rng)
        else:
            self.epoch_start_rng = self.generator.get_state()
        order = torch.randperm(n, generator=self.generator, device=self.device)
        images = self.data.train.draw(order, self.noise, out=self._epoch_pixels)
        self._epoch_pixels = images.pixels  # last epoch's images are done with: the next draw reuses them
        if resuming:
            self.generator.set_state(current)
        return images

    def _batch_rows(self, n_images: int) -> tuple[slice, int]:
        """The rows of the epoch's images this rank steps on next, and the size of the whole batch."""
        size = self.config.train.batch_size
        start = self.state.step_in_epoch * size
        rows = slice(start, min(start + size, n_images))
        batch_total = rows.stop - rows.start
        if self.parallel.active:  # each rank its contiguous share; the gradients are summed over ranks
            share = self.parallel.shard(batch_total)
            rows = slice(start + share.start, start + share.stop)
        return rows, batch_total

    def restart_epoch(self) -> None:
        """Forget the epoch in progress without validating or checkpointing it (for benchmarks)."""
        self.state.step_in_epoch, self.state.seconds = 0, 0.0
        self.sums.zero_()
        if self.adversary is not None:
            self.adversary.sums.zero_()
        if self.grad_norms is not None:
            self.grad_norms.zero_()

    # -- the end of an epoch

    def _end_epoch(self, stop_reason: str) -> None:
        """Record and log the epoch, keep the best weights, move the schedule on, decide whether to
        stop (`stop_reason`: why train_epoch stopped the run, or ""), checkpoint."""
        cfg, state = self.config.train, self.state
        self.guard.check()
        validated = self.validation_due(stop_reason)
        record = self._epoch_record(validated)
        if self.parallel.is_main:
            self.folder.append_metrics(record)
            self.tracker.log_epoch(record)
        key = self.selection_key
        if validated and record[key] > getattr(state, f"best_{key}"):  # best_val_elbo or best_val_bound
            state.best_val_elbo, state.best_epoch, state.epochs_since_best = record["val_elbo"], state.epoch + 1, 0
            state.best_val_bound = record.get("val_bound", -math.inf)
            self.best_weights = {k: v.detach().clone() for k, v in self.evaluated_model().state_dict().items()}
        else:  # epochs, validated or not: train.patience counts epochs
            state.epochs_since_best += 1
        state.epoch += 1
        state.step_in_epoch, state.seconds = 0, 0.0
        self.sums.zero_()
        if self.adversary is not None:
            self.adversary.sums.zero_()
        if self.grad_norms is not None:
            self.grad_norms.zero_()
        self._plan_to_budget()
        # Per epoch, not per step: plateau needs a validation ELBO and burda counts epochs, and with
        # the lr fixed within an epoch a mid-epoch checkpoint holds no position inside the schedule.
        step_schedule(self.schedule, record.get(key))  # None: a plateau schedule waits for a validation
        if stop_reason:
            state.finished, state.stop_reason = True, stop_reason
        elif validated and self.early_stop_due():  # decided on a validation, never between two
            state.finished = True
            state.stop_reason = f"early stop: no better validation {SELECTED_BY[key]} for {count(cfg.patience, 'epoch')}"
        self._log_epoch(record)
        self.save_checkpoint()
        if self.on_epoch is not None:
            self.on_epoch(record)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        """The epoch's line: every epoch's in a run of up to 100, else about 100 evenly spaced, the
        first and the last (a small data set's many short epochs would print thousands of lines)."""
        if not self._epoch_line_due(record["epoch"]):
            return
        epoch = record["epoch"]
        val = (f"val ELBO {record['val_elbo']:9.3f} (rec {record['val_reconstruction']:9.3f}, "
               f"KL {record['val_kl']:7.3f})" if "val_elbo" in record else f"{'(not validated)':46s}")
        if "val_bound" in record:  # what an IWAE run keeps its weights by
            val += f"  val bound {record['val_bound']:9.3f}"
        self.log(f"epoch {epoch:3d}  train ELBO {record['train_elbo']:9.3f}  {val}  {record['seconds']:6.1f} s")

    def _epoch_line_due(self, epoch: int) -> bool:
        """Every epoch-th line of about 100, counted in epochs, or under a time budget in minutes: a
        budgeted run's epoch limit is a bound never reached, and spacing its lines by that limit
        left a 45-minute run silent after its first epoch."""
        now = time.monotonic()
        if epoch in (1, self.epoch_limit()) or self.state.finished:
            self._last_epoch_line = now
            return True
        budget = self.config.train.time_budget
        if budget:
            if now - getattr(self, "_last_epoch_line", 0.0) < budget * 60 / 100:
                return False
            self._last_epoch_line = now
            return True
        return epoch % math.ceil(self.epochs / 100) == 0

    def _plan_to_budget(self) -> None:
        """Under a time budget, after each epoch: plan for the epochs done plus as many as the rest
        of the budget holds at the pace so far, at most `epoch_limit`; warmup_cosine fits its cosine
        to that plan, so it ends at the low rate when the budget ends. The pace after the first
        epoch leaves that epoch out (it carries compiling), and averages over every later one, so a
        moment of load moves the plan, and the learning rate, only a little."""
        cfg, state = self.config.train, self.state
        if not cfg.time_budget or state.epoch < 1:
            return
        budget, elapsed = cfg.time_budget * 60, self._elapsed()
        if state.epoch == 1 or not state.first_epoch_seconds:
            state.first_epoch_seconds = elapsed / state.epoch
            fits = math.floor(budget / max(state.first_epoch_seconds, 1e-9))  # errs short: compiling inside
        else:
            pace = (elapsed - state.first_epoch_seconds) / (state.epoch - 1)
            fits = state.epoch + math.floor(max(0.0, budget - elapsed) / max(pace, 1e-9))
        state.planned_epochs = max(state.epoch, min(self.epoch_limit(), fits))

    def validation_due(self, stop_reason: str = "") -> bool:
        """Whether the epoch ending now is validated: every train.validate_every-th epoch, and the
        run's last, whether the epochs ran out or `stop_reason` (the time budget, max_steps) ended it,
        so the weights a run keeps are always chosen with its last epoch among them. Counted in
        epochs alone (not seconds), so a resumed run validates the same epochs as an uninterrupted one."""
        epoch = self.state.epoch + 1
        return epoch % self.config.train.validate_every == 0 or bool(stop_reason) or epoch >= self.epoch_limit()

    def _epoch_record(self, validated: bool = True) -> dict[str, Any]:
        """The epoch's line in metrics.jsonl: its training terms per image (as the weights moved), and,
        if `validated`, the validation ELBO of the weights it ended with (else no val_* keys)."""
        cfg, state = self.config.train, self.state
        elbo_sum, rec_sum, kl_sum, objective_sum = self.parallel.sum_(self.sums).tolist()
        count = min(state.step_in_epoch * cfg.batch_size, len(self.data.train))
        record = {
            "epoch": state.epoch + 1, "step": state.global_step,
            "train_elbo": elbo_sum / count, "train_reconstruction": rec_sum / count, "train_kl": kl_sum / count,
            "train_objective": objective_sum / count,
        }
        if validated:
            val = dataset_elbo(self.evaluated_model(), self.data.val, cfg.eval_batch_size,
                               self.config.objective.samples, seed=self.config.data.eval_seed,
                               parallel=self.parallel, threads=self.threads, bound_k=self.bound_k)
            record |= {"val_elbo": val["elbo"], "val_reconstruction": val["reconstruction"], "val_kl": val["kl"]}
            if "bound" in val:
                record["val_bound"] = val["bound"]
        if self.adversary is not None:  # factorvae: the TC estimate and how well its discriminator tells
            record |= self.adversary.record()
        record |= {"seconds": round(state.seconds, 3), "lr": self.optimizer.param_groups[0]["lr"]}
        if cfg.nonfinite == "skip":
            record["skipped_steps"] = state.skipped_steps
        return record

    # -- the end

    def finish(self) -> dict[str, Any]:
        """Keep the best weights, score them on the test set, write summary.json."""
        self.model.load_state_dict(self.best_weights)
        self.model.eval()
        weights_sha256 = self.folder.save_weights(self.model.state_dict()) if self.parallel.is_main else None
        if self.adversary is not None and self.parallel.is_main:
            self.folder.save_discriminator(self.adversary.discriminator.state_dict())
        cfg = self.config
        test = dataset_elbo(self.model, self.data.test, cfg.train.eval_batch_size, cfg.objective.samples,
                            seed=cfg.data.eval_seed, parallel=self.parallel, threads=self.threads,
                            bound_k=self.bound_k)
        summary = {
            "test_elbo": test["elbo"], "test_reconstruction": test["reconstruction"], "test_kl": test["kl"],
            "best_val_elbo": self.state.best_val_elbo, "best_epoch": self.state.best_epoch,
            "selected_by": f"validation {SELECTED_BY[self.selection_key]}"
                           + (f" (k = {self.bound_k})" if self.bound_k else ""),
            "epochs_run": self.state.epoch, "steps": self.state.global_step, "stop_reason": self.state.stop_reason,
            "train_seconds": round(self.state.train_seconds, 3), "weights_sha256": weights_sha256,
            "units": "nats per image (summed over pixels)", "binarization": cfg.data.binarization,
            "elbo_samples": cfg.objective.samples, "data_source": self.data.source,
            "device": str(self.device), "torch": torch.__version__,
            "network_precision": self.precision_name, **self.step.compile_status(),
            "threads": self.state.threads,  # torch's CPU threads (under "auto", the first decision)
            "weights": "ema" if self.ema is not None else "trained",  # train.ema_decay: the moving average
            "finished_at": datetime.now().isoformat(timespec="seconds"),
            # what a table of runs shows of a model it cannot read from the config (one of the user's own)
            "model": type(self.model).__name__, "latent_size": latent_size(self.model),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }
        if self.config.train.init_from:  # where it started: a fine-tuned model's provenance
            summary["init"] = {"from": self.config.train.init_from, "weights_sha256": self.state.init_sha256}
        if self.bound_k:  # an IWAE run: the bound it maximized and kept its weights by
            summary |= {"test_bound": test["bound"], "best_val_bound": self.state.best_val_bound,
                        "bound_k": self.bound_k}
        summary["processes"] = self.parallel.world
        if self.parallel.is_main:
            self.folder.write_summary(summary)
        self.tracker.log_summary(summary)
        return summary


@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    """Within the block, a CPU rounds numbers below float32's normal range (~1e-38) to zero.

    Gradients through a softmax over many options (a VampPrior's 500 components, most of them
    far from a given z) are full of such numbers, and CPUs compute with them many times slower;
    as zeros they change nothing that a float32 sum of normal numbers would keep.
    """
    saved = torch.set_flush_denormal(True)  # returns whether this CPU can; then it is set
    try:
        yield
    finally:
        if saved:
            torch.set_flush_denormal(False)


@contextlib.contextmanager
def _deferred_sigint(trainer: Trainer) -> Iterator[None]:
    """While training, the first SIGINT asks the trainer to stop after its current step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        if trainer.parallel.is_main:
            print("\nstopping after this step and saving a checkpoint (Ctrl-C again stops at once)",
                  file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
