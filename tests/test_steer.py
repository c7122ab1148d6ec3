"""Steering: chrF, target-language tokens, interventions, end to end on tiny models, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from lape_utils.generation import GenerationConfig, generate
from lape_utils.intervene import InterventionError
from lape_utils.lape import random_matched
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats
from lape_utils.steering import (
    PAPER_GENERATION,
    SteerResult,
    SteerSpec,
    chrf,
    language_token_ids,
    steer,
    steering_interventions,
    strength_sweep,
)

LANGS = ["en", "fr", "zh"]
PROMPTS = ["What is a cat?", "How do bees make honey?"]


def _selection(n_layers=2, n_neurons=128, seed=0, p=0.1):
    g = torch.Generator().manual_seed(seed)
    return NeuronSelection.from_masks(
        {lang: torch.rand(n_layers, n_neurons, generator=g) < p for lang in LANGS}
    )


def _stats(n_layers=2, n_neurons=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ActivationStats(
        LANGS,
        torch.full((3,), 1000),
        torch.randint(0, 1000, (n_layers, n_neurons, 3), generator=g),
        activation_sum=torch.rand(n_layers, n_neurons, 3, generator=g, dtype=torch.float64) * 3000,
    )


# --------------------------------------------------------------------------- metrics


def test_chrf_known_answers():
    assert chrf("le chat", "le chat") == 100.0
    assert chrf("", "") == 100.0
    assert chrf("abc", "") == 0.0
    assert chrf("abc", "xyz") == 0.0
    assert chrf("a b c", "abc") == 100.0  # whitespace is ignored
    # "ab" vs "abc": unigrams P=1, R=2/3; bigrams P=1, R=1/2 -> P=1, R=7/12
    p, r = 1.0, (2 / 3 + 1 / 2) / 2
    assert chrf("ab", "abc") == pytest.approx(100 * 5 * p * r / (4 * p + r))
    assert 0 < chrf("the cat sat", "the dog sat") < 100


def test_chrf_is_sacrebleus_on_known_pairs():
    from sacrebleu.metrics import CHRF

    reference = CHRF()
    for hyp, ref in [("ab", "abc"), ("the cat sat", "the dog sat"), ("猫是", "猫是动物"),
                     ("Le chat dort.", "The cat sleeps."), ("abc", "xyz")]:
        assert chrf(hyp, ref) == pytest.approx(reference.sentence_score(hyp, [ref]).score)
    assert chrf("the cat sat", "the dog sat") == pytest.approx(24.2063492, abs=1e-6)


def test_language_token_ids(tiny):
    tok = tiny("llama").tokenizer  # byte-level: ASCII bytes are in English text
    zh = language_token_ids(tok, "zh", "en")
    assert zh.numel() > 10
    en_ids = set(tok("The quick brown fox, 1234.", add_special_tokens=False)["input_ids"])
    assert not en_ids & set(zh.tolist())
    assert not set(zh.tolist()) & set(tok.all_special_ids)
    assert language_token_ids(tok, "zh", "en") is zh  # cached
    with pytest.raises(InterventionError, match="both 'en'"):
        language_token_ids(tok, "en", "en")


def test_steering_interventions():
    sel, stats = _selection(), _stats()
    ivs = steering_interventions(
        sel, stats, SteerSpec("fr", source="en", zero_source=True, mode="set", strength=2)
    )
    assert [iv.op for iv in ivs] == ["zero", "set"]
    assert ivs[0].n_neurons == sel.flat("en").numel()
    layer, idx = next(iter(ivs[1].neurons.items()))
    assert torch.allclose(ivs[1].value[layer], 2 * stats.mean_activation("fr")[layer, idx])
    (add,) = steering_interventions(sel, stats, SteerSpec("fr", mode="add", strength=0.5))
    assert add.op == "add" and torch.allclose(add.value[layer], 0.5 * stats.mean_activation("fr")[layer, idx])
    (scale,) = steering_interventions(sel, None, SteerSpec("zh", mode="scale", strength=3))
    assert scale.op == "scale" and scale.value == 3.0
    with pytest.raises(InterventionError, match="unknown steering mode"):
        steering_interventions(sel, stats, SteerSpec("fr", mode="boost"))
    with pytest.raises(InterventionError, match="strength must be finite"):
        steering_interventions(sel, stats, SteerSpec("fr", strength=float("nan")))
    with pytest.raises(InterventionError, match="needs activation statistics"):
        steering_interventions(sel, None, SteerSpec("fr", mode="set"))
    with pytest.raises(InterventionError, match="needs the source"):
        steering_interventions(sel, stats, SteerSpec("fr", zero_source=True))


# --------------------------------------------------------------------------- end to end


def test_steer_end_to_end_tiny(tiny, tmp_path):
    model = tiny("llama")
    sel, stats = _selection(), _stats()
    res = steer(model, sel, stats, PROMPTS,
                SteerSpec("zh", source="en", zero_source=True, mode="add", strength=3.0),
                generation=GenerationConfig(max_new_tokens=6, batch_size=2),
                controls={"random": random_matched(sel, 0)})
    assert list(res.rows["neurons"]) == ["lape", "lape", "random", "random"]
    assert list(res.rows["prompt"]) == PROMPTS * 2
    # the unsteered answers are shared by both sets
    assert list(res.rows["unsteered"][:2]) == list(res.rows["unsteered"][2:])
    assert res.rows["steered_tokens"].between(1, 6).all()
    assert res.rows["target_mass_steered"].between(0, 1).all()
    summ = res.summary()
    assert list(summ.index) == ["lape", "random"]
    for col in ("target_rate", "source_rate", "output_ppl", "chrf", "drift", "target_mass",
                "target_mass_unsteered", "top1_changed_rate"):
        assert col in summ.columns
    assert summ.loc["lape", "drift"] == pytest.approx(100 - summ.loc["lape", "chrf"])
    assert res.config["n_target_neurons"] == sel.flat("zh").numel()
    path = res.to_jsonl(tmp_path / "steer.jsonl")
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4
    assert {"prompt", "unsteered", "steered", "steered_lang", "steered_score", "steered_label",
            "unsteered_lang", "unsteered_score", "target"} <= set(lines[0])
    back = SteerResult.from_jsonl(path)
    pd.testing.assert_frame_equal(back.summary(), summ)
    with pytest.raises(FileExistsError):
        res.to_jsonl(path)


def test_steer_hooks_backend_gives_the_same_outputs(tiny):
    model = tiny("gemma3")
    sel, stats = _selection(), _stats()
    spec = SteerSpec("fr", mode="set", strength=4.0)
    gen = dataclasses.replace(PAPER_GENERATION, max_new_tokens=5)
    a = steer(model, sel, stats, PROMPTS, spec, generation=gen)
    formatted = [spec.template.format(prompt=p) for p in PROMPTS]
    b = generate(model, formatted, steering_interventions(sel, stats, spec), gen, backend="hooks")
    assert list(a.rows["steered"]) == list(b.texts)


def test_steer_refuses_bad_input_before_generating(tiny, monkeypatch):
    import lape_utils.steering as steer_mod

    def boom(*a, **k):
        raise AssertionError("generation started")

    monkeypatch.setattr(steer_mod, "generate", boom)
    model = tiny("llama")
    sel, stats = _selection(), _stats()
    with pytest.raises(InterventionError, match="no prompts"):
        steer(model, sel, stats, [], SteerSpec("fr"))
    with pytest.raises(InterventionError, match="'de' is not in the neuron set"):
        steer(model, sel, stats, PROMPTS, SteerSpec("de"))
    with pytest.raises(InterventionError, match="'zh' is not in the statistics"):
        steer(model, sel, stats.subset(["en", "fr"]), PROMPTS, SteerSpec("zh"))
    with pytest.raises(InterventionError, match="strength must be finite"):
        steer(model, sel, stats, PROMPTS, SteerSpec("fr", strength=float("inf")))
    with pytest.raises(InterventionError, match=r"18 layers x 2048 neurons.*2 layers x 128"):
        steer(model, _selection(18, 2048), _stats(18, 2048), PROMPTS, SteerSpec("fr"))
    with pytest.raises(InterventionError, match="statistics are for 2 layers x 64"):
        steer(model, sel, _stats(2, 64), PROMPTS, SteerSpec("fr"))
    with pytest.raises(InterventionError, match="source language 'ko'"):
        steer(model, sel, stats, PROMPTS, SteerSpec("fr", source="ko", zero_source=True))
    with pytest.raises(InterventionError, match="both 'fr'"):
        steer(model, sel, stats, PROMPTS, SteerSpec("fr", source="fr"))
    with pytest.raises(InterventionError, match="template"):
        steer(model, sel, stats, PROMPTS, SteerSpec("fr", template="Q: A:"))


def test_strength_sweep(tiny):
    model = tiny("llama")
    spec, sel = SteerSpec("zh", source="en", mode="set"), _selection()
    df = strength_sweep(model, sel, _stats(), PROMPTS, spec, [1.0, 4.0],
                        generation=GenerationConfig(max_new_tokens=4),
                        controls={"random": random_matched(sel, 0)})
    assert list(df["strength"]) == [1.0, 1.0, 4.0, 4.0]
    assert list(df["neurons"]) == ["lape", "random"] * 2
    assert {"target_rate", "output_ppl", "chrf", "target_mass"} <= set(df.columns)
    with pytest.raises(InterventionError, match="strength must be finite"):
        strength_sweep(model, _selection(), _stats(), PROMPTS, spec, [1.0, math.nan])


# --------------------------------------------------------------------------- CLI


def _parser():
    from lape_utils.cli import build_parser

    return build_parser()


def test_cli_ppl_and_steer(tmp_path, capsys):
    sel_path = tmp_path / "sel.pt"
    _selection().save(sel_path)
    stats_dir = tmp_path / "stats"
    _stats().save(stats_dir)
    parser = _parser()
    out = tmp_path / "ppl.csv"
    args = parser.parse_args([
        "ppl", "--model", "tiny-llama", "--neurons", str(sel_path), "--corpus", "builtin",
        "--tokens-per-language", str(31 * 2), "--seq-len", "32", "--out", str(out),
    ])
    assert args.func(args) == 0
    df = pd.read_csv(out)
    assert len(df) == 7 * 3 and set(df["evaluated"]) == set(LANGS)
    assert "ΔNLL" in capsys.readouterr().out

    prompts = tmp_path / "q.txt"
    prompts.write_text("What is a cat?\nWhy is the sky blue?\n", encoding="utf-8")
    jl = tmp_path / "steer.jsonl"
    args = parser.parse_args([
        "steer", "--model", "tiny-llama", "--neurons", str(sel_path), "--stats", str(stats_dir),
        "--prompts", str(prompts), "--source", "en", "--target", "fr", "--mode", "scale",
        "--strength", "2", "--max-new-tokens", "4", "--random-control", "--out", str(jl),
    ])
    assert args.func(args) == 0
    lines = jl.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["target"] == "fr"

    args = parser.parse_args([
        "steer", "--model", "tiny-llama", "--neurons", str(sel_path), "--stats", str(stats_dir),
        "--prompts", "en", "--limit", "1", "--target", "zh", "--max-new-tokens", "3",
        "--out", str(tmp_path / "s2.jsonl"),
    ])
    assert args.func(args) == 0
    line = json.loads((tmp_path / "s2.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line["source"] == "en" and line["mode"] == "set"


def test_cli_refuses_another_models_neurons(tmp_path):
    from lape_utils.published import to_official

    parser = _parser()
    path = tmp_path / "LLaMA-2-7B.neuron.pth"  # a LLaMA-2-7B-shaped set in the paper's format
    to_official(_selection(32, 11008, p=0.001), path)
    args = parser.parse_args([
        "ppl", "--model", "tiny-llama", "--neurons", str(path), "--tokens-per-language", "62",
        "--seq-len", "32", "--out", str(tmp_path / "x.csv"),
    ])
    with pytest.raises(InterventionError, match=r"32 layers x 11008 neurons.*2 layers x 128"):
        args.func(args)
    assert not (tmp_path / "x.csv").exists()


def test_cli_reads_official_format_for_this_model(tmp_path, tiny):
    from lape_utils.cli import load_neurons
    from lape_utils.published import to_official

    sel = _selection(p=0.02)
    path = tmp_path / "mine.neuron.pth"
    to_official(sel, path)
    back = load_neurons(path, tiny("llama"))
    assert back.n_neurons == 128 and back.n_layers == 2
    # the paper's format has no language names: lists are read in the paper's order
    for a, b in zip(back.languages, sel.languages):
        assert torch.equal(back.flat(a), sel.flat(b))


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_steering_end_to_end(default_model, tmp_path):
    from lape_utils.capture import capture
    from lape_utils.corpus import load_corpus
    from lape_utils.lape import identify
    from lape_utils.packing import pack

    model = default_model
    corpus = load_corpus("builtin", ["en", "fr"], split="detect")
    packed = pack(corpus, model.tokenizer, seq_len=128, tokens_per_language=127 * 4)
    stats = capture(model, packed, None, replicates=0, progress=False)
    sel = identify(stats.over_zero, stats.n, stats.languages, activation_sum=stats.activation_sum)
    res = steer(model, sel, stats, ["What is your favourite food?", "How do plants grow?"],
                SteerSpec("fr", source="en", mode="add", strength=4.0),
                generation=dataclasses.replace(PAPER_GENERATION, max_new_tokens=12),
                controls={"random": random_matched(sel, 0)})
    summ = res.summary()
    assert list(summ.index) == ["lape", "random"]
    assert res.rows["unsteered"].str.len().gt(0).all()
    assert res.rows["steered_tokens"].gt(0).all()
    assert math.isfinite(summ.loc["lape", "output_ppl"])
    assert res.config["target_tokens"]["n"] > 100


# --------------------------------------------------------------------------- metrics by hand


def test_steering_metrics_known_answers():
    from lape_utils.steering import output_ppl, target_mass, top1_changed, wilson_interval

    before = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]])
    after = torch.tensor([[0.3, 0.4, 0.2, 0.1], [0.05, 0.05, 0.1, 0.8]])
    target = torch.tensor([1, 2])  # tokens 1 and 2 are the target language's
    assert target_mass(before, target).tolist() == pytest.approx([0.4, 0.2])
    assert target_mass(after, target).tolist() == pytest.approx([0.6, 0.15])
    assert top1_changed(before, after).tolist() == [True, False]
    assert math.isnan(target_mass(before, torch.tensor([], dtype=torch.long))[0])
    # 3 answers: 2 nats over 4 tokens, 3 over 2, 0 over 0 -> exp(5 / 6)
    assert output_ppl([2.0, 3.0, 0.0], [4, 2, 0]) == pytest.approx(math.exp(5 / 6))
    assert math.isnan(output_ppl([0.0], [0]))
    # Wilson 95% for 8 of 8 and 4 of 8, by the formula
    z = 1.959963984540054
    for k, n in ((8, 8), (4, 8), (0, 8)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert wilson_interval(k, n) == pytest.approx((p, centre - half, centre + half))
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_steering_summary_known_answers():
    rows = []
    for i, (label, nll, tokens) in enumerate([("fr", 2.0, 4), ("fr", 3.0, 2), ("en", 1.0, 2),
                                              ("mixed", 0.0, 0)]):
        rows.append(dict(neurons="lape", prompt=f"q{i}", unsteered="u", steered="s",
                         unsteered_lang="en", unsteered_score=0.9, unsteered_label="en",
                         steered_lang=label, steered_score=0.9, steered_label=label,
                         chrf=40.0, unsteered_nll=1.0, unsteered_tokens=2, steered_nll=nll,
                         steered_tokens=tokens, target_mass_unsteered=0.0,
                         target_mass_steered=0.25 * i, top1_changed=i % 2 == 0))
    for i in range(4):
        rows.append(dict(rows[0], neurons="random", prompt=f"q{i}", steered_label="en",
                         top1_changed=False))
    res = SteerResult(pd.DataFrame(rows), {"target": "fr", "source": "en"})
    s = res.summary()
    assert list(s.index) == ["lape", "random"]
    lape = s.loc["lape"]
    assert lape["target_rate"] == 0.5 and lape["source_rate"] == 0.25
    assert (lape["target_rate_lo"], lape["target_rate_hi"]) == pytest.approx(
        wilson(2, 4), abs=1e-12)
    assert lape["mixed_rate"] == 0.25 and lape["drift"] == 60.0
    assert lape["output_ppl"] == pytest.approx(math.exp(6 / 8))
    assert lape["output_ppl_unsteered"] == pytest.approx(math.exp(1 / 2))
    assert lape["target_mass"] == pytest.approx(0.375)
    assert lape["top1_changed_rate"] == 0.5
    assert s.loc["random", "target_rate"] == 0.0
    # 2/4 against 0/4: the Wilson intervals overlap, so LAPE does not beat the control
    assert not lape["beats_random"]


def wilson(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return ci.low, ci.high
