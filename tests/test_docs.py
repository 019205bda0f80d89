"""docs/extending.md says what works, as tests/test_readme.py checks README.md.

A code block whose first line is a comment naming a file (`# my_vae.py`, `# free_bits.toml`) is
that file: it is written into the working folder, as a reader saves it. The other Python blocks run
in order in one namespace, in an empty working folder (on sys.path, as a notebook's folder is), with
real MNIST through $VAELAB_DATA; every `vaelab` command of a bash block is checked against the
command's parser and, for `train`, its config resolved with the files the document shows.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FILE_LINE = re.compile(r"# ([\w.-]+\.(?:py|toml))\b")


def blocks(language: str | None = None) -> list[tuple[str, int, str]]:
    """(language, line of the block's first line of code, code) of every block, or of one language's."""
    text = DOC.read_text(encoding="utf-8")
    found = [(m.group(1), text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)]
    return [b for b in found if language is None or b[0] == language]


def file_name(code: str) -> str | None:
    """The file a block is (its first line `# NAME.py` or `# NAME.toml`), or None for a block to run."""
    match = FILE_LINE.match(code.splitlines()[0]) if code.strip() else None
    return match.group(1) if match else None


def write_files(folder: Path) -> list[str]:
    """Every file block written into `folder`, as the reader saves them; and examples/, which commands name."""
    written = []
    for language, _, code in blocks():
        name = file_name(code)
        if name and language in ("python", "toml"):
            (folder / name).write_text(code, encoding="utf-8")
            written.append(name)
    shutil.copytree(ROOT / "examples", folder / "examples")
    return written


def compiled(line: int, code: str):
    """The block compiled so that tracebacks name docs/extending.md and its line numbers."""
    return compile("\n" * (line - 1) + code, str(DOC), "exec")


def vaelab_commands() -> list[tuple[int, list[str]]]:
    """(line, arguments) of every `vaelab ...` command in the bash blocks (continued lines joined)."""
    commands = []
    for _, first, code in blocks("bash"):
        lines, row = code.splitlines(), 0
        while row < len(lines):
            start, line = row, lines[row]
            while line.rstrip().endswith("\\") and row + 1 < len(lines):
                row += 1
                line = line.rstrip()[:-1] + " " + lines[row]
            row += 1
            words = shlex.split(line.split(" # ", 1)[0])
            if words[:1] == ["vaelab"]:
                commands.append((first + start, words[1:]))
    return commands


# ---------------------------------------------------------------- fast checks

def test_the_documents_first_example_is_examples_minimal_vae():
    first = blocks("python")[0][2]
    assert file_name(first) == "my_vae.py"

    def model_class(source: str) -> str:
        tree = ast.parse(source)
        return next(ast.dump(node) for node in tree.body if isinstance(node, ast.ClassDef))

    assert model_class(first) == model_class((ROOT / "examples" / "minimal_vae.py").read_text(encoding="utf-8"))


def test_readme_and_examples_link_the_document():
    assert "(docs/extending.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(../docs/extending.md)" in (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", DOC.read_text(encoding="utf-8")):
        assert (DOC.parent / target).exists(), target


def test_the_document_shows_each_way_in():
    text = DOC.read_text(encoding="utf-8")
    for shown in ("vaelab.train(model=", "--model my_vae.py:MinimalVAE", "custom = ", "encoder=", "model.encoder",
                  "register_objective", "[plugins]", "vaelab.plugins", "--allow-code-change", "code-changes.jsonl"):
        assert shown in text, shown
    assert set(file_name(code) for _, _, code in blocks() if file_name(code)) >= {
        "my_vae.py", "my_nets.py", "my_objectives.py", "minimal.toml", "free_bits.toml"}


@pytest.mark.parametrize("line,args", vaelab_commands(), ids=lambda v: str(v) if isinstance(v, int) else " ".join(v))
def test_each_vaelab_command_is_one_the_parser_takes_with_a_config_that_resolves(line, args, tmp_path, monkeypatch):
    from vaelab.cli import build_parser
    from vaelab.config import resolve_config

    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"docs/extending.md:{line}: vaelab {' '.join(args)}: the parser refuses it")
    if parsed.command == "train" and not parsed.resume:
        write_files(tmp_path)
        monkeypatch.chdir(tmp_path)
        model = [f'model.custom="{parsed.model}"'] if parsed.model else []
        resolve_config(parsed.preset, parsed.config, model + parsed.set)


@pytest.mark.parametrize("name", ["minimal.toml", "free_bits.toml"])
def test_each_config_file_shown_resolves(name, tmp_path, monkeypatch):
    from vaelab.config import resolve_config

    write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    config = resolve_config(None, name)
    assert config.model.custom or config.objective.name == "free-bits"


def test_python_blocks_compile():
    for language, line, code in blocks():
        if language == "python":
            compiled(line, code)


# ---------------------------------------------------------------- the blocks, run

@pytest.mark.slow
def test_python_blocks_run_in_order_as_written(mnist_dir, tmp_path, monkeypatch, capsys):
    import vaelab

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAELAB_DATA", str(mnist_dir))
    monkeypatch.syspath_prepend(str(tmp_path))  # a notebook imports from its own folder
    namespace: dict = {"__name__": "__extending__"}
    try:
        for language, line, code in blocks():
            if file_name(code):
                (tmp_path / file_name(code)).write_text(code, encoding="utf-8")
            elif language == "python":
                exec(compiled(line, code), namespace)  # noqa: S102  (the document's own code)
    finally:
        vaelab.allow_code_changes(False)  # the last block allows changes for the whole process
        for module in ("my_vae", "my_nets"):
            sys.modules.pop(module, None)
    out = capsys.readouterr().out
    assert "model.decoder: returned 784 values per z; the discretized_logistic likelihood" in out
    assert "the model code has changed" in out and '"file":' in out
    for run in ("minimal", "nets", "free-bits"):
        assert (tmp_path / "runs" / run / "model.safetensors").is_file(), run
    assert not (tmp_path / "runs" / "nets-dl").exists()
    assert (tmp_path / "runs" / "minimal" / "explorer.html").is_file()
    assert namespace["fb"].config.objective.args == {"bits": 0.25}
