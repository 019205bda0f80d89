"""The HTML helpers the report and the explorer share."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from vaelab import webpage

REPO = Path(__file__).resolve().parents[1]


def test_escape_makes_markup_and_both_quotes_plain_text():
    assert webpage.escape("<b>&\"'</b>") == "&lt;b&gt;&amp;&quot;&#x27;&lt;/b&gt;"
    assert webpage.escape(3.5) == "3.5"


def test_json_for_script_cannot_end_its_element_and_reads_back():
    value = {"name": "</script><!-- & -->", "x": [1, 2.5]}
    text = webpage.json_for_script(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value
    with pytest.raises(ValueError):
        webpage.json_for_script(float("nan"))  # JSON.parse in the page would reject it


def test_page_puts_title_css_body_and_scripts_in_place():
    page = webpage.page("a <title>", "<p>body</p>", "default-src 'none'", css="p { color: red; }",
                     scripts=["var a = 1;", "var b = 2;"])
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">") and page.endswith("</html>\n")
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'">' in page
    assert "<title>a &lt;title&gt;</title><style>p { color: red; }</style></head>" in page
    assert "<body><p>body</p><script>var a = 1;</script><script>var b = 2;</script></body>" in page


@pytest.mark.parametrize("where", ["css", "script", "csp"])
def test_page_refuses_text_that_would_break_out_of_its_element(where):
    given = {"css": {"css": "a {} </STYLE><b>"}, "script": {"scripts": ["x = '</script>';"]},
             "csp": {"csp": 'default-src "none"'}}[where]
    with pytest.raises(ValueError):
        webpage.page(**{"title": "t", "body": "", "csp": "default-src 'none'"} | given)


def test_read_asset_reads_a_file_of_the_package_once():
    first = webpage.read_asset("vaelab.presets", "mnist-2d.toml")
    assert first and webpage.read_asset("vaelab.presets", "mnist-2d.toml") is first
    with pytest.raises(FileNotFoundError):  # a missing asset fails loudly, not as an empty page part
        webpage.read_asset("vaelab.presets", "no-such-asset.css")



def declared_as_package_data(path: Path, package_data: dict[str, list[str]]) -> bool:
    """Whether a pattern of a package that holds `path` names it, as setuptools reads package-data."""
    for package, patterns in package_data.items():
        folder = REPO / "src" / package.replace(".", "/")
        if path.is_relative_to(folder):
            name = path.relative_to(folder).as_posix()
            if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
                return True
    return False


def test_every_file_the_package_reads_is_declared_as_package_data():
    """A wheel ships only the non-Python files package-data names; one left out works here, fails installed."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    data_files = [path for path in (REPO / "src" / "vaelab").rglob("*")
                  if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts]
    assert {"report.css", "explorer.html", "explorer.css", "explorer.js"} <= {path.name for path in data_files}
    for path in data_files:
        assert declared_as_package_data(path, package_data), f"{path.relative_to(REPO)} is not in package-data"


def test_pages_say_colour_or_grey_levels_where_nothing_binarized_the_pixels():
    from vaelab.webpage import pixels_text

    assert pixels_text("grey", 1) == "grey-level pixels (not binarized)"
    assert pixels_text("grey", 3) == "colour pixels in their levels (not binarized)"
    assert pixels_text("dynamic", 1) == "dynamic binarization"
    assert pixels_text(None) == "binarization unknown"


def test_the_report_reads_the_channels_from_the_runs_data_config():
    from vaelab.config import resolve_config
    from vaelab.report import _channels

    colour = resolve_config(overrides=["data.name=cifar10", "data.binarization=grey",
                                     "model.likelihood=discretized_logistic"]).to_dict()
    assert _channels(colour) == 3
    assert _channels(resolve_config().to_dict()) == 1
    assert _channels({"data": {"name": 7}}) == 1  # a config it cannot read: grey, as runs before channels were


def test_no_module_of_the_package_shadows_the_standard_library():
    """A module named like a standard one (io.py, html.py) is imported in its place by any script run
    from inside the package folder, and Python's own startup (which imports io) breaks there."""
    import pkgutil
    import subprocess
    import sys

    import vaelab

    package_dir = vaelab.__path__[0]
    names = {m.name for m in pkgutil.walk_packages([package_dir])}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)
    # and so a script run from inside the package folder imports vaelab and the standard library alike
    done = subprocess.run([sys.executable, "-c", "import html, io, json; print('ok')"], cwd=package_dir,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_no_module_of_the_package_shadows_a_name_of_its_api():
    """Importing vaelab.<module> sets the attribute vaelab.<module>: a module named like an API function
    (compare.py beside vaelab.compare) would replace that function for everyone once imported."""
    import pkgutil

    import vaelab

    modules = {m.name for m in pkgutil.iter_modules(vaelab.__path__)}
    assert not modules & set(vaelab.__all__), modules & set(vaelab.__all__)
