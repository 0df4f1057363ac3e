"""The docs' tables and figures are their measurement files rendered (reports/doc_figures.py)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from plumbing.cli import UserError
from reports import doc_figures as figs
from reports.docs_tables import main as docs_tables
from tests.helpers import REPO


def test_every_doc_matches_its_measurement_files():
    stale = figs.stale_docs()
    assert not stale, (f"{', '.join(str(p.relative_to(REPO)) for p in stale)} differ from docs/measurements; "
                       "run python -m reports.docs_tables")


def test_the_docs_quote_the_named_figures():
    """The figures that once stood in the docs in several versions now stand between markers."""
    text = {p.name: p.read_text() for p in figs.doc_files()}
    for doc, names in {"README.md": ["results-at-a-glance", "release-training", "release-sampling"],
                       "results.md": ["long-runs", "species-guidance", "samplers", "vae-speedup", "release-sampling",
                                      "release-training"],
                       "MODEL_CARD.md": ["card-quality", "release-training"],
                       "performance.md": ["bench-vae-runs", "bench-sampling-runs", "bench-profile",
                                          "bench-profile-bf16"]}.items():
        for name in names:
            assert f"<!-- figure: {name} -->" in text[doc], (doc, name)


def test_every_measurement_names_its_machine_and_when():
    src = figs.Sources()
    for row in [*src.sets.values(), *src.bench_runs, *src.runs.values(), *src.timings.values(), src.pilot,
                src.pilot_trend, src.long_trend]:
        assert row["machine"].strip(), row
        assert "cores" in row["machine"], row
        assert row.get("date") or row.get("provenance"), row
    for undated in (figs.RELEASE, figs.BENCH, figs.PROFILE, figs.LATENT_VS_PIXEL):  # provenance.json says when
        assert "commit" in src.provenance[str(undated)], undated


def copy_sources(tmp_path):
    """The measurement files and one doc quoting them, in a folder laid out as the repository."""
    for rel in (figs.SAMPLE_SETS, figs.RUNS, figs.TIMINGS, figs.BENCH_RUNS, figs.PROVENANCE, figs.PILOT, figs.PILOT_TREND,
                figs.LONG_TREND, figs.RELEASE, figs.BENCH, figs.PROFILE, figs.PROFILE_BF16, figs.LATENT_VS_PIXEL):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    doc = tmp_path / "README.md"
    doc.write_text("Species hits <!-- figure: species-ft-g1.species_top5.% -->old<!-- /figure -->, and\n"
                   "<!-- figure: samplers --><!-- /figure -->\n")
    return doc


def test_a_changed_measurement_changes_the_doc(tmp_path):
    doc = copy_sources(tmp_path)
    first = figs.stale_docs(tmp_path)[doc]
    assert "Species hits <!-- figure: species-ft-g1.species_top5.% -->" in first
    doc.write_text(first)
    assert figs.stale_docs(tmp_path) == {}
    path = tmp_path / figs.SAMPLE_SETS
    rows = list(csv.DictReader(open(path, newline="")))
    for row in rows:
        if row["set"] == "species-ft-g1":
            row["species_top5"], row["frechet"] = "0.5", "99.94"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, rows[0].keys(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    second = figs.stale_docs(tmp_path)[doc]
    assert "-->50.0%<!--" in second and "| 99.9 |" in second


def test_an_unknown_figure_is_a_user_error(tmp_path):
    doc = copy_sources(tmp_path)
    doc.write_text("<!-- figure: no-such-table --><!-- /figure -->")
    with pytest.raises(UserError, match="unknown figure 'no-such-table'"):
        figs.stale_docs(tmp_path)
    doc.write_text("<!-- figure: no-such-set.frechet --><!-- /figure -->")
    with pytest.raises(UserError, match="no-such-set"):
        figs.stale_docs(tmp_path)
    doc.write_text("<!-- figure: species-ft-g1.frechet -->25.0 and <!-- figure: species-ft-g1.c2st -->0.66<!-- /figure -->")
    with pytest.raises(UserError, match="without its pair"):
        figs.stale_docs(tmp_path)


def test_record_a_sample_set(tmp_path):
    copy_sources(tmp_path)
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "labels.csv").write_text("file,pokedex,species,type,style,guidance,seed\n0000.png,4,charmander,,artwork,2.0,1\n")
    creature = {"n": 64, "recognised": 0.25, "mean_top_probability": 0.3, "frechet_pokenet": 30.04, "precision": 0.9,
                "recall": 0.4, "c2st": 0.7}
    pixels = {"swd": {"mean": 40.0}, "precision": 0.5, "recall": 0.6, "memorisation": {"rate": 0.0}}
    metrics = {"settings": {"samples": str(samples)}, "samples": pixels, "reference": {"holdout": pixels},
               "creature": {"samples": creature, "held-out artworks": creature},
               "species": {"hits": {"top1": 0.1, "top5": 0.2}, "real_artworks": {"top1": 0.7, "top5": 0.9}}}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    figs.record_sample_set("new-set", path, "a model", "ddim50", tmp_path, reference="new-real")
    src = figs.Sources(tmp_path)
    row = src.sample_set("new-set")
    assert (row["guidance"], row["frechet"], row["species_top5"]) == ("2.0", "30.04", "0.2000")
    assert row["date"] and "cores" in row["machine"]
    assert src.sample_set("new-real")["species_top5"] == "0.9000"
    assert src.sample_set("species-ft-g1") == figs.Sources(REPO).sample_set("species-ft-g1")  # the others kept
    with pytest.raises(UserError, match="not a readable metrics.json"):
        figs.record_sample_set("x", tmp_path / "missing.json", "", "ddim50", tmp_path)


def test_check_exits_non_zero_on_a_stale_doc(monkeypatch, tmp_path, capsys):
    doc = copy_sources(tmp_path)
    monkeypatch.setattr(figs, "REPO", tmp_path)
    monkeypatch.setattr("reports.docs_tables.stale_docs", lambda: figs.stale_docs(tmp_path))
    monkeypatch.setattr("reports.docs_tables.REPO", tmp_path)
    with pytest.raises(SystemExit) as stop:
        docs_tables(["--check"])
    assert stop.value.code == 1 and "README.md" in capsys.readouterr().out
    assert "old" in doc.read_text()  # --check writes nothing
    docs_tables([])
    docs_tables(["--check"])
    assert "match their files" in capsys.readouterr().out
