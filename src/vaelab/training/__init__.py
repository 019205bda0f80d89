"""Training: the loop with early stopping and exact resume (`loop`), the step it takes (`step`, compiled
by `compiled`), the non-finite guard (`guard`) and what a checkpoint holds (`checkpoint`)."""

from ..device import native_bfloat16, network_dtype, resolve_device  # re-exported; their home is vaelab.device
from ..runs import RunLockedError
from .checkpoint import TrainState
from .guard import NonFiniteError
from .loop import OPTIMIZERS, Trainer, build_optimizer, dataset_elbo, learning_rate, schedule_epochs
from .step import AUTO_COMPILE_STEPS, compiles

__all__ = ["AUTO_COMPILE_STEPS", "OPTIMIZERS", "NonFiniteError", "RunLockedError", "Trainer", "TrainState",
           "build_optimizer", "compiles", "dataset_elbo", "learning_rate", "native_bfloat16", "network_dtype",
           "resolve_device", "schedule_epochs"]
