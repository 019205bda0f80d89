"""Training: the loop with early stopping and exact resume (`loop`), the compiled step (`compiled`)."""

from .checkpoint import TrainState
from .guard import NonFiniteError
from .loop import (AUTO_COMPILE_STEPS, OPTIMIZERS, RunLockedError, Trainer, build_optimizer, compiles, dataset_elbo,
                   learning_rate, schedule_epochs)

__all__ = ["AUTO_COMPILE_STEPS", "OPTIMIZERS", "NonFiniteError", "RunLockedError", "Trainer", "TrainState",
           "build_optimizer", "compiles", "dataset_elbo", "learning_rate", "schedule_epochs"]
