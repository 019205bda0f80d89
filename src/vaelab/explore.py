"""The latent explorer: one self-contained HTML page that decodes a trained model in the browser.

`write_explorer(run_dir)` writes RUN_DIR/explorer.html. The page carries the decoder's weights
(base64 float32), a sample of test-set posterior means with their labels, and a small decoder
written in plain JavaScript, so it works from disk with no server and no network. It shows:

- the latent scatter: z itself for 2-D latents, a strip per label for 1-D ones, and for larger
  latents the plane of the first two principal axes of the posterior means (computed here);
  the pointer sets z = off + a * pc1 + b * pc2, where `off` is the part of the current z off that
  plane (the mean, until a slider moves it);
- a slider per latent dimension (a class selector per variable for categorical latents);
- the decoder mean E[x|z] under the pointer, updated as it moves or is dragged;
- the interpolation strip between two clicked points;
- for a conditional model, a label selector that conditions the decoder.

`decoder_spec(model)` turns the decoder into a list of layers and one blob of weights; it raises
`ExplorerError` for a decoder or likelihood head the page cannot reproduce exactly, and the page
is then written without a decoder and says why.

The page's decoder mean matches `model.decode_mean` to ~1e-6 (float32 weights, float64 sums):
every head is exact, including the continuous Bernoulli's mean and the discretized logistic's
exact mean over its 256 levels. `window.vaelab` is a small API (decode, pointToLatent, ...) that
the tests drive; see `JS` below.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .io import atomic_write_bytes
from .likelihoods import (
    _CB_TAYLOR_BELOW,
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    BernoulliHead,
    ContinuousBernoulliHead,
    DiscretizedLogisticHead,
    GaussianHead,
)
from .nets import MLP, ConvDecoder


LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                      "bag", "ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

# The decoder mean E[x|z] of each head, computed in the page from the decoder's output.
HEAD_TYPES: dict[type, str] = {
    BernoulliHead: "bernoulli",  # sigmoid(logits)
    GaussianHead: "gaussian",  # sigmoid(out); sigma does not enter the mean
    ContinuousBernoulliHead: "continuous_bernoulli",  # 1/2 + 1/(2 tanh(eta/2)) - 1/eta
    DiscretizedLogisticHead: "discretized_logistic",  # exact mean over the 256 levels
}

HEAD_MEANS = {
    "bernoulli": "sigmoid of the logits",
    "gaussian": "sigmoid of the decoder output (the Gaussian's mean)",
    "continuous_bernoulli": "the continuous Bernoulli's mean (not sigmoid of the logits)",
    "discretized_logistic": "the exact mean of the discretized logistic over its 256 levels",
}


class ExplorerError(ValueError):
    """The page cannot decode this model; the message says what it cannot reproduce."""


# ---------------------------------------------------------------- the decoder as data

class _Blob:
    """float32 arrays packed end to end; each is referenced by [offset, count] in floats."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, tensor: torch.Tensor | None, count: int) -> list[int]:
        values = (np.zeros(count, dtype="<f4") if tensor is None
                  else tensor.detach().cpu().to(torch.float32).numpy().astype("<f4").ravel())
        if values.size != count:
            raise ExplorerError(f"expected {count} weights, found {values.size}")
        offset = self.size
        self.parts.append(values)
        self.size += count
        return [offset, count]

    def base64(self) -> str:
        data = np.concatenate(self.parts).tobytes() if self.parts else b""
        return base64.b64encode(data).decode("ascii")


def _decoder_modules(decoder: nn.Module) -> list[nn.Module | tuple[str, tuple[int, ...]]]:
    """The decoder's layers in order; a ("reshape", shape) marks a ConvDecoder's flat -> maps step."""
    if type(decoder) is ConvDecoder:
        return [*decoder.linear, ("reshape", tuple(decoder.start)), *decoder.deconvs]
    if type(decoder) in (MLP, nn.Sequential):
        return list(decoder)
    raise ExplorerError(f"the decoder is a {type(decoder).__module__}.{type(decoder).__name__}; the explorer "
                        "decodes vaelab's own MLP and ConvDecoder (Linear, ConvTranspose2d, ReLU, Tanh, Softplus)")


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value), int(value)]


