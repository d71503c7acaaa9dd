"""The few-shot SAM peers beside each domain's route (notebooks 02, 04, 05): PerSAM with one support and with the N
supports, and Self-prompting SAM, fitted on the same seeded label draw as the route and run on the same test units
(routes ``persam`` and ``selfprompt`` of routes.yaml; the localizers say how each differs from its paper)."""
from __future__ import annotations

from dataclasses import dataclass

from ..pipeline.core import Pipeline
from ..pipeline.router import get_route, with_localizer
from .budgets import label_sets, settings


@dataclass(frozen=True)
class Peer:
    """One peer row: its stage name in the results, its route in routes.yaml, how many supports (None: all)."""

    stage: str
    route: str
    shots: int | None
    title: str


PEERS = (Peer("persam_1shot", "persam", 1, "PerSAM, 1 support"),
         Peer("persam", "persam", None, "PerSAM, N supports (mean target feature)"),
         Peer("selfprompt", "selfprompt", None, "Self-prompting SAM (logistic regression on the embedding)"))
PEER_STAGES = tuple(p.stage for p in PEERS)
PEER_ROUTES = tuple(dict.fromkeys(p.route for p in PEERS))
PEER_INDEX = {p.stage: -3 - i for i, p in enumerate(PEERS)}     # stage_index: naive is -1, the oracle -2

BOX_ONLY = {"litemedsam": "LiteMedSAM: 256 px input, a 64 x 64 embedding, trained with box prompts only"}


def caption(model_key: str, model_label: str) -> str:
    """How each peer here differs from its paper, on the study's model (what every peer table's caption says)."""
    model = BOX_ONLY.get(model_key, model_label)
    weak = (" A model trained on boxes alone decodes a point prompt to a near-empty mask, so PerSAM's first step is "
            "weak here and the cascade starts from it." if model_key in BOX_ONLY else "")
    return (
        f"Peers, written for this project from the papers (no code of theirs), on this study's model ({model}) instead "
        "of the papers' SAM ViT-H (PerSAM) and SAM ViT-B (Self-prompting) at 1024 px. PerSAM (Zhang et al., ICLR "
        "2024), training-free: the mean foreground feature of the support masks (1 support, or the mean over the N "
        "supports' means), its cosine map over the query's embedding, a positive point at the map's maximum and a "
        "negative one at its minimum, decoded, then the paper's cascaded post-refinement (the points with the first "
        "mask's logits, then with that mask's box as well); its target-guided attention and target-semantic "
        f"prompting are left out, as they change the decoder's internals.{weak} Self-prompting SAM (Wu et al., "
        "MICCAI 2023 DART workshop): a logistic-regression head (scikit-learn's default objective, solved with "
        "L-BFGS) on every embedding cell of the N labelled images, its mask on the query resized to 256 px, eroded 3 "
        "and dilated 5 times (5 x 5), then its bounding box and its deepest point (distance transform) decoded "
        "together; the paper's 5-fold training protocol is not used (one fit on the labels). Where a peer finds "
        "nothing the pipeline's few-shot atlas box stands in, flagged. The naive row thresholds a similar cosine "
        "map into a box.")


def without_peers(routes: list, deployed: str | None = None) -> list:
    """The candidate routes that are not peers (their rows are in the peers table), plus the deployed one if a peer
    won the choice."""
    return [r for r in routes if r.domain not in PEER_ROUTES or r.domain == deployed]


def fit_peers(study, domain: str, seed: int, n_labels: int) -> list[tuple[Peer, Pipeline, list[str]]]:
    """(peer, fitted pipeline, ids of the labels it used) of each peer at budget N: the route's supports of the same
    seeded draw (``label_sets``); the 1-support variant keeps the first of them with a target."""
    support, _ = label_sets(study.data(domain).train, n_labels, seed, settings(study.profile))
    embs = study.embeddings(support, desc=f"{domain} support")
    out = []
    for p in PEERS:
        cases, es = support, embs
        if p.shots:
            keep = [i for i, c in enumerate(support) if c.mask.any()][: p.shots]
            cases, es = [support[i] for i in keep], [embs[i] for i in keep]
        route = with_localizer(get_route(p.route), shots=p.shots) if p.shots else get_route(p.route)
        pipe = Pipeline(route, study.model).fit(cases, es)
        out.append((p, pipe, sorted(c.case_id for c in cases)))
    return out


def peer_rows(peers, case, embedding, base: dict, row) -> list[dict]:
    """One scored row per peer on one test unit; ``row`` is the section's row maker (``domain._row``)."""
    rows = []
    for p, pipe, used in peers:
        tr = pipe.run(case.image, embedding)
        flag = tr.flag or ("" if tr.localization["flag"] == "ok" else tr.localization["flag"])
        rows.append(row({**base, "localizer": pipe.route.localizer["name"], "route": p.route,
                         "labels_used": len(used)}, p.stage, PEER_INDEX[p.stage], tr.final, case, gate=float("nan"),
                        flag=flag, decoder_calls=tr.decoder_calls + int(tr.localization.get("decoder_calls", 0))))
    return rows
