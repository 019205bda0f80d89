"""The training step: step(x, y, batch_total) -> loss, one optimizer step, however it runs.

`TrainingStep` chooses one of three ways to run it (train.compile, the optimizer, torchrun,
train.nonfinite) and hides the choice behind that one call:

- eager: the objective through autograd, then the optimizer;
- the objective compiled (`compiled.objective_step`): the objective and its backward in one
  graph, autograd and the optimizer as usual; any optimizer, and under torchrun;
- the whole Adam step compiled (`compiled.adam_step`): objective, gradient and Adam's update in
  one graph; Adam in one process, with train.nonfinite = "stop".

All three compute the batch's terms with `TrainingStep.terms` and the loss with `batch_loss`,
and add the same totals to the epoch's sums. A compiled step runs eagerly for a batch its graph
is not for (the short last batch), and for every batch once compiling has failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import RunConfig, toml_value
from ..contract import device_of, mixed_precision
from ..distributions import Noise
from ..factorvae import Adversary
from ..objectives import OBJECTIVES, TRAINING_CONTEXT, ObjectiveTerms
from ..parallel import Parallel
from .compiled import NoiseCompiled, adam_step, adam_supported, objective_step
from .guard import NonFiniteGuard

# On a CPU, runs of this many steps or more earn the compile back (benchmarks/compile_speed.py
# measures what compiling costs and what it saves a step); MNIST at batch 128 reaches it in 11 epochs.
AUTO_COMPILE_STEPS = 5_000


def compiles(setting: bool | str, device: torch.device, planned_steps: int, whole: bool) -> bool:
    """Whether training compiles its step (train.compile: true, false or "auto").

    "auto" compiles on a CPU where the whole step can be one graph (`whole`: Adam in one
    process) and the run is long enough to earn the compile back. Not on a GPU: there it is a
    choice (`train.compile = true`, `compile_mode = "reduce-overhead"` for CUDA graphs).
    """
    if setting == "auto":
        return device.type == "cpu" and whole and planned_steps >= AUTO_COMPILE_STEPS
    return bool(setting)


def whole_step_fits(optimizer: torch.optim.Optimizer, config: RunConfig, parallel: Parallel) -> bool:
    """Whether the whole step can be one graph: an Adam that `compiled.adam_update` reproduces,
    in one process (under torchrun the gradients are summed over ranks between backward and
    update), with train.nonfinite = "stop" (skipping decides between gradient and update too)."""
    return not parallel.active and config.train.nonfinite == "stop" and adam_supported(optimizer)


def batch_loss(terms: ObjectiveTerms, batch_total: int) -> torch.Tensor:
    """What the optimizer minimizes: -objective over this rank's share, divided by the whole
    batch's size, so that the gradients summed over ranks are those of the batch's mean."""
    return terms.objective.sum() * (-1.0 / batch_total)


class TrainingStep:
    """step(x, y, batch_total) -> loss: one optimizer step on x, this rank's share of a batch of
    `batch_total` images; `compiled` is the graph it runs (None: eager), `whole` whether that
    graph is the whole Adam step.

    The run's state it works on is updated in place by whoever restores it: `noise` (the
    generator that binarizes and samples z), `sums` ((4,): the epoch's summed elbo,
    reconstruction, KL and objective) and the optimizer's state; `kl_weight()` is the KL weight
    of the step in progress, `log` where the compile is reported, `after_update()` what follows
    every update of the weights (a skipped step has none), however the step ran.

    An objective that names `dataset_size` or `step` in its `needs` (objectives.TRAINING_CONTEXT)
    is given `dataset_size` (the training images) and `step` (a 0-d tensor holding `global_step()`,
    the optimizer steps before this one, refilled each step, so a compiled graph reads it as an
    input and does not recompile as it counts).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig,
                 parallel: Parallel, guard: NonFiniteGuard, noise: torch.Generator,
                 kl_weight: Callable[[], float], sums: torch.Tensor, network_dtype: torch.dtype | None,
                 planned_steps: int, log: Callable[[str], None],
                 after_update: Callable[[], None] = lambda: None, grad_norms: torch.Tensor | None = None,
                 dataset_size: int = 0, global_step: Callable[[], int] = lambda: 0,
                 adversary: Adversary | None = None) -> None:
        self.after_update = after_update
        # factorvae: the discriminator stepped after each update of the model, in eager steps only
        # (config refuses train.compile = true for it; "auto" leaves it eager)
        self.adversary = adversary
        self.grad_norms = grad_norms  # (2,): the epoch's summed gradient norms and their count, for the trackers
        self.model, self.optimizer, self.parallel, self.guard = model, optimizer, parallel, guard
        self.noise, self.kl_weight, self.sums, self.network_dtype, self.log = noise, kl_weight, sums, network_dtype, log
        self.objective, self.samples = OBJECTIVES[config.objective.name], config.objective.samples
        self.objective_args = config.objective.keywords()  # its config section's and objective.args
        self.global_step, self.step_count = global_step, torch.zeros((), device=device_of(model))
        context = {"dataset_size": dataset_size, "step": self.step_count}
        self.objective_args |= {k: context[k] for k in getattr(self.objective, "needs", ()) if k in TRAINING_CONTEXT}
        self.parameters = list(model.parameters())
        self.batch_size, self.compile_setting = config.train.batch_size, config.train.compile
        self.compiled: NoiseCompiled | None = None
        self.whole = False
        whole = whole_step_fits(optimizer, config, parallel)
        if adversary is None and compiles(config.train.compile, device_of(model), planned_steps, whole):
            mode, self.whole = config.train.compile_mode, whole
            self.compiled = (adam_step(self.terms, batch_loss, model, optimizer, sums, self._eager_whole, mode)
                             if whole else objective_step(self.terms, mode))

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None, batch_total: int) -> torch.Tensor:
        self.step_count.fill_(self.global_step())
        if self.compiled is None or batch_total != self.batch_size:  # a graph is for full batches
            return self.eager(x, y, batch_total, self.noise, self.kl_weight())
        if not self.whole:  # the objective compiled; autograd and the optimizer as in eager steps
            return self.eager(x, y, batch_total, self.noise, self.kl_weight(), self._run_compiled)
        # The update is done when the loss is read: a non-finite loss stops training as in
        # eager steps, keeping the last good checkpoint; the weights in memory are not saved.
        loss = self._run_compiled(x, y)
        self.guard.check_loss(loss)
        self.after_update()  # here for both the graph and its eager fallback (`_eager_whole`)
        return loss

    def terms(self, x: torch.Tensor, y: torch.Tensor | None, noise: Noise,
              kl_weight: float | torch.Tensor) -> ObjectiveTerms:
        """The objective's terms for the batch, the networks multiplying in the training precision."""
        with mixed_precision(self.model, self.network_dtype):
            extra = self.adversary.keywords() if self.adversary is not None else {}
            return self.objective(self.model, x, self.samples, noise, y, kl_weight, **self.objective_args, **extra)

    def eager(self, x: torch.Tensor, y: torch.Tensor | None, batch_total: int, noise: Noise, kl_weight: float,
              compiled_terms: Callable[..., ObjectiveTerms] | None = None, follow: bool = True) -> torch.Tensor:
        """The step through autograd and the optimizer; the terms from `compiled_terms(x, y)` if given;
        `after_update` follows it if `follow`."""
        terms = self.terms(x, y, noise, kl_weight) if compiled_terms is None else compiled_terms(x, y)
        loss = batch_loss(terms, batch_total)
        for parameter in self.parameters:
            parameter.grad = None
        loss.backward()
        self.parallel.sum_gradients(self.parameters)
        if self.guard.skips(loss):
            return loss
        if self.grad_norms is not None and not self.whole:  # the whole Adam graph keeps no gradients: no norms at all
            grads = [p.grad for p in self.parameters if p.grad is not None]
            self.grad_norms += torch.stack((torch.nn.utils.get_total_norm(grads, foreach=True).float(),
                                            torch.ones((), device=loss.device)))  # on the device: read once an epoch
        self.optimizer.step()
        if self.adversary is not None:  # its codes were drawn before the update, as in Kim & Mnih's Algorithm 2
            self.adversary.step(terms.z, terms.tc, noise, batch_total)
        if follow:
            self.after_update()
        with torch.no_grad():  # summed on the device; read once per epoch
            self.sums += terms.totals()
        return loss

    def _eager_whole(self, x: torch.Tensor, y: torch.Tensor | None, noise: Noise, kl_weight: float) -> torch.Tensor:
        """The whole step eagerly, where its graph cannot run (one process: x is the whole batch)."""
        return self.eager(x, y, len(x), noise, kl_weight, follow=False)

    def _run_compiled(self, x: torch.Tensor, y: torch.Tensor | None) -> Any:
        """The graph's call (the objective's terms, or the loss after a whole update), reporting the compile."""
        compiled = self.compiled
        compiling = not compiled.settled
        if compiling:
            self.log(f"compiling the training step (train.compile = {toml_value(self.compile_setting)}; "
                     "about 20 s on 2 CPU cores the first time, seconds once torch has cached it)")
        out = compiled(x, y, self.noise, self.kl_weight())
        if compiling and compiled.settled:
            self.log(f"compiled the training step in {compiled.compile_seconds:.1f} s" if compiled.error is None
                     else f"could not compile the training step ({compiled.error}); training without")
        return out

    def compile_status(self) -> dict[str, Any]:
        """For summary.json: whether steps ran compiled (train.compile), and what compiling cost or why it failed."""
        compiled = self.compiled
        if compiled is None or not compiled.settled:
            return {"compiled_step": False}
        if compiled.error is not None:
            return {"compiled_step": False, "compile_error": compiled.error}
        return {"compiled_step": True, "compile_seconds": round(compiled.compile_seconds, 1)}
