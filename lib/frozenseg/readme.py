"""README tables written from results files and bench/bench.json, never typed: ``python -m frozenseg.readme``
(``make readme``) rewrites the text between ``<!-- BEGIN <name> -->`` and ``<!-- END <name> -->`` markers.

- ``sample``: the sample profile's headline numbers per domain (real samples where present) beside the source
  study's published figures, with what the sample sizes allow one to conclude.
- ``speed``: the encoder benchmark (torch vs OpenVINO vs the machine's matmul speed) from bench.json.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluation as ev
from . import paths
from .errors import DataError
from .io import write_text_atomic
from .results import PIPELINE_NOTEBOOKS, results_if_run

TITLES = {"isic": "ISIC (dermoscopy)", "spleen": "spleen (CT)", "kvasir": "Kvasir-SEG (endoscopy)",
          "cxr": "chest X-ray"}
BEST_NN = "best trained network at N"
OTHER_DATA = "– (other data)"    # a notebook whose results for the domain came from another data source


def _cell(rows: pd.DataFrame, intervals: list | None = None) -> str:
    """Mean Dice of the rows with its bootstrap interval over test units (``ev.unit_interval``/``fmt_interval``);
    the interval is kept in ``intervals`` for the section's prose."""
    if rows is None or not len(rows):
        return "–"
    iv = ev.unit_interval(rows)
    if intervals is not None:
        intervals.append(iv)
    return ev.fmt_interval(iv)


def best_network(nets: pd.DataFrame) -> str | None:
    """The arch with the highest validation Dice at its kept weights (``val_dice``, mean over seeds), chosen by
    ``ev.select_best``; None when the results carry no validation Dice (never chosen on test Dice)."""
    if nets is None or not len(nets) or "val_dice" not in nets:
        return None
    per_arch = nets.groupby("arch", sort=True).val_dice.mean().reset_index().assign(all=0)
    best = ev.select_best(per_arch, by=["all"], on="val_dice")
    return None if best.empty else str(best.arch.iloc[0])


def sample_rows(profile: str = "sample", intervals: list | None = None) -> pd.DataFrame:
    """Per domain: data source, test units, and per method its mean Dice with a bootstrap interval over test units
    (seed 0), from the profile's results files; every interval drawn is appended to ``intervals``."""
    from .report import source_study

    others = {nb: results_if_run(nb, profile) for nb in ("01_frozen_oracle", "06_trained_baselines",
                                                          "07_fewshot_decoder")}
    rows = []
    for dom, nb in PIPELINE_NOTEBOOKS.items():
        pipe = results_if_run(nb, profile)
        if pipe is None or "stage" not in pipe:
            continue
        dep = _first_seed(ev.scored_units(pipe[(pipe.domain == dom) & (pipe.stage == "deployed")]))
        if dep.empty:
            continue
        src = pipe[pipe.domain == dom].source.iloc[0] if "source" in pipe else None
        oracle, nn, dec = (_same_source(df, dom, src) for df in others.values())
        nets = ev.scored_units(nn[nn.domain == dom]) if nn is not None and "arch" in nn else dep.iloc[:0]
        both = sorted(set(dep.n_labels) & set(nets.n_labels)) if "n_labels" in nets else []
        n = int(both[-1] if both else dep.n_labels.max())       # the largest budget both were run at
        at = dep[dep.n_labels == n]
        used = f" ({int(at.labels_used.max())})" if "labels_used" in at else ""
        row = {"domain": TITLES.get(dom, dom), "data": _source(pipe, dom), "test units": len(at), "N": n,
               "pipeline (labels used)": _cell(at, intervals) + used}
        b = nets[nets.n_labels == n] if len(nets) else nets
        best = best_network(b)
        row[BEST_NN] = f"{_cell(_first_seed(b[b.arch == best]), intervals)} ({best})" if best else "–"
        t = (_first_seed(ev.scored_units(dec[(dec.domain == dom) & (dec.decoder == "tuned")
                                             & (dec.arm == "localizer")])) if dec is not None else dep.iloc[:0])
        if len(t):
            m = int(t.n_labels.max())
            row["tuned decoder + localizer (N)"] = f"{_cell(t[t.n_labels == m], intervals)} ({m})"
        if oracle is not None:
            row["GT-box oracle"] = _cell(_first_seed(ev.scored_units(
                oracle[(oracle.domain == dom) & (oracle.method == "gt_box")])), intervals)
        for col, nb_, got in ((BEST_NN, "06_trained_baselines", nn), ("tuned decoder + localizer (N)",
                                                                    "07_fewshot_decoder", dec),
                              ("GT-box oracle", "01_frozen_oracle", oracle)):
            if got is None and others[nb_] is not None:
                row[col] = OTHER_DATA
        ref = [source_study(k).get(dom, "–") for k in ("training_free_pipeline_dice", "best_trained_nn_n100_dice",
                                                       "fewshot_decoder_n100_gt_box_dice")]
        row["source study: pipeline / best NN N=100 / tuned decoder N=100 (GT box)"] = " / ".join(map(str, ref))
        rows.append(row)
    return pd.DataFrame(rows)


