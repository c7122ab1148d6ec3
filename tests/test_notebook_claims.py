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
