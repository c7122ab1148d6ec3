"""Perplexity: known answers against cross_entropy, the matrix's shape and none row, errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lape_utils.corpus import load_corpus
from lape_utils.evaluate import PplMatrix, nll, perplexity_matrix, score_continuations
from lape_utils.intervene import Intervention, InterventionError
from lape_utils.packing import pack
from lape_utils.selection import NeuronSelection

LANGS = ["en", "fr", "zh"]


def _selection(n_layers=2, n_neurons=128, seed=0, p=0.08):
    g = torch.Generator().manual_seed(seed)
    return NeuronSelection.from_masks(
        {lang: torch.rand(n_layers, n_neurons, generator=g) < p for lang in LANGS}
    )


@pytest.fixture
def heldout(tiny):
    corpus = load_corpus("builtin", LANGS, split="heldout")
    return pack(corpus, tiny("llama").tokenizer, seq_len=48, tokens_per_language=47 * 3)


def _chunks(n=5, seq=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 250, (n, seq), generator=g)
    ids[:, 0] = 1  # BOS
    return ids


def test_nll_known_answer(tiny):
    model = tiny("llama")
    ids = _chunks()
    with torch.inference_mode():
        logits = model.hf(input_ids=ids).logits
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    got, tokens = nll(model, ids, batch_size=2, progress=False)
    assert tokens == 5 * 19
    assert got == pytest.approx(float(want), rel=1e-5)


def test_nll_with_intervention_matches_a_hook(tiny):
    model = tiny("gpt2")
    ids = _chunks(seed=1)
    neurons = torch.arange(0, 128, 3)

    def hook(_m, _i, out):
        out = out.clone()
        out[..., neurons] = 0
        return out

    h = model.hf_site(1).register_forward_hook(hook)
    try:
        with torch.inference_mode():
            logits = model.hf(input_ids=ids).logits
    finally:
        h.remove()
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    got, _ = nll(model, ids, [Intervention({1: neurons}, "zero")], batch_size=3, progress=False)
    assert got == pytest.approx(float(want), rel=1e-5)
    assert got != pytest.approx(nll(model, ids, progress=False)[0], rel=1e-6)


def test_nll_masks_padding(tiny):
    model = tiny("llama")
    a, b = _chunks(1, 12, seed=2)[0], _chunks(1, 7, seed=3)[0]
    padded = torch.zeros(2, 12, dtype=torch.long)
    mask = torch.zeros(2, 12, dtype=torch.long)
    padded[0], mask[0] = a, 1
    padded[1, 5:], mask[1, 5:] = b, 1
    got, tokens = nll(model, padded, attention_mask=mask, progress=False)
    sa, na = nll(model, a[None], progress=False)
    sb, nb = nll(model, b[None], progress=False)
    assert tokens == na + nb == 11 + 6
    assert got == pytest.approx((sa * na + sb * nb) / (na + nb), rel=1e-4)


def test_nll_errors(tiny):
    model = tiny("llama")
    with pytest.raises(InterventionError, match="generates none"):
        nll(model, _chunks(), [Intervention({0: torch.tensor([1])}, "zero", positions="generated")])
    with pytest.raises(ValueError, match=r"\[n, seq\]"):
        nll(model, torch.ones(5, dtype=torch.long))


def test_score_continuations_known_answer(tiny):
    model = tiny("llama")
    p1, c1 = torch.tensor([1, 50, 60]), torch.tensor([70, 80])
    p2, c2 = torch.tensor([1, 90]), torch.tensor([100, 110, 120])
    df = score_continuations(model, [p1, p2, p1], [c1, c2, torch.tensor([], dtype=torch.long)])
    for row, (p, c) in enumerate([(p1, c1), (p2, c2)]):
        ids = torch.cat([p, c])[None]
        with torch.inference_mode():
            logits = model.hf(input_ids=ids).logits[0, :-1]
        want = F.cross_entropy(logits[len(p) - 1 :], c, reduction="sum")
        assert df.loc[row, "tokens"] == len(c)
        assert df.loc[row, "nll_sum"] == pytest.approx(float(want), rel=1e-4)
    assert df.loc[2, "tokens"] == 0 and math.isnan(df.loc[2, "nll"])


def test_perplexity_matrix_shape_and_none_row(tiny, heldout, tmp_path):
    model = tiny("llama")
    sel = _selection()
    m = perplexity_matrix(model, sel, heldout, batch_size=2, progress=False)
    rows = ["none", "en", "fr", "zh", "en (random)", "fr (random)", "zh (random)"]
    assert m.rows == rows and m.languages == LANGS
    delta = m.delta_table()
    assert delta.shape == (7, 3)
    assert (delta.loc["none"] == 0).all()
    nll_t, ppl_t = m.nll_table(), m.ppl_table()
    assert ppl_t.equals(nll_t.apply(lambda c: c.map(math.exp)))
    # the none row equals a plain nll on each language
    for lang in LANGS:
        assert nll_t.loc["none", lang] == pytest.approx(
            nll(model, heldout.chunks[lang], progress=False)[0], rel=1e-6
        )
    # a LAPE row equals nll with that language zeroed
    want = nll(model, heldout.chunks["zh"], [Intervention.zero(sel, "fr")], progress=False)[0]
    assert nll_t.loc["fr", "zh"] == pytest.approx(want, rel=1e-6)
    tidy = m.tidy()
    assert set(tidy.columns) >= {"row", "kind", "deactivated", "evaluated", "nll", "ppl", "delta_nll", "tokens"}
    assert len(tidy) == 21 and (tidy["tokens"] == 47 * 3).all()
    summ = m.summary()
    assert list(summ.index) == rows[1:]
    assert summ.loc["fr", "diag_delta"] == pytest.approx(delta.loc["fr", "fr"])
    assert summ.loc["fr", "offdiag_mean_delta"] == pytest.approx(delta.loc["fr", ["en", "zh"]].mean())
    assert summ.loc["fr", "random_diag_delta"] == pytest.approx(delta.loc["fr (random)", "fr"])
    assert pd.isna(summ.loc["fr (random)", "random_diag_delta"])
    assert summ.loc["en", "n_neurons"] == int(sel.flat("en").numel())
    path = m.to_csv(tmp_path / "ppl.csv")
    back = PplMatrix.from_csv(path)
    pd.testing.assert_frame_equal(back.delta_table(), delta)
    assert back.meta["seed"] == 0
    with pytest.raises(FileExistsError):
        m.to_csv(path)


def test_perplexity_matrix_empty_set_and_no_control(tiny, heldout):
    model = tiny("llama")
    masks = {lang: torch.zeros(2, 128, dtype=torch.bool) for lang in LANGS}
    masks["fr"][1, :10] = True
    sel = NeuronSelection.from_masks(masks)
    m = perplexity_matrix(model, sel, heldout, controls={}, progress=False)
    assert m.rows == ["none", "en", "fr", "zh"]
    delta = m.delta_table()
    assert (delta.loc["en"] == 0).all() and (delta.loc["zh"] == 0).all()
    assert (delta.loc["fr"] != 0).any()


def test_perplexity_matrix_errors(tiny, heldout):
    model = tiny("llama")
    with pytest.raises(InterventionError, match=r"18 layers x 2048 neurons.*2 layers x 128"):
        perplexity_matrix(model, _selection(n_layers=18, n_neurons=2048), heldout)
    with pytest.raises(InterventionError, match="'de' is not in the neuron set"):
        perplexity_matrix(model, _selection(), heldout, languages=["de"])


@pytest.mark.slow
def test_real_model_random_one_percent_changes_nll_a_little(default_model):
    from lape_utils.lape import random_matched

    model = default_model
    corpus = load_corpus("builtin", ["en"], split="heldout")
    packed = pack(corpus, model.tokenizer, seq_len=128, tokens_per_language=127 * 4)
    L, D = model.n_layers, model.n_neurons
    per_layer = round(0.01 * D)
    masks = {"en": torch.zeros(L, D, dtype=torch.bool)}
    masks["en"][:, :per_layer] = True
    rnd = random_matched(NeuronSelection.from_masks(masks), seed=0, exclude_selected=False)
    base, tokens = nll(model, packed.chunks["en"], batch_size=2, progress=False)
    zeroed, _ = nll(model, packed.chunks["en"], [Intervention.zero(rnd, "en")], batch_size=2,
                    progress=False)
    assert tokens == 127 * 4
    assert 1.0 < base < 6.0, base  # a real model on English prose
    assert zeroed != base
    assert abs(zeroed - base) < 0.3, (base, zeroed)


# --------------------------------------------------------------------------- intervals


def test_delta_interval_known_answers():
    import numpy as np
    from scipy.stats import bootstrap

    from lape_utils.evaluate import delta_interval

    tokens = np.array([10, 10, 10, 10])
    base = np.array([20.0, 25.0, 30.0, 35.0])
    # every chunk 0.5 nats/token worse: no spread, the interval is the point
    assert delta_interval(base + 5, base, tokens) == (0.5, 0.5, 0.5)
    # one chunk: no interval
    d, lo, hi = delta_interval(base[:1] + 5, base[:1], tokens[:1])
    assert d == 0.5 and math.isnan(lo) and math.isnan(hi)
    # a spread: the token-weighted mean change, inside scipy's own BCa interval
    nll = base + np.array([1.0, 9.0, 3.0, 7.0])
    d, lo, hi = delta_interval(nll, base, tokens, seed=3)
    assert d == pytest.approx(0.5)
    ref = bootstrap((nll - base, tokens), lambda a, b, axis=-1: a.sum(axis) / b.sum(axis),
                    paired=True, vectorized=True, n_resamples=9999, method="BCa",
                    random_state=np.random.default_rng(3)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    assert 0.1 <= lo < 0.5 < hi <= 0.9


def test_matrix_intervals_controls_and_files(tiny, heldout, tmp_path):
    from lape_utils.lape import activity_matched, random_matched

    model = tiny("llama")
    sel = _selection()
    p = torch.rand(2, 128, 3, generator=torch.Generator().manual_seed(1))
    controls = {"random": random_matched(sel, 0), "matched": activity_matched(sel, p, LANGS, 0)}
    m = perplexity_matrix(model, sel, heldout, controls=controls, batch_size=4, progress=False)
    assert m.controls == ["random", "matched"]
    assert m.rows[-1] == "zh (matched)" and len(m.rows) == 10
    tidy = m.tidy()
    assert len(m.chunks) == 10 * 3 * 3  # rows x languages x chunks
    cells = tidy[tidy["kind"] != "none"]
    assert cells["delta_nll_lo"].notna().all()
    assert ((cells["delta_nll_lo"] <= cells["delta_nll"] + 1e-12)
            & (cells["delta_nll"] <= cells["delta_nll_hi"] + 1e-12)).all()
    assert (tidy["excludes_zero"] == ((tidy["delta_nll_lo"] > 0) | (tidy["delta_nll_hi"] < 0))).all()
    # the per-chunk sums add up to the cell
    fr = m.chunks[(m.chunks["row"] == "fr") & (m.chunks["evaluated"] == "zh")]
    assert fr["nll_sum"].sum() / fr["tokens"].sum() == pytest.approx(
        m.nll_table().loc["fr", "zh"], rel=1e-9)
    summ = m.summary()
    for col in ("diag_lo", "diag_hi", "random_diag_delta", "matched_diag_hi", "beats_random",
                "beats_matched"):
        assert col in summ.columns
    lape = summ.loc["fr"]
    assert lape["beats_matched"] == (lape["diag_lo"] > lape["matched_diag_hi"])
    assert lape["matched_diag_delta"] == pytest.approx(m.delta_table().loc["fr (matched)", "fr"])
    path = m.to_csv(tmp_path / "ppl.csv")
    assert (tmp_path / "ppl.chunks.csv").exists()
    back = PplMatrix.from_csv(path)
    pd.testing.assert_frame_equal(back.summary(), summ)
    assert {"delta_nll_lo", "delta_nll_hi"} <= set(pd.read_csv(path).columns)


def test_threshold_effect_on_a_tiny_model(tiny, heldout):
    from lape_utils import capture
    from lape_utils.config import LapeConfig
    from lape_utils.evaluate import threshold_effect

    model = tiny("llama")
    detect = pack(load_corpus("builtin", LANGS), model.tokenizer, seq_len=64,
                  tokens_per_language=63 * 4)
    stats = capture(model, detect, replicates=0, progress=False)
    df = threshold_effect(model, stats, heldout, [0.01, 0.05],
                          config=LapeConfig(filter_rate=0.5, activation_bar_ratio=0.5),
                          progress=False)
    assert list(df.columns) == ["top_rate", "language", "n_neurons", "diag_delta", "diag_lo",
                                "diag_hi", "offdiag_mean_delta"]
    assert set(df["top_rate"]) == {0.01, 0.05}
    sizes = df.groupby("top_rate")["n_neurons"].sum()
    assert sizes[0.05] > sizes[0.01]  # a higher top_rate selects more
    # each row equals the diagonal of the matrix of that selection
    from lape_utils.lape import identify

    sel = identify(stats.over_zero, stats.n, stats.languages,
                   LapeConfig(top_rate=0.05, filter_rate=0.5, activation_bar_ratio=0.5))
    m = perplexity_matrix(model, sel, heldout, controls={}, progress=False)
    row = df[(df["top_rate"] == 0.05) & (df["language"] == "fr")].iloc[0]
    assert row["diag_delta"] == pytest.approx(m.delta_table().loc["fr", "fr"])
