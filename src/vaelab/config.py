"""Run configuration: a tree of dataclasses, read from TOML presets and `--set` overrides.

Every field is checked when the tree is built, so a bad value fails before any work and the
error names the key (``model.latent_dim``) and what is wrong with it.

The names a choice accepts (``model.likelihood``, ``optim.name``, ...) are not listed here: they
are the keys of the registry that implements the choice (``likelihoods.LIKELIHOOD_HEADS``,
``optimizers.OPTIMIZERS``, ...), named in `REGISTRIES`, so adding a variant is adding one registry
entry. Those modules import this one (for `ModelConfig` and friends), so `choices` imports them
when a config is validated, not at the top of this module. Only the few choices that the training
code (`training/`, `device.py`, `threads.py`) implements with if-statements have their names listed
here (once).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .conv_shapes import conv_misfit
from .data.catalog import AUTO, BINARY, DATASETS, IMAGES, image_shape, label_names, not_binary
from .errors import VaelabError


class ConfigError(VaelabError, ValueError):
    """A config key is unknown or its value is invalid; the message names the key."""


# Choices that training/, device.py and threads.py implement with if-statements, not a registry; listed here, once.
OUTPUT_BIASES = ("zero", "data_mean")  # data_mean: the Trainer calls VAE.init_output_bias
NONFINITE = ("stop", "skip")
PRECISIONS = ("auto", "float32", "bfloat16")  # see device.network_dtype
THREAD_SETTINGS = ("start", "auto", "fixed")  # train.threads besides a count: see vaelab.threads

# config key -> (module, name) of the registry whose keys, in its order, are the values the key accepts
REGISTRIES: dict[str, tuple[str, str]] = {
    "data.name": ("data.catalog", "DATASETS"),
    "data.binarization": ("data.views", "VIEWS"),
    "data.resize_mode": ("data.own.decode", "RESIZE_MODES"),
    "model.net": ("model", "NETWORKS"),
    "model.inference": ("model", "INFERENCES"),
    "model.latent": ("latents", "LATENT_FAMILIES"),
    "model.prior": ("latents", "PRIORS"),
    "model.output_bias": ("config", "OUTPUT_BIASES"),
    "model.activation": ("nets", "ACTIVATIONS"),
    "model.block": ("nets", "BLOCKS"),
    "model.init": ("nets", "INITS"),
    "model.likelihood": ("likelihoods", "LIKELIHOOD_HEADS"),
    "model.gaussian_variance": ("likelihoods", "GAUSSIAN_VARIANCES"),
    "objective.name": ("objectives", "OBJECTIVES"),
    "objective.iwae.gradient": ("objectives", "IWAE_GRADIENTS"),
    "objective.btcvae.sampling": ("objectives", "TC_SAMPLINGS"),
    "objective.dipvae.type": ("objectives", "DIP_TYPES"),
    "optim.name": ("optimizers", "OPTIMIZERS"),
    "optim.schedule": ("optimizers", "SCHEDULES"),
    "train.nonfinite": ("config", "NONFINITE"),
    "train.precision": ("config", "PRECISIONS"),
    "train.compile_mode": ("training.compiled", "COMPILE_MODES"),
    "figures.names": ("figures", "FIGURES"),
    "figures.manifold_range": ("figures.context", "MANIFOLD_RANGES"),
    "log.backends": ("tracking", "BACKENDS"),
    "tune.metric": ("tuning", "METRICS"),
    "tune.sampler": ("tuning", "SAMPLERS"),
    "tune.pruner": ("tuning", "PRUNERS"),
}


def registry(key: str) -> Any:
    """The registry behind config key `key` (a dict of name -> implementation, or a tuple of names)."""
    module, name = REGISTRIES[key]
    return getattr(importlib.import_module(f".{module}", __package__), name)


# Values some keys accept beyond their registry's names: "images", a user's own images (data/load.py
# reads them), and "auto", decided from those images when they are loaded (likelihoods.likelihood_for_data)
# and written into the run's config.
EXTRA_CHOICES: dict[str, tuple[str, ...]] = {"data.name": (IMAGES,), "data.binarization": (AUTO,),
                                             "model.likelihood": (AUTO,)}


def choices(key: str) -> tuple[str, ...]:
    """The values config key `key` accepts: its registry's names, then any EXTRA_CHOICES."""
    return tuple(registry(key)) + EXTRA_CHOICES.get(key, ())


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def toml_value(value: Any) -> str:
    """A value as TOML writes it, for messages a user answers with --set or a config file: true,
    "text", [16, 32], {a = 1}; not Python's True, 'text' or None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string escapes as JSON does
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "(unset)" if value is None else str(value)


def _did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    """'; did you mean X?' for the candidate closest in spelling to `word`, or '' if none is close."""
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _one_of(value: str, names: tuple[str, ...], key: str) -> None:
    _check(value in names, key, f"{toml_value(value)} is not one of {', '.join(names)}{_did_you_mean(value, names)}")


def _seed(value: int, key: str) -> None:
    _check(0 <= value < 2**32, key, f"must be in 0..2^32-1, got {value}")


@dataclass
class DataConfig:
    name: str = "mnist"  # a known data set, or "images": your own (a folder, .npy or .npz at data_dir)
    binarization: str = "dynamic"  # static | grey | binary (data/views.py) | "auto": chosen from the images when they are loaded
    val_size: int = 10_000  # taken from the end of the training images (known data sets)
    static_seed: int = 0  # seed of the one-off binarization of `static` data
    eval_seed: int = 1234  # seed of the fixed binarization of validation and test images
    data_dir: str | None = None
    # Your own images (name = "images"); image_size, channels and label_names are filled in
    # from the images when training starts, so the run's config says what it was trained on.
    image_size: list[int] = field(default_factory=list)  # [H, W] to resize to; [] keeps the images' size
    resize_mode: str = "resize"  # resize (stretch) | crop (fill, centre crop) | pad (fit, pad with background)
    channels: int = 0  # 1 (grey) or 3 (RGB); 0: 1 if every image is grey, else 3
    background: list[int] = field(default_factory=lambda: [255, 255, 255])  # RGB under transparent pixels
    val_fraction: float = 0.1  # of the images, when the folder has no val/ (or train/, val/, test/) folders
    test_fraction: float = 0.1
    split_seed: int = 0
    skip_bad: bool = False  # skip (and count) unreadable files instead of stopping at the first
    label_names: list[str] = field(default_factory=list)
    # A factor data set (dsprites, ...: a full grid of images over the factors that made them).
    # factor_levels: draw only this many evenly spaced levels of each factor ([] the whole grid), for
    # tests and quick looks; factor_names / factor_sizes are filled in when training starts, so the
    # run's config says which factors its images have (scores and figures use them).
    factor_levels: list[int] = field(default_factory=list)
    factor_names: list[str] = field(default_factory=list)
    factor_sizes: list[int] = field(default_factory=list)

    def validate(self, prefix: str = "data") -> None:
        _one_of(self.name, choices("data.name"), f"{prefix}.name")
        _one_of(self.binarization, choices("data.binarization"), f"{prefix}.binarization")
        if self.name != IMAGES:
            size = DATASETS[self.name].train_size
            _check(0 < self.val_size < size, f"{prefix}.val_size", f"must be in 1..{size - 1}, got {self.val_size}")
        _seed(self.static_seed, f"{prefix}.static_seed")
        _seed(self.eval_seed, f"{prefix}.eval_seed")
        _seed(self.split_seed, f"{prefix}.split_seed")
        _check(len(self.image_size) in (0, 2) and all(s >= 1 for s in self.image_size), f"{prefix}.image_size",
               f"must be [height, width] (or [] to keep the images' size), got {self.image_size}")
        _one_of(self.resize_mode, choices("data.resize_mode"), f"{prefix}.resize_mode")
        _check(self.channels in (0, 1, 3), f"{prefix}.channels", f"must be 1, 3 or 0 (as the images are), "
               f"got {self.channels}")
        _check(len(self.background) == 3 and all(0 <= v <= 255 for v in self.background), f"{prefix}.background",
               f"must be [r, g, b] in 0..255, got {self.background}")
        for key in ("val_fraction", "test_fraction"):
            _check(0 <= getattr(self, key) < 1, f"{prefix}.{key}", f"must be in [0, 1), got {getattr(self, key)}")
        _check(self.val_fraction + self.test_fraction < 1, f"{prefix}.test_fraction",
               "val_fraction + test_fraction must leave some images to train on")
        self._validate_factors(prefix)

    def _validate_factors(self, prefix: str) -> None:
        info = DATASETS.get(self.name)
        _check(not self.factor_levels or bool(info and info.generated), f"{prefix}.factor_levels",
               "only a data set vaelab generates (" + ", ".join(n for n, i in DATASETS.items() if i.generated)
               + ") is drawn on a sub-grid; leave it []")
        _check(all(n >= 1 for n in self.factor_levels), f"{prefix}.factor_levels",
               f"each count must be >= 1, got {self.factor_levels}")
        _check(all(self.factor_names) and len(set(self.factor_names)) == len(self.factor_names),
               f"{prefix}.factor_names", f"must be distinct non-empty names, got {self.factor_names}")
        _check(len(self.factor_names) == len(self.factor_sizes) and all(n >= 1 for n in self.factor_sizes),
               f"{prefix}.factor_sizes", f"must give one size >= 1 for each of factor_names {self.factor_names}, "
               f"got {self.factor_sizes}")


@dataclass
class ModelConfig:
    latent_dim: int = 2
    encoder_hidden: list[int] = field(default_factory=lambda: [512])
    decoder_hidden: list[int] = field(default_factory=lambda: [512])
    activation: str = "relu"  # of plain blocks and convolutional layers
    # each fully connected hidden layer: plain, activation(W x + b), or gated, (W x + b) * sigmoid(V x + c)
    block: str = "plain"
    init: str = "glorot"
    init_std: float = 0.01  # std of the weights when init = "normal" (biases are zero)
    likelihood: str = "bernoulli"
    gaussian_variance: str = "shared"  # fixed | shared (one learned sigma^2) | per_pixel
    gaussian_sigma: float = 0.1  # the fixed sigma, or the starting sigma when learned
    min_sigma: float = 1e-3  # floor on a learned sigma: keeps log p(x|z) bounded
    # [low, high]: the Gaussian latents' log-variances (q(z|x), and a second layer's q and p(z|z2)) clipped
    # to this range, as Tomczak & Welling's code clips them to [-6, 2]; [] leaves them free
    log_var_bounds: list[float] = field(default_factory=list)
    net: str = "mlp"  # mlp | conv (stride-2 convolutions; each side must be >= 2^len(conv_channels))
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    latent: str = "normal"  # q(z|x): normal | laplace | categorical (Gumbel-softmax)
    prior: str = "normal"  # p(z) for continuous latents: normal | laplace (standard)
    categories: int = 10  # classes of each categorical latent variable (latent_dim variables side by side)
    temperature: float = 1.0  # Gumbel-softmax temperature at the start of training
    temperature_min: float = 0.5
    temperature_decay: float = 0.0  # per epoch: tau = max(temperature_min, temperature * exp(-decay * epoch))
    conditional: bool = False  # CVAE: the one-hot label is fed to the encoder and the decoder
    n_classes: int = 10
    latent_dim2: int = 0  # > 0: a second stochastic layer z2 above z (Burda et al.'s two-layer model)
    encoder_hidden2: list[int] = field(default_factory=lambda: [100, 100])  # z -> z2 network
    decoder_hidden2: list[int] = field(default_factory=lambda: [100, 100])  # z2 -> z network
    # with latent_dim2: bottom-up, q(z|x) q(z2|z) (Burda et al.), or top-down, q(z2|x) q(z|x, z2) with a
    # decoder reading [z, z2] (Tomczak & Welling's two-level VAE); encoder_hidden2 sizes its networks
    inference: str = "bottom-up"
    output_bias: str = "zero"  # data_mean: decoder output bias = logit of the training mean (Burda et al.)
    pseudo_inputs: int = 0  # > 0: the VampPrior, a mixture of the posteriors of this many learned images
    # Your own code (see docs/extending.md), each "FILE.py:CLASS" or "package.module:CLASS", built with
    # image_shape=(C, H, W) and the keywords of `args` it takes: a whole model (the vaelab.Model contract),
    # or an encoder and/or decoder network inside vaelab's VAE (which may also take the sizes it must fit:
    # out_features, in_features, latent_dim, n_labels, params_per_pixel)
    custom: str = ""
    encoder: str = ""
    decoder: str = ""
    args: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str = "model") -> None:
        for key in ("custom", "encoder", "decoder"):
            ref = getattr(self, key)
            _check(not ref or re.fullmatch(r".+:[A-Za-z_][A-Za-z0-9_]*", ref) is not None, f"{prefix}.{key}",
                   f"{ref!r} is not FILE.py:CLASS or package.module:CLASS")
        _check(not (self.decoder and self.output_bias == "data_mean"), f"{prefix}.output_bias",
               "data_mean sets the last bias of vaelab's own decoder; a decoder of your own (model.decoder) sets its own")
        _check(not (self.custom and (self.encoder or self.decoder)), f"{prefix}.custom",
               "a whole model of your own brings its own networks: set model.custom, or model.encoder/decoder, not both")
        _check(self.latent_dim >= 1, f"{prefix}.latent_dim", f"must be >= 1, got {self.latent_dim}")
        _one_of(self.net, choices("model.net"), f"{prefix}.net")
        _one_of(self.latent, choices("model.latent"), f"{prefix}.latent")
        _one_of(self.prior, choices("model.prior"), f"{prefix}.prior")
        _one_of(self.output_bias, choices("model.output_bias"), f"{prefix}.output_bias")
        _check(self.categories >= 2, f"{prefix}.categories", f"must be >= 2, got {self.categories}")
        _check(self.temperature > 0, f"{prefix}.temperature", f"must be > 0, got {self.temperature}")
        _check(0 < self.temperature_min <= self.temperature, f"{prefix}.temperature_min",
               f"must be in (0, temperature], got {self.temperature_min}")
        _check(self.temperature_decay >= 0, f"{prefix}.temperature_decay", f"must be >= 0, got {self.temperature_decay}")
        _check(self.n_classes >= 2, f"{prefix}.n_classes", f"must be >= 2, got {self.n_classes}")
        _check(self.latent_dim2 >= 0, f"{prefix}.latent_dim2", f"must be >= 0, got {self.latent_dim2}")
        _check(not (self.latent_dim2 and self.latent != "normal"), f"{prefix}.latent_dim2",
               "a second stochastic layer is built for Gaussian latents only (model.latent = normal)")
        _one_of(self.inference, choices("model.inference"), f"{prefix}.inference")
        _check(self.inference == "bottom-up" or self.latent_dim2 > 0, f"{prefix}.inference",
               f"{toml_value(self.inference)} orders two stochastic layers: set {prefix}.latent_dim2 > 0 too")
        _check(self.pseudo_inputs >= 0, f"{prefix}.pseudo_inputs", f"must be >= 0, got {self.pseudo_inputs}")
        _check(not (self.pseudo_inputs and self.latent != "normal"), f"{prefix}.pseudo_inputs",
               "the VampPrior mixes Gaussian posteriors: it needs model.latent = normal")
        _check(not (self.pseudo_inputs and self.prior != "normal"), f"{prefix}.pseudo_inputs",
               "the VampPrior replaces the standard prior: leave model.prior = \"normal\", "
               f"not {toml_value(self.prior)}")
        _check(not (self.pseudo_inputs and self.conditional), f"{prefix}.pseudo_inputs",
               "the VampPrior is built for unconditional models: the pseudo-inputs carry no label")
        _check(all(c >= 1 for c in self.conv_channels) and len(self.conv_channels) >= 1,
               f"{prefix}.conv_channels", f"need at least one layer, sizes >= 1, got {self.conv_channels}")
        for key in ("encoder_hidden", "decoder_hidden", "encoder_hidden2", "decoder_hidden2"):
            sizes = getattr(self, key)
            _check(all(s >= 1 for s in sizes), f"{prefix}.{key}", f"layer sizes must be >= 1, got {sizes}")
        _one_of(self.activation, choices("model.activation"), f"{prefix}.activation")
        _one_of(self.block, choices("model.block"), f"{prefix}.block")
        _one_of(self.init, choices("model.init"), f"{prefix}.init")
        _check(self.init_std > 0, f"{prefix}.init_std", f"must be > 0, got {self.init_std}")
        _one_of(self.likelihood, choices("model.likelihood"), f"{prefix}.likelihood")
        _one_of(self.gaussian_variance, choices("model.gaussian_variance"), f"{prefix}.gaussian_variance")
        _check(self.gaussian_sigma > 0, f"{prefix}.gaussian_sigma", f"must be > 0, got {self.gaussian_sigma}")
        _check(0 < self.min_sigma <= self.gaussian_sigma, f"{prefix}.min_sigma",
               f"must be in (0, gaussian_sigma], got {self.min_sigma}")
        bounds = self.log_var_bounds
        _check(not bounds or (len(bounds) == 2 and bounds[0] < bounds[1]),
               f"{prefix}.log_var_bounds", f"must be [] or [low, high] with low < high, got {bounds}")
        _check(not bounds or self.latent == "normal", f"{prefix}.log_var_bounds",
               "bounds Gaussian latents' log-variances: it needs model.latent = normal")


# model keys a fine-tune (train.init_from) may set apart from the run whose weights it starts from: they
# change what the weights compute, not which weights there are
FINE_TUNE_MODEL_KEYS = ("log_var_bounds",)


@dataclass
class IwaeConfig:
    """The IWAE bound's own settings (its k is objective.samples)."""

    # reparameterized: the bound's plain gradient | dreg: doubly reparameterized (Tucker et al., 2019),
    # for the encoder's gradient with less variance
    gradient: str = "reparameterized"

    def validate(self, prefix: str = "objective.iwae") -> None:
        _one_of(self.gradient, choices("objective.iwae.gradient"), f"{prefix}.gradient")