def decoder_spec(model: nn.Module) -> dict[str, Any]:
    """The decoder of `model` as data the page's JavaScript runs; ExplorerError if it cannot.

    Returns {"input": size of [z, one_hot(y)], "latent_size", "n_labels", "image_shape" (C, H, W),
    "layers": [{"op": "linear" | "relu" | "tanh" | "softplus" | "reshape" | "conv_transpose", ...}],
    "head": {"type", "params_per_pixel", ...}, "weights": base64 little-endian float32, "n_weights"}.
    Layers hold [offset, count] references into the weights. The decoder output is
    (params_per_pixel * C*H*W), parameter-major, as the likelihood heads read it.
    """
    head_type = HEAD_TYPES.get(type(model.head))
    if head_type is None:
        raise ExplorerError(f"the likelihood head is a {type(model.head).__name__}; the explorer knows the decoder "
                            f"mean of {', '.join(HEAD_TYPES.values())} only")
    image_shape = [int(s) for s in model.image_shape]
    n_pixels = math.prod(image_shape)
    params = int(type(model.head).params_per_pixel)
    n_in = int(model.latent.size + model.n_labels)
    blob = _Blob()
    layers: list[dict[str, Any]] = []
    shape: list[int] = [n_in]  # the current activation's shape: (n,) or (C, H, W)
    for module in _decoder_modules(model.decoder):
        where = f"decoder layer {len(layers)}"
        if isinstance(module, tuple):
            target = list(module[1])
            if math.prod(shape) != math.prod(target):
                raise ExplorerError(f"{where}: cannot reshape {shape} to {target}")
            layers.append({"op": "reshape", "shape": target})
            shape = target
        elif type(module) is nn.Linear:
            if len(shape) != 1 or shape[0] != module.in_features:
                raise ExplorerError(f"{where}: a Linear of {module.in_features} inputs after an output of shape {shape}")
            layers.append({"op": "linear", "in": module.in_features, "out": module.out_features,
                           "weight": blob.add(module.weight, module.in_features * module.out_features),
                           "bias": blob.add(module.bias, module.out_features)})
            shape = [module.out_features]
        elif type(module) is nn.ConvTranspose2d:
            if (module.groups != 1 or _pair(module.dilation) != [1, 1] or _pair(module.output_padding) != [0, 0]
                    or module.padding_mode != "zeros" or not isinstance(module.padding, tuple)):
                raise ExplorerError(f"{where}: a ConvTranspose2d with groups, dilation, output padding or a padding "
                                    "mode other than the plain one, which the explorer does not implement")
            if len(shape) != 3 or shape[0] != module.in_channels:
                raise ExplorerError(f"{where}: a ConvTranspose2d of {module.in_channels} channels after an output "
                                    f"of shape {shape}")
            (kh, kw), (sh, sw), (ph, pw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
            out_shape = [module.out_channels, (shape[1] - 1) * sh - 2 * ph + kh, (shape[2] - 1) * sw - 2 * pw + kw]
            layers.append({"op": "conv_transpose", "in_shape": shape, "out_shape": out_shape,
                           "kernel": [kh, kw], "stride": [sh, sw], "padding": [ph, pw],
                           "weight": blob.add(module.weight, module.weight.numel()),
                           "bias": blob.add(module.bias, module.out_channels)})
            shape = out_shape
        elif type(module) in (nn.ReLU, nn.Tanh):
            layers.append({"op": type(module).__name__.lower()})
        elif type(module) is nn.Softplus:
            layers.append({"op": "softplus", "beta": float(module.beta), "threshold": float(module.threshold)})
        else:
            raise ExplorerError(f"{where} is a {type(module).__name__}, which the explorer does not implement "
                                "(it knows Linear, ConvTranspose2d, ReLU, Tanh and Softplus)")
    if math.prod(shape) != params * n_pixels:
        raise ExplorerError(f"the decoder gives {math.prod(shape)} outputs; the {head_type} head needs "
                            f"{params} x {n_pixels}")
    head: dict[str, Any] = {"type": head_type, "params_per_pixel": params, "mean": HEAD_MEANS[head_type]}
    if head_type == "continuous_bernoulli":
        head["taylor_below"] = _CB_TAYLOR_BELOW
    if head_type == "discretized_logistic":
        head |= {"n_levels": 256, "log_scale_min": LOG_SCALE_MIN, "log_scale_max": LOG_SCALE_MAX}
    return {"input": n_in, "latent_size": int(model.latent.size), "n_labels": int(model.n_labels),
            "image_shape": image_shape, "layers": layers, "head": head,
            "weights": blob.base64(), "n_weights": blob.size}


# ---------------------------------------------------------------- the latent space and the scatter

def latent_description(model: nn.Module) -> dict[str, Any]:
    """What the page's z is: the decoder's latent input (z1 of a two-layer model), flattened."""
    config = model.config
    kind = "categorical" if config.latent == "categorical" else "continuous"
    info: dict[str, Any] = {"kind": kind, "family": config.latent, "size": int(model.latent.size),
                            "two_layer": bool(getattr(model, "top", None)), "latent_dim2": int(config.latent_dim2)}
    if kind == "categorical":
        info |= {"variables": int(config.latent_dim), "categories": int(config.categories)}
    return info


@torch.no_grad()
def posterior_means(model: nn.Module, images: Any, n_points: int = 2000, seed: int = 0,
                    batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(means (n, latent size) float32, labels (n,) int) of a seeded sample of `images` (an ImageSet).

    The mean of q(z|x[, y]), flattened (category probabilities for categorical latents); for a
    two-layer model, of z1, the part the decoder reads. The order is random (seeded), so that a
    scatter drawn in it paints no label over all the others.
    """
    n = min(int(n_points), len(images))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    was_training = model.training
    model.eval()
    try:
        means, labels = [], []
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size].to(images.pixels.device)
            x = images.batch(index).to(model.device)
            y = images.labels[index].to(model.device)
            mean = model.encode_mean(x, y if model.n_labels else None)
            means.append(mean[..., :model.latent.size].float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    size = model.latent.size
    if not means:
        return np.zeros((0, size), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(means).numpy(), torch.cat(labels).numpy().astype(np.int64)


def _principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (d,), axes (2, d) orthonormal, share of the variance of each (2,)) of points (n, d), d >= 2."""
    points = points.astype(np.float64)
    d = points.shape[1]
    mean = points.mean(0) if len(points) else np.zeros(d)
    centered = points - mean
    values, vectors = np.linalg.eigh(centered.T @ centered)  # ascending; always d orthonormal vectors
    order = np.argsort(values)[::-1][:2]
    axes = vectors[:, order].T.copy()
    for axis in axes:  # a deterministic sign: the largest entry positive
        if axis[np.argmax(np.abs(axis))] < 0:
            axis *= -1
    total = values.clip(min=0).sum()
    explained = values[order].clip(min=0) / total if total > 0 else np.zeros(2)
    return mean, axes, explained


def scatter_view(means: np.ndarray, latent: dict[str, Any]) -> dict[str, Any]:
    """How the page maps the latent to the plane: {"mode": "strip" | "direct" | "pca", ...}.

    strip (1-D): x = z0, one row per label. direct (2-D continuous): x = z0, y = z1.
    pca (larger, and every categorical latent): x, y = projections on the first two principal
    axes of the posterior means, through their mean.
    """
    d = means.shape[1]
    if latent["kind"] == "continuous" and d == 1:
        return {"mode": "strip", "mean": [0.0], "axes": [[1.0], [0.0]], "xlabel": "z0", "ylabel": "label"}
    if latent["kind"] == "continuous" and d == 2:
        return {"mode": "direct", "mean": [0.0, 0.0], "axes": [[1.0, 0.0], [0.0, 1.0]], "xlabel": "z0",
                "ylabel": "z1"}
    mean, axes, explained = _principal_axes(means)
    share = [round(100 * float(e)) for e in explained]
    return {"mode": "pca", "mean": mean.tolist(), "axes": axes.tolist(), "explained": explained.tolist(),
            "xlabel": f"PC1 ({share[0]}% of the variance)", "ylabel": f"PC2 ({share[1]}% of the variance)"}


# ---------------------------------------------------------------- the page

def _e(value: Any) -> str:
    """Escaped text for the page; a URL's scheme is dropped (the data source may be a mirror's URL),
    so that the page holds no link and nothing that looks like one."""
    return html.escape(re.sub(r"(?i)\b(?:https?|ftp):/*", "", str(value)), quote=True)


def _fmt(value: Any, digits: int = 2) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return f"{value:.{digits}f}".replace("-", "\u2212")


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element or open a comment inside it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


SEPARATOR = " \u00b7 "


def _header(info: dict[str, Any], model: nn.Module, latent: dict[str, Any]) -> str:
    config = model.config
    name = info.get("name") or "model"
    binarization = info.get("binarization")
    binarization_text = {"grey": "grey levels (not binarized)", None: "binarization unknown"}.get(
        binarization, f"{binarization} binarization")
    data = info.get("data") or "unknown data"
    if latent["kind"] == "categorical":
        latent_text = (f"{latent['variables']} categorical variables \u00d7 {latent['categories']} classes "
                       f"({latent['size']} inputs to the decoder)")
    else:
        latent_text = f"{latent['size']}-D {latent['family']} latent"
    if latent["two_layer"]:
        latent_text += f"; two stochastic layers, the decoder reads z1 (shown here), not the {latent['latent_dim2']}-D z2"
    if config.net == "conv":
        decoder_text = f"conv decoder, channels {list(reversed(config.conv_channels))}, {config.activation}"
    else:
        hidden = "-".join(str(h) for h in config.decoder_hidden) or "no hidden layer"
        decoder_text = f"MLP decoder {hidden} {config.activation}"
    facts = [f"data: {_e(data)}",
             _e(binarization_text), f"latent: {_e(latent_text)}", _e(decoder_text),
             f"likelihood: {_e(config.likelihood)}"]
    if model.n_labels:
        facts.append(f"conditional on the label ({model.n_labels} classes)")
    chips = []
    if info.get("best_epoch") is not None:
        chips.append(f"best epoch {_e(info['best_epoch'])}"
                     + (f" of {_e(info['epochs_run'])}" if info.get("epochs_run") is not None else ""))
    if _fmt(info.get("test_elbo")) is not None:
        chips.append(f"test ELBO {_fmt(info['test_elbo'])} nats")
    evaluation = info.get("evaluation") or {}
    if _fmt(evaluation.get("nll")) is not None:
        stderr = _fmt(evaluation.get("nll_stderr"))
        chips.append(f"test NLL {_fmt(evaluation['nll'])}" + (f" \u00b1 {stderr}" if stderr else "")
                     + f" nats (K = {_e(evaluation.get('k', '?'))}, {_e(info.get('evaluation_file', ''))})")
    if not chips:
        chips.append("no test metrics in this run folder")
    chips.append(f"{info.get('n_points', 0)} test images shown (posterior means)")
    where = ([f"run folder <code title=\"{_e(info['run_dir'])}\">{_e(Path(info['run_dir']).name)}</code>"]
             if info.get("run_dir") else []) + (
        [f"data from {_e(info['source'])}"] if info.get("source") else [])
    run_dir = f'<p class="facts small">{SEPARATOR.join(where)}</p>' if where else ""
    return (f'<header><h1>{_e(name)} <span class="sub">latent explorer</span></h1>'
            f'<p class="facts">{SEPARATOR.join(facts)}</p>'
            f'<p class="chips">{"".join(f"<span class=chip>{c}</span>" for c in chips)}</p>{run_dir}</header>')


def render_explorer(model: nn.Module, means: np.ndarray, labels: np.ndarray, *,
                    info: dict[str, Any] | None = None, label_names: list[str] | None = None) -> str:
    """The explorer page as text, for `model` and the posterior means (n, latent size) with their labels.

    `info` fills the header: name, data, source, binarization, best_epoch, epochs_run, test_elbo,
    evaluation (an eval-test-k*.json dict), evaluation_file, run_dir. A model the page cannot decode
    still gets its page, which says why in place of the images.
    """
    info = dict(info or {})
    latent = latent_description(model)
    means = np.asarray(means, dtype=np.float32).reshape(len(means), latent["size"] if len(means) == 0 else -1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if means.shape[1] != latent["size"]:
        raise ValueError(f"means have {means.shape[1]} columns, the model's latent has {latent['size']}")
    if len(labels) != len(means):
        raise ValueError(f"{len(means)} means but {len(labels)} labels")
    if not np.isfinite(means).all():
        raise ValueError("the posterior means are not all finite (did training diverge?)")
    n_classes = int(max(model.n_labels, int(labels.max()) + 1 if len(labels) else 0, 1))
    if label_names is None:
        known = LABEL_NAMES.get(info.get("data") or "", ())
        label_names = [known[k] if k < len(known) else str(k) for k in range(n_classes)]
    try:
        spec: dict | None = decoder_spec(model)
        reason = ""
    except ExplorerError as err:
        spec, reason = None, str(err)
    info["n_points"] = len(means)
    payload = {
        "spec": spec, "unsupported": reason, "latent": latent, "view": scatter_view(means, latent),
        "n_labels": int(model.n_labels), "image_shape": [int(s) for s in model.image_shape],
        "label_names": [str(n) for n in label_names],
        "points": base64.b64encode(means.astype("<f4").tobytes()).decode("ascii"),
        "labels": labels.tolist(),
        "slider_range": _slider_range(means, latent),
        "head_mean": spec["head"]["mean"] if spec else "",
    }
    name = info.get("name") or "model"
    banner = ("" if spec else f'<div class="banner" id="unsupported"><b>This page cannot decode this model.</b> '
              f'{_e(reason)}. The scatter of posterior means is still shown, but no images.</div>')
    body = _header(info, model, latent) + banner + BODY
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>vaelab explorer: {_e(name)}</title><style>{CSS}</style></head><body>{body}"
            f'<script type="application/json" id="vaelab-data">{_json_for_script(payload)}</script>'
            f"<script>{JS}</script></body></html>\n")


def _slider_range(means: np.ndarray, latent: dict[str, Any]) -> list[list[float]]:
    """[lo, hi] per dimension: the prior's bulk [-3, 3] widened to the posterior means it must reach."""
    if latent["kind"] == "categorical":
        return [[0.0, 1.0]] * means.shape[1]
    if not len(means):
        return [[-3.0, 3.0]] * means.shape[1]
    lo, hi = means.min(0).astype(float), means.max(0).astype(float)
    pad = 0.1 * (hi - lo) + 0.1
    return [[math.floor(min(-3.0, a - p) * 10) / 10, math.ceil(max(3.0, b + p) * 10) / 10]
            for a, b, p in zip(lo, hi, pad)]


def _run_info(run_dir: Path, config: Any, data: Any) -> dict[str, Any]:
    from .runs import RunFolder

    run = RunFolder(run_dir)
    summary = run.summary()
    info: dict[str, Any] = {
        "name": config.name or run_dir.name, "data": config.data.name,
        "source": summary.get("data_source") or getattr(data, "source", None),
        "binarization": summary.get("binarization") or config.data.binarization,
        "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
        "test_elbo": summary.get("test_elbo"), "run_dir": str(run_dir.resolve()),
    }
    evaluation = run.current_evaluation()
    if evaluation is not None and isinstance(evaluation[1], dict):
        info["evaluation"], info["evaluation_file"] = evaluation[1], evaluation[0].name
    return info


def write_explorer(run_dir: str | Path, *, out: str | Path | None = None, n_points: int = 2000, seed: int = 0,
                   data: Any = None, model: Any = None) -> Path:
    """Write RUN_DIR/explorer.html (or `out`), one self-contained page, and return its path.

    `model` (as `load_run` returns it) and `data` (an ImageData) are loaded from the run folder
    unless given. The scatter shows the posterior means of `n_points` test images drawn with `seed`.
    A model whose decoder the page cannot run gets a page that says so (see `decoder_spec`).
    """
    from .runs import RunFolder, load_run

    run = RunFolder(run_dir).check()
    run_dir = run.path
    if n_points < 0:
        raise ValueError(f"n_points must be >= 0, got {n_points}")
    model = load_run(run_dir) if model is None else model
    config = getattr(model, "run_config", None) or run.config()
    if data is None:
        from .data import load_dataset
        from .data.views import make_views

        raw = load_dataset(config.data.name, config.data.data_dir, progress=False)
        data = make_views(raw, config.data)
    means, labels = posterior_means(model, data.test, n_points, seed)
    page = render_explorer(model, means, labels, info=_run_info(run_dir, config, data))
    path = Path(out) if out is not None else run.explorer_path
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

BODY = """
<main>
  <section class="panel map">
    <div class="panel-title">Latent space <span class="hint" id="mode-note"></span></div>
    <div class="plot">
      <div class="ylabel" id="ylabel"></div>
      <div class="stack" id="stack">
        <canvas id="scatter-points"></canvas>
        <canvas id="scatter" tabindex="0" aria-label="latent scatter: move to decode, click two points to interpolate"></canvas>
      </div>
    </div>
    <div class="xlabel" id="xlabel"></div>
    <div class="legend" id="legend"></div>
    <p class="hint">Move the pointer over the map (or drag) to decode; click two points for an interpolation.
      <br><label><input type="checkbox" id="snap"> snap to the nearest test image (decode its full posterior mean)</label></p>
  </section>
  <section class="side">
    <div class="panel">
      <div class="panel-title">Decoder mean E[x|z]</div>
      <div class="imagebox"><canvas id="image"></canvas><div class="cannot" id="cannot"></div></div>
      <div class="readout" id="readout"></div>
      <div class="hint" id="timing"></div>
      <div id="label-box" class="labels" hidden><div class="panel-title small">Condition on the label</div>
        <div id="label-buttons"></div></div>
      <p class="hint" id="head-note"></p>
    </div>
    <div class="panel">
      <div class="panel-title"><span id="coords-title">Latent coordinates</span>
        <button id="to-plane" hidden title="keep PC1 and PC2, set the rest of z to the posterior mean">back to the plane</button></div>
      <div id="sliders" class="sliders"></div>
    </div>
  </section>
  <section class="panel strip-panel">
    <div class="panel-title">Interpolation <span class="hint" id="strip-note">click two points on the map</span>
      <button id="clear-strip">clear</button></div>
    <div id="strip" class="strip"></div>
  </section>
</main>
"""

CSS = """
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0;
       background: #f5f5f7; }
header { background: #fff; border-bottom: 1px solid #e2e2e6; padding: 14px 24px 10px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h1 .sub { font-weight: 400; color: #777; font-size: 15px; margin-left: 6px; }
.facts { margin: 2px 0; color: #444; }
.facts.small { font-size: 12px; color: #888; }
.chips { margin: 6px 0 2px; }
.chip { display: inline-block; background: #eaf1fb; color: #1b3d6d; border-radius: 12px; padding: 2px 10px;
        margin: 0 6px 4px 0; font-size: 13px; font-variant-numeric: tabular-nums; }
.banner { background: #fff1e6; border: 1px solid #f3c49b; color: #6b3300; margin: 14px 24px 0; padding: 10px 14px;
          border-radius: 8px; }
main { display: grid; grid-template-columns: auto minmax(320px, 1fr); gap: 18px; padding: 18px 24px; align-items: start; }
.panel { background: #fff; border: 1px solid #e2e2e6; border-radius: 10px; padding: 12px 14px; }
.map { width: 622px; }
.side { display: flex; flex-direction: column; gap: 18px; min-width: 0; }
.panel-title { font-weight: 600; margin-bottom: 8px; display: flex; gap: 10px; align-items: baseline; }
.panel-title.small { font-size: 13px; margin: 8px 0 4px; }
.hint { color: #777; font-weight: 400; font-size: 12.5px; }
.plot { display: flex; align-items: center; }
.ylabel { writing-mode: vertical-rl; transform: rotate(180deg); color: #555; font-size: 12.5px; margin-right: 4px; }
.xlabel { text-align: center; color: #555; font-size: 12.5px; margin-top: 2px; }
.stack { position: relative; width: 560px; height: 560px; outline: 1px solid #ddd; }
.stack canvas { position: absolute; left: 0; top: 0; width: 560px; height: 560px; }
#scatter { cursor: crosshair; touch-action: none; outline: none; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; margin-top: 8px; font-size: 12.5px; max-width: 580px; }
.legend span.sw { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; }
.imagebox { position: relative; width: 280px; height: 280px; background: #000; border-radius: 4px; overflow: hidden; }
#image { width: 280px; height: 280px; image-rendering: pixelated; display: block; }
.cannot { display: none; position: absolute; inset: 0; background: #fff1e6; color: #6b3300; padding: 14px;
          font-size: 13px; overflow: auto; }
.readout { font: 12.5px/1.4 ui-monospace, "SF Mono", Menlo, monospace; color: #333; margin-top: 8px;
           word-break: break-word; min-height: 2.8em; white-space: pre-line; }
.labels button, #to-plane, #clear-strip { font: inherit; font-size: 12.5px; border: 1px solid #ccd;
           background: #fafafa; border-radius: 6px; padding: 2px 8px; margin: 0 4px 4px 0; cursor: pointer; }
.labels button.on { background: #1b5fbf; color: #fff; border-color: #1b5fbf; }
#to-plane, #clear-strip { margin-left: auto; }
.sliders { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 2px 14px;
           max-height: 300px; overflow: auto; }
.sliders label { display: flex; align-items: center; gap: 6px; font: 12px ui-monospace, Menlo, monospace; }
.sliders input[type=range] { flex: 1; min-width: 60px; }
.sliders .val { width: 48px; text-align: right; }
.cats { display: flex; gap: 2px; align-items: center; font: 12px ui-monospace, Menlo, monospace; }
.cats .cell { width: 16px; height: 16px; border: 1px solid #bbc; cursor: pointer; border-radius: 2px; }
.strip-panel { grid-column: 1 / -1; }
@media (max-width: 960px) { main { grid-template-columns: 1fr; } }
.strip { display: grid; grid-template-columns: repeat(10, minmax(0, 112px)); gap: 6px; min-height: 40px; }
.strip canvas { width: 100%; height: auto; image-rendering: pixelated; background: #000; border-radius: 3px; }
"""

JS = r"""
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("vaelab-data").textContent);
  const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  const $ = (id) => document.getElementById(id);
  const [C, H, W] = DATA.image_shape;
  const N_PIX = C * H * W;
  const LAT = DATA.latent, D = LAT.size, VIEW = DATA.view;

  function floatsFromBase64(text) {
    const bin = atob(text), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }

  // ------------------------------------------------------------ the decoder, layer by layer
  // Weights are float32 (as trained); sums and activations are float64 JS numbers.

  function sigmoid(x) {
    if (x >= 0) return 1 / (1 + Math.exp(-x));
    const e = Math.exp(x);
    return e / (1 + e);
  }

  function makeDecoder(spec) {
    const weights = floatsFromBase64(spec.weights);
    const view = (ref) => weights.subarray(ref[0], ref[0] + ref[1]);
    const layers = spec.layers.map((l) => Object.assign({}, l, l.weight ? { w: view(l.weight), b: view(l.bias) } : {}));
    let size = spec.input;
    for (const l of layers) {  // a reusable output buffer per layer that changes the size
      if (l.op === "linear") { l.buf = new Float64Array(l.out); size = l.out; }
      if (l.op === "conv_transpose") {
        const [Ci, Hi, Wi] = l.in_shape, [Co, Ho, Wo] = l.out_shape, [kh, kw] = l.kernel;
        size = Co * Ho * Wo;
        l.buf = new Float64Array(size);
        l.xt = new Float64Array(Ci * Hi * Wi);  // the input, channel last
        l.rowTaps = taps(Ho, Hi, kh, l.stride[0], l.padding[0]);
        l.colTaps = taps(Wo, Wi, kw, l.stride[1], l.padding[1]);
        l.wt = new Float32Array(Ci * Co * kh * kw);  // torch's (Ci, Co, kh, kw) as (Co, kh, kw, Ci)
        for (let c = 0; c < Ci; c++)
          for (let o = 0; o < Co; o++)
            for (let k = 0; k < kh * kw; k++) l.wt[(o * kh * kw + k) * Ci + c] = l.w[(c * Co + o) * kh * kw + k];
      }
    }
    const input = new Float64Array(spec.input);
    const head = spec.head;

    function linear(l, x) {
      const out = l.buf, w = l.w, b = l.b, n = l.in;
      for (let j = 0, row = 0; j < l.out; j++, row += n) {
        let s = b[j];
        for (let i = 0; i < n; i++) s += w[row + i] * x[i];
        out[j] = s;
      }
      return out;
    }

    function convTranspose(l, x) {
      // out[o, oy, ox] = b[o] + sum over c and the taps (ky, kx) with oy = iy*s - p + ky, ox = ix*s - p + kx
      // of x[c, iy, ix] w[c, o, ky, kx]; computed from channel-last copies so the sum over c is contiguous.
      const [Ci, Hi, Wi] = l.in_shape, [Co, Ho, Wo] = l.out_shape, [kh, kw] = l.kernel;
      const out = l.buf, w = l.wt, xt = l.xt, rows = l.rowTaps, cols = l.colTaps;
      for (let c = 0; c < Ci; c++)
        for (let i = 0; i < Hi * Wi; i++) xt[i * Ci + c] = x[c * Hi * Wi + i];
      for (let o = 0; o < Co; o++) {
        const bias = l.b[o];
        for (let oy = 0; oy < Ho; oy++) {
          const rt = rows[oy];
          for (let ox = 0; ox < Wo; ox++) {
            const ct = cols[ox];
            let s = bias;
            for (let r = 0; r < rt.length; r += 2) {
              const ky = rt[r], iy = rt[r + 1];
              for (let q = 0; q < ct.length; q += 2) {
                const wb = ((o * kh + ky) * kw + ct[q]) * Ci, xb = (iy * Wi + ct[q + 1]) * Ci;
                for (let c = 0; c < Ci; c++) s += w[wb + c] * xt[xb + c];
              }
            }
            out[(o * Ho + oy) * Wo + ox] = s;
          }
        }
      }
      return out;
    }

    function taps(nOut, nIn, k, stride, pad) {  // per output index: [tap, input index, ...] that reach it
      const all = [];
      for (let o = 0; o < nOut; o++) {
        const list = [];
        for (let t = 0; t < k; t++) {
          const u = o + pad - t;
          if (u >= 0 && u % stride === 0 && u / stride < nIn) list.push(t, u / stride);
        }
        all.push(list);
      }
      return all;
    }

    function activate(l, x) {
      const n = x.length;
      if (l.op === "relu") for (let i = 0; i < n; i++) { if (x[i] < 0) x[i] = 0; }
      else if (l.op === "tanh") for (let i = 0; i < n; i++) x[i] = Math.tanh(x[i]);
      else if (l.op === "softplus") {  // torch: x where beta x > threshold, else log(1 + e^(beta x)) / beta
        const beta = l.beta, t = l.threshold;
        for (let i = 0; i < n; i++) { const bx = beta * x[i]; if (bx <= t) x[i] = Math.log1p(Math.exp(bx)) / beta; }
      }
      return x;
    }

    function cbMean(eta) {  // the continuous Bernoulli's mean, as likelihoods.continuous_bernoulli_mean
      if (Math.abs(eta) < head.taylor_below) return 0.5 + eta / 12 - eta * eta * eta / 720;
      return 0.5 + 0.5 / Math.tanh(eta / 2) - 1 / eta;
    }

    function mean(out) {
      const x = new Float32Array(N_PIX);
      if (head.type === "bernoulli" || head.type === "gaussian") {
        for (let i = 0; i < N_PIX; i++) x[i] = sigmoid(out[i]);
      } else if (head.type === "continuous_bernoulli") {
        for (let i = 0; i < N_PIX; i++) x[i] = cbMean(out[i]);
      } else if (head.type === "discretized_logistic") {
        // E[x] = sum_{j=1}^{top} sigmoid((loc - (j - 1/2)) / s) / top, loc and s in bin units (exact)
        const top = head.n_levels - 1;
        for (let i = 0; i < N_PIX; i++) {
          const loc = sigmoid(out[i]) * top;
          const logS = Math.min(Math.max(out[N_PIX + i], head.log_scale_min), head.log_scale_max);
          const invS = Math.exp(-logS) / top;
          let total = 0;
          for (let j = 1; j <= top; j++) total += sigmoid((loc - (j - 0.5)) * invS);
          x[i] = total / top;
        }
      } else {
        throw new Error("unknown head " + head.type);
      }
      return x;
    }

    return function decode(z, y) {
      if (z.length !== spec.latent_size) throw new Error("z has " + z.length + " entries, the decoder takes " + spec.latent_size);
      for (let i = 0; i < spec.latent_size; i++) input[i] = +z[i];
      if (spec.n_labels) {
        if (!(Number.isInteger(y) && y >= 0 && y < spec.n_labels)) throw new Error("a conditional model: pass a label y in 0.." + (spec.n_labels - 1));
        for (let k = 0; k < spec.n_labels; k++) input[spec.latent_size + k] = (k === y) ? 1 : 0;
      }
      let x = input;
      for (const l of layers) {
        if (l.op === "linear") x = linear(l, x);
        else if (l.op === "conv_transpose") x = convTranspose(l, x);
        else if (l.op === "reshape") continue;  // the buffers are flat, C-major, as torch's
        else x = activate(l, x);
      }
      return mean(x);
    };
  }

  const decoder = DATA.spec ? makeDecoder(DATA.spec) : null;

  // ------------------------------------------------------------ the latent plane

  const POINTS = floatsFromBase64(DATA.points), LABELS = DATA.labels, N = LABELS.length;
  const M = VIEW.mean, U = VIEW.axes[0], V = VIEW.axes[1];
  const labelCount = Math.max(DATA.label_names.length, 1);
  const state = { z: M.slice(), y: 0, a: null, b: null, pending: null, image: null, decodeMs: 0, frames: 0 };

  function point(i) { return Array.from(POINTS.subarray(i * D, (i + 1) * D)); }
  function dot(a, b) { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; }

  // plane coordinates (a, b) of z, and back
  function toPlane(z) {
    if (VIEW.mode === "strip") return [z[0], null];
    const d = z.map((v, i) => v - M[i]);
    return [dot(d, U), dot(d, V)];
  }

  function projectCategorical(z) {  // clip to >= 0 and renormalize each variable: a point of the simplices
    const K = LAT.categories, out = z.slice();
    for (let v = 0; v < LAT.variables; v++) {
      let s = 0;
      for (let k = 0; k < K; k++) { out[v * K + k] = Math.max(0, out[v * K + k]); s += out[v * K + k]; }
      for (let k = 0; k < K; k++) out[v * K + k] = s > 0 ? out[v * K + k] / s : 1 / K;
    }
    return out;
  }

  function fromPlane(a, b, base) {
    if (VIEW.mode === "strip") return [a];
    if (VIEW.mode === "direct") return [a, b];
    // keep the part of `base` off the plane; replace its in-plane coordinates with (a, b)
    const [a0, b0] = toPlane(base);
    const z = base.map((v, i) => v + (a - a0) * U[i] + (b - b0) * V[i]);
    return LAT.kind === "categorical" ? projectCategorical(z) : z;
  }

  function offPlane(z) {
    if (VIEW.mode !== "pca") return 0;
    const [a, b] = toPlane(z);
    let s = 0;
    for (let i = 0; i < D; i++) { const r = z[i] - M[i] - a * U[i] - b * V[i]; s += r * r; }
    return Math.sqrt(s);
  }

  // ------------------------------------------------------------ the scatter canvas

  const SIZE = 560, dpr = window.devicePixelRatio || 1;
  const pointsCanvas = $("scatter-points"), overlay = $("scatter");
  for (const c of [pointsCanvas, overlay]) { c.width = Math.round(SIZE * dpr); c.height = Math.round(SIZE * dpr); }
  const XY = new Float64Array(2 * N);
  const jitterSeed = { s: 12345 };
  function rand() { jitterSeed.s = (jitterSeed.s * 1103515245 + 12345) % 2147483648; return jitterSeed.s / 2147483648; }
  for (let i = 0; i < N; i++) {
    const [a, b] = toPlane(point(i));
    XY[2 * i] = a;
    XY[2 * i + 1] = VIEW.mode === "strip" ? LABELS[i] + (rand() - 0.5) * 0.6 : b;
  }
  const bounds = (function () {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < N; i++) {
      x0 = Math.min(x0, XY[2 * i]); x1 = Math.max(x1, XY[2 * i]);
      y0 = Math.min(y0, XY[2 * i + 1]); y1 = Math.max(y1, XY[2 * i + 1]);
    }
    if (!(x1 > x0)) { x0 = -3; x1 = 3; }
    if (!(y1 > y0)) { y0 = -3; y1 = 3; }
    if (VIEW.mode === "strip") {
      const px = 0.08 * (x1 - x0);
      return { x0: x0 - px, x1: x1 + px, y0: labelCount - 0.4, y1: -0.6 };  // label 0 on top
    }
    const span = 1.12 * Math.max(x1 - x0, y1 - y0), cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    return { x0: cx - span / 2, x1: cx + span / 2, y0: cy - span / 2, y1: cy + span / 2 };
  })();

  // canvas CSS pixels <-> plane coordinates (y up, except the strip's label rows)
  function toPixel(a, b) {
    const px = (a - bounds.x0) / (bounds.x1 - bounds.x0) * SIZE;
    const py = b === null ? SIZE / 2 : (bounds.y1 - b) / (bounds.y1 - bounds.y0) * SIZE;
    return [px, py];
  }
  function fromPixel(px, py) {
    return [bounds.x0 + px / SIZE * (bounds.x1 - bounds.x0), bounds.y1 - py / SIZE * (bounds.y1 - bounds.y0)];
  }

  function pointToLatent(px, py) {
    const [a, b] = fromPixel(px, py);
    return fromPlane(a, b, state.z);
  }
  function latentToPoint(z) { const [a, b] = toPlane(z); return toPixel(a, b); }

  function niceTicks(lo, hi, count) {
    const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag, ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
    return ticks;
  }

  function drawPoints() {
    const ctx = pointsCanvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#eee"; ctx.fillStyle = "#999"; ctx.lineWidth = 1;
    const xs = niceTicks(Math.min(bounds.x0, bounds.x1), Math.max(bounds.x0, bounds.x1), 8);
    for (const t of xs) {
      const [px] = toPixel(t, 0);
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, SIZE); ctx.stroke();
      if (px < SIZE - 16) ctx.fillText(String(+t.toFixed(6)), px + 2, SIZE - 4);
    }
    if (VIEW.mode === "strip") {
      for (let k = 0; k < labelCount; k++) {
        const [, py] = toPixel(0, k);
        ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(SIZE, py); ctx.stroke();
        ctx.fillText(DATA.label_names[k] || String(k), 4, py - 3);
      }
    } else {
      for (const t of niceTicks(bounds.y0, bounds.y1, 8)) {
        const [, py] = toPixel(0, t);
        ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(SIZE, py); ctx.stroke();
        if (py > 14 && py < SIZE - 16) ctx.fillText(String(+t.toFixed(6)), 4, py - 3);
      }
      const [ox, oy] = toPixel(0, 0);  // the axes through the origin (z = 0, or the posterior mean for PCA)
      ctx.strokeStyle = "#ccc";
      ctx.beginPath(); ctx.moveTo(ox, 0); ctx.lineTo(ox, SIZE); ctx.moveTo(0, oy); ctx.lineTo(SIZE, oy); ctx.stroke();
    }
    ctx.globalAlpha = 0.65;
    for (let i = 0; i < N; i++) {
      const [px, py] = toPixel(XY[2 * i], XY[2 * i + 1]);
      ctx.fillStyle = TAB10[LABELS[i] % 10];
      ctx.beginPath(); ctx.arc(px, py, 2.1, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
  }

  function marker(ctx, z, color, text) {
    const [px, py] = latentToPoint(z);
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = color; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.stroke();
    if (text) {
      ctx.font = "bold 12px system-ui, sans-serif"; ctx.fillStyle = color;
      ctx.fillText(text, px + 8, py - 8);
    }
    return [px, py];
  }

  function drawOverlay() {
    const ctx = overlay.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, SIZE, SIZE);
    if (state.a && state.b) {
      const pa = latentToPoint(state.a), pb = latentToPoint(state.b);
      ctx.strokeStyle = "#333"; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(pa[0], pa[1]); ctx.lineTo(pb[0], pb[1]); ctx.stroke();
      ctx.setLineDash([]);
    }
    if (state.a) marker(ctx, state.a, "#c0392b", "A");
    if (state.b) marker(ctx, state.b, "#1b5fbf", "B");
    const [px, py] = latentToPoint(state.z);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(px - 9, py); ctx.lineTo(px + 9, py); ctx.moveTo(px, py - 9); ctx.lineTo(px, py + 9); ctx.stroke();
  }

  // ------------------------------------------------------------ images

  function paint(canvas, image) {
    canvas.width = W; canvas.height = H;
    const ctx = canvas.getContext("2d"), out = ctx.createImageData(W, H), px = out.data, plane = H * W;
    for (let i = 0; i < plane; i++) {
      const r = image[i], g = C === 3 ? image[plane + i] : r, b = C === 3 ? image[2 * plane + i] : r;
      px[4 * i] = Math.round(r * 255); px[4 * i + 1] = Math.round(g * 255); px[4 * i + 2] = Math.round(b * 255);
      px[4 * i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  function decode(z, y) {
    if (!decoder) throw new Error("this page cannot decode this model: " + DATA.unsupported);
    return decoder(z, y === undefined ? state.y : y);
  }

  const imageCanvas = $("image");
  const scale = Math.max(1, Math.floor(280 / Math.max(H, W)));
  for (const el of [imageCanvas, imageCanvas.parentElement]) {
    el.style.width = (W * scale) + "px"; el.style.height = (H * scale) + "px";
  }

  function fmt(v) { return (v <= -0.005 ? "\u2212" : " ") + Math.abs(v).toFixed(2); }

  function redraw() {
    drawOverlay();
    if (decoder) {
      const t0 = performance.now();
      state.image = decode(state.z, state.y);
      const ms = performance.now() - t0;
      state.decodeMs = state.decodeMs ? 0.8 * state.decodeMs + 0.2 * ms : ms;
      paint(imageCanvas, state.image);
      $("timing").textContent = "decoded in the page: " + state.decodeMs.toFixed(2) + " ms";
    }
    const z = state.z;
    let text;
    if (LAT.kind === "categorical") {
      const K = LAT.categories, parts = [];
      for (let v = 0; v < LAT.variables; v++) {
        let best = 0;
        for (let k = 1; k < K; k++) if (z[v * K + k] > z[v * K + best]) best = k;
        parts.push(best + " (" + z[v * K + best].toFixed(2) + ")");
      }
      text = "most likely class per variable: " + parts.join(" ");
    } else {
      text = D <= 10 ? "z = (" + z.map(fmt).join(", ") + ")" : "z: " + D + " coordinates (see the sliders)";
    }
    if (VIEW.mode === "pca") {
      const [a, b] = toPlane(z), off = offPlane(z);
      text += "\nPC1 " + fmt(a) + ", PC2 " + fmt(b) + (off > 1e-6 ? ", off the plane by " + off.toFixed(2) : "");
      $("to-plane").hidden = !(off > 1e-6);
    }
    if (DATA.n_labels) text += "\nlabel y = " + (DATA.label_names[state.y] || state.y);
    $("readout").textContent = text;
    syncSliders();
    state.frames++;
  }

  let scheduled = null;
  function schedule() {
    if (scheduled === null) scheduled = requestAnimationFrame(() => { scheduled = null; redraw(); });
  }

  function setLatent(z, now) {
    state.z = Array.from(z, Number);
    if (now) redraw(); else schedule();
  }

  // ------------------------------------------------------------ sliders, categorical cells, labels

  const sliderBox = $("sliders"), sliders = [], cells = [];
  if (LAT.kind === "categorical") {
    const K = LAT.categories;
    for (let v = 0; v < LAT.variables; v++) {
      const row = document.createElement("div");
      row.className = "cats";
      row.append("v" + v + " ");
      for (let k = 0; k < K; k++) {
        const cell = document.createElement("span");
        cell.className = "cell";
        cell.title = "variable " + v + ": class " + k;
        cell.addEventListener("click", () => {
          const z = state.z.slice();
          for (let j = 0; j < K; j++) z[v * K + j] = j === k ? 1 : 0;
          setLatent(z);
        });
        cells.push(cell);
        row.append(cell);
      }
      sliderBox.append(row);
    }
    $("coords-title").textContent = "Categorical variables: click a class (shade = probability)";
    sliderBox.style.gridTemplateColumns = "repeat(auto-fill, minmax(" + (30 + 18 * K) + "px, 1fr))";
  } else {
    for (let i = 0; i < D; i++) {
      const label = document.createElement("label"), input = document.createElement("input");
      const val = document.createElement("span");
      const [lo, hi] = DATA.slider_range[i];
      input.type = "range"; input.min = lo; input.max = hi; input.step = 0.01; input.value = state.z[i];
      input.id = "z" + i;
      val.className = "val";
      input.addEventListener("input", () => { const z = state.z.slice(); z[i] = +input.value; setLatent(z); });
      label.append("z" + i, input, val);
      sliders.push([input, val]);
      sliderBox.append(label);
    }
  }

  function syncSliders() {
    for (let i = 0; i < sliders.length; i++) {
      const [input, val] = sliders[i];
      if (document.activeElement !== input) input.value = state.z[i];
      val.textContent = fmt(state.z[i]);
    }
    for (let i = 0; i < cells.length; i++) {
      const p = Math.min(1, Math.max(0, state.z[i]));
      cells[i].style.background = "rgba(27, 95, 191, " + p.toFixed(3) + ")";
      cells[i].title = cells[i].title.replace(/ \(p = .*\)$/, "") + " (p = " + p.toFixed(2) + ")";
    }
  }

  $("to-plane").addEventListener("click", () => { const [a, b] = toPlane(state.z); setLatent(fromPlane(a, b, M)); });

  if (DATA.n_labels) {
    $("label-box").hidden = false;
    const box = $("label-buttons");
    for (let k = 0; k < DATA.n_labels; k++) {
      const button = document.createElement("button");
      button.textContent = DATA.label_names[k] || String(k);
      button.dataset.label = k;
      button.addEventListener("click", () => setLabel(k));
      box.append(button);
    }
  }
  function setLabel(k) {
    state.y = k;
    for (const b of document.querySelectorAll("#label-buttons button")) b.classList.toggle("on", +b.dataset.label === k);
    drawStrip();
    schedule();
  }

  // ------------------------------------------------------------ interpolation

  const STEPS = 10;
  function interpolate(a, b, steps) {
    const out = [];
    for (let s = 0; s < steps; s++) {
      const t = s / (steps - 1);
      out.push(a.map((v, i) => (1 - t) * v + t * b[i]));
    }
    return out;
  }

  let stripImages = null;
  function drawStrip() {
    const strip = $("strip");
    strip.replaceChildren();
    stripImages = null;
    if (!state.a || !state.b) {
      $("strip-note").textContent = state.a ? "A is set; click a second point" : "click two points on the map";
      return;
    }
    const where = (z) => VIEW.mode === "pca" ? "(" + toPlane(z).map(fmt).join(",") + ")" : "(" + z.map(fmt).join(",") + ")";
    $("strip-note").textContent = "from A " + where(state.a) + " to B " + where(state.b) + " in " + STEPS +
      " steps, linear in z" + (VIEW.mode === "pca" ? " (A and B in PC coordinates)" : "") +
      (DATA.n_labels ? ", label " + (DATA.label_names[state.y] || state.y) : "");
    if (!decoder) return;
    stripImages = interpolate(state.a, state.b, STEPS).map((z) => decode(z, state.y));
    for (const image of stripImages) {
      const canvas = document.createElement("canvas");
      canvas.className = "frame";
      paint(canvas, image);
      strip.append(canvas);
    }
  }

  function pick(z) {
    if (!state.a || state.b) { state.a = z.slice(); state.b = null; } else { state.b = z.slice(); }
    drawStrip();
    schedule();
  }
  $("clear-strip").addEventListener("click", () => { state.a = state.b = null; drawStrip(); schedule(); });

  // ------------------------------------------------------------ the pointer

  function nearest(px, py, within) {
    let best = -1, bestD = within * within;
    for (let i = 0; i < N; i++) {
      const [qx, qy] = toPixel(XY[2 * i], XY[2 * i + 1]);
      const d = (qx - px) * (qx - px) + (qy - py) * (qy - py);
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  function latentAt(event) {
    const rect = overlay.getBoundingClientRect();
    const px = Math.min(SIZE, Math.max(0, (event.clientX - rect.left) * SIZE / rect.width));
    const py = Math.min(SIZE, Math.max(0, (event.clientY - rect.top) * SIZE / rect.height));
    if ($("snap").checked) {
      const i = nearest(px, py, 10);
      if (i >= 0) return point(i);
    }
    return pointToLatent(px, py);
  }

  let down = null;
  overlay.addEventListener("pointerdown", (e) => {
    down = { x: e.clientX, y: e.clientY, moved: false };
    overlay.setPointerCapture(e.pointerId);
    setLatent(latentAt(e));
  });
  overlay.addEventListener("pointermove", (e) => {
    if (down && Math.hypot(e.clientX - down.x, e.clientY - down.y) > 4) down.moved = true;
    setLatent(latentAt(e));
  });
  overlay.addEventListener("pointerup", (e) => {
    if (down && !down.moved) pick(latentAt(e));
    down = null;
  });
  overlay.addEventListener("pointercancel", () => { down = null; });

  // ------------------------------------------------------------ start, and the API the tests use

  const legend = $("legend"), counts = new Array(labelCount).fill(0);
  for (const l of LABELS) counts[l]++;
  for (let k = 0; k < labelCount; k++) {
    if (!counts[k]) continue;
    const item = document.createElement("span"), sw = document.createElement("span");
    sw.className = "sw"; sw.style.background = TAB10[k % 10];
    item.append(sw, (DATA.label_names[k] || String(k)) + " (" + counts[k] + ")");
    legend.append(item);
  }
  $("xlabel").textContent = VIEW.xlabel;
  $("ylabel").textContent = VIEW.ylabel;
  $("mode-note").textContent = {
    strip: "1-D latent: x is z0, one row per label",
    direct: "the 2-D latent itself: posterior means of test images",
    pca: (LAT.kind === "categorical" ? "category probabilities" : D + "-D latent") +
         " on its first two principal axes; off-plane coordinates come from the sliders",
  }[VIEW.mode];
  $("head-note").textContent = decoder ? "Pixel values are the decoder mean: " + DATA.head_mean + "." : "";
  if (!decoder) {
    $("cannot").style.display = "block";
    $("cannot").textContent = "This page cannot decode this model: " + DATA.unsupported + ".";
  }
  if (DATA.n_labels) setLabel(0);
  drawPoints();
  redraw();

  function decodesPerSecond(ms, draw) {
    ms = ms || 1000;
    if (!decoder) return 0;
    const canvas = document.createElement("canvas");
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      const z = N ? point(n % N) : M.map(() => Math.random() * 2 - 1);
      const image = decode(z, state.y);
      if (draw) paint(canvas, image);
      n++;
      t = performance.now();
    }
    return n / ((t - t0) / 1000);
  }

  window.vaelab = {
    supported: !!decoder,
    reason: DATA.unsupported,
    latentSize: D, nLabels: DATA.n_labels, imageShape: DATA.image_shape, size: SIZE,
    view: { mode: VIEW.mode, mean: M.slice(), axes: [U.slice(), V.slice()] },
    decode: decode,
    pointToLatent: pointToLatent,
    latentToPoint: latentToPoint,
    setLatent: (z) => setLatent(z, true),
    setLabel: (k) => { setLabel(k); redraw(); },
    current: () => ({ z: state.z.slice(), y: state.y, a: state.a, b: state.b }),
    lastImage: () => state.image,
    interpolation: () => (state.a && state.b ? { a: state.a.slice(), b: state.b.slice(), steps: STEPS, images: stripImages } : null),
    points: () => ({ z: Array.from(POINTS), labels: LABELS.slice() }),
    decodesPerSecond: decodesPerSecond,
    settle: () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => resolve(state.frames)))),
  };
})();
"""
