"""The environment files agree, the Makefile documents its targets, and the package imports from lib/."""
import re
import subprocess
import tomllib

import yaml

from frozenseg import paths


def _pyproject_pins() -> dict[str, str]:
    meta = tomllib.loads((paths.REPO / "pyproject.toml").read_text())["project"]
    pins = meta["dependencies"] + [d for ds in meta["optional-dependencies"].values() for d in ds]
    return dict(p.split("==") for p in pins)


def test_every_direct_dependency_is_pinned():
    meta = tomllib.loads((paths.REPO / "pyproject.toml").read_text())["project"]
    loose = [d for d in meta["dependencies"] if "==" not in d]
    assert not loose, f"unpinned dependencies: {loose}"
    pins = _pyproject_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((paths.REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert dict(p.split("==") for p in pip) == _pyproject_pins()
    assert "python=3.11" in env["dependencies"]


def test_make_help_lists_every_phony_target():
    text = (paths.REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()
    out = subprocess.run(["make", "-s", "help"], cwd=paths.REPO, capture_output=True, text=True, check=True).stdout
    for target in phony:
        assert re.search(rf"\b{target}\b", out), f"make help does not list {target}"


def test_package_is_imported_from_lib():
    import frozenseg

    assert paths.REPO / "lib" / "frozenseg" in __import__("pathlib").Path(frozenseg.__file__).parents


def test_progress_widgets_are_a_pinned_dependency():
    """tqdm.auto draws a widget in JupyterLab only with ipywidgets installed (frozenseg.progress)."""
    import ipywidgets

    assert _pyproject_pins()["ipywidgets"] == ipywidgets.__version__
