"""The volume genome: the spleen pipeline's fitted parameters (box margin and the skills' fire thresholds), fit by
the one genome fit (:func:`frozenseg.pipeline.genome.fit_powell`) on labelled train volumes, each segmented by a
pipeline refit without it (leave one out) and scored in 3D on its labelled slices and the trained networks'
organ-free slices of it (:data:`GENOME_OBJECTIVE`). Never on a test volume."""
from __future__ import annotations

import numpy as np

from ... import evaluation as ev
from ...cache import case_key, image_hash
from ...data.types import Volume
from ...errors import ConfigError, DataError
from .. import genome
from ..genome import MAX_GENOME_LABELS, code_hash
from .pipeline import DEFAULT_PARAMS, SKILL_ORDER, VolumePipeline
from .prior import frames_of

# parameter -> (low, high). Powell searches in this order, so the first ones get the most evaluations under a small
# budget.
VOLUME_GENOME = {
    "box_margin": (0.0, 0.3),
    "within_volume_prior.conf_floor": (0.2, 0.6),
    "boundary_polish.fire_gate": (0.7, 0.98),
    "multi_prototype.fire_gate": (0.4, 0.8),
    "within_volume_prior.fire_traj": (0.3, 0.8),
    "within_volume_prior.tissue": (0.2, 0.7),
    "pyramid.tip_frac": (0.05, 0.4),
}
# The code a volume genome fit runs (paths relative to frozenseg/pipeline; every localizer is hashed too).
VOLUME_GENOME_CODE = ("volume/__init__.py", "volume/body.py", "volume/prior.py", "volume/state.py",
                      "volume/trajectory.py", "volume/skills.py", "volume/pipeline.py", "volume/genome.py",
                      "frame.py", "gates.py", "genome.py", "prior.py")
GENOME_OBJECTIVE = ("mean over the genome's train volumes of the 3D Dice over each volume's labelled organ slices "
                    "and its organ-free slices of the trained networks' background draw (a false positive there "
                    "lowers it); the other slices around the organ are not scored, since whether they hold organ "
                    "is a label outside both draws")


def genome_volumes(train_volumes: dict, seed: int, n_max: int | None = None, max_labels: int | None = None,
                   labelled: dict | None = None) -> list:
    """Train volumes for a genome fit, in a seeded order, while their labelled slices stay within ``max_labels``
    (the study's 40; one volume is always taken, whatever its size) and at most ``n_max`` volumes. ``labelled``
    ({volume id: labelled slice indices}) counts only those slices; by default every foreground slice counts."""
    max_labels = MAX_GENOME_LABELS if max_labels is None else max_labels
    order = [sorted(train_volumes)[i] for i in np.random.default_rng(seed).permutation(len(train_volumes))]
    out, n = [], 0
    for vid in order:
        k = len(labelled[vid]) if labelled is not None else len(train_volumes[vid].foreground_slices())
        if out and (n + k > max_labels or (n_max is not None and len(out) >= n_max)):
            break
        out.append(train_volumes[vid])
        n += k
    return out


def objective_slices(vol, labelled: dict | None, background: dict | None) -> list[int] | None:
    """The slices of ``vol`` a genome evaluation scores: its labelled slices plus its background slices (None:
    every slice, when no labels are given)."""
    if labelled is None:
        return None
    return sorted(set(labelled.get(vol.volume_id, [])) | set((background or {}).get(vol.volume_id, [])))


def scored_part(vol, zs):
    """The volume cut to slices ``zs`` (the whole volume for None), for the evaluation core's 3D score."""
    if zs is None:
        return vol
    return Volume(volume_id=vol.volume_id, domain=vol.domain, image=vol.image[:, :, zs], mask=vol.mask[:, :, zs],
                  spacing=vol.spacing, source=vol.source)


