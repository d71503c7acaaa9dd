"""Every sentence backed: prose a reader sees carries no typed-in numbers.

Numbers in the report and the README come from results files, the parameters, or report/source_study.yaml, so
a notebook's markdown (which nothing can template) holds no decimal numbers at all: a sentence that needs one is
printed by a code cell from its source. The README's prose outside its generated blocks and code may quote
version pins (x.y.z) but no decimal measurements.
"""
import re

import jupytext
import pytest

from frozenseg import paths
from frozenseg.runner import notebook_sources

DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])|(?<![\w.])\d+(?:\.\d+)?e[-+]?\d+(?![\w.])")
VERSION = re.compile(r"\d+\.\d+\.\d+|(?<=Python )\d+\.\d+")


def decimals(text: str) -> list[str]:
    """The decimal and scientific numbers of a text (version strings x.y.z left out)."""
    return DECIMAL.findall(VERSION.sub("", text))


def test_the_pattern_finds_what_it_should():
    assert decimals("the chain was 0.786 -> 0.840, lr 5e-4, 1.3x") == ["0.786", "0.840", "5e-4"]
    assert decimals("torch 2.14.1 and N = 10/25, section 4, 15% of its size") == []


@pytest.mark.parametrize("name", notebook_sources())
def test_notebook_markdown_has_no_typed_numbers(name):
    nb = jupytext.read(paths.NOTEBOOKS / f"{name}.py")
    found = {n for cell in nb.cells if cell.cell_type == "markdown" for n in decimals(cell.source)}
    assert not found, (f"{name}: markdown carries {sorted(found)}; print such sentences from a code cell, templated "
                       "from a results file, the parameters or report/source_study.yaml")


def test_readme_prose_has_no_typed_numbers():
    text = (paths.REPO / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"<!-- BEGIN (\w+) -->.*?<!-- END \1 -->", "", text, flags=re.S)     # generated from results
    text = re.sub(r"```.*?```", "", text, flags=re.S)                                   # commands
    text = re.sub(r"`[^`\n]*`", "", text)                                               # code and file names
    found = decimals(text)
    assert not found, f"README prose carries {found}: generate it (frozenseg.readme) or drop it"
