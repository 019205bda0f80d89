"""The explorer page: the latent space, its scatter view, the header, and the page put together.

The page's markup, CSS and JavaScript are the files explorer.html, explorer.css and explorer.js
next to this module; this module fills in the header and the data the JavaScript reads.
"""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import webpage
from ..contract import device_of, likelihood_name, n_labels
from ..data.catalog import drawn_inverted, known_label_names
from ..latents import latent_kind
from ..nets import BLOCKS
from ..storage import atomic_write_bytes
from ..runs import RunFolder, load_run
from ..figures.variants import decode, decoded_size, encode, held_z2, is_builtin, prior_family, reads_z2
from .decoder import ExplorerError, decode_cost, decoder_spec


CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

# The most multiply-adds per decode (`decode_cost`) the page runs live, under the pointer; a larger
# decoder gets images PyTorch decodes when the page is written. benchmarks/explorer_speed.py
# measures the page's decodes a second; benchmarks/README.md has the numbers behind this limit.
LIVE_LIMIT = 40_000_000

# The precomputed images' budget in bytes (8-bit pixels, before base64), which sets the grid's size.
GRID_BYTES = 8_000_000
GRID_SIDE = (2, 32)  # nodes per side of the 2-D grid, at least and at most
GRID_LINE = (2, 200)  # nodes of the 1-D grid of a 1-D latent


# ---------------------------------------------------------------- the latent space and the scatter