@dataclass
class BtcvaeConfig:
    """β-TCVAE (Chen et al., 2018); its TC weight is objective.beta."""

    sampling: str = "mws"  # how a batch estimates q(z): mws (minibatch-weighted) | mss (stratified)
    alpha: float = 1.0  # weight of the index-code mutual information
    gamma: float = 1.0  # weight of the dimension-wise KL

    def validate(self, prefix: str = "objective.btcvae") -> None:
        _one_of(self.sampling, choices("objective.btcvae.sampling"), f"{prefix}.sampling")
        for key in ("alpha", "gamma"):
            _check(getattr(self, key) >= 0, f"{prefix}.{key}", f"must be >= 0, got {getattr(self, key)}")


@dataclass
class CapacityConfig:
    """Annealed capacity (Burgess et al., 2018); defaults: their dSprites settings."""

    gamma: float = 1000.0  # weight of |KL - C|
    max_nats: float = 25.0  # C's final value, nats per image
    steps: int = 100_000  # optimizer steps over which C rises linearly from 0 (0: C = max_nats from the start)

    def validate(self, prefix: str = "objective.capacity") -> None:
        for key in ("gamma", "max_nats", "steps"):
            _check(getattr(self, key) >= 0, f"{prefix}.{key}", f"must be >= 0, got {getattr(self, key)}")


