"""One error base: every error a user can fix is a VaelabError, and the CLI tells those from bugs.

A VaelabError (or an OSError from the user's paths) is one line and exit 2; any other exception
keeps its traceback, says whose code raised it and exits 3, so a bug never reads as a user mistake.
"""

from __future__ import annotations

import pytest

import vaelab
from vaelab import cli, likelihoods
from vaelab.config import ConfigError
from vaelab.contract import ModelError
from vaelab.data import DataError, SourceUnavailable
from vaelab.evaluate import EvaluationError
from vaelab.explorer import ExplorerError
from vaelab.figures import FigureError, FigureSkipped
from vaelab.parallel import ParallelError
from vaelab.runs import NotARunError, RunFolderError, RunLockedError
from vaelab.storage import ReadError, WriteError, read_json
from vaelab.training import NonFiniteError
from vaelab.usercode import CodeChangedError

# each user-facing error, and the built-in exception its callers caught before it had a common base
USER_ERRORS = [(ConfigError, ValueError), (CodeChangedError, ValueError), (DataError, ValueError),
               (SourceUnavailable, ValueError), (EvaluationError, ValueError), (ExplorerError, ValueError),
               (FigureError, ValueError), (ModelError, ValueError), (RunFolderError, ValueError),
               (NotARunError, ValueError), (ReadError, ValueError), (RunLockedError, FileExistsError),
               (WriteError, OSError), (NonFiniteError, RuntimeError), (ParallelError, RuntimeError)]


@pytest.mark.parametrize("error, before", USER_ERRORS, ids=[e.__name__ for e, _ in USER_ERRORS])
def test_every_user_error_is_a_vaelab_error_and_what_it_was(error, before):
    assert issubclass(error, vaelab.VaelabError) and issubclass(error, before)


def test_a_skipped_figure_is_control_flow_not_an_error():
    assert not issubclass(FigureSkipped, vaelab.VaelabError)


def test_a_damaged_file_is_a_read_error_naming_it(tmp_path):
    path = tmp_path / "summary.json"
    path.write_bytes(b"\x80\x04not json")
    with pytest.raises(ReadError, match=f"^{path}: not valid JSON"):
        read_json(path)


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["figures", str(tmp_path / "nowhere")]) == cli.USER_ERROR == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: no such run folder\n"


def test_a_value_error_inside_vaelab_is_a_bug_with_its_traceback(monkeypatch, capsys):
    """A plain ValueError that vaelab's own code raises is no user mistake: not one line and exit 2."""
    monkeypatch.delenv("VAELAB_DEBUG", raising=False)
    monkeypatch.setattr(cli, "preset_names", lambda: [likelihoods.bits_per_dim(100.0, 0)])
    assert cli.main(["presets"]) == cli.UNEXPECTED_ERROR == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "likelihoods.py" in err
    assert "\ninternal error: ValueError: n_dims must be positive, got 0\n" in err
    assert "this is a bug in vaelab" in err.splitlines()[-1] and "please report it" in err.splitlines()[-1]
    assert "\nerror: n_dims" not in err


def _users_plugin():
    raise ValueError("my plugin's own mistake")


def test_an_exception_in_the_users_code_names_it_with_its_traceback(monkeypatch, capsys):
    monkeypatch.delenv("VAELAB_DEBUG", raising=False)
    monkeypatch.setattr(cli, "preset_names", _users_plugin)
    assert cli.main(["presets"]) == 3
    err = capsys.readouterr().err
    line = _users_plugin.__code__.co_firstlineno + 1
    assert err.startswith("Traceback (most recent call last):") and "my plugin's own mistake" in err
    assert err.splitlines()[-1].startswith(f"error: ValueError raised in your code ({__file__}, line {line})")
    assert "bug in vaelab" not in err


def test_vaelab_debug_lets_any_exception_through(monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_DEBUG", "1")
    with pytest.raises(NotARunError):
        cli.main(["figures", str(tmp_path / "nowhere")])
    monkeypatch.setattr(cli, "preset_names", _users_plugin)
    with pytest.raises(ValueError, match="my plugin's own mistake"):
        cli.main(["presets"])