def fit_volume_genome(model, volumes, train_slices, support, support_embeddings, embed, embed_crop=None,
                      budget: int = 30, spec: dict | None = None, params: dict | None = None, gate: dict | None = None,
                      skills=SKILL_ORDER, labelled: dict | None = None, background: dict | None = None,
                      cache: bool = False, use_cache: bool = True, extra: dict | None = None,
                      train_volumes: dict | None = None) -> dict:
    """Fit the volume pipeline's genome on labelled train ``volumes`` by bounded Powell (at most ``budget``
    evaluations of the mean Dice). Each volume is segmented by a pipeline refit without it (prior and prototypes
    from the other volumes' labelled slices ``train_slices``, in the body frames of ``train_volumes`` ({id: Volume}
    holding every volume those slices come from): leave one out), so no volume is scored by a prior
    that saw it. With ``labelled`` ({volume id: slice indices}) each volume is scored in 3D on its labelled slices
    plus its organ-free ``background`` slices ({volume id: slice indices}; :data:`GENOME_OBJECTIVE`); None scores
    whole volumes. ``embed(cases)`` gives slice embeddings. With ``cache`` the record is read from (``use_cache``)
    and written to the genome cache under a key of the model, the labelled, background and support slices and the
    volumes (ids, sizes, content hashes), every setting and the code. Returns the genome record (params, start/fit
    Dice, history, labels and background slices scored, ``extra``)."""
    spec = dict(spec or VOLUME_GENOME)
    base = {**DEFAULT_PARAMS, **(params or {})}
    unknown = set(spec) - set(DEFAULT_PARAMS)
    if unknown:
        raise ConfigError(f"volume genome: unknown parameter(s) {sorted(unknown)}; valid: {sorted(DEFAULT_PARAMS)}")
    if not volumes:
        raise DataError(None, "volume genome: no train volume to fit on", "pass at least one labelled train volume")
    for vid, zs in (background or {}).items():
        vol = next((v for v in volumes if v.volume_id == vid), None)
        if vol is not None and any(vol.mask[:, :, z].any() for z in zs):
            raise DataError(vid, "volume genome: a background slice holds organ", "pass organ-free slices only")
    runs: list = []
    bodies = frames_of({**dict(train_volumes or {}), **{v.volume_id: v for v in volumes}})

    def leave_one_out() -> list:
        """Per volume: (volume, its pipeline fit without it, slice embeddings, frame cache, scored slices, part)."""
        out = []
        for vol in volumes:
            rest = [c for c in train_slices if c.volume_id != vol.volume_id]
            if not rest:
                raise DataError(vol.volume_id, "volume genome: no other train volume to fit the prior on",
                                "a leave-one-out fit needs two or more labelled train volumes")
            pairs = [(c, e) for c, e in zip(support, support_embeddings) if c.volume_id != vol.volume_id]
            if not pairs:                  # the whole support came from this volume: take slices of the others
                more = rest[:max(1, len(support))]
                pairs = list(zip(more, embed(more)))
            vp = VolumePipeline(model, base, gate, skills).fit(rest, [c for c, _ in pairs], [e for _, e in pairs],
                                                                 bodies)
            frames = {"body": bodies[vol.volume_id]}
            zs = vp.prior.slice_range(frames["body"], int(vp.params["range_margin"]))
            slice_embs = dict(zip(zs, embed([vol.slice_case(z) for z in zs])))
            scored = objective_slices(vol, labelled, background)
            out.append((vol, vp, slice_embs, frames, scored, scored_part(vol, scored)))
        return out

    def objective(vals: dict) -> float:
        """Mean 3D Dice of the genome volumes with these values (the pipelines are built on the first call)."""
        runs[:] = runs or leave_one_out()
        d = []
        for vol, vp, slice_embs, frames, zs, part in runs:
            vp.params.update(vals)
            tr = vp.run(vol.image, slice_embs.__getitem__, embed_crop=embed_crop, frame_cache=frames,
                        spacing=vol.spacing)
            pred = tr.volume(vol.mask.shape)
            d.append(ev.score_volume(pred if zs is None else pred[:, :, zs], part, with_hd95=False)["dice"])
        return float(np.mean(d))

    n = sum(len(labelled[v.volume_id]) if labelled else len(v.foreground_slices()) for v in volumes)
    n_bg = sum(len((background or {}).get(v.volume_id, [])) for v in volumes) if labelled else 0
    record = {"volumes": [v.volume_id for v in volumes], "n_labels": int(n), "n_background": int(n_bg),
              "objective": GENOME_OBJECTIVE if labelled else "3D Dice of whole volumes",
              "bounds": {k: list(spec[k]) for k in spec}, "budget": int(budget), **(extra or {})}
    key = None
    if cache:
        key = {"model": model.cache_id, "labels": sorted(case_key(c) for c in train_slices),
               "labelled": labelled, "background": background, "objective": record["objective"],
               "genome": [[v.volume_id, list(v.image.shape), image_hash(v.image)[:16], image_hash(v.mask)[:16]]
                          for v in volumes], "support": [case_key(c) for c in support], "budget": budget,
               "params": base, "gate": gate, "skills": list(skills), "spec": spec,
               "code": code_hash(VOLUME_GENOME_CODE)}
    return genome.fit_powell(objective, spec, base, budget, cache=key, name=volumes[0].domain, use_cache=use_cache,
                             extra=record)
