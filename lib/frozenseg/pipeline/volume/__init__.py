"""The spleen volume pipeline: a 3D volume prior learned from labelled train volumes, then GT-free skills that
work across the slices of one test volume, each proposal kept only when the gate improves; scored per 3D volume.

    vp = VolumePipeline(model, params).fit(train_slices, support, support_embeddings, train_volumes)
    trace = vp.run(volume.image, embed, spacing=volume.spacing)   # embed(z): slice z's embedding; no mask read
    trace.stages[-1].masks                       # {z: mask} of the deployed prediction

Stages (each recorded, so the ablation is read off one run):

* ``localize``: the volume-prior box (:mod:`.prior`). The train volumes give the organ's extent in each volume's
  body frame (:mod:`.body`, found from the image alone: boxes relative to the slice's body box, positions along the
  body's slices, lengths in mm): the slices to process (the union of the train extents, never the test mask's
  slices) and a box per position along the body.
* ``within_volume_prior`` (:mod:`.trajectory`): a smooth trajectory (organ extent along z, centroid line, area
  profile) is fit to the confident slices; slices outside the fitted extent are emptied, and slices that disagree
  with the trajectory are re-decoded from a sibling-mask seed (the neighbour's mask box moved along the trajectory)
  or the trajectory box, keep-best, in two passes outward from the most confident slice.
* ``multi_prototype`` (:mod:`.skills`): where the gate stays low, frozen-feature prototypes of support slices at a
  similar position along the organ give a similarity map near the trajectory; its component's box is re-decoded.
* ``boundary_polish``: SAM re-prompt with the mask's own box and an interior point, keep-best.
* ``pyramid``: tiny tip slices are cropped around their mask, zoomed to the model's input side, encoded
  (cached) and re-decoded at the higher resolution, pasted back, kept only if the gate improves.

Parameters are named like the 2D ones: ``box_margin``, ``range_margin``, ``min_gain`` and ``<skill>.<parameter>``
(e.g. ``within_volume_prior.conf_floor``, ``pyramid.tip_frac``). The genome (:data:`VOLUME_GENOME`: box margin and
the skills' fire thresholds) is fit by the one genome fit on labelled train volumes, each segmented by a pipeline
refit without it and scored in 3D on its labelled slices and the trained networks' organ-free slices of it
(:func:`fit_volume_genome`, :data:`GENOME_OBJECTIVE`), and cached on disk.

Every proposal goes through the one keep-best rule (:func:`frozenseg.pipeline.gates.keep_best`) under the one
gate (:class:`frozenseg.pipeline.gates.Gate`) with the volume's weights (:data:`DEFAULT_GATE`): the image cues, a
tissue cue (the organ's grey level from the train slices) and the trajectory cue. The one decision not made by the
gate is the organ's z-extent, which the trajectory fit makes (an empty mask has no gate score). The experiment
(the runs of notebook 03, its tables and figure) lives in :mod:`frozenseg.experiments.spleen`.
"""
from .genome import (GENOME_OBJECTIVE, VOLUME_GENOME, VOLUME_GENOME_CODE, fit_volume_genome,  # noqa: F401
                     genome_volumes, objective_slices)
from .pipeline import (DEFAULT_GATE, DEFAULT_PARAMS, DEV_NOTE, LOCALIZE, SKILL_ORDER, SKILLS, STAGES,  # noqa: F401
                       VolumePipeline)
from .body import BodyFrame  # noqa: F401
from .prior import N_T_BINS, N_Z_BINS, VolumePrior, frames_of  # noqa: F401
from .skills import BoundaryPolish, MultiPrototype, Pyramid, zoom_image  # noqa: F401
from .state import SliceFrame, VolumeSkill, VolumeStage, VolumeState, VolumeTrace  # noqa: F401
from .trajectory import WithinVolumePrior  # noqa: F401
