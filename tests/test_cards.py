"""Dataset cards: the test negatives a domain's card shows."""
from __future__ import annotations

import numpy as np

from frozenseg.experiments.data import card, cards_table
from frozenseg.data.phantoms import make_phantom_case
from frozenseg.data.types import Case, DomainData, Volume


def blank(case: Case) -> Case:
    """``case`` without its target (an empty mask)."""
    return Case(case.case_id + "_neg", case.domain, case.image, np.zeros_like(case.mask), case.source)


def test_card_counts_negative_test_images():
    cases = [make_phantom_case("kvasir", i, 64, 0) for i in range(5)]
    data = DomainData("kvasir", "folder", train=cases[:2], test=cases[2:] + [blank(cases[0])])
    row = card(data)
    assert row["test negatives"] == "1 of 4 images"
    assert cards_table({"kvasir": data}).loc[0, "test negatives"] == "1 of 4 images"


def test_card_counts_test_volumes_without_the_organ():
    rng = np.random.default_rng(0)
    vols, test = {}, []
    for vid, organ in (("v0", True), ("v1", False), ("v2", True)):
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32, 3), bool)
        if organ:
            mask[10:20, 10:20, 1] = True
        vols[vid] = Volume(vid, "spleen", img, mask, (1.0, 1.0, 2.0))
        test += [Case(f"{vid}_{z}", "spleen", np.repeat(img[..., z:z + 1], 3, -1), mask[..., z], volume_id=vid,
                      slice_index=z) for z in range(3)]
    data = DomainData("spleen", "phantom", train=[], test=test, volumes=vols)
    row = card(data)
    assert row["test negatives"] == "1 of 3 volumes", "a test volume without spleen is one negative unit"
    assert row["empty masks"] == 7                      # slices without spleen: a different count
    one = DomainData("spleen", "phantom", train=[], test=[c for c in test if c.volume_id == "v1"],
                     volumes={"v1": vols["v1"]})
    assert card(one)["test negatives"] == "1 of 1 volume"
