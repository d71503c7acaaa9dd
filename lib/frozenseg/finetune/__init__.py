"""Few-shot decoder tuning: a copy of the mask decoder trained on cached embeddings; both encoders stay frozen.

``tuner`` holds the tuning loop, ``experiment`` the arms and rows of notebook 07, ``summary`` its tables and plot;
the losses, hard Dice and the validation split are :mod:`frozenseg.training`'s.
"""
from .experiment import (ARM_LABELS, DEFAULTS, GT_FREE_ARMS, NOTEBOOK, TUNE_KEYS, ArmBoxes, arm_boxes,  # noqa: F401
                         budget_rows, domain_results, fewshot_params, gt_box_provider, labelled_set, method_name,
                         predict_rows, run_fewshot, run_info, static_fewshot_box, tune_arm, volume_scores)
from .summary import fewshot_curves, fewshot_plot, localizer_note, runs_table, summarize_fewshot  # noqa: F401
from .tuner import (STATUS_FAILED, STATUS_OK, TunedDecoder, TuningFailedError, decoder_logits,  # noqa: F401
                    decoder_view, prompt_tensors, trainable_copy, tune_decoder)
