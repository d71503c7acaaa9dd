"""The trained baselines' method: the networks (``nets``), their training loop (``train``) and the nnU-Net adapter
(``nnunet``); notebook 06's sweep and tables are :mod:`frozenseg.experiments.baselines` and ``baselines_report``."""
from .nets import ARCHS, FROM_SCRATCH, PRETRAINED, arch_label, build_net  # noqa: F401
