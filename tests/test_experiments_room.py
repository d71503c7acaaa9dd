"""The experiments room: notebooks 09-11 call only their own experiment modules (plus infrastructure), and the
method packages they moved out of (pipeline, concept) import no experiment, report, results or study code."""
import pytest

from test_import_graph import LIB, import_graph, imports, modules

NOTEBOOKS = LIB.parent / "notebooks"
INFRASTRUCTURE = ("frozenseg.study", "frozenseg.results", "frozenseg.evaluation", "frozenseg.report", "frozenseg.viz",
                  "frozenseg.errors")
OWN = {"09_router": ("frozenseg.experiments.router",),
       "10_gate_validity": ("frozenseg.experiments.gate_validity",),
       "11_concept_search": ("frozenseg.experiments.concept_search", "frozenseg.experiments.concept_report")}
CONSTANTS = {"11_concept_search": ("frozenseg.concept",)}   # the concept settings notebook 11 prints
NOT_METHOD = ("frozenseg.experiments", "frozenseg.report", "frozenseg.results", "frozenseg.study", "frozenseg.runner")


def _outside(module: str, allowed) -> bool:
    return not any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("notebook", sorted(OWN))
def test_a_notebook_calls_its_own_experiment_modules_and_infrastructure_only(notebook):
    path = NOTEBOOKS / f"{notebook}.py"
    found = [(t, n) for t, n, _ in imports(notebook, path, modules(LIB / "frozenseg")) if t.startswith("frozenseg")]
    assert {t for t, _ in found} & set(OWN[notebook]), f"{notebook} does not call its experiment module"
    bad = [f"{t}{'.' + n if n else ''}" for t, n in found
           if _outside(t, OWN[notebook] + INFRASTRUCTURE) and t not in CONSTANTS.get(notebook, ())]
    assert bad == [], f"{notebook} imports code outside its experiment modules: {bad}"


@pytest.mark.parametrize("package", ["frozenseg.pipeline", "frozenseg.concept"])
def test_the_method_packages_import_no_experiment_code(package):
    """Every import counts, module-level and inside functions."""
    graph = import_graph(LIB / "frozenseg")
    bad = {m: sorted(t for t in graph[m] if not _outside(t, NOT_METHOD))
           for m in graph if m == package or m.startswith(package + ".")}
    assert {m: t for m, t in bad.items() if t} == {}
