"""Explorer decode speed: how many decodes a second the page's JavaScript decoder makes.

For each model below (random weights, seeded), writes the explorer page, opens it in headless
Chromium (Debian's, as the tests drive it) and calls ``window.vaelab.measureSpeed(ms, draw)``:
decodes of random z for ``--seconds``, decode only and decode then draw on a canvas, best of
``--rounds``. It also prints each decoder's multiply-adds a decode (``decode_cost``) and the rate
that makes of them, against ``LIVE_LIMIT``, the most the page decodes live.

    python benchmarks/explorer_speed.py [--seconds 2] [--rounds 3] [--models conv-64-2 ...]

Random weights: the kernel skips zero inputs, and a ReLU after a random layer zeroes about half,
as after a trained one (tanh zeroes none: the -tanh model shows that cost); the discretized
logistic's mean costs more the wider its scales, and a random decoder's are wide (a trained
one's are narrower, so faster). The load average before
and after is printed, since other jobs share the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from vaelab.config import resolve_config
from vaelab.explorer import LIVE_LIMIT, decode_cost, decoder_spec, render_explorer
from vaelab.model import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import CHROMIUM_ARGS, find_chromium  # noqa: E402

# name: (image shape, config overrides); the config is validated against CIFAR-10's 32x32 sides,
# which three stride-2 layers divide as they divide 64 and 128
COLOUR = ["data.name=cifar10", "data.binarization=grey", "model.net=conv", "model.latent_dim=64"]
MODELS = {
    "mlp-28-grey": ((1, 28, 28), []),
    "conv-64-2": ((3, 64, 64), [*COLOUR, "model.conv_channels=[32, 64]"]),
    "conv-64-3": ((3, 64, 64), [*COLOUR, "model.conv_channels=[32, 64, 128]"]),
    "conv-64-3-tanh": ((3, 64, 64), [*COLOUR, "model.conv_channels=[32, 64, 128]", "model.activation=tanh"]),
    "conv-64-2-logistic": ((3, 64, 64), [*COLOUR, "model.conv_channels=[32, 64]",
                                         "model.likelihood=discretized_logistic"]),
    "conv-128-3": ((3, 128, 128), [*COLOUR, "model.conv_channels=[32, 64, 128]"]),
}


def model_for(shape: tuple[int, int, int], overrides: list[str]) -> VAE:
    torch.manual_seed(0)
    config = resolve_config(overrides=overrides)
    return VAE(config.model, shape).eval()


def write_page(model: VAE, folder: Path, name: str) -> Path:
    """The model's explorer page, always live (the limit lifted) so that every size is timed."""
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 1.0, (200, model.latent.size)).astype(np.float32)
    page = render_explorer(model, means, np.arange(200) % 10, info={"name": name},
                           live_limit=10**12)
    path = folder / f"{name}.html"
    path.write_text(page, encoding="utf-8")
    return path


def measure(browser, path: Path, seconds: float, rounds: int) -> tuple[float, float]:
    """(decodes a second, decodes and draws a second), each the best of `rounds`."""
    page = browser.new_page()
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        page.wait_for_function("() => window.vaelab !== undefined")
        page.evaluate("() => window.vaelab.measureSpeed(300, true)")  # warm-up: the JIT compiles the kernels
        rates = {False: [], True: []}
        for _ in range(rounds):
            for draw in (False, True):
                result = page.evaluate("([ms, draw]) => window.vaelab.measureSpeed(ms, draw)",
                                       [seconds * 1000, draw])
                rates[draw].append(result["rate"])
        return max(rates[False]), max(rates[True])
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no chromium binary found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'model':<20} {'image':>10} {'M mult-adds':>12} {'decodes/s':>10} {'+draw/s':>8} {'GMAC/s':>7}  live?")
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            for name in args.models:
                shape, overrides = MODELS[name]
                model = model_for(shape, overrides)
                cost = decode_cost(decoder_spec(model))
                rate, drawn = measure(browser, write_page(model, Path(folder), name), args.seconds, args.rounds)
                live = "live" if cost <= LIVE_LIMIT else "precomputed"
                print(f"{name:<20} {'x'.join(map(str, shape)):>10} {cost / 1e6:>12.1f} {rate:>10.1f} {drawn:>8.1f} "
                      f"{cost * rate / 1e9:>7.2f}  {live}", flush=True)
        finally:
            browser.close()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