def _same_source(df: pd.DataFrame | None, domain: str, source: str | None) -> pd.DataFrame | None:
    """A notebook's results when their data source for ``domain`` is the pipeline's (None otherwise: a row never
    mixes, e.g., a real-sample pipeline with networks trained on phantoms by an earlier run)."""
    if df is None or source is None or "source" not in df:
        return df
    got = set(df[df.domain == domain].source)
    return df if not got or got == {source} else None


def _first_seed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the lowest seed (the table is one seed's, with intervals over its test units)."""
    return df[df.seed == df.seed.min()] if len(df) else df


def _source(df: pd.DataFrame, domain: str) -> str:
    """'real sample' or 'phantom' (from the results' source column) of one domain."""
    src = df[df.domain == domain].source.iloc[0] if "source" in df else "?"
    return "real sample" if src == "real" else src


def _widths(intervals: list[dict]) -> str:
    """'0.15-0.35' (the narrowest and widest interval drawn), or None when no interval was drawn."""
    w = [iv["hi"] - iv["lo"] for iv in intervals if np.isfinite(iv.get("lo", np.nan))]
    return f"{min(w):.2f}-{max(w):.2f}" if w else None


def sample_section(profile: str = "sample") -> str:
    """The README section of the sample profile: the table and what it allows one to conclude."""
    intervals: list[dict] = []
    t = sample_rows(profile, intervals)
    if t.empty:
        return (f"*No results of the `{profile}` profile yet: run "
                f"`FROZENSEG_DATA=../shared/realdata make report PROFILE={profile}`, then `make readme`.*")
    n_min, n_max = int(t["test units"].min()), int(t["test units"].max())
    units = f"{n_min}-{n_max}" if n_min != n_max else f"{n_min}"
    spread = _widths(intervals)
    width = (f"the intervals drawn are {spread} wide, so differences between methods smaller than that are not "
             "resolved" if spread else "no interval could be drawn, so no difference between methods is resolved")
    no_val = "–" in set(t[BEST_NN])
    t = t.fillna("–")
    other = OTHER_DATA in set(t.to_numpy().ravel())
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False)]
    return "\n".join(lines) + (
        f"\n\nMean Dice of the test units of seed 0 with a {ev.interval_note()} (profile `{profile}`, written by "
        f"`make readme` from `results/{profile}/`). N is the largest label budget at which both the pipeline and the "
        "trained networks ran (a budget the sample's train pool cannot hold is left out); in brackets: the labels "
        "the pipeline used at N, the trained network with the highest validation Dice at N (mean over seeds; chosen "
        "on validation data, never on these test scores" + ("; '–' where the results carry no validation Dice"
                                                              if no_val else "") + "), the tuned decoder's N. "
        + (f"'{OTHER_DATA}': that notebook's results for the domain are from another data source than the "
           "pipeline's (an earlier run); rerun it on this profile to fill the cell. " if other else "") +
        "Real-sample rows are measured on samples, not the study's datasets: "
        f"with {units} test units per domain {width}, and no row is a study result. What the sample allows: "
        "checking that each method runs on real images in the official layouts and lands in the right range against "
        "its GT-box oracle, and spotting large gaps to the source study's figures (shown for reference: they are "
        "the source study's, on the full datasets). What it does not allow: ranking methods whose intervals overlap, "
        "the study's N = 50/100 comparisons where the sample's train pool is smaller, or any claim about the phantom "
        "domains beyond the code running. Spleen on the real sample is scored against silver-standard masks "
        "(TotalSegmentator's output), so its Dice measures agreement with that model.")


