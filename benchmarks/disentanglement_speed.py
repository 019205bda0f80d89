"""Time of each disentanglement score of `vaelab.disentanglement.score_model` on N samples.

    python benchmarks/disentanglement_speed.py [--samples 10000] [--seed 0] [--latents 10] [--json PATH]

The factor grid has dSprites' factor sizes (3 shapes x 6 scales x 40 orientations x 32 x 32
positions); its "images" are the 5 scaled factor levels and 59 fixed mixtures of them, and the
"encoder" a fixed random linear map to --latents dimensions plus noise, so the times are the
scores' own work (a real model's encoding adds `encode` seconds: images x its per-image time).
Prints one line per score (seconds, and the score) and the total; the issue asks for all five
on 10,000 samples in under 2 minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vaelab import disentanglement as D


class DspritesShapedGrid:
    """A FactorGrid with dSprites' factor sizes whose images are cheap functions of the factors."""

    names = ("shape", "scale", "orientation", "x", "y")
    sizes = (3, 6, 40, 32, 32)

    def __init__(self) -> None:
        self.values = tuple(np.arange(s, dtype=np.float64) for s in self.sizes)
        self._mix = np.random.default_rng(1).normal(size=(5, 59))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, n) for s in self.sizes], axis=1)

    def batch(self, factors: np.ndarray) -> torch.Tensor:
        scaled = (factors + 0.5) / np.array(self.sizes)
        return torch.from_numpy(np.concatenate([scaled, scaled @ self._mix], axis=1)).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latents", type=int, default=10)
    parser.add_argument("--json", help="also write score_model's dict here")
    args = parser.parse_args()
    weights = torch.from_numpy(np.random.default_rng(2).normal(size=(5, args.latents))).float()
    noise = torch.Generator().manual_seed(3)

    def encode(images: torch.Tensor) -> torch.Tensor:
        # a partly entangled code: each latent a mixture of factors, plus noise
        return images[:, :5] @ weights + 0.05 * torch.randn(len(images), args.latents, generator=noise)

    start, cpu = time.perf_counter(), time.process_time()
    scores = D.score_model(encode, DspritesShapedGrid(), samples=args.samples, seed=args.seed, progress=True)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"encode (codes for MIG/DCI/SAP/TC): {scores['encode_seconds']:.1f} s")
    for name in ("mutual_information", "mig", "total_correlation", "dci", "sap", "beta_vae", "factor_vae"):
        entry = scores[name]
        value = entry.get("score", entry.get("disentanglement"))
        shown = "" if value is None or name == "mutual_information" else f"  score {value:.3f}"
        print(f"{name}: {entry['seconds']:.1f} s{shown}")
    # CPU seconds as well: on a shared machine the wall time says more about the others' load
    print(f"total {total:.1f} s ({cpu:.1f} CPU s) for samples={args.samples} on "
          f"{torch.get_num_threads()} torch threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=1)


if __name__ == "__main__":
    main()
