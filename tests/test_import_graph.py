"""The import graph of lib/frozenseg: no circle of imports (function-level ones count), no private name crossing a
package, and one training module under the baselines, decoder tuning and concept search."""
import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
TRAINING_USERS = ("frozenseg.baselines.train", "frozenseg.finetune.tuner", "frozenseg.concept.core")
TRAINING_PACKAGES = ("baselines", "finetune", "concept")
SHARED_PIECES = ("validation_split", "hard_dice", "dice_loss", "soft_dice_loss", "focal_loss", "segmentation_loss",
                 "dice_bce_loss", "frame_targets", "frame_target")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root`` (a package's ``__init__`` is the package)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path, known) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every import statement in a module, module-level AND inside
    functions or ``if TYPE_CHECKING`` blocks; ``from pkg import sub`` resolves to the submodule when it is one."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, "", node.lineno) if sub in known else (target, a.name, node.lineno))
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package tree it imports (anywhere in its file)."""
    mods = modules(root)
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        for target, _, _ in imports(m, path, mods):
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]    # `import a.b.c` of a name: the module that defines it
            if target in mods and target != m:
                graph[m].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each holds at least one circle), sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _package(parts: list[str]) -> str:
    """The top-level room of a frozenseg module ('data' for frozenseg.data.loaders, 'cache' for frozenseg.cache)."""
    return parts[1] if len(parts) > 1 else ""


def private_crossings(root: Path) -> list[str]:
    """'module:line imports pkg._name' for every private name imported from another frozenseg package."""
    mods, bad = modules(root), []
    for m, path in mods.items():
        for target, name, line in imports(m, path, mods):
            parts = target.split(".")
            leaf = name or parts[-1]
            private = leaf.startswith("_") and not leaf.startswith("__")
            if parts[0] == root.name and private and _package(parts) != _package(m.split(".")):
                bad.append(f"{m}:{line} imports {target}{'.' + name if name else ''}")
    return bad


# ----------------------------------------------------------------------------- the walker finds what it should


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_walker_finds_a_circle_hidden_in_a_function_and_a_private_name_across_packages(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "from .one import f\n",
        "pkg/a/one.py": "def f():\n    from ..b.two import _g\n    return _g()\n",
        "pkg/b/__init__.py": "",
        "pkg/b/two.py": "from ..a import one\n\ndef _g():\n    return 1\n",
        "pkg/b/three.py": "from . import two\nfrom .two import _g\n",
    })
    assert cycles(import_graph(pkg)) == [["pkg.a.one", "pkg.b.two"]]
    assert private_crossings(pkg) == ["pkg.a.one:2 imports pkg.b.two._g"]   # b.three's _g stays in its package


def test_the_walker_resolves_a_submodule_imported_from_its_package(tmp_path):
    pkg = _write(tmp_path, {"pkg/__init__.py": "", "pkg/x.py": "from . import y\n", "pkg/y.py": "import pkg.x\n"})
    assert import_graph(pkg)["pkg.x"] == {"pkg.y"} and cycles(import_graph(pkg)) == [["pkg.x", "pkg.y"]]


# ----------------------------------------------------------------------------- lib/frozenseg


@pytest.fixture(scope="module")
def graph():
    return import_graph(LIB / "frozenseg")


def test_lib_has_no_import_circle(graph):
    """Every import statement counts, module-level and inside functions: a function-level import hides a circle."""
    found = cycles(graph)
    assert not found, "circles of imports, one group a line:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("package", ["baselines", "finetune", "concept", "data", "models.decoder_backend", "training"])
def test_training_and_data_modules_are_on_no_import_circle(graph, package):
    """The circles this issue names (baselines.nnunet <-> sweep, data.decoded <-> loaders, baselines.train ->
    finetune -> ... -> baselines) are gone."""
    name = f"frozenseg.{package}"
    on = [c for c in cycles(graph) if any(m == name or m.startswith(name + ".") for m in c)]
    assert on == []


def test_no_private_name_crosses_a_package():
    assert private_crossings(LIB / "frozenseg") == []


def test_baselines_tuning_and_concept_search_train_with_one_module(graph):
    """Each imports the shared pieces from frozenseg.training, none from another's package."""
    for user in TRAINING_USERS:
        assert "frozenseg.training" in graph[user], user
        others = [m for m in graph[user] if _package(m.split(".")) in TRAINING_PACKAGES
                  and _package(m.split(".")) != _package(user.split("."))]
        assert others == [], f"{user} borrows from {others}"
    assert not any(_package(m.split(".")) in TRAINING_PACKAGES for m in graph["frozenseg.training"])
    assert not any(_package(m.split(".")) in TRAINING_PACKAGES for m in graph["frozenseg.models.decoder_backend"])


def test_the_shared_training_pieces_are_defined_once():
    """Losses, hard Dice, the validation split and the frame targets: defined in training.py and nowhere else."""
    where = {}
    for f in sorted((LIB / "frozenseg").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in SHARED_PIECES:
                where.setdefault(node.name, []).append(f.relative_to(LIB).as_posix())
    assert where and all(files == ["frozenseg/training.py"] for files in where.values()), where
