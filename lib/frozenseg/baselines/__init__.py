"""Trained baselines of notebook 06: U-Net / SegFormer sweeps, the nnU-Net adapter, and the headline comparison."""
from .nets import ARCHS, FROM_SCRATCH, PRETRAINED, arch_label, build_net  # noqa: F401
from .sweep import NOTEBOOK, RunKey, baseline_params, failed_runs, run_one, run_sweep, size_caption  # noqa: F401
