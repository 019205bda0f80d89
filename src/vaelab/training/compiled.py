"""Compiled training steps: `torch.compile` of the whole objective, or of the whole optimizer step.

`torch.compile` cannot trace a draw from a `torch.Generator`, and vaelab draws all its noise
from one (no global random state, so runs resume exactly). So before the first compiled call
the objective runs once without gradients on a copy of the generator, to note what noise it
draws (`NoiseRecorder`); every call then draws the same noise ahead, from the generator in the
same order, and the compiled graph takes it as an input (`NoisePlayback`). The random stream is
the one eager steps draw; only the rounding of the fused kernels differs, and a compiled run
resumed from a checkpoint ends bit for bit like an uninterrupted compiled run.

Two things are compiled this way, both from the step's own `terms` and `loss` (`step.TrainingStep`
chooses which and falls back to its eager step), so compiled and eager steps compute one thing:
- `objective_step`: the objective (encoder, sampling, decoder, likelihood, KL) and its backward;
  autograd and the optimizer run as usual. Any optimizer, and under torchrun.
- `adam_step`: the whole optimizer step for Adam in one process: the objective, its gradient
  (`torch.func.grad_and_value`) and Adam's update of the weights and of the optimizer's own
  state tensors, in one graph: no autograd engine, no per-tensor bookkeeping, one pass of fused
  kernels. It is the same update as `torch.optim.Adam` (tested against it), on its state.
"""

from __future__ import annotations

import math
import time
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..distributions import NoisePlayback, NoiseRecorder, draw_ahead
from ..objectives import ObjectiveTerms

# train.compile_mode: the torch.compile modes a compiled step may be built with ("reduce-overhead": CUDA graphs)
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")


class NoiseCompiled:
    """`traced` compiled, with the noise drawn ahead; eager(x, y, noise, kl_weight) where it cannot run.

    traced(x, y, noise: list of tensors, kl_weight: 0-d tensor, *inputs()) must compute what
    eager does. On the first call, record(x, y, noise, kl_weight) runs the objective without
    gradients on a copy of the generator, to note the noise; so every call of that shape runs
    compiled, the first included, and a run resumed from a checkpoint steps as an uninterrupted
    one does. A call of another shape (the short last batch) runs eagerly rather than compiling
    again. If compiling fails (no C++ compiler for the CPU backend, an operation the compiler
    cannot trace), that call is redone eagerly from the same random state and so is every later
    one; `error` says why.
    """

    def __init__(self, eager: Callable[..., Any], record: Callable[..., Any], traced: Callable[..., Any],
                 mode: str = "default", inputs: Callable[[], tuple] = tuple) -> None:
        self.eager, self.record, self.inputs = eager, record, inputs  # inputs(): traced's arguments after kl_weight
        # torch.compile keeps its graphs on the function's code object, which every closure made by
        # the same `def` shares, and refuses a ninth: a copy of the code per instance keeps each
        # trainer's graph apart (several in one process: sweeps, tests) and lets it go with it.
        own = types.FunctionType(traced.__code__.replace(), traced.__globals__, traced.__name__,
                                 traced.__defaults__, traced.__closure__)
        # Not Inductor's cpp.dynamic_threads, which would let train.threads = "auto" reach the compiled
        # kernels: with it, torch 2.13's CPU kernels computed wrong losses on two threads. The
        # compiled step keeps the thread count it was compiled with.
        self.compiled = torch.compile(own, fullgraph=True, dynamic=False, mode=mode)
        self.error: str | None = None
        self.compile_seconds = 0.0  # the first compiled call's time, compiling included
        self._key: tuple | None = None  # what the graph is for: input shape, labels or not, grad mode
        self._draws: list | None = None  # the noise the step draws
        self._working = False  # the graph has run once
        self._weight: torch.Tensor | None = None  # kl_weight as a graph input, so changing it does not recompile

    @property
    def settled(self) -> bool:
        """Compiling has been tried: the graph runs, or `error` says why it could not."""
        return self._working or self.error is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator,
                 kl_weight: float = 1.0) -> Any:
        key = (tuple(x.shape), x.dtype, x.device, y is None, torch.is_grad_enabled())
        if self.error is not None or (self._key is not None and key != self._key):
            return self.eager(x, y, generator, kl_weight)
        if self._key is None:
            copy = torch.Generator(generator.device)
            copy.set_state(generator.get_state())
            recorder = NoiseRecorder(copy)
            with torch.no_grad():
                self.record(x, y, recorder, kl_weight)
            self._key, self._draws = key, recorder.draws
            self._weight = torch.zeros((), device=x.device)
        self._weight.fill_(kl_weight)
        if self._working:
            return self.compiled(x, y, draw_ahead(self._draws, generator), self._weight, *self.inputs())
        state, start = generator.get_state(), time.perf_counter()  # the first compiled call: it may fail
        try:
            out = self.compiled(x, y, draw_ahead(self._draws, generator), self._weight, *self.inputs())
        except Exception as err:  # noqa: BLE001  (whatever the compiler failed on, eager works)
            self.error = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
            generator.set_state(state)
            return self.eager(x, y, generator, kl_weight)
        self._working, self.compile_seconds = True, time.perf_counter() - start
        return out