@dataclass
class DipvaeConfig:
    """DIP-VAE (Kumar et al., 2018); defaults: their dSprites lambda_od, lambda_d by their rule."""

    type: str = "i"  # i: Cov[mu(x)] | ii: Cov[z] = E[Sigma(x)] + Cov[mu(x)]
    lambda_od: float = 10.0  # weight of the squared off-diagonal entries
    lambda_d: float | None = None  # weight of the squared (diagonal - 1); unset: 10 lambda_od (i), lambda_od (ii)

    def validate(self, prefix: str = "objective.dipvae") -> None:
        _one_of(self.type, choices("objective.dipvae.type"), f"{prefix}.type")
        _check(self.lambda_od >= 0, f"{prefix}.lambda_od", f"must be >= 0, got {self.lambda_od}")
        _check(self.lambda_d is None or self.lambda_d >= 0, f"{prefix}.lambda_d", f"must be >= 0, got {self.lambda_d}")


@dataclass
class FactorvaeConfig:
    """FactorVAE (Kim & Mnih, 2018): the weight of its TC estimate, and the discriminator trained beside the model."""

    # Kim & Mnih (2018) train dSprites with gamma between 10 and 100 (their Fig. 3 and 4); the disvae and
    # 1Konny/FactorVAE re-implementations default to 6.4. A preset sets its own.
    gamma: float = 35.0
    discriminator_hidden: list[int] = field(default_factory=lambda: [1000] * 5)  # the paper's 6 linear layers
    discriminator_lr: float = 1e-4  # its own Adam, betas (0.5, 0.9) as in the paper

    trainer_keys = ("discriminator_hidden", "discriminator_lr")  # the trainer's, not the objective's keywords

    def validate(self, prefix: str = "objective.factorvae") -> None:
        _check(self.gamma >= 0, f"{prefix}.gamma", f"must be >= 0, got {self.gamma}")
        _check(bool(self.discriminator_hidden) and all(isinstance(n, int) and n >= 1 for n in self.discriminator_hidden),
               f"{prefix}.discriminator_hidden",
               f"must be a non-empty list of layer widths >= 1, got {toml_value(self.discriminator_hidden)}")
        _check(self.discriminator_lr > 0, f"{prefix}.discriminator_lr", f"must be > 0, got {self.discriminator_lr}")