def latent_description(model: nn.Module) -> dict[str, Any]:
    """What the page's z is: the decoder's latent input (z1 of a two-layer model), flattened."""
    if not is_builtin(model):  # a model of the user's own: z as its prior's event, flattened
        family, size = prior_family(model), decoded_size(model)
        return {"kind": "continuous", "family": family or "own", "size": size, "two_layer": False, "latent_dim2": 0,
                "text": f"{size}-D {family + ' ' if family else ''}latent"}
    config = model.config
    kind = latent_kind(model.latent)
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
            x = images.batch(index).to(device_of(model))
            y = images.labels[index].to(device_of(model))
            mean = encode(model, x, y if n_labels(model) else None)
            means.append(mean[..., :decoded_size(model)].float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    size = decoded_size(model)
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


# ---------------------------------------------------------------- precomputed images

def _plane(means: np.ndarray, view: dict[str, Any]) -> np.ndarray:
    """(n, 2) plane coordinates of the latent points: their projections on the view's axes."""
    return (means.astype(np.float64) - np.asarray(view["mean"])) @ np.asarray(view["axes"]).T


def _map_range(values: np.ndarray, pad: float) -> tuple[float, float]:
    """[lo, hi] of values ([-3, 3] where they span nothing), widened by `pad` of its width each side."""
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    if not hi > lo:
        lo, hi = -3.0, 3.0
    return lo - pad * (hi - lo), hi + pad * (hi - lo)


def _grid_axes(plane: np.ndarray, mode: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The grid's a values and b values (None for a 1-D latent) over the square the page's map shows.

    The map's square is the page's own: centred on the points, 1.12 times their larger extent
    (explorer.js, `bounds`); a 1-D latent's line is their extent padded by 8 % each side.
    """
    if mode == "strip":
        lo, hi = _map_range(plane[:, 0], 0.08)
        return np.linspace(lo, hi, max(GRID_LINE[0], min(GRID_LINE[1], n))), None
    (x0, x1), (y0, y1) = _map_range(plane[:, 0], 0.0), _map_range(plane[:, 1], 0.0)
    half = 1.12 * max(x1 - x0, y1 - y0) / 2
    side = int(max(GRID_SIDE[0], min(GRID_SIDE[1], math.isqrt(max(n, 1)))))
    a = np.linspace((x0 + x1) / 2 - half, (x0 + x1) / 2 + half, side)
    b = np.linspace((y0 + y1) / 2 - half, (y0 + y1) / 2 + half, side)
    return a, b


def _on_simplices(z: np.ndarray, latent: dict[str, Any]) -> np.ndarray:
    """z clipped to >= 0 and renormalized per variable, as the page's projectCategorical."""
    k = latent["categories"]
    blocks = np.clip(z.reshape(len(z), latent["variables"], k), 0, None)
    sums = blocks.sum(-1, keepdims=True)
    blocks = np.where(sums > 0, blocks / np.where(sums > 0, sums, 1), 1.0 / k)
    return blocks.reshape(len(z), -1)


def _grid_latents(a: np.ndarray, b: np.ndarray | None, view: dict[str, Any], latent: dict[str, Any]) -> np.ndarray:
    """The z of every grid node, b-major: mean + a * axis 1 + b * axis 2, on the simplices if categorical."""
    bb, aa = np.meshgrid(b if b is not None else np.zeros(1), a, indexing="ij")
    axes = np.asarray(view["axes"], dtype=np.float64)
    z = np.asarray(view["mean"], dtype=np.float64) + aa.reshape(-1, 1) * axes[0] + bb.reshape(-1, 1) * axes[1]
    return _on_simplices(z, latent) if latent["kind"] == "categorical" else z


@torch.no_grad()
def _decode_means(model: nn.Module, z: np.ndarray, y: int | None, batch_size: int = 64) -> np.ndarray:
    """model.decode_mean at the page's z (n, latent size) and label y, as 8-bit pixels (n, C*H*W)."""
    out = []
    two_layer = getattr(model, "top", None) is not None  # the page maps z1; z2 is read only top-down, then held
    held = held_z2(model) if two_layer else None  # once: a VampPrior's mean runs the encoder on every pseudo-input
    for start in range(0, len(z), batch_size):
        part = torch.as_tensor(z[start:start + batch_size], dtype=torch.float32, device=device_of(model))
        if two_layer:
            rest = (part.new_zeros(len(part), model.config.latent_dim2) if held is None
                    else held.to(part).expand(len(part), -1))
            part = torch.cat([part, rest], -1)
        labels = torch.full((len(part),), y, device=device_of(model)) if n_labels(model) else None
        mean = decode(model, part, labels).float().cpu().numpy()
        out.append(np.rint(np.clip(mean, 0, 1) * 255).astype(np.uint8))
    return np.concatenate(out)


def precomputed_images(model: nn.Module, means: np.ndarray, view: dict[str, Any],
                       latent: dict[str, Any]) -> dict[str, Any]:
    """Images PyTorch decodes on a grid over the page's map, for a decoder too large to run live.

    {"a": grid values along the map's x, "b": along its y (None for a 1-D latent), "pixels": base64
    of uint8 (labels or 1, len(b) or 1, len(a), C*H*W)}, the grid as fine as GRID_BYTES allows.
    """
    was_training = model.training
    model.eval()
    try:
        classes = max(n_labels(model), 1)
        budget = GRID_BYTES // (classes * math.prod(model.image_shape))
        a, b = _grid_axes(_plane(means, view), view["mode"], budget)
        z = _grid_latents(a, b, view, latent)
        labels = range(classes) if n_labels(model) else [None]
        pixels = np.concatenate([_decode_means(model, z, y) for y in labels])
    finally:
        model.train(was_training)
    return {"a": a.tolist(), "b": None if b is None else b.tolist(),
            "pixels": base64.b64encode(pixels.tobytes()).decode("ascii")}


# ---------------------------------------------------------------- the page

def _asset(name: str) -> str:
    """A file of the page (explorer.html, .css, .js) shipped next to this module."""
    return webpage.read_asset(__package__, name)


def _without_url_scheme(value: Any) -> str:
    """`value` as text with every URL's scheme dropped (the data source may be a mirror's URL),
    so that the page holds no link and nothing that looks like one."""
    return re.sub(r"(?i)\b(?:https?|ftp):/*", "", str(value))


def _text(value: Any) -> str:
    """Escaped text for the page, with no URL scheme left in it."""
    return webpage.escape(_without_url_scheme(value))


def _fmt(value: Any, digits: int = 2) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return f"{value:.{digits}f}".replace("-", "\u2212")


SEPARATOR = " \u00b7 "


def _model_text(model: nn.Module, latent: dict[str, Any]) -> tuple[str, str, str]:
    """(latent, decoder, likelihood) in words for the header."""
    if not is_builtin(model):
        own = type(model).__name__
        return latent["text"], f"own model {own}", likelihood_name(model)
    config = model.config
    if latent["kind"] == "categorical":
        latent_words = (f"{latent['variables']} categorical variables \u00d7 {latent['categories']} classes "
                        f"({latent['size']} inputs to the decoder)")
    else:
        latent_words = f"{latent['size']}-D {latent['family']} latent"
    if latent["two_layer"]:
        z2 = f"the {latent['latent_dim2']}-D z2"
        latent_words += (f"; two stochastic layers, the decoder reads z1 (shown here) and {z2}, held at its prior mean"
                         if reads_z2(model) else f"; two stochastic layers, the decoder reads z1 (shown here), not {z2}")
    if config.decoder:
        decoder_text = f"own decoder {config.decoder.rpartition('/')[2]}"
    elif config.net == "conv":
        decoder_text = f"conv decoder, channels {list(reversed(config.conv_channels))}, {config.activation}"
    else:
        hidden = "-".join(str(h) for h in config.decoder_hidden) or "no hidden layer"
        units = BLOCKS[config.block].units(config.activation)
        decoder_text = f"MLP decoder {hidden} {units}"
    return latent_words, decoder_text, config.likelihood


def _header(info: dict[str, Any], model: nn.Module, latent: dict[str, Any]) -> str:
    name = info.get("name") or "model"
    binarization = info.get("binarization")
    binarization_text = webpage.pixels_text(binarization, model.image_shape[0])
    data = info.get("data") or "unknown data"
    latent_words, decoder_text, likelihood = _model_text(model, latent)
    facts = [f"data: {_text(data)}",
             _text(binarization_text), f"latent: {_text(latent_words)}", _text(decoder_text),
             f"likelihood: {_text(likelihood)}"]
    if n_labels(model):
        facts.append(f"conditional on the label ({n_labels(model)} classes)")
    chips = []
    if info.get("best_epoch") is not None:
        chips.append(f"best epoch {_text(info['best_epoch'])}"
                     + (f" of {_text(info['epochs_run'])}" if info.get("epochs_run") is not None else ""))
    if _fmt(info.get("test_elbo")) is not None:
        chips.append(f"test ELBO {_fmt(info['test_elbo'])} nats")
    evaluation = info.get("evaluation") or {}
    if _fmt(evaluation.get("nll")) is not None:
        stderr = _fmt(evaluation.get("nll_stderr"))
        chips.append(f"test NLL {_fmt(evaluation['nll'])}" + (f" \u00b1 {stderr}" if stderr else "")
                     + f" nats (K = {_text(evaluation.get('k', '?'))}, {_text(info.get('evaluation_file', ''))})")
    if not chips:
        chips.append("no test metrics in this run folder")
    chips.append(f"{info.get('n_points', 0)} test images shown (posterior means)")
    where = ([f"run folder <code title=\"{_text(info['run_dir'])}\">{_text(Path(info['run_dir']).name)}</code>"]
             if info.get("run_dir") else []) + (
        [f"data from {_text(info['source'])}"] if info.get("source") else [])
    run_dir = f'<p class="facts small">{SEPARATOR.join(where)}</p>' if where else ""
    return (f'<header><h1>{_text(name)} <span class="sub">latent explorer</span></h1>'
            f'<p class="facts">{SEPARATOR.join(facts)}</p>'
            f'<p class="chips">{"".join(f"<span class=chip>{c}</span>" for c in chips)}</p>{run_dir}</header>')


def _decoding(model: nn.Module, means: np.ndarray, view: dict[str, Any], latent: dict[str, Any],
              live_limit: int) -> dict[str, Any]:
    """How the page gets its images: {"spec" (live) or "precomputed", "cost", "reason", "banner"}.

    A decoder the page cannot run gets neither; one over `live_limit` multiply-adds a decode gets
    precomputed images instead of its weights.
    """
    try:
        spec = decoder_spec(model)
    except ExplorerError as err:
        return _decoded_ahead(model, means, view, latent, err)
    cost = decode_cost(spec)
    result = {"spec": spec, "precomputed": None, "cost": cost, "head_mean": spec["head"]["mean"], "reason": "",
              "banner": ""}
    if cost <= live_limit:
        return result
    grid = precomputed_images(model, means, view, latent)
    reason = (f"its decoder takes about {cost / 1e6:.3g} million multiply-adds a decode, more than the "
              f"{live_limit / 1e6:.3g} million the page decodes live")
    return result | {"spec": None, "precomputed": grid, "reason": reason,
                     "banner": f"<b>Too large to decode live:</b> {_text(reason)}. The images are precomputed "
                               f"instead: {_text(_grid_text(grid, view))}."}


def _grid_text(grid: dict[str, Any], view: dict[str, Any]) -> str:
    nodes = f"{len(grid['a'])} \u00d7 {len(grid['b'])} grid" if grid["b"] else f"line of {len(grid['a'])} points"
    off_plane = " (the sliders' coordinates off the map's plane do not change it)" if view["mode"] == "pca" else ""
    return f"decoded by PyTorch when this page was written, on a {nodes} over the map; the pointer shows the " \
           f"nearest one{off_plane}"


def _decoded_ahead(model: nn.Module, means: np.ndarray, view: dict[str, Any], latent: dict[str, Any],
                   err: ExplorerError) -> dict[str, Any]:
    """A decoder the page cannot run (a user's own network, an unknown layer): images PyTorch decodes on a
    grid when the page is written; no images at all only where even those cannot be drawn."""
    none = {"spec": None, "precomputed": None, "cost": None, "reason": str(err),
            "head_mean": "E[x|z] of the model's likelihood, computed by PyTorch"}
    if model.image_shape[0] not in (1, 3):
        return none | {"banner": f"<b>This page cannot decode this model.</b> {_text(err)}. The scatter of "
                                 "posterior means is still shown, but no images."}
    grid = precomputed_images(model, means, view, latent)
    return none | {"precomputed": grid,
                   "banner": f"<b>Decoded ahead, not live:</b> the page cannot run this decoder ({_text(err)}). "
                             f"The images were {_text(_grid_text(grid, view))}."}


def render_explorer(model: nn.Module, means: np.ndarray, labels: np.ndarray, *,
                    info: dict[str, Any] | None = None, label_names: list[str] | None = None,
                    live_limit: int = LIVE_LIMIT) -> str:
    """The explorer page as text, for `model` and the posterior means (n, latent size) with their labels.

    `info` fills the header: name, data, source, binarization, best_epoch, epochs_run, test_elbo,
    evaluation (an eval-test-k*.json dict), evaluation_file, run_dir. A model the page cannot decode
    still gets its page, which says why in place of the images; one whose decoder takes more than
    `live_limit` multiply-adds a decode (`decode_cost`) gets images precomputed on a grid instead.
    """
    info = dict(info or {})
    latent = latent_description(model)
    means, labels = _checked_points(means, labels, latent["size"])
    if label_names is None:
        label_names = _default_label_names(info.get("data"), n_labels(model), labels)
    view = scatter_view(means, latent)
    decoding = _decoding(model, means, view, latent, live_limit)
    info["n_points"] = len(means)
    payload = {
        "spec": decoding["spec"], "precomputed": decoding["precomputed"], "unsupported": decoding["reason"],
        "cost": decoding["cost"], "live_limit": int(live_limit), "latent": latent, "view": view,
        "n_labels": n_labels(model), "image_shape": [int(s) for s in model.image_shape],
        "label_names": [str(n) for n in label_names],
        "points": base64.b64encode(means.astype("<f4").tobytes()).decode("ascii"),
        "labels": labels.tolist(),
        "slider_range": _slider_range(means, latent),
        "head_mean": decoding["head_mean"],
        "inverted": drawn_inverted(info.get("data")),  # grey drawn dark on white, as the figures draw it
    }
    name = info.get("name") or "model"
    banner_id = "precomputed" if decoding["precomputed"] else "unsupported"
    banner = f'<div class="banner" id="{banner_id}">{decoding["banner"]}</div>' if decoding["banner"] else ""
    data = f'<script type="application/json" id="vaelab-data">{webpage.json_for_script(payload)}</script>'
    body = _header(info, model, latent) + banner + _asset("explorer.html") + data
    return webpage.page(f"vaelab explorer: {_without_url_scheme(name)}", body, CSP, css=_asset("explorer.css"),
                     scripts=[_asset("explorer.js")])


def _checked_points(means: Any, labels: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(means (n, size) float32, labels (n,) int64); an ExplorerError for a sample the page cannot show."""
    means = np.asarray(means, dtype=np.float32).reshape(len(means), size if len(means) == 0 else -1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if means.shape[1] != size:
        raise ExplorerError(f"means have {means.shape[1]} columns, the model's latent has {size}")
    if len(labels) != len(means):
        raise ExplorerError(f"{len(means)} means but {len(labels)} labels")
    if not np.isfinite(means).all():
        raise ExplorerError("the posterior means are not all finite (did training diverge?)")
    return means, labels


def _default_label_names(data: str | None, n_labels: int, labels: np.ndarray) -> list[str]:
    """A name per class: the data set's own where the catalog knows them, else the class number."""
    n_classes = int(max(n_labels, int(labels.max()) + 1 if len(labels) else 0, 1))
    known = known_label_names(data)
    return [known[k] if k < len(known) else str(k) for k in range(n_classes)]


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
                   data: Any = None, model: Any = None, live_limit: int = LIVE_LIMIT) -> Path:
    """Write RUN_DIR/explorer.html (or `out`), one self-contained page, and return its path.

    `model` (as `load_run` returns it) and `data` (an ImageData) are loaded from the run folder
    unless given. The scatter shows the posterior means of `n_points` test images drawn with `seed`.
    A model whose decoder the page cannot run gets a page that says so (see `decoder_spec`); one
    too large to decode live (over `live_limit` multiply-adds) gets precomputed images.
    """
    run = RunFolder(run_dir).check()
    run_dir = run.path
    if n_points < 0:
        raise ValueError(f"n_points must be >= 0, got {n_points}")
    model = load_run(run_dir) if model is None else model
    config = getattr(model, "run_config", None) or run.config()
    if data is None:
        from ..data import load_data
        from ..data.views import make_views

        raw = load_data(config.data, progress=False)
        data = make_views(raw, config.data)
    means, labels = posterior_means(model, data.test, n_points, seed)
    # The data's own label names (a user's class folders); images without labels are one group.
    names = list(getattr(data, "label_names", ())) or None
    if not getattr(data, "labelled", True):
        names = ["all images"]
    page = render_explorer(model, means, labels, info=_run_info(run_dir, config, data), label_names=names,
                           live_limit=live_limit)
    path = Path(out) if out is not None else run.explorer_path
    atomic_write_bytes(path, page.encode("utf-8"))
    return path

