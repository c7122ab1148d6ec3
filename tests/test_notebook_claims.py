"""The numbers the notebooks' text quotes equal the reference run of the main job."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lape_utils.job.claims import CLAIMS, check_claims, value_at
from lape_utils.job.notebooks import NOTEBOOKS, notebooks_dir

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "results" / "summary.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_every_notebook_quotes_numbers_of_the_reference_run(reference):
    assert {c.notebook for c in CLAIMS} == set(NOTEBOOKS)
    assert check_claims(reference, notebooks_dir()) == []


def test_a_changed_result_is_caught(reference):
    changed = copy.deepcopy(reference)
    claim = CLAIMS[0]
    steps = claim.path.split(".")
    node = value_at(changed, ".".join(steps[:-1])) if len(steps) > 1 else changed
    node[steps[-1]] = node[steps[-1]] + 7
    problems = check_claims(changed, notebooks_dir())
    assert len(problems) >= 1 and claim.notebook in problems[0]


def test_the_reference_run_is_the_default_job(reference):
    from dataclasses import asdict

    from lape_utils.job import JobConfig

    want = json.loads(json.dumps(asdict(JobConfig()), default=list))
    assert reference["config"] == want


def test_value_at_finds_records_by_several_keys_with_dots_in_values():
    summary = {"a": {"b": 3}, "rows": [{"rate": 0.04, "lang": "zh", "x": 1},
                                       {"rate": 0.04, "lang": "ja", "x": 2},
                                       {"rate": 0.01, "lang": "zh", "x": 5}]}
    assert value_at(summary, "a.b") == 3
    assert value_at(summary, "rows[rate=0.04,lang=ja].x") == 2
    assert value_at(summary, "rows[lang=zh,rate=0.01].x") == 5
    with pytest.raises(KeyError, match="2 records"):
        value_at(summary, "rows[rate=0.04].x")
    with pytest.raises(KeyError, match="no 'c'"):
        value_at(summary, "a.c")
    with pytest.raises(KeyError, match="bad path"):
        value_at(summary, "a..b")
