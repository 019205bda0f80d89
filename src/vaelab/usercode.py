"""A user's own code, named in a config: `FILE.py:NAME` or `package.module:NAME`.

A run records the SHA-256 of every source file its model came from (`code` in config.json), so
that a later command rebuilds the model from the code that trained it: a file that is gone or
has changed stops the command with one line naming the file and both digests, unless the user
allows the change (`--allow-code-change`), which the run folder then records.

A file is executed from the bytes whose digest is recorded, so the digest describes exactly the
code that ran. Nothing is unpickled: the model is rebuilt by calling its class again with the
recorded keywords, then its weights are read from safetensors.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .config import ConfigError, RunConfig

_LOADED: dict[tuple[str, str], ModuleType] = {}  # (path, sha256) -> module: a file runs once per process
_OBJECTS: dict[str, Any] = {}  # "<object-N>" -> a model or network object passed to vaelab.train in this process
_allow_changes = False


class CodeChangedError(ConfigError):
    """The code a run was trained with is gone or differs; the message names the file and both digests."""


def allow_code_changes(allow: bool = True) -> None:
    """Let later commands rebuild a model from code that changed since training (`--allow-code-change`)."""
    global _allow_changes
    _allow_changes = allow


def code_changes_allowed() -> bool:
    return _allow_changes


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_ref(ref: str, key: str) -> tuple[str, str]:
    """'my_vae.py:MyVAE' -> ('my_vae.py', 'MyVAE'); the module part may be a file or a dotted module."""
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ConfigError(f"{key}: {ref!r} is not FILE.py:NAME or package.module:NAME")
    return where, name


def is_file_ref(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def absolute_ref(ref: str, key: str) -> str:
    """A FILE.py:NAME reference with its file made absolute (so later commands find it from any folder)."""
    where, name = split_ref(ref, key)
    if not is_file_ref(where):
        return ref
    path = Path(where).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: {where}: no such file" if not path.exists() else f"{key}: {where} is not a file")
    return f"{path.resolve()}:{name}"


def _run_file(path: Path, key: str) -> tuple[ModuleType, str]:
    """Execute a source file once per (path, content) and return the module with its digest."""
    if not path.is_file():
        raise ConfigError(f"{key}: {path}: no such file" if not path.exists() else f"{key}: {path} is not a file")
    try:
        source = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{key}: {path}: cannot read ({err.strerror})") from None
    sha = digest(source)
    if (str(path), sha) not in _LOADED:
        name = f"vaelab_user_{path.stem}_{sha[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and typing look their module up by name
        if str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))  # a file may import its neighbours (appended: never shadows)
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)
        except Exception as err:
            del sys.modules[name]
            raise ConfigError(f"{key}: {path}: running it failed: {type(err).__name__}: {err}") from err
        _LOADED[(str(path), sha)] = module
    return _LOADED[(str(path), sha)], sha


def _import_module(where: str, key: str) -> ModuleType:
    try:
        return importlib.import_module(where)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import module {where!r} ({err})") from None


def ref_for(obj: Any, key: str) -> str:
    """The reference a config records for a class or object given in Python.

    A class from a file is named by that file (so any later process finds it); a class from an installed
    package or from __main__ (a notebook, a script) by its module; an object by a token that only this
    process can resolve, since the arguments it was built with are unknown.
    """
    if isinstance(obj, str):
        return obj
    if inspect.isclass(obj):
        file = getattr(sys.modules.get(obj.__module__), "__file__", None)
        if obj.__module__ != "__main__" and file and "site-packages" not in Path(file).parts:
            return f"{Path(file).resolve()}:{obj.__name__}"
        return f"{obj.__module__}:{obj.__name__}"
    token = f"<object-{len(_OBJECTS) + 1}>"
    _OBJECTS[token] = obj
    return f"{token}:{type(obj).__name__}"


def names_object(ref: str | None) -> bool:
    """Does `ref` (a config's model.custom) name an object given in Python, rather than a class?"""
    return bool(ref) and ref.startswith("<object-")


def _object(where: str, name: str, key: str) -> Any:
    if where not in _OBJECTS:
        keyword = {"model.encoder": "encoder", "model.decoder": "decoder"}.get(key, "model")
        raise ConfigError(f"{key}: this run was trained from a {name} object passed to vaelab.train in another "
                          "Python process, which a new process cannot rebuild (the arguments it was built with are "
                          f"unknown): train with the class instead ({keyword}={name}, model_args={{...}}), "
                          "defined in a .py file")
    return _OBJECTS[where]


def load_ref(ref: str, key: str) -> tuple[Any, str | None, str | None]:
    """(the object named by `ref`, its source file or None, that file's SHA-256 or None)."""
    where, name = split_ref(ref, key)
    if where.startswith("<object-"):
        return _object(where, name, key), None, None
    if is_file_ref(where):
        module, sha = _run_file(Path(where).expanduser().resolve(), key)
        path: str | None = str(Path(where).expanduser().resolve())
    else:
        module = _import_module(where, key)
        path = getattr(module, "__file__", None)
        sha = digest(Path(path).read_bytes()) if path and Path(path).is_file() else None
    if not hasattr(module, name) and where == "__main__":
        raise ConfigError(f"{key}: {name} was defined in __main__ (a notebook or a script run directly), which a new "
                          f"process cannot import: put the class in a .py file and train with "
                          f"model='my_model.py:{name}' (vaelab train --model my_model.py:{name})")
    if not hasattr(module, name):
        known = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__)
        raise ConfigError(f"{key}: {where} has no {name!r}" + (f" (it defines {', '.join(known)})" if known else ""))
    return getattr(module, name), path, sha


