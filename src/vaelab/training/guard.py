"""What a NaN or infinite loss or gradient does to training (train.nonfinite): stop it, or skip the step."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..config import RunConfig
from ..errors import VaelabError
from ..runs import CHECKPOINT, CONFIG, RunFolder
from .checkpoint import TrainState


class NonFiniteError(VaelabError, RuntimeError):
    """A loss or gradient went NaN or infinite; the message says where, what and what to try."""


class NonFiniteGuard:
    """Watches each step's loss (and, to skip, its gradients) and the weights before they are saved.

    "stop" checks only the loss every step: a NaN or infinite gradient makes the weights it
    updates non-finite, and with them the next step's loss; `check` looks at the weights
    themselves before anything is saved, so no checkpoint keeps a NaN. "skip" checks the loss
    and every gradient before the update, and counts the steps it skips in the TrainState.
    """

    def __init__(self, config: RunConfig, parameters: list[torch.Tensor], device: torch.device,
                 steps_per_epoch: int, folder: RunFolder, state: Callable[[], TrainState]) -> None:
        self.config, self.parameters, self.steps_per_epoch, self.folder = config, parameters, steps_per_epoch, folder
        self.state = state  # a function: loading a checkpoint replaces the trainer's TrainState
        self.skip = config.train.nonfinite == "skip"
        # A CPU reads the loss at no cost; reading a GPU's value waits for the GPU, so there the
        # first bad step is noted on the device and read every 50 steps.
        self.read_every = 1 if device.type == "cpu" else 50
        self.fault = torch.zeros((), dtype=torch.long, device=device)  # 1 + the first bad step, 0 if none

    def skips(self, loss: torch.Tensor) -> bool:
        """After the backward pass, before the update: whether this step must not update the weights."""
        if not self.skip:
            self.check_loss(loss)
            return False
        grads = [p.grad for p in self.parameters if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        # A host sync every step: the price of deciding before the update.
        if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            return False
        self.state().skipped_steps += 1
        return True

    def check_loss(self, loss: torch.Tensor) -> None:
        """Stop (train.nonfinite = "stop") if the loss of the step in progress is not finite."""
        step = self.state().global_step
        if self.read_every == 1:
            if not math.isfinite(loss.item()):
                self.fault.fill_(step + 1)
                self._raise_noted()
        else:
            first = (self.fault == 0) & ~torch.isfinite(loss)
            self.fault = torch.where(first, step + 1, self.fault)
            if step % self.read_every == 0:
                self._raise_noted()

    def check(self) -> None:
        """Before the weights are saved or scored: stop if a loss went bad, or the weights did.

        The last step's loss was finite, but its gradient may not have been: the weights say.
        """
        self._raise_noted()
        if not self._weights_finite():
            raise self._error(self.state().global_step - 1, "gradient")

    def _raise_noted(self) -> None:
        """Raise for the first bad loss noted, if any.

        The loss of step s is not finite either by itself or because the weights it was computed
        with were not (most likely from the update of step s - 1); read at step s, the message says which.
        """
        step = int(self.fault.item()) - 1
        if step < 0:
            return
        weights_bad = step == self.state().global_step and not self._weights_finite()
        raise self._error(step, "loss", " (the weights it was computed with were already not finite: "
                          "most likely the gradient of the step before)" if weights_bad else "")

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters)

    def _error(self, step: int, what: str, why: str = "") -> NonFiniteError:
        per_epoch, cfg = self.steps_per_epoch, self.config
        return NonFiniteError(
            f"training stopped: the {what} became NaN or infinite at epoch {step // per_epoch + 1}, step "
            f"{step % per_epoch + 1} (optimizer step {step + 1} in all){why}. The last good checkpoint is kept: "
            f"{self.folder.file(CHECKPOINT)}. Likely causes: a learning rate too high (optim.lr = {cfg.optim.lr}); "
            f"a variance collapsing to zero (model.min_sigma = {cfg.model.min_sigma} for a Gaussian likelihood); "
            f"too strong a KL weight. Edit {self.folder.file(CONFIG)} and continue with --resume, or set "
            "train.nonfinite = \"skip\" to skip such steps and count them.")
