"""Objectives, priors, likelihood heads and latent families from the user's code, by name.

    @vaelab.register_objective("mmd")
    def mmd_vae(model, x, samples, generator, y, kl_weight, **args) -> vaelab.ObjectiveTerms: ...

registers into the same registry as the built-in ones (`config.REGISTRIES` says which), so the
name is then a value of its config key (`objective.name = "mmd"`) for the CLI, TOML, sweeps and
the checks alike. Plugins load from the `vaelab.plugins` entry points of installed packages and
from `[plugins] modules = ["my_objectives.py"]`; a file's digest joins the run's `code` record.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from .config import ConfigError, registry

T = TypeVar("T")

# config key -> what each entry of its registry must be; the names the registering functions use
PLUGGABLE: dict[str, str] = {
    "objective.name": "objective(model, x, samples, generator, y, kl_weight, **objective.args) -> ObjectiveTerms",
    "model.prior": "prior(loc, scale) -> Distribution over z (a standard prior when loc = 0, scale = 1)",
    "model.likelihood": "an nn.Module class (config, n_pixels) whose forward(out) gives p(x|z)",
    "model.latent": "an nn.Module class (config) with posterior(params), prior(device, dtype), kl, flatten",
}
_BUILT_IN: dict[str, set[str]] = {}  # names each registry had before any plugin, which a plugin may not replace
_entry_points_loaded = False


def register(key: str, name: str) -> Callable[[T], T]:
    """A decorator that registers its object under `name` in the registry behind config key `key`."""
    if key not in PLUGGABLE:
        raise ConfigError(f"{key}: plugins register {', '.join(PLUGGABLE)}, not {key}")
    entries = registry(key)
    built_in = _BUILT_IN.setdefault(key, set(entries))

    def add(obj: T) -> T:
        if name in built_in:
            raise ConfigError(f"{key}: {name!r} is built in; register your own under another name")
        entries[name] = obj  # a notebook cell run again replaces its own earlier entry
        return obj

    return add


def register_objective(name: str) -> Callable[[T], T]:
    """Register an objective: fn(model, x, samples, generator, y, kl_weight, **objective.args) -> ObjectiveTerms.

    Set `fn.takes_kl_weight = False` if beta and KL warm-up mean nothing for it (as for IWAE).
    """
    return register("objective.name", name)


def register_prior(name: str) -> Callable[[T], T]:
    """Register a standard prior for continuous latents: fn(loc, scale) -> Independent over z."""
    return register("model.prior", name)


def register_likelihood(name: str) -> Callable[[T], T]:
    """Register a likelihood head class (see likelihoods.py: params_per_pixel, data_range, discrete, and
    explorer_type if the explorer page can compute its mean)."""
    return register("model.likelihood", name)


def register_latent(name: str) -> Callable[[T], T]:
    """Register a latent family class (see latents.py: n_params, size, posterior, prior, kl, flatten, and
    kind = "categorical" for one-hot variables; continuous if it does not say)."""
    return register("model.latent", name)


def load_plugins(modules: list[str]) -> None:
    """Load the installed packages' `vaelab.plugins` entry points (once) and the given modules/files."""
    from .usercode import load_module

    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for point in entry_points(group="vaelab.plugins"):
            try:
                point.load()
            except Exception as err:  # one broken plugin must not stop every command
                raise ConfigError(f"plugin {point.name!r} ({point.value}): loading it failed: "
                                  f"{type(err).__name__}: {err}") from None
    for i, module in enumerate(modules):
        load_module(module, f"plugins.modules[{i}]")


def registered_names(key: str) -> list[str]:
    """The names plugins added to the registry behind `key` (beyond the built-in ones)."""
    built_in = _BUILT_IN.get(key, set(registry(key)))
    return [name for name in registry(key) if name not in built_in]