@dataclass
class ObjectiveConfig:
    name: str = "elbo"  # elbo (beta-VAE at beta != 1) | iwae | btcvae | capacity | dipvae | factorvae (objectives.OBJECTIVES)
    samples: int = 1  # r Monte-Carlo samples (elbo) or k importance samples (iwae) per data point
    beta: float = 1.0  # weight of the KL term (elbo, dipvae; 1 = the true ELBO), of the total correlation (btcvae)
    warmup_epochs: int = 0  # KL weight rises linearly from 0 to beta over this many epochs
    args: dict[str, Any] = field(default_factory=dict)  # keywords of a registered objective of your own
    # Each objective's own settings, in a section named as the objective; passed to it as keywords
    iwae: IwaeConfig = field(default_factory=IwaeConfig)
    btcvae: BtcvaeConfig = field(default_factory=BtcvaeConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    dipvae: DipvaeConfig = field(default_factory=DipvaeConfig)
    factorvae: FactorvaeConfig = field(default_factory=FactorvaeConfig)

    def validate(self, prefix: str = "objective") -> None:
        _one_of(self.name, choices("objective.name"), f"{prefix}.name")
        _check(self.samples >= 1, f"{prefix}.samples", f"must be >= 1, got {self.samples}")
        _check(self.beta >= 0, f"{prefix}.beta", f"must be >= 0, got {self.beta}")
        _check(self.warmup_epochs >= 0, f"{prefix}.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        objective = registry("objective.name")[self.name]
        weighted = getattr(objective, "takes_kl_weight", True)
        why = getattr(objective, "kl_weight_note", "it has no separate KL term")  # what the objective says instead
        _check(weighted or (self.beta == 1.0 and self.warmup_epochs == 0), f"{prefix}.beta",
               f"beta and KL warm-up do not apply to the {self.name} objective: {why}")
        adversarial = getattr(registry("objective.name")[self.name], "adversary", False)
        _check(not adversarial or self.samples == 1, f"{prefix}.samples",
               f"must be 1 for the {self.name} objective (its discriminator takes one code per image), got {self.samples}")
        for section in self._sections():
            getattr(self, section).validate(f"{prefix}.{section}")
            self._check_applies(section, prefix)

    def _sections(self) -> list[str]:
        """The objectives' own sections (btcvae, ...), each named as its objective."""
        return [f.name for f in dataclasses.fields(self) if dataclasses.is_dataclass(getattr(self, f.name))]

    def _check_applies(self, section: str, prefix: str) -> None:
        """A section's settings changed from their defaults while another objective trains would be ignored."""
        if section == self.name:
            return
        values, defaults = dataclasses.asdict(getattr(self, section)), dataclasses.asdict(type(getattr(self, section))())
        for key, value in values.items():
            _check(value == defaults[key], f"{prefix}.{section}.{key}",
                   f"applies to objective.name = {toml_value(section)} only, not {toml_value(self.name)}")

    def keywords(self) -> dict[str, Any]:
        """The objective's keywords: its own section's settings, then objective.args."""
        own = getattr(self, self.name, None) if self.name in self._sections() else None
        settings = dataclasses.asdict(own) if own is not None else {}
        # a section's settings for the trainer (factorvae's discriminator) are not the objective's keywords
        settings = {k: v for k, v in settings.items() if k not in getattr(own, "trainer_keys", ())}
        return {**settings, **self.args}



@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd and rmsprop only
    eps: float = 1e-8  # adam, rmsprop and adagrad (Burda et al. use 1e-4 with Adam)
    beta2: float = 0.999  # adam
    schedule: str = "constant"  # constant | burda | warmup_cosine | plateau (see optimizers.SCHEDULES)
    schedule_scale: float = 1.0  # burda: stage i lasts max(1, round(3^i * scale)) epochs, to shorten it on a CPU
    warmup_epochs: int = 0  # warmup_cosine: epochs of linear warm-up before the cosine
    min_lr_ratio: float = 0.01  # warmup_cosine ends at lr * min_lr_ratio; plateau goes no lower
    plateau_factor: float = 0.5  # plateau: lr times this when the validation ELBO stops improving
    plateau_patience: int = 5  # plateau: validations (epochs, or see train.validate_every) without a better ELBO first

    def validate(self, prefix: str = "optim") -> None:
        _one_of(self.name, choices("optim.name"), f"{prefix}.name")
        _one_of(self.schedule, choices("optim.schedule"), f"{prefix}.schedule")
        _check(self.lr > 0, f"{prefix}.lr", f"must be > 0, got {self.lr}")
        _check(self.eps > 0, f"{prefix}.eps", f"must be > 0, got {self.eps}")
        _check(0 < self.beta2 < 1, f"{prefix}.beta2", f"must be in (0, 1), got {self.beta2}")
        _check(self.schedule_scale > 0, f"{prefix}.schedule_scale", f"must be > 0, got {self.schedule_scale}")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.momentum >= 0, f"{prefix}.momentum", f"must be >= 0, got {self.momentum}")
        _check(self.warmup_epochs >= 0, f"{prefix}.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _check(0 <= self.min_lr_ratio <= 1, f"{prefix}.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(0 < self.plateau_factor < 1, f"{prefix}.plateau_factor",
               f"must be in (0, 1), got {self.plateau_factor}")
        _check(self.plateau_patience >= 0, f"{prefix}.plateau_patience", f"must be >= 0, got {self.plateau_patience}")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    eval_batch_size: int = 1000
    patience: int = 0  # epochs without a better validation ELBO before stopping; 0 = never stop early
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_steps: int = 0  # stop after this many optimizer steps in all; 0 = no limit (for tests)
    # at least this many optimizer steps: a small data set's epochs are raised to reach it, and early
    # stopping waits for it (the `images` presets: 2000; 0 = train.epochs decides alone)
    min_steps: int = 0
    train_subset: int = 0  # use only the first N training images; 0 = all (for tests)
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps; 0 = at the end of each epoch only
    nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop (keep the last good checkpoint) | skip the step
    precision: str = "auto"  # of the network products in training steps: auto | float32 | bfloat16 (see device.network_dtype)
    # torch.compile the training step (with Adam in one process: objective, gradient and update in
    # one graph; else the objective and its backward): true | false | "auto" = on a CPU, for a
    # whole Adam step, in runs of training.step.AUTO_COMPILE_STEPS (5,000) steps or more
    compile: bool | str = "auto"
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune
    ema_decay: float = 0.0  # > 0: validate, keep and evaluate an exponential moving average of the weights
    time_budget: float = 0.0  # minutes of training (summed over resumes) after which it stops; 0 = no limit
    # epochs between validations: every N-th epoch and the run's last are validated; the best (kept)
    # epoch, early stopping and the plateau schedule see only validated epochs; 1 = every epoch
    validate_every: int = 1
    # CPU threads torch computes with: "start" = the cores other processes leave free when the run
    # starts, kept for the run and on resume (runs resume bit for bit); "auto" = re-decided every few
    # seconds (results then agree to float rounding only); "fixed" = torch's own count (all cores);
    # or a count to pin (see vaelab.threads)
    threads: int | str = "start"
    # start from the kept weights of this run folder or shipped model ("pretrained:NAME") instead of a
    # random draw: fine-tuning, e.g. with another objective; its model section must be this run's
    init_from: str = ""

    def validate(self, prefix: str = "train") -> None:
        _check(self.epochs >= 1, f"{prefix}.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, f"{prefix}.eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        _check(self.patience >= 0, f"{prefix}.patience", f"must be >= 0, got {self.patience}")
        _seed(self.seed, f"{prefix}.seed")
        _check(self.max_steps >= 0, f"{prefix}.max_steps", f"must be >= 0, got {self.max_steps}")
        _check(self.min_steps >= 0, f"{prefix}.min_steps", f"must be >= 0, got {self.min_steps}")
        _check(self.train_subset >= 0, f"{prefix}.train_subset", f"must be >= 0, got {self.train_subset}")
        _check(self.checkpoint_every >= 0, f"{prefix}.checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        _one_of(self.nonfinite, choices("train.nonfinite"), f"{prefix}.nonfinite")
        _one_of(self.precision, choices("train.precision"), f"{prefix}.precision")
        _check(isinstance(self.compile, bool) or self.compile == "auto", f"{prefix}.compile",
               f"must be true, false or \"auto\", got {toml_value(self.compile)}")
        _one_of(self.compile_mode, choices("train.compile_mode"), f"{prefix}.compile_mode")
        _check(0 <= self.ema_decay < 1, f"{prefix}.ema_decay", f"must be in [0, 1) (0 = off), got {self.ema_decay}")
        _check(self.time_budget >= 0, f"{prefix}.time_budget",
               f"must be >= 0 minutes (0 = none), got {self.time_budget}")
        _check(self.validate_every >= 1, f"{prefix}.validate_every",
               f"must be a whole number of epochs >= 1 (1 = every epoch), got {self.validate_every}")
        _check(self.threads in THREAD_SETTINGS or (isinstance(self.threads, int) and self.threads >= 1),
               f"{prefix}.threads", f"must be \"start\", \"auto\", \"fixed\" or a thread count >= 1, got {toml_value(self.threads)}")
        _check(re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device) is not None,
               f"{prefix}.device", f"must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {toml_value(self.device)}")


@dataclass
class EvaluateConfig:
    """What `vaelab train` evaluates when training ends."""

    samples: int = 0  # K for the importance-sampled NLL of the test set; 0 = only the test ELBO
    memory_mb: float | None = None  # bound on one chunk of the NLL's work; unset: evaluate.chunk_memory_mb picks by device
    # torch.compile the NLL's chunks: true | false | "auto" = on a CPU, for evaluate.AUTO_COMPILE_SAMPLES
    # (10,000,000) (image, sample) pairs or more (the test set at K = 5000)
    compile: bool | str = "auto"
    # factor samples of the disentanglement scores (MIG, DCI, SAP, ...; `vaelab evaluate --disentanglement`)
    # when training ends, for data with factors (dsprites); 0 = none
    disentanglement: int = 0

    def validate(self, prefix: str = "evaluate") -> None:
        _check(self.samples >= 0, f"{prefix}.samples", f"must be >= 0 (0 = no NLL), got {self.samples}")
        _check(self.disentanglement == 0 or self.disentanglement >= 40, f"{prefix}.disentanglement",
               f"must be 0 (no scores) or at least 40 factor samples, got {self.disentanglement}")
        _check(self.memory_mb is None or self.memory_mb > 0, f"{prefix}.memory_mb", f"must be > 0, got {self.memory_mb}")
        _check(isinstance(self.compile, bool) or self.compile == "auto", f"{prefix}.compile",
               f"must be true, false or \"auto\", got {toml_value(self.compile)}")


@dataclass
class FiguresConfig:
    """The figures `vaelab train` draws when training ends (`vaelab figures` draws any of them later)."""

    names: list[str] = field(default_factory=lambda: ["samples", "reconstructions", "interpolations"])
    samples_n: int = 5  # an n x n grid
    reconstructions_n: int = 10
    reconstructions_random: bool = False
    manifold_n: int = 20
    manifold_range: str = "minmax"  # minmax (of the test posterior means) | quantile (of the prior)

    def validate(self, prefix: str = "figures") -> None:
        names = choices("figures.names")
        for name in self.names:
            _one_of(name, names, f"{prefix}.names")
        for key in ("samples_n", "reconstructions_n", "manifold_n"):
            _check(getattr(self, key) >= 1, f"{prefix}.{key}", f"must be >= 1, got {getattr(self, key)}")
        _one_of(self.manifold_range, choices("figures.manifold_range"), f"{prefix}.manifold_range")

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "names"}


@dataclass
class LogConfig:
    """Experiment trackers the run also logs to (see vaelab.tracking); metrics.jsonl is written either way."""

    backends: list[str] = field(default_factory=list)  # any of tensorboard, mlflow, wandb
    figures_every: int = 0  # epochs between the figures sent to the trackers; 0 = only at the end
    project: str = "vaelab"  # the MLflow experiment and the W&B project the run goes into
    run_name: str = ""  # the run's name in the trackers; "" = the run folder's name

    def validate(self, prefix: str = "log") -> None:
        names = choices("log.backends")
        for name in self.backends:
            _one_of(name, names, f"{prefix}.backends")
        _check(len(set(self.backends)) == len(self.backends), f"{prefix}.backends",
               f"names a backend twice: {toml_value(self.backends)}")
        _check(self.figures_every >= 0, f"{prefix}.figures_every",
               f"must be >= 0 epochs (0 = only at the end), got {self.figures_every}")
        _check(bool(self.project.strip()), f"{prefix}.project", "must not be empty")


@dataclass
class SweepConfig:
    """A sweep preset trains one run per member; each member is `key=value` overrides joined by ';'."""

    members: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "sweep") -> None:
        for i, member in enumerate(self.members):
            try:
                for text in member.split(";"):
                    parse_override(text)
            except ConfigError as err:
                raise ConfigError(f"{prefix}.members[{i}]: {err}") from None


@dataclass
class TuneConfig:
    """A hyperparameter search (`vaelab tune`): each trial trains a config with values drawn from `space`."""

    trials: int = 16  # trials to finish (completed or pruned; failed ones are re-run)
    workers: int = 1  # processes on this machine, each pulling trials from the study's storage
    metric: str = "val_elbo"  # val_elbo (maximized) | val_nll (importance-sampled on the validation set, minimized)
    nll_samples: int = 1000  # K of the val_nll metric
    sampler: str = "tpe"  # tpe | random | grid (the values of "choice" and "int" spaces)
    pruner: str = "none"  # none | median | hyperband, on the per-epoch validation ELBO
    seed: int = 0  # of the sampler (worker i draws with seed + i)
    heartbeat: int = 30  # seconds between a worker's signs of life; a trial silent 3 heartbeats is failed and re-run
    # "dotted.config.key" = ["log", lo, hi] | ["float", lo, hi] | ["int", lo, hi] | ["choice", v1, v2, ...]
    space: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str = "tune") -> None:
        _check(self.trials >= 1, f"{prefix}.trials", f"must be >= 1, got {self.trials}")
        _check(self.workers >= 1, f"{prefix}.workers", f"must be >= 1, got {self.workers}")
        _one_of(self.metric, choices("tune.metric"), f"{prefix}.metric")
        _check(self.nll_samples >= 1, f"{prefix}.nll_samples", f"must be >= 1, got {self.nll_samples}")
        _one_of(self.sampler, choices("tune.sampler"), f"{prefix}.sampler")
        _one_of(self.pruner, choices("tune.pruner"), f"{prefix}.pruner")
        _seed(self.seed, f"{prefix}.seed")
        _check(self.heartbeat >= 1, f"{prefix}.heartbeat", f"must be >= 1 second, got {self.heartbeat}")
        kinds = importlib.import_module(".tuning", __package__).SPACE_KINDS
        keys = set(_known_keys(RunConfig)) - set(_sections(RunConfig))
        for key, spec in self.space.items():
            where = f'{prefix}.space.{json.dumps(key)}'
            _check(key in keys and not key.startswith(("tune.", "sweep.", "code", "plugins.")), where,
                   f"not a config key that a trial can vary{_did_you_mean(key, sorted(keys))}")
            _check(isinstance(spec, list) and len(spec) >= 2 and spec[0] in kinds, where,
                   f"expected [KIND, ...] with KIND one of {', '.join(kinds)}, got {toml_value(spec)}")
            problem = kinds[spec[0]].check(spec[1:])
            _check(problem is None, where, f"{toml_value(spec)}: {problem}")
            if self.sampler == "grid":
                _check(kinds[spec[0]].grid(spec[1:]) is not None, where,
                       f"a grid tries the values of \"choice\" and \"int\" spaces; list a {spec[0]} range's values: "
                       f"[\"choice\", ...]")


