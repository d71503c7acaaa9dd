"""Few-shot decoder tuning: a copy of the mask decoder trained on cached embeddings; both encoders stay frozen.

``tuner`` holds the tuning loop; the losses, hard Dice and the validation split are :mod:`frozenseg.training`'s.
Notebook 07's arms, rows, tables and plot are :mod:`frozenseg.experiments.fewshot`.
"""
from .tuner import (STATUS_FAILED, STATUS_OK, TunedDecoder, TuningFailedError, decoder_logits,  # noqa: F401
                    decoder_view, prompt_tensors, trainable_copy, tune_decoder)
