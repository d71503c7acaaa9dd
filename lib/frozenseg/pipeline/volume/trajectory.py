"""The within-volume prior skill: a smooth trajectory of the organ across slices (extent along z, centroid line,
area profile) fit to the confident slices; slices outside the fitted extent are emptied, and slices that
disagree with it are re-decoded from a sibling-mask seed or the trajectory box, keep-best, in passes outward from
the most confident slice."""
from __future__ import annotations

import numpy as np

from ...boxes import mask_to_box
from ...localizers.base import grow_box
from ..frame import Candidate
from ..gates import tissue_cue, trajectory_cue
from .state import VolumeSkill, VolumeState, box_around, centroid


class WithinVolumePrior(VolumeSkill):
    """Centroid trajectory + area profile fit to confident slices; extent trim; sibling-mask seed re-decode."""

    name = "within_volume_prior"
    description = "fit the organ's trajectory across slices; empty slices outside it; re-seed slices that disagree"
    defaults = {
        "conf_floor": 0.35,      # below this gate value a slice is no evidence of the organ
        "tissue": 0.4,           # a mask whose tissue cue is below this is no evidence of the organ
        "fire_traj": 0.5,        # trajectory cue below which a slice is re-seeded
        "passes": 2,
        "halo": 3,               # slices beyond the first extent that a sibling seed may claim
        "taper": 0.75,           # sibling-seed box scale when stepping outward past the extent
        "max_length": 1.2,       # the extent is at most this times the longest train organ
        "area_q": 0.75,          # quantile of the confident slices' area scale
    }

    def fit_trajectory(self, state: VolumeState) -> dict:
        """Extent (z0, z1), centroid line and area per slice from the slices whose mask is confidently organ.

        Evidence per slice: the mask's tissue cue (its grey level is the organ's) and its gate; the centroid line
        is a weighted robust linear fit over the confident slices, and the extent with the organ's area profile
        (from the train volumes, length bounded by the train organs' lengths) is fit to their sqrt(area)."""
        prior, zs = state.prior, state.zs
        conf = np.array([state.gate(z) for z in zs])
        tissue = np.array([tissue_cue(state.frames[z], state.cur[z].mask) if not state.cur[z].empty else 0.0
                           for z in zs])
        floor = float(self.p(state, "conf_floor"))
        organ = tissue >= float(self.p(state, "tissue"))
        good = organ & (conf >= max(floor, np.median(conf[organ]) if organ.any() else floor))
        if good.sum() < 2:
            good = organ
        if good.sum() < 2:
            return {}
        z_arr = np.array(zs, float)
        cen = np.array([centroid(state.cur[z].mask) if not state.cur[z].empty else (np.nan, np.nan) for z in zs])
        area = np.array([state.cur[z].mask.sum() for z in zs], float)
        w = conf[good] * tissue[good]
        line = [np.polyfit(z_arr[good], cen[good, i], 1 if good.sum() > 2 else 0, w=w) for i in (0, 1)]
        pred = np.stack([np.polyval(line[i], z_arr) for i in (0, 1)], 1)
        dist = np.nan_to_num(np.hypot(*(cen - pred).T), nan=np.inf)
        scale = max(np.sqrt(np.median(area[good]) / np.pi), 3.0)
        inl = good & (dist < 1.5 * scale)
        if inl.sum() >= 2:                                  # drop centroid outliers, refit
            line = [np.polyfit(z_arr[inl], cen[inl, i], 1 if inl.sum() > 2 else 0, w=(conf * tissue)[inl])
                    for i in (0, 1)]
            pred = np.stack([np.polyval(line[i], z_arr) for i in (0, 1)], 1)
            dist = np.nan_to_num(np.hypot(*(cen - pred).T), nan=np.inf)
        ok = organ & (dist < 1.5 * scale)
        # extent: the longest run of organ-evidence slices (gaps of one slice bridged), cut to the train organs'
        # longest length by dropping the less confident end
        runs, start, gap = [], None, 0
        for k, z in enumerate(zs):
            if ok[k]:
                start, gap = (k if start is None else start), 0
                end = k
            elif start is not None:
                gap += 1
                if gap > 1:
                    runs.append((start, end))
                    start, gap = None, 0
        if start is not None:
            runs.append((start, end))
        if not runs:
            return {}
        a, b = max(runs, key=lambda r: (sum(conf[r[0]:r[1] + 1] * tissue[r[0]:r[1] + 1]), r[1] - r[0]))
        lmax = prior.max_slices(state.body.z_spacing if state.body else 1.0) * float(self.p(state, "max_length"))
        while zs[b] - zs[a] > lmax:
            if conf[a] * tissue[a] < conf[b] * tissue[b]:
                a += 1
            else:
                b -= 1
        z0, z1 = zs[a], zs[b]
        # area scale: an upper quantile of sqrt(area) / sqrt(profile) over the confident slices (under-segmented
        # slices pull it down less than a mean would)
        t = (z_arr - z0) / max(z1 - z0, 1)
        prof = prior.area_profile(t)
        use = ok & (prof > 0.3)
        if not use.any():
            use = ok
        s = float(np.quantile(np.sqrt(area[use] / np.maximum(prof[use], 0.05)), float(self.p(state, "area_q"))))
        t = (z_arr - z0) / max(z1 - z0, 1)
        exp_area = (s ** 2) * prior.area_profile(t)
        return {"z0": int(z0), "z1": int(z1), "scale": s, "line_x": line[0].tolist(), "line_y": line[1].tolist(),
                "area": dict(zip(zs, exp_area.tolist())), "anchors": [z for z, g in zip(zs, ok) if g]}

    def expect(self, traj: dict, z: int) -> dict:
        """The trajectory's centroid and area at slice ``z``."""
        return {"cx": float(np.polyval(traj["line_x"], z)), "cy": float(np.polyval(traj["line_y"], z)),
                "area": max(float(traj["area"][z]), 4.0)}

    @staticmethod
    def seed(state: VolumeState, z: int, nb: int, k: float, traj: dict) -> Candidate:
        """Sibling-mask seed: slice ``nb``'s mask box moved along the centroid line to slice ``z``, scaled by ``k``."""
        fr = state.frames[z]
        bx = mask_to_box(state.cur[nb].mask)
        dx = float(np.polyval(traj["line_x"], z) - np.polyval(traj["line_x"], nb))
        dy = float(np.polyval(traj["line_y"], z) - np.polyval(traj["line_y"], nb))
        box = box_around((bx[0] + bx[2]) / 2 + dx, (bx[1] + bx[3]) / 2 + dy, (bx[2] - bx[0] + 1) * k,
                          (bx[3] - bx[1] + 1) * k, fr.shape)
        return fr.decode(box=grow_box(box, state.params["box_margin"], fr.shape), origin="sibling_seed")

    def propose(self, state, z):
        fr, e, traj = state.frames[z], state.frames[z].expect, state.trajectory
        out = []
        # sibling-mask seed: the neighbour nearer the organ's middle, rescaled to the expected area
        mid = 0.5 * (state.extent[0] + state.extent[1])
        for nb in sorted((z - 1, z + 1), key=lambda n: abs(n - mid)):
            if nb in state.cur and not state.cur[nb].empty and state.extent[0] <= nb <= state.extent[1]:
                k = np.sqrt(max(e["area"], 1.0) / max(state.cur[nb].mask.sum(), 1.0))
                out.append(self.seed(state, z, nb, float(np.clip(k, 0.5, 2.0)), traj))
                break
        # trajectory box: the prior's box shape at this position, scaled to the expected area
        t = (z - state.extent[0]) / max(state.extent[1] - state.extent[0], 1)
        bw, bh = state.prior.t_box_at(t, z, state.body)
        k = np.sqrt(e["area"] / max(np.pi / 4 * bw * bh, 1.0))
        out.append(fr.decode(box=box_around(e["cx"], e["cy"], bw * k * 1.1, bh * k * 1.1, fr.shape),
                             origin="trajectory_box"))
        return out

    def extend(self, state: VolumeState, traj: dict, fired: set, accepted: set) -> None:
        """First pass: slices just beyond the fitted extent whose mask is not organ tissue get a sibling seed from
        their inward neighbour (shrunk, as the organ tapers); a seed the gate prefers becomes evidence."""
        thr = float(self.p(state, "tissue"))
        organ = lambda z: not state.cur[z].empty and tissue_cue(state.frames[z], state.cur[z].mask) >= thr  # noqa: E731
        for side, edge in ((-1, traj["z0"]), (1, traj["z1"])):
            for step in range(1, int(self.p(state, "halo")) + 1):
                z, nb = edge + side * step, edge + side * (step - 1)
                if z not in state.frames or nb not in state.frames or not organ(nb):
                    break
                if organ(z):
                    continue
                fired.add(z)
                prop = self.seed(state, z, nb, float(self.p(state, "taper")), traj)
                if prop.empty or tissue_cue(state.frames[z], prop.mask) < thr or not state.keep_best(z, [prop]):
                    break
                accepted.add(z)

    def __call__(self, state):
        traj = self.fit_trajectory(state)
        if not traj:
            return [], []
        fired, accepted = set(), set()
        state.trajectory = traj
        self.extend(state, traj, fired, accepted)
        traj = self.fit_trajectory(state) or traj
        state.extent = (traj["z0"], traj["z1"])
        state.trajectory = traj
        for z in state.zs:
            fr = state.frames[z]
            if z < traj["z0"] or z > traj["z1"]:
                fr.expect = None
                if not state.cur[z].empty:
                    fired.add(z)
                    accepted.add(z)
                    state.cur[z] = Candidate(mask=np.zeros(fr.shape, bool), origin="outside_extent")
            else:
                fr.expect = self.expect(traj, z)
        centre = max(state.present, key=lambda z: state.gate(z))
        order = sorted(state.present, key=lambda z: (abs(z - centre), z))
        for _ in range(int(self.p(state, "passes"))):
            for z in order:
                cur = state.cur[z]
                traj_ok = (not cur.empty
                           and trajectory_cue(state.frames[z], cur.mask) >= self.p(state, "fire_traj"))
                if traj_ok:
                    continue
                fired.add(z)
                if state.keep_best(z, self.propose(state, z)):
                    accepted.add(z)
        return sorted(fired), sorted(accepted)
