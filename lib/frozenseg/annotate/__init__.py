"""Annotate a collection: a few labels in, a mask for every image out, the uncertain ones queued for correction.

    python -m frozenseg annotate FOLDER [--out DIR] [--batch 5]

``FOLDER/images/`` holds the collection (2D files, NIfTI volumes, or one sub-folder per DICOM series) and
``FOLDER/masks/`` the masks of the few labelled ones. Each run is one round of the annotation loop (:func:`annotate`).
"""
from .inputs import Collection, Item, read_collection  # noqa: F401
from .run import annotate  # noqa: F401
