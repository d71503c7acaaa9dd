"""Artifacts recorder for notebooks and the HTML report built from what they published."""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .io import atomic_path, write_json_atomic, write_text_atomic
from .paths import build_dir
from .repro import git_commit

TEMPLATE = "report.html.j2"
FIGURE_DPI = 110
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Section:
    """One report section and the notebooks that publish into it."""

    number: int
    anchor: str
    title: str
    notebooks: tuple[str, ...]
    summary: str


SECTIONS: tuple[Section, ...] = (
    Section(1, "data", "Data", ("00_data",),
            "Dataset cards per domain: counts, sizes, examples and splits, phantom or real."),
    Section(2, "frozen-oracles", "Frozen oracles", ("01_frozen_oracle",),
            "Ground-truth box into the frozen SAM decoder per domain: the decoder ceiling that separates "
            "localization error from decoder error."),
    Section(3, "training-free", "Training-free pipeline", ("02_isic", "03_spleen", "04_kvasir", "05_cxr"),
            "The GT-free pipeline of each domain with its skill-by-skill ablation."),
    Section(4, "trained-vs-pipeline", "Trained networks vs the pipeline", ("06_trained_baselines",),
            "Trained networks at growing label budgets against the training-free pipeline: data-efficiency "
            "panels, best network per cell, and the budget a network needs to match the pipeline."),
    Section(5, "fewshot-decoder", "Few-shot decoder tuning", ("07_fewshot_decoder",),
            "Encoder and prompt encoder frozen, only the mask decoder tuned on the labelled split; with the GT "
            "box (oracle), with the domain's own GT-free localizer (deployable) and with the mean train box."),
    Section(6, "medical-pretraining", "Medical pretraining", ("08_medical_pretraining",),
            "Generic SAM versus MedSAM, each frozen and few-shot tuned, same architecture."),
    Section(7, "router", "One domain-agnostic pipeline", ("09_router",),
            "A frozen-feature prototype localizer with identical code on every domain, candidate ranking with a "
            "feature ensemble, and a GT-free router choosing the localizer topology per domain."),
    Section(8, "gate-validity", "Gate validity", ("10_gate_validity",),
            "Correlation of each domain's GT-free mask-quality gate with true Dice; the repair loop deploys "
            "only where the gate is valid."),
    Section(9, "concept-search", "Concept search (M2C)", ("11_concept_search",),
            "A concept embedding optimized through the frozen decoder from a few labelled images, HUE "
            "uncertainty, and the active annotation loop, versus the localizer pipelines."),
    Section(10, "gallery", "Gallery", ("12_gallery",),
            "Best and worst cases per domain (green = ground truth, red = prediction)."),
    Section(11, "annotate", "Annotate your own collection", ("13_annotate_loop",),
            "The annotate command round after round with a simulated annotator: the uncertainty queue against "
            "random choice, on held-out units and on the unlabelled rest."),
)


# --------------------------------------------------------------------------- provenance


def _now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _check_name(name: str) -> str:
    """Return ``name`` if it is safe as part of a file name, else raise ValueError."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or "__" in name:
        raise ValueError(f"artifact name {name!r} must match {_NAME_RE.pattern} and not contain '__'")
    return name


def _formatter(float_format: str | Callable[[float], str] | None) -> Callable[[float], str] | None:
    """Turn ``"{:.3f}"`` (or a callable, or None) into a float formatter for pandas."""
    if float_format is None or callable(float_format):
        return float_format
    return float_format.format


# --------------------------------------------------------------------------- recorder


@dataclass
class Artifacts:
    """Publishes a notebook's tables, figures and notes into ``report/build/<profile>/`` with provenance."""

    notebook: str
    profile: str
    seeds: Iterable[int]
    source: str | Callable[[], str]   # a callable is read when each item is recorded (per-domain data counts)
    model: str
    commit: str | None = None
    items: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Normalise seeds and resolve the commit once."""
        _check_name(self.notebook)
        self.seeds = [int(s) for s in (self.seeds if isinstance(self.seeds, Iterable) else [self.seeds])]
        self.commit = self.commit or git_commit()

    @property
    def root(self) -> Path:
        """Build folder of this profile."""
        return build_dir(self.profile)

    @property
    def provenance(self) -> dict:
        """What every item carries: data source, model, profile, seeds, commit."""
        source = self.source() if callable(self.source) else self.source
        return {"source": source, "model": self.model, "profile": self.profile,
                "seeds": list(self.seeds), "commit": self.commit}

    def _stem(self, name: str) -> str:
        """File stem ``<notebook>__<name>``."""
        return f"{self.notebook}__{_check_name(name)}"

    def _add(self, item: dict) -> dict:
        """Record ``item``, replacing an earlier one of the same kind and name (a re-run cell)."""
        item = {**item, "provenance": self.provenance}
        self.items = [i for i in self.items if (i["kind"], i["name"]) != (item["kind"], item["name"])]
        self.items.append(item)
        return item

    def table(self, df, name: str, caption: str = "", float_format: str | Callable | None = None,
              index: bool | None = None):
        """Write ``tables/<nb>__<name>.csv`` and ``.html`` atomically; return ``df`` for display."""
        import pandas as pd

        if index is None:
            index = not isinstance(df.index, pd.RangeIndex)
        rel_csv, rel_html = f"tables/{self._stem(name)}.csv", f"tables/{self._stem(name)}.html"
        write_text_atomic(self.root / rel_csv, df.to_csv(index=index))
        table_html = df.to_html(float_format=_formatter(float_format), index=index, border=0,
                                classes="data", na_rep="—", escape=True)
        write_text_atomic(self.root / rel_html, table_html + "\n")
        self._add({"kind": "table", "name": name, "file": rel_html, "csv": rel_csv, "caption": caption})
        return df

    def figure(self, fig, name: str, caption: str = "", dpi: int = FIGURE_DPI) -> Path:
        """Save ``fig`` as ``figures/<nb>__<name>.png`` atomically (Agg); return the path."""
        rel = f"figures/{self._stem(name)}.png"
        path = self.root / rel
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white",
                        metadata={"Software": None})
        self._add({"kind": "figure", "name": name, "file": rel, "caption": caption})
        return path

    def note(self, text: str, name: str | None = None, reference: bool = False) -> str:
        """Record short prose; ``reference=True`` marks the source study's own figures (reference only)."""
        kind = "reference" if reference else "note"
        name = _check_name(name or f"{kind}{sum(i['kind'] == kind for i in self.items) + 1}")
        self._add({"kind": kind, "name": name, "file": None, "caption": "", "text": str(text)})
        return text

    def record(self) -> dict:
        """The artifacts record as a plain dict (what ``save`` writes)."""
        return {"notebook": self.notebook, "created": _now(), **self.provenance, "items": list(self.items)}

    def save(self) -> Path:
        """Write ``artifacts/<notebook>.json`` atomically with sorted keys; return its path."""
        return write_json_atomic(self.root / "artifacts" / f"{self.notebook}.json", self.record())


