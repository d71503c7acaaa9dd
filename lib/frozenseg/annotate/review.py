"""review.html: one self-contained page (images inlined as base64 PNG, no network) with every predicted item as an
overlay, most uncertain first, the chosen route, the cross-validation table and the rounds so far."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..io import write_text_atomic
from ..pipeline.router import scores_table

THUMB = 256               # longer side of an overlay, pixels
STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ccc;padding:6px;width:260px;font-size:13px}.card.queued{border:3px solid #d33}
.card img{max-width:256px;display:block}.tag{color:#d33;font-weight:bold}"""


def overlay(image: np.ndarray, mask: np.ndarray, side: int = THUMB) -> str:
    """A data: URI of the image with the mask filled in translucent red and outlined, shrunk to ``side``."""
    rgb = image.astype(np.float32)
    m = mask.astype(bool)
    rgb[m] = 0.55 * rgb[m] + 0.45 * np.array([255.0, 40.0, 40.0])
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    rgb[edge] = [255.0, 255.0, 0.0]
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def item_view(item, mask: np.ndarray) -> tuple[str, str]:
    """(overlay data URI, caption) of an item: a 2D image itself, a volume's axial slice with the largest mask."""
    if item.kind == "image":
        return overlay(item.image, mask), ""
    area = mask.sum(axis=(0, 1))
    z = int(np.argmax(area)) if area.any() else item.image.shape[2] // 2
    img = np.repeat(np.rot90(item.image[:, :, z])[:, :, None], 3, axis=2)     # RAS (x, y) -> display rows
    return overlay(img, np.rot90(mask[:, :, z])), f"axial slice {z} of {item.image.shape[2]}"


def _table(df: pd.DataFrame) -> str:
    """A small DataFrame as escaped HTML."""
    return df.to_html(index=False, escape=True, border=0, na_rep="")


def write_review(out: Path, table: pd.DataFrame, views: dict, fit, rounds: list[dict], collection,
                 skipped: list) -> Path:
    """Write ``out/review.html``; ``views`` maps an item name to its (overlay data URI, caption)."""
    e = html.escape
    cv = "" if fit.cv_dice is None else f" (cross-validated Dice on the labels {fit.cv_dice:.3f} ± {fit.cv_sd:.3f})"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>frozenseg annotate: "
             f"{e(collection.folder.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{e(str(collection.folder))}</h1>",
             f"<p>{len(collection.labelled)} labelled item(s) ({fit.n_labels} labelled case(s) used), "
             f"{len(table)} predicted. Chosen route: <b>{e(fit.route)}</b>{cv}. Items are sorted by HUE uncertainty "
             "U, most uncertain first; the red-framed ones are queued in to_annotate.txt.</p>"]
    if len(fit.scores):
        parts += ["<h2>Route choice (cross-validation on the labels)</h2>", _table(scores_table(fit.scores))]
    if rounds:
        keep = ["round", "labels", "label_cases", "cv_dice", "cv_sd", "chosen", "predicted", "finished"]
        parts += ["<h2>Rounds</h2>", _table(pd.DataFrame(rounds)[keep])]
    if skipped:
        parts += ["<h2>Skipped (unreadable)</h2><ul>"] + [f"<li>{e(p)}: {e(w)}</li>" for p, w in skipped] + ["</ul>"]
    parts.append("<h2>Predictions</h2><div class='grid'>")
    for r in table.itertuples():
        uri, caption = views[r.name]
        iou = "" if r.box_iou is None or pd.isna(r.box_iou) else f"{r.box_iou:.3f}"
        parts.append(f"<div class='card{' queued' if r.queued else ''}'><img alt='{e(r.name)}' "
                     f"src='{uri}'><div>#{r.rank} <b>{e(r.name)}</b>"
                     f"{' <span class=tag>queued</span>' if r.queued else ''}</div><div>U {r.u:.3f} "
                     f"(box IoU {iou}, entropy {r.entropy:.3f}){' empty mask' if r.empty_mask else ''}</div>"
                     f"<div>{e(caption)}</div></div>")
    parts.append("</div></body></html>\n")
    return write_text_atomic(out / "review.html", "".join(parts))