def speed_section(bench: Path | None = None) -> str:
    """The README's encoder-speed table from bench/bench.json (part ``encode``)."""
    path = Path(bench or paths.REPO / "bench" / "bench.json")
    if not path.is_file():
        return "*No `bench/bench.json` yet: run `make bench` (or `make bench BENCH=encode`), then `make readme`.*"
    b = json.loads(path.read_text())
    e = b.get("encode")
    if not e:
        return "*`bench/bench.json` has no `encode` part: run `make bench BENCH=encode`, then `make readme`.*"
    rows = [("encoder, eager PyTorch (conv+BN folded, channels-last)", f"{e['encode_torch_s']:.3f} s per image"),
            ("encoder, OpenVINO Runtime (f32 precision hint)", f"{e.get('encode_openvino_s', float('nan')):.3f} s per image"),
            ("speed-up (torch / OpenVINO)", f"{e.get('encode_speedup', float('nan')):.2f} (target >= 1.3)"),
            ("2048x2048 float32 matmul, same run", f"{e['matmul_gflops']:.0f} GFLOP/s"),
            (f"default encoder ({e['default_engine']}) FLOP rate / matmul rate",
             f"{e['encode_fraction_of_peak']:.2f} (target >= 0.75; {e['encoder_gflop']:.1f} GFLOP per image)")]
    commit = e.get("commit", b.get("commit", "?"))        # the encode part's own commit (bench.merge_parts)
    head = (f"Measured by `make bench` at commit {commit} on {b.get('cpus', '?')} CPU cores, "
            f"{e['repeats']} interleaved repeats, median (written by `make readme` from `bench/bench.json`).")
    rows += annotate_rows(b) + report_rows("cpu") + report_rows("sample")
    return "\n".join([head, "", "| what | measured |", "|---|---|"] + [f"| {a} | {v} |" for a, v in rows])


def annotate_rows(bench: dict) -> list[tuple[str, str]]:
    """The annotate part of bench.json (``make bench BENCH=annotate``): round 1's encoding against the encoder's own
    speed, and round 2 (refit and predict, nothing encoded) against its target; empty when the part is absent."""
    a = bench.get("annotate")
    if not a:
        return []
    from .bench.annotate import ANNOTATE_TARGETS

    t2 = a.get("round2_timings", {})
    enc = (bench.get("encode") or {}).get("commit", bench.get("commit"))
    at = f", commit {a['commit']}" if a.get("commit") and a["commit"] != enc else ""
    return [(f"annotate round 1 on {a['items']} images ({a['source']}; {a['labelled_round1']} labelled{at}): "
             "encoding per image, command / encoder alone",
             f"{a['command_encode_s_per_image']:.3f} s / {a['encoder_s_per_image']:.3f} s = {a['encode_ratio']:.2f} "
             f"(target <= {ANNOTATE_TARGETS['annotate_encode_ratio_max']})"),
            (f"annotate round 2 ({a['labelled_round2']} labelled, {a['round2_encoded']} images encoded; route choice: "
             f"{a.get('routing', 'the defaults')}): refit and predict",
             f"{a['round2_s']:.0f} s (route choice and fit {t2.get('fit_s', float('nan')):.0f} s, predicting "
             f"{t2.get('predict_s', float('nan')):.0f} s; target <= {ANNOTATE_TARGETS['annotate_round_max_s']:.0f} s)")]


def report_rows(profile: str = "cpu") -> list[tuple[str, str]]:
    """The last cold `make report` of a profile (every notebook run, empty embedding cache), from the runner's
    ``report/build/<profile>/cold_run_times.json`` (``run_times.json`` of a build made before that file existed):
    total and the notebooks over a minute."""
    from .runner import COLD_TIMES

    path = paths.build_dir(profile) / COLD_TIMES
    if not path.is_file():
        path = paths.build_dir(profile) / "run_times.json"
    if not path.is_file():
        return []
    t = json.loads(path.read_text())
    if not t.get("all_notebooks") or t.get("embedding_cache_entries_at_start", 1) != 0:
        return []
    slow = ", ".join(f"{k} {v / 60:.1f}" for k, v in t["notebooks"].items() if isinstance(v, (int, float)) and v >= 60)
    return [(f"cold `make report PROFILE={profile}` (empty caches, {t['jobs']} notebook(s) at a time, commit "
             f"{t['commit']})", f"{t['total_s'] / 60:.1f} min; notebooks over a minute (min): {slow}")]


SECTIONS = {"sample": sample_section, "speed": speed_section}


def update(readme: Path | None = None, names=tuple(SECTIONS)) -> list[str]:
    """Rewrite the marked sections of the README in place (atomically); returns the names rewritten."""
    path = Path(readme or paths.REPO / "README.md")
    text, done = path.read_text(encoding="utf-8"), []
    for name in names:
        pat = re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)
        if not pat.search(text):
            raise DataError(path, f"no '<!-- BEGIN {name} -->' ... '<!-- END {name} -->' markers",
                            "put the markers where the generated table belongs")
        body = SECTIONS[name]()
        text = pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
        done.append(name)
    write_text_atomic(path, text)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    a = ap.parse_args(argv)
    print("rewrote README sections:", ", ".join(update(names=a.sections)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