def load_module(ref: str, key: str) -> tuple[str | None, str | None]:
    """Run a plugin file (FILE.py) or import a module (package.module); (its source file, its SHA-256)."""
    if is_file_ref(ref):
        path = Path(ref).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{key}: {ref}: no such file")
        return str(path), _run_file(path, key)[1]
    module = _import_module(ref, key)
    path = getattr(module, "__file__", None)
    return path, (digest(Path(path).read_bytes()) if path and Path(path).is_file() else None)


def code_record(refs: dict[str, str], modules: list[str]) -> dict[str, str]:
    """{source file: SHA-256} of the user's code: model refs {key: ref} and plugin modules.

    Only files outside installed packages are recorded: code inside site-packages is versioned by
    its package, and checking it would stop every command after an upgrade.
    """
    record: dict[str, str] = {}
    found = [load_ref(ref, key)[1:] for key, ref in refs.items() if ref]
    found += [load_module(module, f"plugins.modules[{i}]") for i, module in enumerate(modules)]
    for path, sha in found:
        if path and sha and "site-packages" not in Path(path).parts:
            record[path] = sha
    return record


def check_recorded(recorded: dict[str, str], where: str = "") -> dict[str, dict[str, str | None]]:
    """Compare the recorded {file: sha256} with the files now; raise CodeChangedError on a difference
    unless changes are allowed, and return the differences ({file: {trained, now}}) that were allowed."""
    changed: dict[str, dict[str, str | None]] = {}
    for path, sha in recorded.items():
        file = Path(path)
        now = digest(file.read_bytes()) if file.is_file() else None
        if now != sha:
            changed[path] = {"trained": sha, "now": now}
    if changed and not _allow_changes:
        path, hashes = next(iter(changed.items()))
        state = "is gone" if hashes["now"] is None else f"has changed (sha256 {hashes['now'][:12]}...)"
        raise CodeChangedError(f"{path}: the model code {state}; {where or 'the run'} was trained with sha256 "
                               f"{hashes['trained'][:12]}...: restore the file, or pass --allow-code-change "
                               "(allow_code_change=True in Python) to use it as it is now")
    return changed


def build(cls: Any, key: str, keywords: dict[str, Any]) -> Any:
    """cls(**keywords), keeping only the keywords its constructor takes (all, if it takes **kwargs); an object
    given in Python (not a class) is copied, so training it leaves the caller's object as it was."""
    if isinstance(cls, torch.nn.Module):
        return copy.deepcopy(cls)
    if not callable(cls):
        raise ConfigError(f"{key}: {cls!r} is not a class")
    names = accepted_keywords(cls)
    given = keywords if names is None else {k: v for k, v in keywords.items() if k in names}
    try:
        return cls(**given)
    except TypeError as err:
        raise ConfigError(f"{key}: building {getattr(cls, '__name__', cls)} failed: {err}") from None


def accepted_keywords(cls: Any) -> set[str] | None:
    """The keyword names cls takes, or None if it takes any (**kwargs) or has no readable signature."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def record_code(config: RunConfig) -> RunConfig:
    """The config a new run records: file references made absolute, and `code`, the SHA-256 of each of
    the user's source files the model comes from (model.custom/encoder/decoder, plugins.modules)."""
    given = {f"model.{key}": getattr(config.model, key) for key in ("custom", "encoder", "decoder")}
    refs = {key: absolute_ref(ref, key) if ref else "" for key, ref in given.items()}
    modules = [str(Path(m).expanduser().resolve()) if is_file_ref(m) else m for m in config.plugins.modules]
    model = dataclasses.replace(config.model, **{key.split(".")[1]: ref for key, ref in refs.items()})
    description = config.description
    if model.custom:  # the preset's description names its own network, not this model
        description = f"{model.custom.rpartition(':')[2]}, a model of your own, trained with the {config.name} " \
                      "preset's data, objective and training settings"
    return dataclasses.replace(config, model=model, plugins=dataclasses.replace(config.plugins, modules=modules),
                               code=code_record(refs, modules), description=description)
