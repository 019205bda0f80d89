"""The VAE: prior p(z), encoder q(z|x), decoder p(x|z), each a `torch.distributions` object.

Anyone can score a model without vaelab's internals:

    q = model.posterior(x); z = q.rsample()
    log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)

A conditional model (CVAE) takes the labels too: `posterior(x, y)`, `likelihood(z, y)`.
Variants are chosen by config and looked up in registries: the latent family
(`latents.LATENT_FAMILIES`), the networks (`NETWORKS`), the likelihood head
(`likelihoods.LIKELIHOOD_HEADS`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution, Independent, RelaxedOneHotCategorical

from .config import ModelConfig
from .contract import Model, ModelError, check_model
from .data.catalog import IMAGE_SHAPES  # noqa: F401  (re-exported)
from .distributions import TwoStep, normal_from_log_var, uniform_mixture
from .latents import LATENT_FAMILIES, standard_prior
from .likelihoods import LIKELIHOOD_HEADS
from .nets import MLP, ConvDecoder, ConvEncoder



class MLPEncoder(nn.Module):
    def __init__(self, config: ModelConfig, image_shape: tuple[int, int, int], out: int, extra: int) -> None:
        super().__init__()
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.net = MLP(n_pixels + extra, config.encoder_hidden, out, config.activation, config.init, config.init_std,
                   block=config.block)

    @property
    def last(self) -> nn.Linear:
        return self.net.last

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x if extra is None else torch.cat([x, extra], -1))


def _mlp_decoder(config: ModelConfig, image_shape: tuple[int, int, int], n_in: int, params: int) -> nn.Module:
    n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
    return MLP(n_in, config.decoder_hidden, n_pixels * params, config.activation, config.init, config.init_std,
               block=config.block)


def _conv_encoder(config: ModelConfig, image_shape: tuple[int, int, int], out: int, extra: int) -> nn.Module:
    return ConvEncoder(image_shape, config.conv_channels, out, config.activation, extra)


def _conv_decoder(config: ModelConfig, image_shape: tuple[int, int, int], n_in: int, params: int) -> nn.Module:
    return ConvDecoder(n_in, image_shape, config.conv_channels, params, config.activation)


class UserEncoder(nn.Module):
    """A user's encoder (model.encoder) inside vaelab's VAE: it sees images as (batch, C, H, W) (and, for a
    conditional model, the one-hot labels as a second argument) and returns (batch, the latent's parameters)."""

    def __init__(self, net: nn.Module, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.net, self.image_shape = net, image_shape

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        images = x.reshape(-1, *self.image_shape)
        out = self.net(images) if extra is None else self.net(images, extra.reshape(-1, extra.shape[-1]))
        return out.reshape(*lead, -1)


class UserDecoder(nn.Module):
    """A user's decoder (model.decoder): z as (batch, latent [+ labels]) -> the likelihood head's parameters,
    any shape that flattens parameter-major to params_per_pixel * C*H*W per z (e.g. (batch, params*C, H, W))."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # several samples per image in IWAE and evaluation: one batch for the network
        return self.net(z.reshape(-1, z.shape[-1])).reshape(*lead, -1)


def _user_network(ref: str, key: str, image_shape: tuple[int, int, int], sizes: dict[str, int],
                  args: dict) -> nn.Module:
    """The user's network class built with image_shape, the sizes it must fit (`sizes`: out_features, latent_dim
    and n_labels, the one-hot labels' size a conditional encoder also takes, for an encoder; in_features,
    latent_dim and params_per_pixel for a decoder) and model.args, each keyword only if its constructor takes
    it (model.args win over the sizes)."""
    from .usercode import build, load_ref

    cls = load_ref(ref, key)[0]
    return build(cls, key, {"image_shape": tuple(image_shape), **sizes, **args})


# name -> (encoder builder, decoder builder)
NETWORKS: dict[str, tuple[Callable[..., nn.Module], Callable[..., nn.Module]]] = {
    "mlp": (MLPEncoder, _mlp_decoder),
    "conv": (_conv_encoder, _conv_decoder),
}


class VAE(Model):
    """x: (batch, n_pixels) -> q(z|x) with batch_shape (batch,); z: (..., z_size) -> p(x|z)."""

    def __init__(self, config: ModelConfig, image_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__(image_shape)
        self.config = config
        self.n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.latent = LATENT_FAMILIES[config.latent](config)
        self.n_labels = config.n_classes if config.conditional else 0
        head_cls = LIKELIHOOD_HEADS[config.likelihood]
        build_encoder, build_decoder = NETWORKS[config.net]
        top = INFERENCES[config.inference] if config.latent_dim2 else None
        self.decoded_dim = self.latent.size + (config.latent_dim2 if top and top.reads_z2 else 0)  # what p(x|z) reads
        if config.encoder:
            sizes = {"out_features": self.latent.n_params, "latent_dim": config.latent_dim, "n_labels": self.n_labels}
            self.encoder = UserEncoder(_user_network(config.encoder, "model.encoder", self.image_shape, sizes,
                                                     config.args), self.image_shape)
        else:
            self.encoder = build_encoder(config, self.image_shape, self.latent.n_params, self.n_labels)
        if config.decoder:
            sizes = {"in_features": self.decoded_dim + self.n_labels, "latent_dim": config.latent_dim,
                     "params_per_pixel": head_cls.params_per_pixel}
            self.decoder = UserDecoder(_user_network(config.decoder, "model.decoder", self.image_shape, sizes,
                                                     config.args))
        else:
            self.decoder = build_decoder(config, self.image_shape, self.decoded_dim + self.n_labels,
                                         head_cls.params_per_pixel)
        self.head = head_cls(config, self.n_pixels)
        self.top = top(config) if top else None
        # model.pseudo_inputs: the VampPrior's learned images, as logits so that their pixels stay in (0, 1)
        self.pseudo_logits = nn.Parameter(torch.zeros(config.pseudo_inputs, self.n_pixels)) if config.pseudo_inputs else None
        self.latent_dim = self.latent.size + (config.latent_dim2 if self.top else 0)
        if config.encoder or config.decoder:
            self._check_networks()

    def _check_networks(self) -> None:
        """One line naming the user's network whose output does not fit the latent family or the likelihood head."""
        cfg, x = self.config, torch.rand(2, self.n_pixels, device=self.device)
        with torch.no_grad():
            if cfg.encoder:
                out = self.encoder(x, self._one_hot(torch.zeros(2), x))
                if out.shape != (2, self.latent.n_params):
                    raise ModelError(f"model.encoder: returned (batch, {out[0].numel()}); a {cfg.latent} latent of "
                                     f"size {cfg.latent_dim} needs (batch, {self.latent.n_params}) "
                                     f"({self.latent.params_text})")
            if cfg.decoder:
                z = torch.zeros(2, self.decoded_dim + self.n_labels, device=self.device)
                out, head = self.decoder(z), LIKELIHOOD_HEADS[cfg.likelihood]
                need = head.params_per_pixel * self.n_pixels
                if out.shape != (2, need):
                    c, h, w = self.image_shape
                    raise ModelError(f"model.decoder: returned {out[0].numel()} values per z; the {cfg.likelihood} "
                                     f"likelihood of {c}x{h}x{w} images needs {need} ({head.params_per_pixel} per "
                                     f"pixel, parameter-major, e.g. (batch, {head.params_per_pixel * c}, {h}, {w}))")

    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based): the latent family's schedule, if it has one."""
        if hasattr(self.latent, "start_epoch"):
            self.latent.start_epoch(epoch)

    def _one_hot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if not self.n_labels:
            return None
        if y is None:
            raise ValueError("this is a conditional model (model.conditional = true): pass the labels y")
        one_hot = nn.functional.one_hot(y.long(), self.n_labels).to(like.dtype)
        return one_hot.expand(*like.shape[:-1], self.n_labels)

    def prior(self) -> Distribution:
        """p(z); event_shape (z_size,) (or (variables, categories) for categorical latents)."""
        if self.pseudo_logits is not None:
            return self._vamp_prior()
        weight = next(self.decoder.parameters())
        if self.top:
            return self.top.prior(standard_prior(self.config.prior, self.config.latent_dim2, weight.device, weight.dtype))
        return self.latent.prior(weight.device, weight.dtype)

    def _vamp_prior(self) -> Distribution:
        """The VampPrior (Tomczak & Welling, 2018): p(z) = (1/C) sum_c q(z | u_c), the posteriors of C
        learned pseudo-inputs u_c, a `MixtureSameFamily`. With two layers it is the prior of z2, then
        p(z1|z2) as before: p(z2) = (1/C) sum_c q(z2 | z1 = E[z1 | u_c]) inferred bottom-up,
        (1/C) sum_c q(z2 | u_c) top-down."""
        pseudo = torch.sigmoid(self.pseudo_logits)  # (C, n_pixels), pixels in (0, 1) like the data
        params = self.network(self.encoder, pseudo, None)
        if self.top:
            return self.top.prior(uniform_mixture(self.top.vamp_components(self.latent, params)))
        return uniform_mixture(self.latent.posterior(params))  # batch_shape (C,)

    @torch.no_grad()
    def init_pseudo_inputs(self, images: torch.Tensor) -> None:
        """Start the VampPrior's pseudo-inputs at `images`: (pseudo_inputs, n_pixels) in [0, 1], e.g.
        random training images (pixels kept off 0 and 1, whose logits are infinite)."""
        self.pseudo_logits.copy_(torch.logit(images.clamp(0.02, 0.98)).to(self.pseudo_logits))

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x[, y]); x: (batch, n_pixels), y: (batch,) labels -> batch_shape (batch,)."""
        params = self.network(self.encoder, x, self._one_hot(y, x))
        return self.top.posterior(self.latent, params) if self.top else self.latent.posterior(params)

    def likelihood(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z[, y]); z as drawn from the prior or posterior -> batch_shape (...), event_shape (n_pixels,).

        z is (..., z_size), or (..., variables, categories) for a categorical latent.
        """
        if self.top and not self.top.reads_z2:
            z = z[..., :self.latent.size]
        z = self.latent.flatten(z)
        extra = self._one_hot(y, z)
        return self.head(self.network(self.decoder, z if extra is None else torch.cat([z, extra], -1)))

    def kl(self, posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q || p) per data point: analytic where there is a closed form, Monte-Carlo over z otherwise."""
        return self.latent.kl(posterior, prior, z)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z]: z as for `likelihood` -> (..., n_pixels) in [0, 1]; what the figures show."""
        return self.likelihood(z, y).mean

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean: (batch, n_pixels) -> (batch, z_size).

        For categorical latents the class probabilities (the mean of the hard one-hot posterior),
        in training mode too, where the relaxed posterior has no closed-form mean.
        """
        posterior = self.posterior(x, y)
        base = posterior.base_dist if isinstance(posterior, Independent) else posterior
        mean = base.probs if isinstance(base, RelaxedOneHotCategorical) else posterior.mean
        return self.latent.flatten(mean)

    @torch.no_grad()
    def init_output_bias(self, train_mean: torch.Tensor) -> None:
        """Set the decoder's output bias to the logit of the mean training image (Burda et al.).

        train_mean: (n_pixels,) in [0, 1]. Only the first parameter block (the logit or pre-sigmoid
        mean of every head) is set; an MLP decoder has one bias per output, a conv decoder one per channel.
        """
        logit = torch.logit(train_mean.clamp(1e-3, 1 - 1e-3))
        last = getattr(self.decoder, "last", None)
        if last is None:  # a user's decoder (model.decoder) sets its own output bias
            return
        if isinstance(last, nn.Linear):
            last.bias[:self.n_pixels] = logit.to(last.bias)
        else:
            c = self.image_shape[0]
            last.bias[:c] = logit.reshape(c, -1).mean(1).to(last.bias)


class TopLayer(nn.Module):
    """A second stochastic layer z2 above z1, Gaussian, with MLPs between; z = [z1, z2] throughout.

    The generative side is the same for every inference order: p(z1, z2) = p(z2) p(z1|z2). KL(q || p)
    has no closed form: it is estimated by Monte-Carlo over the sampled z. Subclasses (`INFERENCES`)
    choose q and what the decoder reads; `params` below is the encoder's output for x, (..., 2 * latent_dim).
    """

    reads_z2 = False  # whether p(x|z) reads z2 as well as z1

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dims = (config.latent_dim, config.latent_dim2)
        self.log_var_bounds = tuple(config.log_var_bounds)

    @staticmethod
    def _down(config: ModelConfig) -> nn.Module:
        """p(z1|z2)'s network; built after q's, so that a seed draws a bottom-up model's weights, and its
        parameters come in the order (the optimizer's state, checkpoints), as they always have."""
        return MLP(config.latent_dim2, config.decoder_hidden2, 2 * config.latent_dim, config.activation, block=config.block)

    def _normal(self, params: torch.Tensor) -> Distribution:
        return normal_from_log_var(params, self.log_var_bounds)

    def prior(self, p2: Distribution) -> Distribution:
        """p(z1, z2) = p(z2) p(z1|z2); p2 is p(z2): standard, or the VampPrior's mixture."""
        return TwoStep(p2, lambda z2: self._normal(self.down(z2)), *self.dims, first_is_a=False)


class BottomUp(TopLayer):
    """Burda et al. (2016): q(z1, z2 | x) = q(z1|x) q(z2|z1); the decoder reads z1 only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.up = MLP(config.latent_dim, config.encoder_hidden2, 2 * config.latent_dim2, config.activation, block=config.block)
        self.down = self._down(config)

    def upper_posterior(self, z1: torch.Tensor) -> Distribution:
        """q(z2|z1): z1 (..., latent_dim) -> batch_shape (...,), event (latent_dim2,)."""
        return self._normal(self.up(z1))

    def posterior(self, latent: nn.Module, params: torch.Tensor) -> Distribution:
        return TwoStep(latent.posterior(params), self.upper_posterior, *self.dims, first_is_a=True)

    def vamp_components(self, latent: nn.Module, params: torch.Tensor) -> Distribution:
        """The VampPrior's components over z2, from the encoder's output for the pseudo-inputs: q(z2 | E[z1|u])."""
        return self.upper_posterior(latent.posterior(params).mean)


class TopDown(TopLayer):
    """Tomczak & Welling's two-level VAE (2018): q(z1, z2 | x) = q(z2|x) q(z1|x, z2), inference in the
    order of the generative model, and p(x | z1, z2): the decoder reads both layers."""

    reads_z2 = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        features = 2 * config.latent_dim  # the encoder's output, which here feeds both posteriors
        self.up = MLP(features, config.encoder_hidden2, 2 * config.latent_dim2, config.activation, block=config.block)
        self.merge = MLP(features + config.latent_dim2, config.encoder_hidden2, features, config.activation,
                         block=config.block)
        self.down = self._down(config)

    def posterior(self, latent: nn.Module, params: torch.Tensor) -> Distribution:
        def lower(z2: torch.Tensor) -> Distribution:  # q(z1 | x, z2); z2 (samples..., batch, latent_dim2)
            return latent.posterior(self.merge(torch.cat([params.expand(*z2.shape[:-1], -1), z2], -1)))
        return TwoStep(self._normal(self.up(params)), lower, *self.dims, first_is_a=False)

    def vamp_components(self, latent: nn.Module, params: torch.Tensor) -> Distribution:
        """The VampPrior's components over z2: q(z2|u) of each pseudo-input u."""
        return self._normal(self.up(params))


# model.inference: the order in which a two-layer model (model.latent_dim2 > 0) infers its layers
INFERENCES: dict[str, type[TopLayer]] = {"bottom-up": BottomUp, "top-down": TopDown}


def build_model(config: ModelConfig, image_shape: tuple[int, int, int]) -> Model:
    """The model a config describes: the user's own (model.custom), checked against the contract, or a VAE."""
    if not config.custom:
        return VAE(config, image_shape)
    from .usercode import build, load_ref

    cls = load_ref(config.custom, "model.custom")[0]
    model = build(cls, "model.custom", {"image_shape": tuple(image_shape), **config.args})
    if not hasattr(model, "image_shape"):
        model.image_shape = tuple(image_shape)  # the figures and the explorer read it
    check_model(model, tuple(image_shape), f"model.custom ({config.custom.rpartition('/')[2]})")
    return model
