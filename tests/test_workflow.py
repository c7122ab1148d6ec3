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


def _every_option() -> tuple[list[str], dict]:
    """A `lape run` command line giving every JobConfig field a non-default value."""
    values = {
        "model": "tiny-llama", "dtype": "float32", "device_map": "cpu", "remote": False,
        "corpus": "CORPUS", "filter_language": True, "languages": ("en", "fr", "zh", "ru"),
        "tokens_per_language": 441, "seq_len": 64, "replicates": 2, "batch_size": 3,
        "top_rate": 0.02, "filter_rate": 0.9, "activation_bar_ratio": 0.9,
        "ppl_languages": ("fr", "zh"), "heldout_tokens": 93, "heldout_seq_len": 32,
        "threshold_rates": (0.01, 0.03), "threshold_languages": ("fr",),
        "threshold_tokens": 62, "steer_source": "en", "steer_targets": ("ru",),
        "steer_prompts": 3, "steer_max_new_tokens": 5, "sweep_strengths": (2.0,),
        "chat": False, "notebooks": False, "seed": 3,
    }
    argv = ["run"]
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv, values


def test_every_lape_run_option_becomes_a_setting():
    import dataclasses

    from lape_utils.cli import _job_config, build_parser

    argv, values = _every_option()
    assert set(values) == {f.name for f in dataclasses.fields(JobConfig)}  # none forgotten
    cfg = _job_config(build_parser().parse_args(argv + ["--out", "x"]))
    assert dataclasses.asdict(cfg) == values
    assert cfg != JobConfig()
    paper = _job_config(build_parser().parse_args(["run", "--preset", "paper", "--seed", "5"]))
    assert (paper.corpus, paper.seq_len, paper.seed) == ("wikipedia", 4096, 5)
    with pytest.raises(ValueError, match="not among the captured languages"):
        _job_config(build_parser().parse_args(["run", "--languages", "en,fr",
                                               "--steer-targets", "zh"]))
    with pytest.raises(ValueError, match="device_map does not apply"):
        _job_config(build_parser().parse_args(["run", "--remote", "--device-map", "auto",
                                               "--no-notebooks"]))


@pytest.mark.slow
def test_every_lape_run_option_reaches_the_stage_that_uses_it(tmp_path, monkeypatch):
    import shutil

    import pandas as pd

    import lape_utils.corpus as corpus_mod
    from lape_utils.cli import main
    from lape_utils.corpus import data_dir
    from lape_utils.selection import NeuronSelection
    from lape_utils.stats import ActivationStats

    corpus = tmp_path / "corpus"
    for split in ("detect", "heldout"):
        (corpus / split).mkdir(parents=True)
        for lang in ("en", "fr", "zh", "ru"):
            shutil.copy(data_dir() / "corpus" / split / f"{lang}.txt", corpus / split)
    argv, values = _every_option()
    argv = [str(corpus) if a == "CORPUS" else a for a in argv]
    filtered = []

    class Recorded(corpus_mod._Kept):  # notes every language whose lines get filtered
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.filter_language:
                filtered.append(self.lang)

    monkeypatch.setattr(corpus_mod, "_Kept", Recorded)
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    config = summary["config"]
    assert config["corpus"] == str(corpus) and config["device_map"] == "cpu"
    for name, value in values.items():  # the summary records every option given
        if name != "corpus":
            assert config[name] == (list(value) if isinstance(value, tuple) else value), name
    # ... and each reached its stage
    assert summary["model"]["model"] == "tiny-llama" and summary["model"]["device"] == "cpu"
    stats = ActivationStats.load(out / "cache" / "stats")
    prov = stats.provenance
    assert prov["corpus_source"] == str(corpus) and prov["seq_len"] == 64
    assert stats.languages == ["en", "fr", "zh", "ru"] and stats.n.tolist() == [441] * 4
    assert (prov["batch_size"], prov["bootstrap_replicates"], prov["bootstrap_seed"]) == (3, 2, 3)
    assert set(filtered) == {"en", "fr", "zh", "ru"}  # the language filter ran on every one
    sel = NeuronSelection.load(out / "neurons.pt")
    assert sel.config == {"top_rate": 0.02, "filter_rate": 0.9, "activation_bar_ratio": 0.9}
    ppl = pd.read_csv(out / "ppl_matrix.csv")
    assert set(ppl["evaluated"]) == {"fr", "zh"} and set(ppl["tokens"]) == {93}
    meta = json.loads((out / "ppl_matrix.csv.json").read_text())
    assert meta["heldout"]["seq_len"] == 32 and meta["seed"] == 3
    effect = pd.read_csv(out / "threshold_effect.csv")
    assert sorted(set(effect["top_rate"])) == [0.01, 0.03] and set(effect["language"]) == {"fr"}
    lines = [json.loads(x) for x in (out / "steering_ru.jsonl").read_text().splitlines()]
    assert {x["neurons"] for x in lines} == {"lape", "random", "matched"}
    assert len(lines) == 3 * 3 and all(x["source"] == "en" for x in lines)
    side = json.loads((out / "steering_ru.jsonl.json").read_text())["config"]
    assert side["generation"]["max_new_tokens"] == 5 and side["chat"] is False
    assert side["generation"]["seed"] == 3
    assert set(pd.read_csv(out / "steering_sweep.csv")["strength"]) == {2.0}
    assert not (out / "notebooks").exists()