def load_artifacts(profile: str, notebook: str) -> dict | None:
    """The saved artifacts record of ``notebook`` in ``profile``, or None if it was not built."""
    path = build_dir(profile) / "artifacts" / f"{notebook}.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text(encoding="utf-8"))
    if rec.get("profile") != profile:
        raise ValueError(f"{path} was written for profile {rec.get('profile')!r}, not {profile!r}")
    return rec


# --------------------------------------------------------------------------- notebooks


def render_notebook_html(ipynb_path: str | Path) -> Path:
    """Render an executed notebook to ``<same name>.html`` beside it (nbconvert, images embedded, offline)."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb_path = Path(ipynb_path)
    nb = nbformat.read(ipynb_path, as_version=4)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    return write_text_atomic(ipynb_path.with_suffix(".html"), _strip_remote_scripts(body))


def _strip_remote_scripts(page: str) -> str:
    """Drop ``<script src="http...">`` tags (MathJax, require.js): the machines are offline."""
    return re.sub(r"<script[^>]*\ssrc=[\"']https?://[^>]*>\s*</script>", "", page)


def _notebook_page(root: Path, notebook: str) -> Path | None:
    """Rendered HTML of an executed notebook, rendering it first if only the ``.ipynb`` is fresh."""
    ipynb, page = root / "notebooks" / f"{notebook}.ipynb", root / "notebooks" / f"{notebook}.html"
    if ipynb.is_file() and (not page.is_file() or page.stat().st_mtime < ipynb.stat().st_mtime):
        render_notebook_html(ipynb)
    return page if page.is_file() else None


# --------------------------------------------------------------------------- report


def markdownish(text: str) -> str:
    """Tiny safe markdown: paragraphs, ``- `` lists, **bold**, *italic* and `code`."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    return "\n".join(_block(b) for b in blocks)


def _block(block: str) -> str:
    """One paragraph or bullet list of ``markdownish``."""
    lines = block.splitlines()
    if all(ln.lstrip().startswith(("- ", "* ")) for ln in lines):
        return "<ul>" + "".join(f"<li>{_inline(ln.lstrip()[2:])}</li>" for ln in lines) + "</ul>"
    return f"<p>{_inline(' '.join(ln.strip() for ln in lines))}</p>"


def _inline(text: str) -> str:
    """Escape, then apply inline code, bold and italic."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", text)


def provenance_line(prov: dict) -> str:
    """``Data: … · Model: … · Profile: … · Seeds: … · Commit: …`` for one item."""
    seeds = ", ".join(str(s) for s in prov.get("seeds", [])) or "—"
    label = "Seed" if len(prov.get("seeds", [])) == 1 else "Seeds"
    return (f"Data: {prov.get('source', '?')} · Model: {prov.get('model', '?')} · Profile: {prov.get('profile', '?')}"
            f" · {label}: {seeds} · Commit: {prov.get('commit', '?')}")


def _rel(target: Path, page_dir: Path) -> str:
    """URL of ``target`` relative to the page's folder (forward slashes)."""
    return Path(os.path.relpath(target, page_dir)).as_posix()


