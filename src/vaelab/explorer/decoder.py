"""The decoder as data: layers and one blob of float32 weights that the page's JavaScript runs.

`decoder_spec(model)` raises `ExplorerError` for a decoder or likelihood head the page cannot
reproduce exactly; the page is then written without a decoder and says why.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import VaelabError
from ..figures.variants import held_z2
from ..likelihoods import LIKELIHOOD_HEADS
from ..nets import MLP, ConvDecoder, Linear, Tanh


class ExplorerError(VaelabError, ValueError):
    """The page cannot decode this model; the message says what it cannot reproduce."""


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


def page_head(head_class: type) -> dict[str, Any] | None:
    """How the page computes the decoder mean E[x|z] of a likelihood head class: {"type", "mean", ...
    its explorer_params}, from what the class itself declares (see likelihoods.py); None if the page
    cannot. Not inherited: a subclass that changes the head would otherwise be drawn as its parent."""
    declared = vars(head_class)
    if declared.get("explorer_type") is None:
        return None
    return {"type": declared["explorer_type"], "mean": declared["explorer_mean"],
            **declared.get("explorer_params", {})}


def _decoder_modules(decoder: nn.Module) -> list[nn.Module | tuple[str, tuple[int, ...]]]:
    """The decoder's layers in order; a ("reshape", shape) marks a ConvDecoder's flat -> maps step."""
    if type(decoder) is ConvDecoder:
        return [*decoder.linear, ("reshape", tuple(decoder.start)), *decoder.deconvs]
    if type(decoder) in (MLP, nn.Sequential):
        return list(decoder)
    raise ExplorerError(f"the decoder is a {type(decoder).__module__}.{type(decoder).__name__}; the explorer "
                        "decodes vaelab's own MLP and ConvDecoder (Linear, ConvTranspose2d, ReLU, Tanh, Softplus, ELU, GLU)")


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value), int(value)]


def _conv_transpose(module: nn.ConvTranspose2d, shape: list[int], where: str) -> dict[str, Any]:
    """A ConvTranspose2d as a layer of the spec (without its weights): the geometry read from the module.

    Any kernel, stride, padding, dilation and output padding; the output size is torch's,
    (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1 per side.
    """
    if module.groups != 1 or module.padding_mode != "zeros" or not isinstance(module.padding, tuple):
        raise ExplorerError(f"{where}: a ConvTranspose2d with groups or a padding mode other than zeros, "
                            "which the explorer does not implement")
    if len(shape) != 3 or shape[0] != module.in_channels:
        raise ExplorerError(f"{where}: a ConvTranspose2d of {module.in_channels} channels after an output "
                            f"of shape {shape}")
    kernel, stride, padding = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
    dilation, extra = _pair(module.dilation), _pair(module.output_padding)
    sides = [(n - 1) * s - 2 * p + d * (k - 1) + e + 1
             for n, k, s, p, d, e in zip(shape[1:], kernel, stride, padding, dilation, extra)]
    if min(sides) < 1:
        raise ExplorerError(f"{where}: a ConvTranspose2d whose output of {shape[1:]} would be {sides}")
    return {"op": "conv_transpose", "in_shape": shape, "out_shape": [module.out_channels, *sides],
            "kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation, "output_padding": extra}


def decode_cost(spec: dict[str, Any]) -> int:
    """The multiply-adds of one decode of `spec`: every layer's, and the head's.

    A Linear costs in * out, a ConvTranspose2d in_channels * out_channels * kernel area per input
    pixel (each input pixel meets every tap; the taps that fall off the output are few). The
    discretized logistic's mean sums up to 255 levels per pixel, counted in full; the other
    heads one per pixel.
    """
    total = 0
    for layer in spec["layers"]:
        if layer["op"] == "linear":
            total += layer["in"] * layer["out"]
        elif layer["op"] == "conv_transpose":
            (c_in, h, w), c_out = layer["in_shape"], layer["out_shape"][0]
            total += c_in * h * w * c_out * math.prod(layer["kernel"])
    levels = spec["head"].get("n_levels", 2) - 1
    return total + math.prod(spec["image_shape"]) * levels


@torch.no_grad()
def _fold_inputs(weight: torch.Tensor, bias: torch.Tensor | None, start: int, held: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A Linear's (weight, bias) with inputs start .. start + len(held) fixed at `held`: those columns
    move into the bias, so the layer reads the other inputs only. weight: (out, in)."""
    stop = start + len(held)
    folded = weight[:, start:stop] @ held.to(weight)
    return (torch.cat([weight[:, :start], weight[:, stop:]], 1),
            folded if bias is None else bias + folded)


def decoder_spec(model: nn.Module) -> dict[str, Any]:
    """The decoder of `model` as data the page's JavaScript runs; ExplorerError if it cannot.

    Returns {"input": size of [z, one_hot(y)], "latent_size", "n_labels", "image_shape" (C, H, W),
    "layers": [{"op": "linear" | "relu" | "tanh" | "softplus" | "elu" | "glu" | "reshape" | "conv_transpose", ...}],
    "head": {"type", "params_per_pixel", ...}, "weights": base64 little-endian float32, "n_weights"}.
    Layers hold [offset, count] references into the weights. The decoder output is
    (params_per_pixel * C*H*W), parameter-major, as the likelihood heads read it: the first C*H*W
    values are the mean's parameter for every channel (C, H, W), then the next parameter's.
    """
    if not all(hasattr(model, part) for part in ("head", "latent", "decoder")):
        raise ExplorerError(f"{type(model).__name__} is a model of your own, whose decoder the page has no "
                            "JavaScript for")
    page = page_head(type(model.head))
    if page is None:
        known = [name for name, head in LIKELIHOOD_HEADS.items() if page_head(head) is not None]
        raise ExplorerError(f"the likelihood head is a {type(model.head).__name__}; the explorer knows the decoder "
                            f"mean of {', '.join(known)} only")
    image_shape = [int(s) for s in model.image_shape]
    if image_shape[0] not in (1, 3):
        raise ExplorerError(f"the images have {image_shape[0]} channels; the page draws grey (1 channel) "
                            "or colour (3 channels) images")
    n_pixels = math.prod(image_shape)
    params = int(type(model.head).params_per_pixel)
    n_in = int(model.latent.size + model.n_labels)
    held = held_z2(model)  # a decoder reading z2 too: its first layer takes z2 at this value, folded into the bias
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
        elif type(module) in (nn.Linear, Linear):  # exact types: a subclass may compute another function
            weight, bias = module.weight, module.bias
            if held is not None:
                weight, bias = _fold_inputs(weight, bias, int(model.latent.size), held)
                held = None
            n_inputs = weight.shape[1]
            if len(shape) != 1 or shape[0] != n_inputs:
                raise ExplorerError(f"{where}: a Linear of {n_inputs} inputs after an output of shape {shape}")
            layers.append({"op": "linear", "in": n_inputs, "out": module.out_features,
                           "weight": blob.add(weight, n_inputs * module.out_features),
                           "bias": blob.add(bias, module.out_features)})
            shape = [module.out_features]
        elif type(module) is nn.ConvTranspose2d:
            layer = _conv_transpose(module, shape, where)
            layer |= {"weight": blob.add(module.weight, module.weight.numel()),
                      "bias": blob.add(module.bias, module.out_channels)}
            layers.append(layer)
            shape = layer["out_shape"]
        elif type(module) in (nn.ReLU, nn.Tanh, Tanh):
            layers.append({"op": type(module).__name__.lower()})
        elif type(module) is nn.Softplus:
            layers.append({"op": "softplus", "beta": float(module.beta), "threshold": float(module.threshold)})
        elif type(module) is nn.ELU:
            layers.append({"op": "elu", "alpha": float(module.alpha)})
        elif type(module) is nn.GLU:
            if len(shape) != 1 or module.dim not in (-1, 0) or shape[0] % 2:
                raise ExplorerError(f"{where}: a GLU over dim {module.dim} of an output of shape {shape}; the "
                                    "explorer halves a Linear's even number of outputs")
            layers.append({"op": "glu"})
            shape = [shape[0] // 2]
        else:
            raise ExplorerError(f"{where} is a {type(module).__name__}, which the explorer does not implement "
                                "(it knows Linear, ConvTranspose2d, ReLU, Tanh, Softplus, ELU and GLU)")
    if math.prod(shape) != params * n_pixels:
        raise ExplorerError(f"the decoder gives {math.prod(shape)} outputs; the {page['type']} head needs "
                            f"{params} x {n_pixels}")
    head = {"params_per_pixel": params} | page
    return {"input": n_in, "latent_size": int(model.latent.size), "n_labels": int(model.n_labels),
            "image_shape": image_shape, "layers": layers, "head": head,
            "weights": blob.base64(), "n_weights": blob.size}

