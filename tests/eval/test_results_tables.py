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