def _view_item(item: dict, root: Path, page_dir: Path) -> dict:
    """Template-ready view of one recorded item."""
    view = {"kind": item["kind"], "name": item["name"], "caption": item.get("caption", ""),
            "provenance": provenance_line(item.get("provenance", {}))}
    if item["kind"] == "table":
        view["html"] = (root / item["file"]).read_text(encoding="utf-8")
        view["csv"] = _rel(root / item["csv"], page_dir) if item.get("csv") else None
    elif item["kind"] == "figure":
        view["src"] = _rel(root / item["file"], page_dir)
        view["missing"] = not (root / item["file"]).is_file()
    else:
        view["html"] = markdownish(item.get("text", ""))
    return view


def _view_notebook(profile: str, notebook: str, root: Path, page_dir: Path) -> dict:
    """Template-ready view of one notebook's published record (``built`` False when absent)."""
    rec = load_artifacts(profile, notebook)
    page = _notebook_page(root, notebook)
    view = {"name": notebook, "built": rec is not None, "page": _rel(page, page_dir) if page else None}
    if rec is not None:
        view.update(record=rec, created=rec.get("created", ""),
                    items=[_view_item(i, root, page_dir) for i in rec.get("items", [])])
    return view


def _view_section(section: Section, profile: str, root: Path, page_dir: Path) -> dict:
    """Template-ready view of a section; ``state`` is built, partial or pending."""
    notebooks = [_view_notebook(profile, nb, root, page_dir) for nb in section.notebooks]
    n_built = sum(nb["built"] for nb in notebooks)
    state = "pending" if n_built == 0 else "built" if n_built == len(notebooks) else "partial"
    return {"number": section.number, "anchor": section.anchor, "title": section.title,
            "summary": section.summary, "notebooks": notebooks, "state": state}


def _distinct(sections: list[dict], key: str) -> list[str]:
    """Sorted distinct values of ``key`` over every built notebook record."""
    vals = {str(nb["record"].get(key)) for s in sections for nb in s["notebooks"] if nb["built"]}
    return sorted(vals)


def report_context(profile: str, page_dir: Path | None = None) -> dict:
    """Everything the template needs for one profile."""
    root = build_dir(profile)
    page_dir = Path(page_dir or root)
    sections = [_view_section(s, profile, root, page_dir) for s in SECTIONS]
    return {"profile": profile, "sections": sections, "built_at": _now(),
            "sources": _distinct(sections, "source"), "models": _distinct(sections, "model"),
            "commits": _distinct(sections, "commit"), "report_commit": git_commit(),
            "n_built": sum(s["state"] != "pending" for s in sections)}


def _environment():
    """Jinja environment over the package templates (autoescaped)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("frozenseg", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]),
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def build_report(profile: str, out: str | Path | None = None) -> Path:
    """Render ``report/build/<profile>/index.html`` (or ``out``) from the published artifacts."""
    out = Path(out) if out is not None else build_dir(profile) / "index.html"
    out = out.expanduser().resolve()
    page = _environment().get_template(TEMPLATE).render(**report_context(profile, out.parent))
    return write_text_atomic(out, page)


def main(argv: list[str] | None = None) -> Path:
    """CLI: ``python -m frozenseg.report --profile cpu [--out PATH]``."""
    ap = argparse.ArgumentParser(prog="python -m frozenseg.report", description=main.__doc__)
    ap.add_argument("--profile", default="cpu", help="run profile whose build folder to render (default cpu)")
    ap.add_argument("--out", default=None, help="output HTML path (default report/build/<profile>/index.html)")
    args = ap.parse_args(argv)
    path = build_report(args.profile, args.out)
    print(path)
    return path


if __name__ == "__main__":
    main()


def source_study(key: str | None = None):
    """The source study's published figures (``report/source_study.yaml``): the whole file, or one entry."""
    import yaml

    from .paths import REPORT_SRC

    ref = yaml.safe_load((REPORT_SRC / "source_study.yaml").read_text(encoding="utf-8"))
    if key is None:
        return ref
    if key not in ref:
        raise KeyError(f"{key!r} is not in report/source_study.yaml; known: {sorted(k for k in ref if k != 'source')}")
    return ref[key]


def source_study_note(key: str, titles: dict[str, str] | None = None) -> str:
    """One line of the source study's published figures (``report/source_study.yaml``), labelled as such."""
    values = ", ".join(f"{(titles or {}).get(d, d)} {v}" for d, v in source_study(key).items())
    return f"Source study's figures ({key.replace('_', ' ')}; {source_study('source')}): {values}."


def source_chain_note(domain: str) -> str:
    """The source study's skill-by-skill chain of one domain, labelled as the source's ('' when it has none)."""
    chain = source_study("ablation_chain_dice").get(domain)
    if not chain:
        return ""
    steps = " -> ".join(f"{d:.3f} ({s})" for s, d in zip(chain["stages"], chain["dice"]))
    return f"The source study's chain for this domain ({source_study('source')}): {steps}."
