"""Every sentence backed: prose a reader sees carries no typed-in numbers.

Numbers in the report and the README come from results files, the parameters, or report/source_study.yaml, so
a notebook's markdown (which nothing can template) holds no decimal numbers at all: a sentence that needs one is
printed by a code cell from its source. The README's prose outside its generated blocks and code may quote
version pins (x.y.z) but no decimal measurements. The library's comments and docstrings state no measured timing
(they point to `make bench` -> bench/bench.json or the runner's run_times.json instead).
"""
import ast
import io
import re
import tokenize

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
    assert decimals("moves the embedding by about 0.03, within 1e-4") == ["0.03", "1e-4"]
    assert decimals("Linux, Python 3.11, 2+ CPU cores") == []


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


# ---------------------------------------------------------------- timings in the library's comments and docstrings

TIMING = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|s|sec|secs|min|mins|seconds?|minutes?|hours?|GFLOP/s|GFLOPS)"
                    r"(?![\w/])|(?<![\w.])\d+(?:\.\d+)?\s?x (?:faster|slower)")
# Settings, not measurements: (file under lib/frozenseg, the matched text) -> why it may stay.
TIMING_ALLOWED = {
    ("bench/__init__.py", "10x faster"): "the warm-rebuild target, TARGETS['warm_speedup_min']",
    ("bench/__init__.py", "10 minutes"): "the cold-build target, TARGETS['cold_build_max_s']",
}


def timings(text: str) -> list[str]:
    """The measured-timing phrases of a text: a number with s / ms / min / seconds / minutes / hours or GFLOP/s,
    or 'N x faster/slower'."""
    return TIMING.findall(text)


def comments_and_docstrings(path) -> list[tuple[int, str]]:
    """(line, text) of every comment and every module, class and function docstring of a Python file."""
    src = path.read_text(encoding="utf-8")
    out = [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(src).readline)
           if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                out.append((node.body[0].lineno, doc))
    return out


def test_the_timing_pattern_finds_what_it_should():
    found = timings("8 evaluations on 1 train volume took 120 s cold; a cold report in under 45 minutes; "
                    "0.11 s on 2 cores; 139 GFLOP/s; ~2x faster; 3.5ms; 2 min")
    assert found == ["120 s", "45 minutes", "0.11 s", "139 GFLOP/s", "2x faster", "3.5ms", "2 min"]
    assert timings("Python 3.11, 2 cores, 256x256 px, (1, 3, S, S), 3D slices, 10 labels, min_area, "
                   "seconds: float, per 4 KiB, GFLOP/s of the machine, the timeout parameter") == []


def test_library_comments_state_no_measured_timing():
    lib = paths.REPO / "lib" / "frozenseg"
    found = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib).as_posix()
        for line, text in comments_and_docstrings(path):
            found += [f"{rel}:{line}: {m!r}" for m in timings(text) if (rel, m) not in TIMING_ALLOWED]
    assert not found, ("library comments/docstrings state measured timings (they change with the machine and the "
                       "commit); point to `make bench` -> bench/bench.json or report/build/<profile>/run_times.json "
                       "instead, or add a genuine setting to TIMING_ALLOWED:\n" + "\n".join(found))