def objective_step(terms: Callable[..., ObjectiveTerms], mode: str = "default") -> NoiseCompiled:
    """terms(x, y, noise, kl_weight) -> ObjectiveTerms compiled (with its backward)."""
    def traced(x: torch.Tensor, y: torch.Tensor | None, noise: list[torch.Tensor],
               kl_weight: torch.Tensor) -> ObjectiveTerms:
        return terms(x, y, NoisePlayback(noise), kl_weight)

    return NoiseCompiled(terms, terms, traced, mode)


def adam_supported(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `adam_step` reproduces this optimizer's update: Adam, one group, no amsgrad or maximize."""
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    return not (group["amsgrad"] or group["maximize"] or isinstance(group["lr"], torch.Tensor))


def adam_update(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                exp_avg_sqs: list[torch.Tensor], step: torch.Tensor, lr: torch.Tensor, beta1: float, beta2: float,
                eps: float, weight_decay: float) -> None:
    """torch.optim.Adam's update, in place (Kingma & Ba, 2015, with torch's placement of eps).

    step: the 0-d step count before this step (torch keeps one per tensor; they are all equal).
    """
    # beta**t as exp(t log beta): the compiler recomputes these scalars in every element's loop,
    # where exp is vectorized and pow is a scalar library call per weight
    t = step + 1
    step_size = lr / (1 - torch.exp(t * math.log(beta1)))
    bias_correction2_sqrt = (1 - torch.exp(t * math.log(beta2))).sqrt()
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if weight_decay:
            g = g + weight_decay * p
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * m / (v.sqrt() / bias_correction2_sqrt + eps))


class _Terms(nn.Module):
    """terms(x, y, noise, kl_weight) as a module's forward, so `torch.func.functional_call` can put the weights in."""

    def __init__(self, terms: Callable[..., ObjectiveTerms], model: nn.Module) -> None:
        super().__init__()
        self.terms, self.model = terms, model  # `model`, registered here, is the one `terms` computes with

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, noise: list[torch.Tensor],
                kl_weight: torch.Tensor) -> ObjectiveTerms:
        return self.terms(x, y, NoisePlayback(noise), kl_weight)


def adam_step(terms: Callable[..., ObjectiveTerms], batch_loss: Callable[[ObjectiveTerms, int], torch.Tensor],
              model: nn.Module, optimizer: torch.optim.Adam, sums: torch.Tensor,
              eager: Callable[..., torch.Tensor], mode: str = "default") -> NoiseCompiled:
    """The whole optimizer step compiled: returns the step's loss after updating weights, Adam's state and `sums`.

    terms(x, y, noise, kl_weight) computes the batch's terms with `model`; batch_loss(terms, batch size)
    is what Adam minimizes; sums (4,) gains the batch's `terms.totals()`. eager(x, y, noise,
    kl_weight) -> loss must do the same step eagerly (for any call the graph is not for). Adam's
    state is created as torch creates it, if no step has yet, and stays in `optimizer.state`, so
    checkpoints, resumed runs and eager steps see one optimizer.
    """
    module = _Terms(terms, model)
    parameters = list(model.parameters())
    names = [f"model.{name}" for name, _ in model.named_parameters()]
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    eps, weight_decay = group["eps"], group["weight_decay"]
    lr = torch.zeros((), device=parameters[0].device)  # a tensor, so a schedule changing it does not recompile
    aliases = [p.detach() for p in parameters]  # the weights, updated in place outside autograd

    def loss_of(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor | None,
                noise: list[torch.Tensor], kl_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_terms = torch.func.functional_call(module, weights, (x, y, noise, kl_weight), strict=False)
        return batch_loss(batch_terms, x.shape[0]), batch_terms.totals()

    def traced(x: torch.Tensor, y: torch.Tensor | None, noise: list[torch.Tensor], kl_weight: torch.Tensor,
               lr: torch.Tensor, params: list[torch.Tensor], exp_avgs: list[torch.Tensor],
               exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], sums: torch.Tensor) -> torch.Tensor:
        grads, (loss, totals) = torch.func.grad_and_value(loss_of, has_aux=True)(
            dict(zip(names, params)), x, y, noise, kl_weight)
        adam_update(params, [grads[n] for n in names], exp_avgs, exp_avg_sqs, steps[0], lr, beta1, beta2,
                    eps, weight_decay)
        for step in steps:
            step.add_(1)
        sums.add_(totals)
        return loss

    def inputs() -> tuple:
        states = _adam_states(optimizer, parameters)  # every step: loading a checkpoint replaces them
        lr.fill_(optimizer.param_groups[0]["lr"])  # looked up: loading a checkpoint replaces the group
        return (lr, aliases, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states], sums)

    return NoiseCompiled(eager, terms, traced, mode, inputs)


def _adam_states(optimizer: torch.optim.Adam, parameters: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Adam's state of each parameter; made as torch.optim.Adam's first step makes it, if no step has yet."""
    for p in parameters:
        if not optimizer.state[p]:  # fused Adam counts steps in a float32 tensor
            optimizer.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                  "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
    return [optimizer.state[p] for p in parameters]
