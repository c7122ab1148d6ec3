"""Every numbered notebook runs headless on a tiny model with its smoke parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lape_utils.job.config import SMOKE as JOB_SMOKE
from lape_utils.job.notebooks import NOTEBOOKS, execute_notebooks, notebooks_dir

SMOKE = {
    "model_name": JOB_SMOKE["model"],
    "languages": list(JOB_SMOKE["languages"]),
    "tokens_per_language": JOB_SMOKE["tokens_per_language"],
    "smoke": True,
    "options": {k: list(v) if isinstance(v, tuple) else v for k, v in JOB_SMOKE.items()
                if k not in ("model", "languages", "tokens_per_language")},
}


def test_notebooks_are_stored_without_outputs_and_have_a_parameters_cell():
    for name in NOTEBOOKS:
        nb = json.loads((notebooks_dir() / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), name
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, name
        source = "".join(tagged[0]["source"])
        for key in ("model_name", "languages", "tokens_per_language", "cache_dir", "smoke"):
            assert f"{key} =" in source, (name, key)
        markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert "What you should see" in markdown, name


def test_the_teaching_notebooks_show_their_step_in_their_own_trace():
    # 01 reads a neuron, 03 zeroes neurons, 04 sets them to their mean, each in an explicit
    # nnsight trace before using the package; 02 analyses counts and needs none
    for name in NOTEBOOKS:
        text = (notebooks_dir() / f"{name}.ipynb").read_text()
        assert ("nn.trace(" in text) == (name != "02_distribution"), name


@pytest.mark.slow
def test_all_notebooks_run_headless_on_a_tiny_model(tmp_path):
    done = execute_notebooks(tmp_path / "out", SMOKE | {"cache_dir": str(tmp_path / "cache")})
    assert set(done) == set(NOTEBOOKS)
    for name, html in done.items():
        assert Path(html).suffix == ".html" and Path(html).stat().st_size > 0
        nb = json.loads((tmp_path / "out" / f"{name}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (name, errors)
        # nothing a reader would take for a failure: no traceback, glyph or other warning
        text = json.dumps([c.get("outputs", []) for c in nb["cells"]], ensure_ascii=False)
        for bad in ("Traceback", "Glyph", "not available", "Warning"):
            assert bad not in text, (name, bad)
    # later notebooks reused what 01 cached: one statistics directory, one capture
    assert (tmp_path / "cache" / "stats" / "stats.pt").exists()
    assert list((tmp_path / "cache" / "ppl").glob("ppl_matrix_*.csv"))
    # static fallbacks survive the export to HTML
    assert "<img" in Path(done["02_distribution"]).read_text()
