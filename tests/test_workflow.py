"""The main job, end to end on a tiny model: every product is written, and reruns are cached."""

from __future__ import annotations

import json
import time

import pytest

from lape_utils.job import JobConfig, run_main_job


def _config(**kw) -> JobConfig:
    return JobConfig(
        model="tiny-llama", languages=["en", "fr", "zh", "ru"], tokens_per_language=630,
        seq_len=64, replicates=3, ppl_languages=["en", "fr", "zh"], heldout_tokens=126,
        heldout_seq_len=64, steer_targets=["fr", "ru"], steer_prompts=2,
        steer_max_new_tokens=4, sweep_strengths=[1.0, 2.0], notebooks=False, **kw,
    )


@pytest.mark.slow
def test_main_job_writes_every_product_and_reuses_its_cache(tmp_path):
    summary = run_main_job(tmp_path, _config())
    for name in ("summary.md", "summary.json", "neurons.pt", "neurons.neuron.pth",
                 "ppl_matrix.csv", "steering_summary.csv", "steering_sweep.csv",
                 "steering_fr.jsonl", "steering_ru.jsonl"):
        assert (tmp_path / name).exists(), name
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"layer_distribution.png", "language_counts.png", "overlap_jaccard.png",
            "entropy_distribution.png", "stability.png", "ppl_delta.png",
            "steering_sweep.png", "published_comparison.png"} <= figures
    assert set(summary["timings_s"]) >= {"load model", "capture", "identify",
                                         "perplexity matrix", "steering"}
    md = (tmp_path / "summary.md").read_text()
    assert "Stage timings" in md and "ΔNLL" in md and "| fr |" in md
    assert json.loads((tmp_path / "summary.json").read_text())["model"]["model"] == "tiny-llama"
    # second run: statistics, matrix and steering come from the cache
    t = time.perf_counter()
    again = run_main_job(tmp_path, _config())
    assert time.perf_counter() - t < max(10.0, summary["total_s"])
    assert again["ppl_delta"] == summary["ppl_delta"]
    assert again["steering"] == summary["steering"]
