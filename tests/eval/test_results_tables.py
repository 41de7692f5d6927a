"""The docs' current-results tables are generated from docs/results/*.json (tools/results_tables.py)."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import results_tables  # noqa: E402


def test_docs_tables_match_their_measurements():
    """A figure typed into a table by hand, or a JSON re-measured without regenerating, fails here."""
    assert results_tables.main(["--check"]) == 0


def test_a_row_is_rendered_from_the_summary_fields():
    summary = {"bins": {"0-30": 4.384, "30-60": 6.5, "60-90": 8.855}, "mean": 6.613,
               "inner_visible": {"bins": {"0-30": 3.0, "30-60": 4.0, "60-90": 5.0}, "mean": 4.0}}
    assert results_tables.row("nme", "dff", summary, False) == ["| dff | 4.38 | 6.50 | 8.86 | 6.61 |"]
    assert results_tables.row("nme_inner", "dff", summary, True) == [
        "| **dff** | **4.38** | **6.50** | **8.86** | **6.61** | **4.00** |"]
    assert results_tables.row("nme_all_and_inner", "dff", summary, False)[1] == "| dff | visible inner | 3.00 | 4.00 | 5.00 | 4.00 |"


def test_an_edited_table_is_put_back_and_an_unknown_one_is_refused():
    text = "intro\n<!-- results:aflw24 -->\n| typed | 1 |\n<!-- /results:aflw24 -->\nafter\n"
    new = results_tables.update(text)
    assert "| typed |" not in new and new.startswith("intro\n<!-- results:aflw24 -->\n| pipeline |")
    assert new.endswith("<!-- /results:aflw24 -->\nafter\n")
    with pytest.raises(ValueError, match="unknown results table 'nope'"):
        results_tables.update("<!-- results:nope -->\n<!-- /results:nope -->")


def test_the_latency_table_is_rendered_from_a_benchmark_run(monkeypatch):
    """A pytest-benchmark run (seconds) is stored in milliseconds, and a row divides by its calls."""
    run = {"datetime": "2026-12-07T07:00:00", "machine_info": {"cpu": {"brand_raw": "x86", "count": 2},
                                                               "python_version": "3.11"},
           "benchmarks": [{"name": "test_align_dff", "stats": {"median": 0.0251, "iqr": 0.001, "rounds": 40}},
                          {"name": "test_detect[mtcnn]", "stats": {"median": 0.2, "iqr": 0.01, "rounds": 5}}]}
    slim = results_tables.slim_benchmarks(run, "pytest benchmarks")
    assert slim["benchmarks"]["test_align_dff"] == {"median_ms": 25.1, "iqr_ms": 1.0, "rounds": 40}
    assert slim["machine"] == {"cpu": "x86", "cores": 2, "python": "3.11"}
    monkeypatch.setattr(results_tables, "load", lambda name: slim)
    rows = [("align", "test_align_dff", None, 1), ("detect, per photo", "test_detect[mtcnn]", None, 2)]
    assert results_tables.render_latency(rows).splitlines()[2:] == ["| align | 25.1 | - |",
                                                                    "| detect, per photo | 100.0 | - |"]
    with pytest.raises(KeyError, match="no benchmark 'test_align_dff_bfloat16'"):
        results_tables.render_latency([("align", "test_align_dff", "test_align_dff_bfloat16", 1)])
    # a one-column table (the tiny faces') shows the first benchmark of each row
    tiny = results_tables.render_latency([("a tiny face", "test_align_dff", None, 1)], "latency_tiny.json",
                                         "tiny_latency")
    assert tiny.splitlines()[0].count("|") == 3 and tiny.splitlines()[2] == "| a tiny face | 25.1 |"


def test_the_network_row_reads_the_last_validation_of_its_training_log(tmp_path, monkeypatch):
    logs = tmp_path / "docs" / "training-logs"
    logs.mkdir(parents=True)
    (logs / "run.jsonl").write_text('{"kind": "val", "step": 1, "accuracy": 0.1}\n{"kind": "train", "step": 2}\n'
                                    '{"kind": "val", "step": 3, "accuracy": 0.4567}\n{"kind": "done", "step": 3}\n')
    (logs / "empty.jsonl").write_text('{"kind": "train", "step": 2}\n')
    monkeypatch.setattr(results_tables, "REPO", tmp_path)
    assert results_tables.row("network", "net|run.jsonl", {"mean": 5.731}, False) == ["| net | 45.67 | 5.73 |"]
    with pytest.raises(ValueError, match="no validation record"):
        results_tables.row("network", "net|empty.jsonl", {"mean": 5.7}, False)


def test_a_paired_comparison_is_computed_per_face_and_rendered_with_its_standard_error(tmp_path):
    """tools/compare_eval.py pairs faces by name: B - A per face, its mean and standard error per
    bin, the share of faces B improves; the docs' 'paired' row shows them."""
    import json

    import compare_eval

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("name,bin,nme\nf1,0-30,0.05\nf2,0-30,0.07\nf3,30-60,0.06\nf4,60-90,0.08\nonly_a,60-90,0.5\n")
    b.write_text("name,bin,nme\nf2,0-30,0.06\nf1,0-30,0.04\nf3,30-60,0.065\nf4,60-90,0.08\n")
    result = compare_eval.paired(compare_eval.read(a), compare_eval.read(b))
    assert result["faces"] == 4 and list(result["bins"]) == ["0-30", "30-60", "60-90"]
    frontal = result["bins"]["0-30"]  # both faces 1 point better: mean -1, no spread
    assert frontal["faces"] == 2 and abs(frontal["diff"] + 1.0) < 1e-9 and abs(frontal["se"]) < 1e-9
    assert abs(frontal["a"] - 6.0) < 1e-9 and frontal["b_better"] == 1.0
    everyone = result["all"]  # differences -1, -1, +0.5, 0 points
    assert abs(everyone["diff"] + 0.375) < 1e-9 and everyone["b_better"] == 0.5
    assert abs(everyone["se"] - (sum((d + 0.375) ** 2 for d in (-1, -1, 0.5, 0)) / 3) ** 0.5 / 2) < 1e-9
    out = tmp_path / "paired.json"
    assert compare_eval.main([str(a), str(b), "--json", str(out), "--label", "b vs a"]) == 0
    stored = json.loads(out.read_text())
    assert stored["label"] == "b vs a" and stored["all"] == everyone
    assert results_tables.row("paired", "b vs a", stored, False) == [
        "| b vs a | -1.00 (0.00) | +0.50 (0.00) | +0.00 (0.00) | -0.38 (0.38) | 50 % |"]
    (tmp_path / "c.csv").write_text("name,bin,nme\nother,0-30,0.1\n")
    with pytest.raises(ValueError, match="share no face"):
        compare_eval.paired(compare_eval.read(a), compare_eval.read(tmp_path / "c.csv"))
