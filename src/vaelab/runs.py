"""Reading a finished (or interrupted) run folder back."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import RunConfig
from .io import load_tensors
from .model import IMAGE_SHAPES, VAE
from .train import CHECKPOINT, WEIGHTS, read_run_config


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """The trained model of a run folder, in eval mode; its config is `model.run_config`.

    Reads `model.safetensors` (the best weights), or for a run that has not finished, the best
    weights in its checkpoint. Nothing is unpickled.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = VAE(config.model, IMAGE_SHAPES[config.data.name])
    weights_path = run_dir / WEIGHTS
    if weights_path.exists():
        weights, _ = load_tensors(weights_path)
    else:
        weights_path = run_dir / CHECKPOINT
        tensors, _ = load_tensors(weights_path)
        weights = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{weights_path}: weights do not match the run's {run_dir / 'config.json'} "
                         f"({err})") from None
    model.run_config: RunConfig = config
    return model.to(device).eval()
