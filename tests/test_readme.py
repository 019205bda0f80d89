"""README.md says what works: its set-up commands, its `vaelab` commands and its Python blocks.

The Python blocks run in order in one namespace, as a reader would run them in one notebook,
in a temporary working directory, with real MNIST served through $VAELAB_DATA. A block that
raises fails the test, and the traceback points at the README's own line numbers.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SETUP = ('pip install -c constraints.txt -e . && vaelab train',
         'pip install -c constraints.txt -e ".[test]" && pytest')
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number of the block's first line of code, code) of every ```language block."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


def compiled(line: int, code: str):
    """The block compiled so that tracebacks name README.md and its line numbers."""
    return compile("\n" * (line - 1) + code, str(README), "exec")


# ---------------------------------------------------------------- fast checks

def test_setup_commands_open_the_readme_verbatim():
    text = README.read_text(encoding="utf-8")
    top = "# vaelab\n\n```bash\n" + "\n".join(SETUP) + "\n```\n"
    assert text.startswith(top), f"README.md must open with:\n{top}"
    assert blocks("bash")[0][1] == "\n".join(SETUP) + "\n"


def vaelab_commands() -> list[tuple[int, list[str]]]:
    """(README line, arguments) of every `vaelab ...` or `... -m vaelab ...` command in a bash block.

    `[--csv]` stands for an optional flag: it is checked as given.
    """
    commands = []
    for first, code in blocks("bash"):
        lines = code.splitlines()
        row = 0
        while row < len(lines):
            start, line = row, lines[row]
            while line.rstrip().endswith("\\") and row + 1 < len(lines):  # continued on the next line
                row += 1
                line = line.rstrip()[:-1] + " " + lines[row]
            row += 1
            for segment in line.split("#", 1)[0].split("&&"):
                words = shlex.split(segment.replace("[", " ").replace("]", " "))
                if "vaelab" not in words:
                    continue
                at = words.index("vaelab")
                if at == 0 or words[at - 1] == "-m":
                    commands.append((first + start, words[at + 1:]))
    return commands


def test_the_readme_shows_the_commands():
    shown = {tuple(args[:1]) for _, args in vaelab_commands()}
    for command in ("train", "evaluate", "figures", "report", "compare", "explore", "presets", "data"):
        assert (command,) in shown, command


@pytest.mark.parametrize("line,args", vaelab_commands(), ids=lambda v: str(v) if isinstance(v, int) else " ".join(v))
def test_each_vaelab_command_is_one_the_parser_takes(line, args):
    from vaelab.cli import build_parser
    from vaelab.config import resolve_config
    from vaelab.pipeline import extended_config
    from vaelab.figures import FIGURES

    parser = build_parser()
    if args == ["--version"]:
        with pytest.raises(SystemExit) as done:
            parser.parse_args(args)
        assert done.value.code == 0
        return
    try:
        parsed = parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"README.md:{line}: vaelab {' '.join(args)}: the parser refuses it")
    if parsed.command == "train" and parsed.resume:
        extended_config(resolve_config(), parsed.set)  # only keys a resume may change
    elif parsed.command == "train" and not parsed.config:
        resolve_config(parsed.preset, None, parsed.set)  # the preset exists, every key and value is valid
    if parsed.command == "figures":
        assert set(parsed.names) <= set(FIGURES), f"README.md:{line}: unknown figure in {parsed.names}"


def test_python_blocks_compile():
    found = blocks("python")
    assert len(found) >= 5
    code = "\n".join(c for _, c in found)
    for call in ("vaelab.train(", ".evaluate(", ".figure(", ".report()", "vaelab.open_run(", ".resume(",
                 "vaelab.compare(", ".posterior("):
        assert call in code, call
    for line, block in found:
        compiled(line, block)


# ---------------------------------------------------------------- the blocks, run

@pytest.mark.slow
def test_python_blocks_run_in_order_as_written(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAELAB_DATA", str(mnist_dir))
    namespace: dict = {"__name__": "__readme__"}
    for line, block in blocks("python"):
        exec(compiled(line, block), namespace)  # noqa: S102  (the README's own code)
    assert (tmp_path / "runs" / "first" / "report.html").is_file()
    assert (tmp_path / "runs" / "first" / "explorer.html").is_file()
    assert (tmp_path / "runs" / "first" / "eval-test-k100.json").is_file()
    assert len(namespace["run"].metrics) == 3  # two epochs, then a third by resume
