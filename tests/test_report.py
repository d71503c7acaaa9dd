"""Report builder: artifacts with provenance, pending sections, resolvable links, headless render."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from frozenseg import report as rep  # noqa: E402
from frozenseg.paths import build_dir  # noqa: E402

PROFILE = "cpu"
MODEL = "litemedsam (LiteMedSAM, medical, MedSAM-distilled)"
BUILT = ("01_frozen_oracle", "02_isic")


class _Page(HTMLParser):
    """Collects sections, img srcs, hrefs and body attributes of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.hrefs: list[str] = []
        self.sections: dict[str, str] = {}
        self.body: dict = {}

    def handle_starttag(self, tag, attrs):
        """Record the tags the tests look at."""
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        elif tag == "section":
            self.sections[a["id"]] = a.get("data-state", "")
        elif tag == "body":
            self.body = a


def _parse(text: str) -> _Page:
    """Parse a report page."""
    page = _Page()
    page.feed(text)
    return page


def _section_html(text: str, anchor: str) -> str:
    """The HTML of one ``<section id=anchor>``."""
    m = re.search(rf'<section id="{anchor}".*?</section>', text, re.S)
    assert m, anchor
    return m.group(0)


def _publish(notebook: str, commit: str = "abc1234") -> rep.Artifacts:
    """Publish a small table, figure and notes the way a notebook does."""
    art = rep.Artifacts(notebook=notebook, profile=PROFILE, seeds=[0, 1], source="phantom", model=MODEL, commit=commit)
    df = pd.DataFrame({"domain": ["isic", "cxr"], "dice": [0.91234, 0.87651]})
    assert art.table(df, "dice", caption=f"Dice of {notebook}", float_format="{:.3f}") is df
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([0, 1, 2], [0.5, 0.7, 0.9])
    path = art.figure(fig, "curve", caption=f"Curve of {notebook}")
    plt.close(fig)
    assert path == build_dir(PROFILE) / "figures" / f"{notebook}__curve.png" and path.stat().st_size > 0
    art.note("Measured on *phantoms*; see `results/`.")
    art.note("Source study (reference only): see STUDY.md.", name="reference", reference=True)
    art.save()
    return art


@pytest.fixture()
def built(tmp_path, monkeypatch):
    """A report built in a temporary FROZENSEG_OUT from two published notebooks."""
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    for nb in BUILT:
        _publish(nb)
    ipynb = build_dir(PROFILE) / "notebooks" / "01_frozen_oracle.ipynb"
    ipynb.parent.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Oracle"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, ipynb)
    out = rep.build_report(PROFILE)
    return out, out.read_text(encoding="utf-8")


def test_sections_match_study_order():
    """SECTIONS lists the eleven sections with their notebooks, in order, every numbered notebook in one."""
    from frozenseg.runner import notebook_sources

    assert [s.number for s in rep.SECTIONS] == list(range(1, 12))
    nbs = [nb for s in rep.SECTIONS for nb in s.notebooks]
    assert nbs == sorted(nbs) and len(nbs) == len(set(nbs)) == 14 and nbs == list(notebook_sources())
    assert rep.SECTIONS[2].notebooks == ("02_isic", "03_spleen", "04_kvasir", "05_cxr")


def test_files_written_where_expected(built):
    """Tables (csv + html), figures and the json land under report/build/<profile>/."""
    out, _ = built
    root = build_dir(PROFILE)
    assert out == root / "index.html"
    for nb in BUILT:
        for rel in (f"tables/{nb}__dice.csv", f"tables/{nb}__dice.html", f"figures/{nb}__curve.png",
                    f"artifacts/{nb}.json"):
            assert (root / rel).is_file(), rel
    assert pd.read_csv(root / "tables/02_isic__dice.csv")["dice"].tolist() == [0.91234, 0.87651]


def test_pending_sections_have_no_numbers(built):
    """Unbuilt sections say pending and hold no table or image."""
    _, text = built
    page = _parse(text)
    assert page.sections["frozen-oracles"] == "built"
    assert page.sections["training-free"] == "partial"
    pending = [s.anchor for s in rep.SECTIONS if s.anchor not in ("frozen-oracles", "training-free")]
    for anchor in pending:
        html = _section_html(text, anchor)
        assert page.sections[anchor] == "pending"
        assert "Pending — not built yet" in html
        assert "<table" not in html and "<img" not in html
    partial = _section_html(text, "training-free")
    assert partial.count("Pending — not built yet") == 3 and "02_isic__curve.png" in partial