@dataclass
class PluginsConfig:
    """Your own objectives, priors, likelihood heads and latent families, registered when these load."""

    modules: list[str] = field(default_factory=list)  # FILE.py or package.module, imported before validation

    def validate(self, prefix: str = "plugins") -> None:
        for i, module in enumerate(self.modules):
            _check(bool(module.strip()), f"{prefix}.modules[{i}]", "empty: give FILE.py or package.module")


@dataclass
class RunConfig:
    name: str = "mnist-lab"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    # filled when training starts: SHA-256 of every source file of your own the model came from
    # (model.custom/encoder/decoder, plugins.modules), which later commands check before rebuilding it
    code: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        for path, sha in self.code.items():
            _check(re.fullmatch(r"[0-9a-f]{64}", sha) is not None, f"code.{path}", f"not a SHA-256 digest: {sha!r}")
        _check(self.name not in ("", ".", "..") and not set(self.name) & set("/\\\0"), "name",
               f"must be usable as a folder name (no '/', not empty, '.' or '..'), got {toml_value(self.name)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)
        if self.data.name != IMAGES:  # a user's images are counted when they are loaded
            self._check_sizes()
        self._check_combinations()
        self._check_sweep_members()
        self._check_tune_space()

    def _check_tune_space(self) -> None:
        """Each end of a range and each choice of `tune.space` must give a valid config."""
        from .tuning import SPACE_KINDS

        for key, spec in self.tune.space.items():
            for value in SPACE_KINDS[spec[0]].extremes(spec[1:]):
                try:
                    trial_config(self, {key: value})
                except ConfigError as err:
                    raise ConfigError(f"tune.space.{json.dumps(key)}: {toml_value(value)} gives no valid config: "
                                      f"{err}") from None

    def _check_sizes(self) -> None:
        # A batch larger than the training images is not an error: training takes every image in
        # each step then (pipeline.fit_batch_to_data), as it does for a small folder of images.
        subset = self.train.train_subset
        available = DATASETS[self.data.name].train_size - self.data.val_size
        _check(subset <= available, "train.train_subset",
               f"{subset} is more than the {available} training images ({self.data.name} less data.val_size)")

    def _check_adversary(self) -> None:
        """An objective that trains a discriminator beside the model (factorvae) needs a vector of
        continuous codes, and an eager step: the compiled steps have no place for a second network's update."""
        if not getattr(registry("objective.name")[self.objective.name], "adversary", False):
            return
        _check(self.train.compile is not True, "train.compile",
               f"true is not possible with the {self.objective.name} objective: its discriminator's update "
               "runs only in the eager step; set train.compile = false (\"auto\" trains it eagerly)")
        kind = getattr(registry("model.latent")[self.model.latent], "kind", "continuous")
        _check(kind == "continuous", "model.latent",
               f"{self.model.latent} codes are not for the {self.objective.name} objective, whose "
               "discriminator permutes continuous codes: use model.latent = \"normal\" or \"laplace\"")
        _check(self.model.latent_dim2 == 0, "model.latent_dim2",
               f"must be 0 for the {self.objective.name} objective: its discriminator takes one layer of codes")

    def _check_sweep_members(self) -> None:
        """Each sweep member's overrides must give a valid config."""
        member_configs(self)

    def _check_combinations(self) -> None:
        """Settings that are each valid but make no sense together."""
        self._check_diagonal_latent()
        self._check_adversary()
        known = DATASETS.get(self.data.name)
        _check(not self.evaluate.disentanglement or known is None or known.generated, "evaluate.disentanglement",
               f"{self.data.name} has no factors to score against; use a factor data set (dsprites, "
               "shapes3d-like) or 0")
        likelihood, view = self.model.likelihood, self.data.binarization
        if view == BINARY and known is not None and known.pixels != BINARY:
            raise ConfigError(not_binary(self.data.name))
        if AUTO not in (likelihood, view):  # "auto" is decided, and checked again, when the data is loaded
            binary = registry("model.likelihood")[likelihood].data_range == "binary"  # scores {0,1} pixels
            _check(binary or view == "grey", "model.likelihood",
                   f"{likelihood} is a model of grey levels in [0, 1], but data.binarization = {toml_value(view)} gives "
                   "{0,1} pixels: use data.binarization = \"grey\", or model.likelihood = \"bernoulli\"")
        if self.data.name == IMAGES and not self.data.image_size:
            return  # the images' size and labels are read from them when training starts
        n_classes = len(label_names(self.data))
        _check(not self.model.conditional or self.model.n_classes >= n_classes, "model.n_classes",
               f"{self.model.n_classes} classes, but {self.data.name} labels go up to {n_classes - 1}")
        h, w = image_shape(self.data)[1:] if self.data.name != IMAGES else self.data.image_size
        if self.model.net == "conv":
            # any size whose sides survive the halvings, odd ones included (the rule: conv_shapes.conv_sides)
            misfit = conv_misfit(h, w, len(self.model.conv_channels), f"{self.data.name} is")
            _check(misfit is None, "model.conv_channels", misfit)

    def _check_diagonal_latent(self) -> None:
        """Objectives that take the posterior apart by dimension (`diagonal_latent`: btcvae, dipvae) need
        one diagonal posterior and prior; a model of your own is checked when it first trains."""
        name, model = self.objective.name, self.model
        if not getattr(registry("objective.name")[name], "diagonal_latent", False) or model.custom:
            return
        categorical = getattr(registry("model.latent")[model.latent], "kind", "continuous") == "categorical"
        for key, bad in (("latent", categorical), ("latent_dim2", model.latent_dim2), ("pseudo_inputs", model.pseudo_inputs)):
            _check(not bad, f"model.{key}", f"objective.name = {toml_value(name)} needs a diagonal posterior and prior "
                   "over one latent vector: model.latent = \"normal\" or \"laplace\", no latent_dim2, no "
                   "pseudo_inputs (VampPrior)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- building from dicts

def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type hint `hint` and convert int -> float where a float is due."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in inner[1:]:  # the first type's error is the one reported
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        return _coerce(value, inner[0], key)
    if origin is dict:
        return _coerce_table(value, key, typing.get_args(hint)[1])
    if origin is list:
        _check(isinstance(value, list), key, f"expected a list, got {toml_value(value)}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"expected a number, got {toml_value(value)}")
        _check(math.isfinite(value), key, f"expected a finite number, got {toml_value(value)}")
        return float(value)
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {toml_value(value)}")
        return value
    if hint is bool:
        _check(isinstance(value, bool), key, f"expected true or false, got {toml_value(value)}")
        return value
    if hint is str:
        _check(isinstance(value, str), key, f"expected a string, got {toml_value(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def _coerce_table(value: Any, key: str, item: Any) -> dict[str, Any]:
    """A free-form table (model.args, code): string keys, JSON values, so config.json records it as it is."""
    _check(isinstance(value, dict), key, f"expected a table, got {value!r}")
    for name, entry in value.items():
        _check(isinstance(name, str), f"{key}", f"keys must be strings, got {name!r}")
        if item is str:
            _check(isinstance(entry, str), f"{key}.{name}", f"expected a string, got {entry!r}")
            continue
        try:
            json.dumps(entry, allow_nan=False)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}.{name}: expected a JSON value (number, string, boolean, list or table), "
                              f"got {entry!r}") from None
    return dict(value)


def _known_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key of the config tree, dotted: sections and their fields (`model`, `model.latent_dim`, ...)."""
    keys, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _known_keys(hints[f.name], f"{key}.")
    return keys


def _sections(cls: type, prefix: str = "") -> list[str]:
    """The dotted keys of `cls`'s tree that are sections (tables), not values (`model`, `objective.btcvae`)."""
    hints, sections = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sections += [f"{prefix}{f.name}", *_sections(hints[f.name], f"{prefix}{f.name}.")]
    return sections


def _meant(where: str) -> str:
    """'; did you mean optim.lr?': the key whose field name is closest in spelling to the one written,
    in the same section or the only one of that name (train.lr -> optim.lr, model.latnt_dim ->
    model.latent_dim, modle.latent_dim -> model.latent_dim); '' if none is close or several are."""
    section, _, name = where.rpartition(".")
    keys_by_name: dict[str, list[str]] = {}
    for key in _known_keys(RunConfig):
        keys_by_name.setdefault(key.rpartition(".")[2], []).append(key)
    here = [n for n, keys in keys_by_name.items() if any(k.rpartition(".")[0] == section for k in keys)]
    close = difflib.get_close_matches(name, here, n=1) or difflib.get_close_matches(name, list(keys_by_name), n=1)
    keys = keys_by_name[close[0]] if close else []
    same_section = [key for key in keys if key.rpartition(".")[0] == section]
    meant = same_section or (keys if len(keys) == 1 else [])
    return f"; did you mean {meant[0]}?" if meant else ""


def _unknown_key(key: str, value: Any, prefix: str, known: list[str]) -> ConfigError:
    """'train.lr: unknown key; did you mean optim.lr? (known in train: ...)', for `key` under section `prefix`."""
    where = f"{prefix}.{key}" if prefix else key
    while not prefix and isinstance(value, dict) and value:  # an unknown section: name the key written in it
        key, value = next(iter(value.items()))
        where = f"{where}.{key}"
    scope = f" in {prefix}" if prefix else ""
    return ConfigError(f"{where}: unknown key{_meant(where)} (known{scope}: {', '.join(sorted(known))})")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in known:
            raise _unknown_key(key, value, prefix, known)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            _check(isinstance(value, dict), key, f"expected a table, got {toml_value(value)}")
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig; missing keys take their defaults.

    Plugins load first (the `vaelab.plugins` entry points, then `plugins.modules`), so the names
    they register are valid choices.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"expected a table of config sections, got {type(values).__name__}")
    from .plugins import load_plugins  # here: plugins import the registries, which import this module

    load_plugins(_build(PluginsConfig, values.get("plugins") or {}, "plugins").modules
                 if isinstance(values.get("plugins", {}), dict) else [])
    config = _build(RunConfig, values, "")
    config.validate()
    return config


def member_configs(config: RunConfig) -> list[tuple[str, RunConfig]]:
    """(folder name, config) of each sweep member: the sweep's config with the member's overrides,
    named by their keys' last parts (`model.latent_dim=2` -> `latent_dim=2`). A member whose
    overrides give no valid config is a ConfigError naming it."""
    base = config.to_dict()
    base["sweep"] = {"members": []}
    members = []
    for i, member in enumerate(config.sweep.members):
        texts = [text.strip() for text in member.split(";")]
        values = base
        try:
            for text in texts:
                values = _merge(values, parse_override(text))
            members.append(("_".join(_member_name(text) for text in texts), config_from_dict(values)))
        except ConfigError as err:
            raise ConfigError(f"sweep.members[{i}]: {toml_value(member)}: {err}") from None
    return members


def _member_name(override: str) -> str:
    """`optim.lr=0.003` -> `lr=0.003`: the key's last part, the value as written (its dots kept)."""
    key, _, value = override.partition("=")
    return f"{key.strip().split('.')[-1]}={value.strip()}"


def trial_config(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """The config of one tuning trial: `config` without its [tune] section, with `values`
    ({"optim.lr": 0.001, ...}) set. A ConfigError names the key whose value gives no valid config."""
    tree = config.to_dict()
    tree["tune"] = {}
    for key, value in values.items():
        node = tree
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = value
    return config_from_dict(tree)


def to_toml(values: dict[str, Any]) -> str:
    """A config dict as a TOML file `tomllib` reads back equal (None values, which TOML lacks, left out:
    they are the defaults of the keys that take them)."""
    def key(name: str) -> str:
        return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)

    def value(item: Any) -> str:
        if isinstance(item, dict):
            return "{" + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items() if v is not None) + "}"
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(v) for v in item) + "]"
        return toml_value(item)

    lines = [f"{key(k)} = {value(v)}" for k, v in values.items() if v is not None and not _is_section(v)]
    for name, table in values.items():
        if _is_section(table):
            lines += ["", f"[{key(name)}]"]
            lines += [f"{key(k)} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def _is_section(value: Any) -> bool:
    return isinstance(value, dict)  # at the top level a table is a [section]; below it, an inline table


def parse_override(text: str) -> dict[str, Any]:
    """`model.latent_dim=10` -> {"model": {"latent_dim": 10}}; the value is read as TOML, else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. model.latent_dim=10")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    tree: dict[str, Any] = {}
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


# ---------------------------------------------------------------- presets and files

def preset_names() -> list[str]:
    files = resources.files("vaelab.presets").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def preset_dict(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's values; one with `based_on = "OTHER"` is OTHER's values with its own laid over
    them (as a --config file is laid over a preset), so a variant names only what it changes."""
    path = resources.files("vaelab.presets") / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r} does not exist (known: {', '.join(preset_names())})")
    values = tomllib.loads(path.read_text())
    base = values.pop("based_on", None)
    if base is None:
        return values
    if not isinstance(base, str) or base in (name, *_seen) or base not in preset_names():
        raise ConfigError(f"preset {name!r}: based_on must name another preset without a cycle, not {base!r}")
    return _merge(preset_dict(base, (*_seen, name)), values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON config file as a plain dict; a parse error names the file."""
    path = Path(path)
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid {kind}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {kind}: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of config sections, got {type(values).__name__}")
    return values


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset (default `mnist-lab`), then a config file, then `key=value` overrides, in that order."""
    values = preset_dict(preset or "mnist-lab")
    if config_file is not None:
        values = _merge(values, read_config_file(config_file))
    for text in overrides:
        values = _merge(values, parse_override(text))
    try:
        return config_from_dict(values)
    except ConfigError as err:
        source = f" (in {config_file})" if config_file else ""
        raise ConfigError(f"{err}{source}") from None
