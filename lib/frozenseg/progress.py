"""Progress bars for three readers: a live bar on a terminal, a widget in an interactive JupyterLab (``tqdm.auto`` with
ipywidgets), and in a headless kernel (the runner's papermill runs) one summary line per loop, written when it ends.

The library's modules import ``from tqdm.auto import tqdm``; the runner starts each notebook's kernel with
:func:`kernel_arguments`, which makes the kernel run :func:`summarise_loops` before any cell, so ``tqdm.auto`` hands out
:class:`SummaryBar` there and nowhere else.
"""
from __future__ import annotations

import sys

from tqdm.asyncio import tqdm_asyncio

# What a summary line says: "isic support (litemedsam): 40/40 img in 00:12 (3.21img/s)".
SUMMARY_FORMAT = "{desc}{n_fmt}/{total_fmt} {unit} in {elapsed} ({rate_fmt})"
SUMMARY_FORMAT_NO_TOTAL = "{desc}{n_fmt} {unit} in {elapsed} ({rate_fmt})"
# The kernel start-up line the runner passes (IPython runs exec_lines before the first cell).
STARTUP_LINE = "import frozenseg.progress; frozenseg.progress.summarise_loops()"


class SummaryBar(tqdm_asyncio):
    """A tqdm that draws nothing while its loop runs and writes one line when it ends, to stdout (as tqdm's notebook
    bar does: no stderr block); a transient bar (``leave=False``) and a disabled one write nothing."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("file") in (None, sys.stderr):
            kwargs["file"] = sys.stdout
        kwargs["delay"] = float("inf")       # never drawn while running, so close() has nothing to clear either
        super().__init__(*args, **kwargs)

    def display(self, *args, **kwargs):
        """Draw nothing (an explicit ``refresh()`` included)."""
        return True

    def summary(self) -> str:
        """The loop's one line: description, count, elapsed time and overall rate."""
        d = {**self.format_dict, "rate": None, "prefix": f"{self.desc}: " if self.desc else ""}
        d["bar_format"] = SUMMARY_FORMAT if d.get("total") else SUMMARY_FORMAT_NO_TOTAL
        return self.format_meter(**d)

    def close(self):
        """End the loop and write its summary line (once; ``leave=None`` leaves only a top-level bar, as tqdm)."""
        if getattr(self, "disable", True):
            return
        leave = self.pos == 0 if self.leave is None else self.leave
        line = self.summary() if leave else None
        super().close()
        if line:
            self.fp.write(line + "\n")
            self.fp.flush()


def summary_trange(*args, **kwargs) -> SummaryBar:
    """``trange`` for :class:`SummaryBar`."""
    return SummaryBar(range(*args), **kwargs)


def summarise_loops() -> None:
    """Make ``tqdm.auto`` hand out :class:`SummaryBar` in this process (a headless kernel); modules that import it
    afterwards get it. Called at kernel start by the runner, before any cell imports the library."""
    import tqdm.auto

    tqdm.auto.tqdm, tqdm.auto.trange = SummaryBar, summary_trange


def kernel_arguments() -> list[str]:
    """Command-line arguments for a headless notebook kernel: run :data:`STARTUP_LINE` before the first cell."""
    return [f"--IPKernelApp.exec_lines={STARTUP_LINE}"]