def test_built_sections_show_provenance(built):
    """Every table and figure has its provenance line; header names profile, source, model, commit."""
    _, text = built
    line = f"Data: phantom · Model: {MODEL} · Profile: {PROFILE} · Seeds: 0, 1 · Commit: abc1234"
    html = _section_html(text, "frozen-oracles")
    assert html.count('class="prov"') == 2 and html.count(line) == 2
    assert "0.912" in html and "0.91234" not in html
    assert "Source study&#39;s figures (reference only)" in html or "Source study's figures (reference only)" in html
    header = text.split("<nav", 1)[0]
    for s in (PROFILE, "phantom", MODEL, "abc1234", "Built"):
        assert s in header


def test_links_and_images_resolve(built):
    """Every img src and local href points at an existing file; anchors exist; nothing remote."""
    out, text = built
    page = _parse(text)
    assert len(page.imgs) == 2 and all(img.get("alt") for img in page.imgs)
    for ref in [img["src"] for img in page.imgs] + page.hrefs:
        url = urlparse(ref)
        assert not url.scheme and not url.netloc, ref
        if ref.startswith("#"):
            assert f'id="{ref[1:]}"' in text, ref
        else:
            assert (out.parent / unquote(url.path)).is_file(), ref
    assert "notebooks/01_frozen_oracle.html" in page.hrefs
    assert not re.search(r"""(src|href)=["']https?://""", text)


def test_notebook_html_is_offline(built):
    """The rendered executed notebook loads no remote script."""
    nb_html = (build_dir(PROFILE) / "notebooks" / "01_frozen_oracle.html").read_text(encoding="utf-8")
    assert "Oracle" in nb_html and not re.search(r"""<script[^>]*src=["']https?://""", nb_html)


def test_no_partial_files_left(built):
    """Atomic writes leave no .part files behind."""
    assert not list(build_dir(PROFILE).rglob("*.part*"))


def test_json_deterministic_except_time(tmp_path, monkeypatch):
    """Publishing the same outputs twice gives identical json apart from the creation time."""
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    path = build_dir(PROFILE) / "artifacts" / "01_frozen_oracle.json"
    _publish("01_frozen_oracle")
    first = json.loads(path.read_text())
    png = (build_dir(PROFILE) / "figures" / "01_frozen_oracle__curve.png").read_bytes()
    _publish("01_frozen_oracle")
    second = json.loads(path.read_text())
    assert first.pop("created") and second.pop("created")
    assert first == second
    assert list(json.loads(path.read_text())) == sorted(json.loads(path.read_text()))
    assert (build_dir(PROFILE) / "figures" / "01_frozen_oracle__curve.png").read_bytes() == png
    item = first["items"][0]
    assert {"kind", "name", "file", "caption", "provenance"} <= set(item)
    assert item["provenance"] == {"source": "phantom", "model": MODEL, "profile": PROFILE,
                                  "seeds": [0, 1], "commit": "abc1234"}


def test_rerun_replaces_item_and_rejects_bad_names(tmp_path, monkeypatch):
    """Re-recording a name replaces it; unsafe names are refused."""
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    art = rep.Artifacts(notebook="00_data", profile=PROFILE, seeds=0, source="phantom", model=MODEL)
    art.note("one", name="n")
    art.note("two", name="n")
    assert [i["text"] for i in art.items] == ["two"] and art.seeds == [0]
    assert art.commit and (art.commit == "unknown" or re.match(r"^[0-9a-f]{4,}(\+dirty)?$", art.commit))
    with pytest.raises(ValueError):
        art.note("x", name="../evil")
    assert "Seed: 0 ·" in rep.provenance_line(art.provenance)


def test_cli_prints_path(tmp_path, monkeypatch, capsys):
    """``python -m frozenseg.report --profile cpu`` builds an all-pending page and prints its path."""
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    path = rep.main(["--profile", PROFILE])
    assert capsys.readouterr().out.strip() == str(path) and path.is_file()
    assert path.read_text().count("Pending — not built yet") == len(rep.SECTIONS)


@pytest.mark.browser
def test_headless_chromium_renders(built, tmp_path):
    """Chromium loads the page with no broken image and screenshots it."""
    import browser

    out, _ = built
    body = re.search(r"<body[^>]*>", browser.dump_dom(out)).group(0)
    attrs = _parse(body + "</body>").body
    assert attrs.get("data-broken-images") == "0" and attrs.get("data-images") == "2", body
    png = browser.screenshot(out, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_source_study_note_reads_the_reference_file():
    """Reference figures come from report/source_study.yaml, labelled as the source study's."""
    from frozenseg.report import source_study_note

    text = source_study_note("training_free_pipeline_dice", {"isic": "ISIC"})
    assert text.startswith("Source study's figures") and "ISIC 0.882" in text
    with pytest.raises(KeyError, match="source_study.yaml"):
        source_study_note("not_a_key")
