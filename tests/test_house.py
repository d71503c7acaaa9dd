"""The house: the method, the experiments notebooks run and the evaluation live in rooms of their own.

- The method (pipeline, localizers, models, the training pieces, the decoders and concepts they tune) imports no
  experiment, report or notebook code.
- Each notebook calls its experiment code from the experiments room, never a method package directly, apart from
  the infrastructure every notebook shares (setup, results files, caption constants of the evaluation, the report).
- No library file is past about 500 lines (the phantom generator, one job, may be).
"""
import ast
from pathlib import Path

import jupytext
import pytest

from frozenseg import paths
from frozenseg.runner import notebook_sources

LIB = paths.REPO / "lib" / "frozenseg"
# Packages and modules that are the method; everything they import must be method too.
METHOD = ("pipeline", "localizers", "models", "evaluation", "data", "training", "boxes", "cache", "errors", "io",
          "paths", "config", "manifest", "baselines", "finetune", "concept", "annotate")
# What no method module may import.
ROOMS_APART = ("frozenseg.experiments", "frozenseg.report", "frozenseg.results", "frozenseg.study",
               "frozenseg.runner", "frozenseg.readme", "frozenseg.bench", "frozenseg.viz")
# What a notebook may import besides its experiments: the shared infrastructure.
INFRASTRUCTURE = ("frozenseg.study", "frozenseg.results", "frozenseg.evaluation", "frozenseg.report", "frozenseg.viz",
                  "frozenseg.errors")
SIZE_LIMIT, SIZE_EXEMPT = 500, {"data/phantoms.py"}


def _module(path: Path) -> str:
    rel = path.relative_to(LIB.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every frozenseg module a file imports (module level and inside functions), relative imports resolved."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out |= {name} | {f"{name}.{a.name}" for a in node.names}
    return {n for n in out if n.startswith("frozenseg")}


def _method_files() -> list[Path]:
    out = []
    for name in METHOD:
        p = LIB / name
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]
    return out


def test_the_import_walker_resolves_relative_imports():
    f = LIB / "pipeline" / "core.py"
    assert "frozenseg.pipeline.skills" in _imports(f) or "frozenseg.pipeline.skills.make_skill" in _imports(f)


@pytest.mark.parametrize("path", _method_files(), ids=lambda p: p.relative_to(LIB).as_posix())
def test_the_method_imports_no_experiment_report_or_notebook_code(path):
    bad = sorted(n for n in _imports(path) if n.startswith(ROOMS_APART))
    assert not bad, f"{path.relative_to(LIB)} (method) imports {bad}"


@pytest.mark.parametrize("name", notebook_sources())
def test_a_notebook_calls_the_experiments_room_not_the_method(name):
    nb = jupytext.read(paths.NOTEBOOKS / f"{name}.py")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    used = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            used |= {n.module} if n.module != "frozenseg" else {f"frozenseg.{a.name}" for a in n.names}
    experiments = {m for m in used if m.startswith("frozenseg.experiments")}
    direct = sorted(m for m in used if m.startswith("frozenseg") and m != "frozenseg"
                    and not m.startswith(("frozenseg.experiments",) + INFRASTRUCTURE))
    assert experiments, f"{name} imports nothing from frozenseg.experiments"
    assert not direct, f"{name} calls method packages directly: {direct} (give its experiments module the function)"


def test_no_library_file_is_past_about_five_hundred_lines():
    long = {p.relative_to(LIB).as_posix(): n for p in LIB.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > SIZE_LIMIT}
    assert not {k: v for k, v in long.items() if k not in SIZE_EXEMPT}, f"files past {SIZE_LIMIT} lines: {long}"
