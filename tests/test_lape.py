"""Pure-math tests of lape_utils.lape: synthetic counts only, milliseconds each.

Known-answer cases are worked out by hand in the comments; property tests use seeded random
counts; an equivalence test compares with a transcription of the reference identify.py.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import pandas as pd
import pytest
import torch

import lape_utils.lape as lape_mod
from lape_utils.lape import (
    LapeConfig,
    _kth_smallest,
    activation_probability,
    activity_matched,
    agreement,
    identify,
    kth_quantile,
    lape_entropy,
    mean_activation,
    normalized_probability,
    probability_margin,
    random_matched,
    stability,
)
from lape_utils.reference import reference_identify
from lape_utils.selection import NeuronSelection


def as_lists(sel: NeuronSelection) -> list[list[list[int]]]:
    """mask[language][layer] as plain lists, for readable asserts."""
    return [[t.tolist() for t in sel.indices[lang]] for lang in sel.languages]


# --------------------------------------------------------------------------- hand cases
#
# CASE2: L=2 layers, D=3 neurons, K=2 languages (a, b), n = [10, 20].
#   neuron   over_zero   P            Q             H
#   (0,0)    [5, 0]      [0.5, 0  ]   [1, 0]        0
#   (0,1)    [2, 4]      [0.2, 0.2]   [.5, .5]      log 2 = 0.6931
#   (0,2)    [0, 0]      [0,   0  ]   [0, 0]        0      (never active: Q=0, H=0, no NaN)
#   (1,0)    [1, 2]      [0.1, 0.1]   [.5, .5]      log 2
#   (1,1)    [0, 16]     [0,   0.8]   [0, 1]        0
#   (1,2)    [8, 4]      [0.8, 0.2]   [.8, .2]      -(.8 ln .8 + .2 ln .2) = 0.500402
# The 12 pooled P sorted: 0 0 0 0 .1 .1 .2 .2 .2 .5 .8 .8
#   rate 0.50 -> k = round(6.0) = 6 -> 0.1 ; rate 0.75 -> k = round(9.0) = 9 -> 0.2
OZ2 = torch.tensor([[[5, 0], [2, 4], [0, 0]], [[1, 2], [0, 16], [8, 4]]])
N2 = torch.tensor([10, 20])

# CASE3: L=1, D=4, K=3 (x, y, z), n = [10, 10, 10].
#   j0 [9,0,0] P [.9,0,0]   H 0
#   j1 [9,9,9] P [.9,.9,.9] H log 3 = 1.0986 (equally active everywhere)
#   j2 [6,3,0] P [.6,.3,0]  Q [2/3,1/3,0] H = -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.6365
#   j3 [0,0,1] P [0,0,.1]   H 0
# Pooled sorted: 0 0 0 0 0 .1 .3 .6 .9 .9 .9 .9
#   rate .25 -> k=3 -> 0 ; .5 -> k=6 -> .1 ; .75 -> k=9 -> .9
OZ3 = torch.tensor([[[9, 0, 0], [9, 9, 9], [6, 3, 0], [0, 0, 1]]])
N3 = torch.tensor([10, 10, 10])


def cfg(top, filt, bar):
    return LapeConfig(top_rate=top, filter_rate=filt, activation_bar_ratio=bar)


def test_hand_case2_default_rule():
    # tau = bar = 0.1. Filter: (0,2) never active and (1,0) (P = .1, not > .1) are excluded.
    # Candidates by H: (0,0) 0, (1,1) 0, (1,2) .5004, (0,1) .6931.
    # top_rate .5 -> round(6 * .5) = 3 -> (0,0), (1,1), (1,2).
    # Assign P > .1: (0,0) -> a ; (1,1) -> b ; (1,2) -> a and b (neurons can be shared).
    sel = identify(OZ2, N2, ["a", "b"], cfg(0.5, 0.5, 0.5))
    assert as_lists(sel) == [[[0], [2]], [[], [1, 2]]]
    ident = sel.provenance["identification"]
    assert ident["filter_threshold"] == ident["activation_bar"] == pytest.approx(0.1)
    assert ident["n_candidates"] == 4
    assert ident["n_requested"] == ident["n_selected"] == 3
    assert sel.selected.tolist() == [[0, 0], [1, 1], [1, 2]]
    assert sel.total_distinct() == 3
    df = sel.to_frame()
    assert list(df.columns) == ["language", "layer", "neuron", "prob_a", "prob_b", "entropy"]
    row = df[(df.language == "a") & (df.layer == 1)].iloc[0]
    assert (row.prob_a, row.prob_b) == pytest.approx((0.8, 0.2))
    assert row.entropy == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), rel=1e-6)


def test_hand_case2_higher_bar():
    # bar ratio .75 -> bar = 0.2, tau stays 0.1: same 3 neurons selected;
    # (1,2) has P = [.8, .2]: .2 is not > .2, so it now belongs to a only.
    sel = identify(OZ2, N2, ["a", "b"], cfg(0.5, 0.5, 0.75))
    assert as_lists(sel) == [[[0], [2]], [[], [1]]]
    assert sel.provenance["identification"]["activation_bar"] == pytest.approx(0.2)


def test_hand_case2_tie_broken_by_flat_index_and_empty_language_kept():
    # top_rate 1/6 -> round(1.0) = 1 neuron. (0,0) and (1,1) tie at H = 0; the lower flat
    # index, (0,0) = 0 vs (1,1) = 4, wins. Language b ends up with no neuron: it is kept,
    # with one empty tensor per layer (the reference's bincount would drop it).
    sel = identify(OZ2, N2, ["a", "b"], cfg(1 / 6, 0.5, 0.5))
    assert as_lists(sel) == [[[0], []], [[], []]]
    assert sel.languages == ["a", "b"]
    assert all(t.dtype == torch.long and t.shape == (0,) for t in sel.indices["b"])
    assert sel.counts().loc[:, "b"].tolist() == [0, 0]


def test_hand_case3_uniform_neuron_not_selected_and_trailing_language_kept():
    # tau = bar = .1 (rate .5). Filter excludes j3 (max P = .1). Candidates j0 (H 0),
    # j2 (.6365), j1 (log 3). top_rate .5 -> 2 neurons: j0, j2; j1 (H = log K) is not.
    # Assign: j0 -> x ; j2 -> x (.6) and y (.3). z gets nothing but is kept.
    sel = identify(OZ3, N3, ["x", "y", "z"], cfg(0.5, 0.5, 0.5))
    assert as_lists(sel) == [[[0, 2]], [[2]], [[]]]
    # The reference drops the trailing empty language (bincount of [0, 0, 1] has length 2).
    ref = reference_identify(OZ3, N3, 0.5, 0.5, 0.5)
    assert len(ref) == 2
    assert [[t.tolist() for t in lang] for lang in ref] == as_lists(sel)[:2]


def test_uniform_neuron_has_entropy_log_k():
    h = lape_entropy(activation_probability(OZ3, N3))
    assert h[0, 1].item() == pytest.approx(math.log(3), rel=1e-6)


def test_fewer_candidates_than_requested_never_selects_filtered(caplog):
    # top_rate 1 -> round(4) = 4 requested, only 3 pass the filter: we select 3, warn.
    with caplog.at_level(logging.WARNING, logger="lape_utils.lape"):
        sel = identify(OZ3, N3, ["x", "y", "z"], cfg(1.0, 0.5, 0.5))
    assert "only 3 neurons pass the filter" in caplog.text
    assert sel.selected[:, 1].tolist() == [0, 1, 2]
    # j1 is active in all three languages above bar .1 -> in all three.
    assert as_lists(sel) == [[[0, 1, 2]], [[1, 2]], [[1]]]
    # Same as the reference here: it fills with j3 (H = +inf) but j3 passes no bar.
    ref = reference_identify(OZ3, N3, 1.0, 0.5, 0.5)
    assert [[t.tolist() for t in x] for x in ref] == as_lists(sel)
    # With bar < tau (bar ratio .25 -> bar = 0) the reference assigns the filtered j3 to z
    # (P = .1 > 0); we do not select filtered neurons at all (documented difference).
    ours = identify(OZ3, N3, ["x", "y", "z"], cfg(1.0, 0.5, 0.25))
    ref = reference_identify(OZ3, N3, 1.0, 0.5, 0.25)
    assert as_lists(ours) == [[[0, 1, 2]], [[1, 2]], [[1]]]
    assert ref[2][0].tolist() == [1, 3]


def test_selected_neuron_above_no_bar_is_dropped():
    # tau = .1 (rate .5) but bar = .9 (rate .75): no P is > .9, so the 2 selected neurons
    # (j0, j2) belong to no language, as in the reference. They stay in `selected`.
    sel = identify(OZ3, N3, ["x", "y", "z"], cfg(0.5, 0.5, 0.75))
    assert as_lists(sel) == [[[]], [[]], [[]]]
    assert sel.selected.tolist() == [[0, 0], [0, 2]]
    assert sel.provenance["identification"]["n_unassigned"] == 2
    assert len(sel.to_frame()) == 0


# --------------------------------------------------------------------------- formulas


def test_activation_probability_values_and_dtype():
    p = activation_probability(OZ2, N2)
    assert p.dtype == torch.float32
    assert p[1, 1].tolist() == pytest.approx([0.0, 0.8])
    p64 = activation_probability(OZ2, N2, dtype=torch.float64)
    assert p64.dtype == torch.float64 and p64[0, 1].tolist() == [0.2, 0.2]
    # Bit-identical to the reference's integer true division.
    assert torch.equal(p, OZ2 / N2)
    assert torch.equal(activation_probability(OZ2, [10, 20]), p)


@pytest.mark.parametrize(
    ("oz", "n", "match"),
    [
        (OZ2, torch.tensor([10, 0]), r"n\[1\] = 0: language index 1"),
        (OZ2, torch.tensor([-5, 20]), r"n\[0\] = -5"),
        (OZ2, torch.tensor([10, 20, 30]), "one token count per language"),
        (OZ2[0], N2, r"\[layer, neuron, lang\]"),
        (OZ2, torch.tensor([5, 20]), r"over_zero\[1, 2, 0\] = 8 exceeds n\[0\] = 5"),
        (-OZ2, N2, "negative"),
    ],
)
def test_activation_probability_errors(oz, n, match):
    with pytest.raises(ValueError, match=match):
        activation_probability(oz, n)


def test_activation_probability_rejects_nan_and_bool():
    with pytest.raises(ValueError, match="NaN"):
        activation_probability(torch.full((1, 1, 2), math.nan), N2)
    with pytest.raises(TypeError, match="real numbers"):
        activation_probability(OZ2 > 0, N2)


def test_entropy_known_values():
    p = torch.tensor([[0.5, 0.0], [0.2, 0.2], [0.0, 0.0], [0.8, 0.2]])
    h = lape_entropy(p)
    assert not torch.isnan(h).any()
    expected = [0.0, math.log(2), 0.0, -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))]
    assert h.tolist() == pytest.approx(expected, rel=1e-6)


def test_entropy_bit_identical_to_reference_formula_and_row_subsets():
    # identify() scores only the neurons that pass the filter; that is exact only if the
    # row-wise formula gives the same bits on a subset of rows as on the full tensor.
    over_zero, n = random_counts(13, n_layers=6, n_neurons=3000, n_lang=7)
    over_zero[:, :200] = 0  # never-active neurons
    over_zero[:, 200:400, :3] = 0
    p = over_zero / n
    q = p / p.sum(dim=-1, keepdim=True)
    q[torch.isnan(q)] = 0
    reference = -torch.sum(q * torch.where(q > 0, q.log(), 0), dim=-1)
    h = lape_entropy(p)
    assert torch.equal(h, reference)
    rows = p.reshape(-1, 7)
    subset = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:5000]
    assert torch.equal(lape_entropy(rows[subset.sort().values]), h.reshape(-1)[subset.sort().values])


def test_normalized_probability_never_active_is_zero():
    q = normalized_probability(torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.3, 0.0]]))
    assert q[0].tolist() == [0.0, 0.0, 0.0]
    assert q[1].tolist() == pytest.approx([0.25, 0.75, 0.0])


def test_probability_margin():
    p = torch.tensor([[0.9, 0.5, 0.1], [0.3, 0.3, 0.0]])
    assert probability_margin(p).tolist() == pytest.approx([0.4, 0.0])
    assert probability_margin(torch.tensor([[0.7]])).tolist() == pytest.approx([0.7])


def test_mean_activation_clips_negative():
    m = mean_activation(torch.tensor([[[-30.0, 20.0]]]), torch.tensor([10, 10]))
    assert m.tolist() == [[[0.0, 2.0]]]
    raw = mean_activation(torch.tensor([[[-30.0, 20.0]]]), [10, 10], clip_negative=False)
    assert raw.tolist() == [[[-3.0, 2.0]]]


# --------------------------------------------------------------------------- quantile


def test_kth_quantile_known_values():
    v = torch.tensor([3.0, 1.0, 2.0, 4.0])
    assert kth_quantile(v, 0.5) == 2.0  # k = 2 (torch.quantile would give 2.5)
    assert torch.quantile(v, 0.5).item() == 2.5
    assert kth_quantile(v, 0.625) == 2.0  # round(2.5) = 2: Python rounds halves to even
    assert kth_quantile(v, 0.875) == 4.0  # round(3.5) = 4
    assert kth_quantile(v, 0.0) == 1.0  # k = 0 -> taken as k = 1, the minimum
    assert kth_quantile(v, 1.0) == 4.0
    with pytest.raises(ValueError):
        kth_quantile(v, 1.5)


def _kth_data(kind, size, seed=3):
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.rand(size, generator=g)
    if kind == "mostly_zero":
        x = torch.rand(size, generator=g)
        x[torch.rand(size, generator=g) < 0.97] = 0.0
        return x
    if kind == "discrete":
        return torch.randint(0, 50, (size,), generator=g) / 1000
    return torch.full((size,), 0.25)


@pytest.mark.parametrize("kind", ["uniform", "mostly_zero", "discrete", "all_equal"])
@pytest.mark.parametrize("rate", [0.0, 0.01, 0.5, 0.95, 0.999, 1.0])
def test_fast_kth_equals_kthvalue(kind, rate, monkeypatch):
    # The sample-bracketing path, exercised on small inputs by lowering its size cutoff.
    monkeypatch.setattr(lape_mod, "_FAST_KTH_MIN", 1000)
    monkeypatch.setattr(lape_mod, "_KTH_SAMPLE", 512)
    x = _kth_data(kind, 50_003)
    k = min(max(round(x.numel() * rate), 1), x.numel())
    assert _kth_smallest(x, k) == x.kthvalue(k).values.item()
    assert kth_quantile(x, rate) == x.kthvalue(k).values.item()


@pytest.mark.parametrize("kind", ["uniform", "mostly_zero"])
def test_fast_kth_at_real_size(kind):
    x = _kth_data(kind, (1 << 20) + 17)
    k = round(x.numel() * 0.95)
    assert kth_quantile(x, 0.95) == x.kthvalue(k).values.item()


# --------------------------------------------------------------------------- config


def test_config_defaults_and_roundtrip():
    c = LapeConfig()
    assert (c.top_rate, c.filter_rate, c.activation_bar_ratio) == (0.01, 0.95, 0.95)
    assert LapeConfig.from_dict(c.to_dict()) == c
    assert LapeConfig.from_dict({"top_rate": 0.02}) == LapeConfig(top_rate=0.02)
    assert c.label() == "top 1% · filter q0.95 · bar q0.95"
    v = dataclasses.replace(c, activation_bar_ratio=0.9)
    assert v.activation_bar_ratio == 0.9 and v.top_rate == 0.01
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.top_rate = 0.5  # type: ignore[misc]
    assert isinstance(LapeConfig(top_rate=1).top_rate, float)


@pytest.mark.parametrize(
    ("field", "value", "exc", "match"),
    [
        ("top_rate", 0.0, ValueError, r"top_rate = 0.0 is outside \(0, 1\]"),
        ("top_rate", 1.5, ValueError, r"top_rate = 1.5 is outside \(0, 1\]"),
        ("top_rate", -0.1, ValueError, "top_rate = -0.1"),
        ("filter_rate", 1.0, ValueError, r"filter_rate = 1.0 is outside \[0, 1\)"),
        ("activation_bar_ratio", -0.01, ValueError, r"activation_bar_ratio = -0.01 is outside"),
        ("filter_rate", math.nan, ValueError, r"filter_rate must be a finite number in \[0, 1\), got nan"),
        ("top_rate", math.inf, ValueError, r"top_rate must be a finite number in \(0, 1\], got inf"),
        ("top_rate", True, TypeError, r"top_rate must be a real number in \(0, 1\], got True"),
        ("filter_rate", "0.9", TypeError, r"filter_rate must be a real number in \[0, 1\), got '0.9'"),
        ("activation_bar_ratio", None, TypeError, "activation_bar_ratio must be a real number"),
    ],
)
def test_config_validation(field, value, exc, match):
    with pytest.raises(exc, match=match):
        LapeConfig(**{field: value})
    with pytest.raises(exc, match=match):
        dataclasses.replace(LapeConfig(), **{field: value})


def test_config_from_dict_unknown_key():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['top'\]"):
        LapeConfig.from_dict({"top": 0.1})


def test_identify_argument_errors():
    with pytest.raises(ValueError, match="3 languages given"):
        identify(OZ2, N2, ["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        identify(OZ2, N2, ["a", "a"])
    with pytest.raises(ValueError, match="method must be one of"):
        identify(OZ2, N2, ["a", "b"], method="lave")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs activation_sum"):
        identify(OZ2, N2, ["a", "b"], method="mean_activation")
    with pytest.raises(TypeError, match="LapeConfig"):
        identify(OZ2, N2, ["a", "b"], {"top_rate": 0.5})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties


def random_counts(seed, n_layers=4, n_neurons=500, n_lang=5, tokens=1_000_000, power=4.0):
    """Counts with a per-neuron base rate and a skewed per-language profile."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n_layers, n_neurons, 1, generator=g)
    profile = torch.rand(n_layers, n_neurons, n_lang, generator=g) ** power
    n = torch.randint(tokens // 2, tokens, (n_lang,), generator=g)
    over_zero = (base * profile * n).long()
    return over_zero, n


LANGS5 = ["en", "zh", "fr", "es", "ja"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "config",
    [cfg(0.01, 0.95, 0.95), cfg(0.05, 0.9, 0.9), cfg(0.02, 0.95, 0.9), cfg(0.03, 0.8, 0.97)],
    ids=lambda c: c.label(),
)
def test_equivalent_to_reference_without_ties(seed, config):
    over_zero, n = random_counts(seed)
    p = over_zero / n
    h = lape_entropy(p)
    tau = kth_quantile(p, config.filter_rate)
    h[(p > tau).sum(-1) == 0] = math.inf
    k = round(h.numel() * config.top_rate)
    srt = h.flatten().sort().values
    assert srt[k - 1] < srt[k], "test data has a tie at the selection boundary; change seed"
    ours = identify(over_zero, n, LANGS5, config)
    ref = reference_identify(
        over_zero, n, config.top_rate, config.filter_rate, config.activation_bar_ratio
    )
    ours_lists = [ours.indices[lang] for lang in ours.languages]
    # The reference may be shorter (trailing empty languages dropped); ours has all five.
    assert all(t.numel() == 0 for lang in ours_lists[len(ref):] for t in lang)
    for a, b in zip(ours_lists, ref):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_equivalent_to_reference_at_7b_width():
    # 16 x 11008 x 7 = 1.2M values: the quantiles take the fast bracketing path.
    over_zero, n = random_counts(21, n_layers=16, n_neurons=11008, n_lang=7)
    langs = ["en", "zh", "fr", "es", "vi", "id", "ja"]
    ours = identify(over_zero, n, langs)
    ref = reference_identify(over_zero, n, 0.01, 0.95, 0.95)
    assert ours.total_distinct() == round(16 * 11008 * 0.01)
    assert len(ref) == 7
    for lang, ref_lists in zip(langs, ref):
        assert all(torch.equal(x, y) for x, y in zip(ours.indices[lang], ref_lists, strict=True))


def test_ties_are_deterministic_and_nested():
    # Few tokens -> many exact ties in P and H.
    over_zero, n = random_counts(5, n_layers=6, n_neurons=300, tokens=40, power=6.0)
    a = identify(over_zero, n, LANGS5, cfg(0.05, 0.5, 0.5))
    b = identify(over_zero.clone(), n.clone(), LANGS5, cfg(0.05, 0.5, 0.5))
    assert a.equals(b)
    h = lape_entropy(over_zero / n)
    assert (h.flatten().unique().numel() < h.numel() / 2), "expected many ties"


@pytest.mark.parametrize("seed", [0, 7])
def test_count_and_assignment_properties(seed):
    over_zero, n = random_counts(seed, n_layers=8, n_neurons=400)
    for config in [cfg(0.01, 0.95, 0.95), cfg(0.05, 0.9, 0.97), cfg(0.02, 0.9, 0.8)]:
        sel = identify(over_zero, n, LANGS5, config)
        ident = sel.provenance["identification"]
        want = round(8 * 400 * config.top_rate)
        assert ident["n_candidates"] >= want
        assert ident["n_selected"] == want == sel.selected.shape[0]
        # A selected neuron is in >= 1 language iff its max value exceeds bar, and in
        # exactly the languages where P > bar.
        p = (over_zero / n)[sel.selected[:, 0], sel.selected[:, 1]]
        rows, cols = sel.selected[:, 0], sel.selected[:, 1]
        assigned = torch.stack([sel.mask(lang)[rows, cols] for lang in LANGS5], 1)
        assert torch.equal(assigned, p > ident["activation_bar"])
        assert sel.total_distinct() == int((p.amax(1) > ident["activation_bar"]).sum())
        if config.activation_bar_ratio <= config.filter_rate:
            assert sel.total_distinct() == want  # every selected neuron passes some bar
        # Nothing outside the selection is assigned.
        sel_mask = torch.zeros(8, 400, dtype=torch.bool)
        sel_mask[sel.selected[:, 0], sel.selected[:, 1]] = True
        assert not (sel.union() & ~sel_mask).any()


@pytest.mark.parametrize("tokens", [40, 1_000_000])  # with and without many ties
def test_monotone_in_top_rate(tokens):
    over_zero, n = random_counts(11, n_layers=5, n_neurons=400, tokens=tokens)
    rates = [0.005, 0.01, 0.02, 0.05, 0.1]
    sels = [identify(over_zero, n, LANGS5, cfg(r, 0.9, 0.9)) for r in rates]
    for small, large in zip(sels, sels[1:]):
        for lang in LANGS5:
            assert not (small.mask(lang) & ~large.mask(lang)).any()
        assert small.total_distinct() <= large.total_distinct()


def test_equal_activity_never_selected_in_random_data():
    over_zero, n = random_counts(2, n_layers=3, n_neurons=400)
    over_zero[1, 7] = (n * 0.9).long()  # P = 0.9 in every language: H = log 5
    sel = identify(over_zero, n, LANGS5, cfg(0.05, 0.9, 0.9))
    assert not sel.union()[1, 7]


# --------------------------------------------------------------------------- methods


# CASE-M: L=1, D=4, K=2, n = [1000, 1000].
#   j0 [20, 1]     P [.02, .001]  H = 0.1914 (very specific, but rare)   margin .019
#   j1 [900, 500]  P [.9, .5]     H = 0.6518                             margin .4
#   j2 [0, 0]      never active
#   j3 [100, 100]  P [.1, .1]     H = log 2                              margin 0
# Pooled: 0 0 .001 .02 .1 .1 .5 .9 ; rate .25 -> k = 2 -> tau = bar = 0 -> j0, j1, j3 pass.
# top_rate .25 -> 1 neuron: LAPE picks j0, the margin rule picks j1.
OZM = torch.tensor([[[20, 1], [900, 500], [0, 0], [100, 100]]])
NM = torch.tensor([1000, 1000])


def test_probability_method_prefers_large_margin():
    lape = identify(OZM, NM, ["a", "b"], cfg(0.25, 0.25, 0.25))
    prob = identify(OZM, NM, ["a", "b"], cfg(0.25, 0.25, 0.25), method="probability")
    assert lape.selected[:, 1].tolist() == [0]
    assert prob.selected[:, 1].tolist() == [1]
    assert prob.method == "probability"
    assert as_lists(prob) == [[[1]], [[1]]]  # P = [.9, .5], both > bar = 0
    assert prob.selected_score.tolist() == pytest.approx([-0.4])
    df = prob.to_frame()
    assert "score" in df.columns and df.entropy.iloc[0] == pytest.approx(0.6518, abs=1e-4)


def test_mean_activation_method_hand_case():
    # L=1, D=3, K=2, n=[10,10]; activation sums -> means (negatives clipped at 0):
    #   j0 [-30, 20] -> [-3 -> 0, 2]  H 0
    #   j1 [10, 10]  -> [1, 1]         H log 2
    #   j2 [40, 0]   -> [4, 0]         H 0
    # Pooled means: 0 0 1 1 2 4 ; rate .5 -> k = 3 -> tau = bar = 1: j1 (max 1) filtered.
    # top_rate 2/3 -> 2 neurons: j0, j2. Assign M > 1: j0 -> b, j2 -> a.
    act_sum = torch.tensor([[[-30.0, 20.0], [10.0, 10.0], [40.0, 0.0]]])
    over_zero = torch.full((1, 3, 2), 5)
    sel = identify(
        over_zero, [10, 10], ["a", "b"], cfg(2 / 3, 0.5, 0.5),
        method="mean_activation", activation_sum=act_sum,
    )
    assert as_lists(sel) == [[[2]], [[0]]]
    assert sel.provenance["identification"]["value"].startswith("mean activation")


def test_mean_activation_equal_to_probability_reduces_to_lape():
    over_zero, n = random_counts(4)
    lape = identify(over_zero, n, LANGS5)
    mean = identify(
        over_zero, n, LANGS5, method="mean_activation", activation_sum=over_zero.double()
    )
    assert lape.equals(mean)


# --------------------------------------------------------------------------- random control


def test_random_matched_sizes_and_exclusion():
    over_zero, n = random_counts(8, n_layers=6, n_neurons=300)
    sel = identify(over_zero, n, LANGS5, cfg(0.05, 0.9, 0.9))
    rnd = random_matched(sel, seed=0)
    assert rnd.method == "random_matched" and rnd.provenance["seed"] == 0
    pd.testing.assert_frame_equal(rnd.counts(), sel.counts())
    assert not (rnd.union() & sel.union()).any()
    assert random_matched(sel, seed=0).equals(rnd)
    assert not random_matched(sel, seed=1).equals(rnd)
    incl = random_matched(sel, seed=0, exclude_selected=False)
    pd.testing.assert_frame_equal(incl.counts(), sel.counts())


def test_random_matched_pool_too_small():
    full = NeuronSelection(["a", "b"], {"a": [[0, 1, 2]], "b": [[]]}, 1, 4)
    with pytest.raises(ValueError, match="layer 0: 3 a neurons to draw but only 1 eligible"):
        random_matched(full, seed=0)
    assert random_matched(full, seed=0, exclude_selected=False).counts().loc[0, "a"] == 3


def test_activity_matched_known_answer():
    # one layer, 6 neurons; "a" holds neurons 0 and 1 (P on a: 0.9, 0.5); the others have
    # P on a of 0.1, 0.88, 0.52, 0.3: the nearest are 3 (0.88) and 4 (0.52)
    p = torch.tensor([[0.9, 0.0], [0.5, 0.1], [0.1, 0.2], [0.88, 0.9], [0.52, 0.5], [0.3, 0.3]])
    sel = NeuronSelection(["a", "b"], {"a": [[0, 1]], "b": [[]]}, 1, 6)
    m = activity_matched(sel, p[None], ["a", "b"], seed=0)
    assert m.indices["a"][0].tolist() == [3, 4] and m.indices["b"][0].tolist() == []
    assert m.method == "activity_matched"
    with pytest.raises(ValueError, match="outside the selection"):
        activity_matched(NeuronSelection(["a"], {"a": [[0, 1, 2, 3, 4]]}, 1, 6), p[None, :, :1],
                         ["a"], seed=0)
    with pytest.raises(ValueError, match="no activation probability"):
        activity_matched(sel, p[None, :, :1], ["a"], seed=0)


def test_activity_matched_matches_the_activation_probability_on_tiny_model_statistics(tiny):
    """The control's neurons fire as often on the language as LAPE's (per layer), unlike a
    uniform draw: pooled 1-Wasserstein distance of the probabilities below 0.1 and below a
    quarter of the uniform control's."""
    from scipy.stats import wasserstein_distance

    from lape_utils import capture, load_corpus, pack

    model = tiny("llama")
    packed = pack(load_corpus("builtin", ["en", "fr", "zh"]), model.tokenizer, seq_len=64,
                  tokens_per_language=63 * 8)
    stats = capture(model, packed, replicates=0, progress=False)
    sel = identify(stats.over_zero, stats.n, stats.languages, cfg(0.05, 0.95, 0.95))
    p = stats.probability()
    matched = activity_matched(sel, p, stats.languages, seed=0)
    uniform = random_matched(sel, seed=0)
    pd.testing.assert_frame_equal(matched.counts(), sel.counts())
    assert not (matched.union() & sel.union()).any()

    def probs(s):  # per layer and language, P on that language, pooled
        return torch.cat([p[li, s.indices[lang][li], stats.languages.index(lang)]
                          for lang in s.languages for li in range(s.n_layers)]).numpy()

    ours = probs(sel)
    d_matched = wasserstein_distance(ours, probs(matched))
    d_uniform = wasserstein_distance(ours, probs(uniform))
    assert d_matched < 0.1 and d_matched < d_uniform / 4, (d_matched, d_uniform)
    for lang in sel.languages:  # per layer too, the means agree within 0.15
        k = stats.languages.index(lang)
        for li in range(sel.n_layers):
            a, b = sel.indices[lang][li], matched.indices[lang][li]
            if a.numel():
                assert abs(float(p[li, a, k].mean() - p[li, b, k].mean())) < 0.15


# --------------------------------------------------------------------------- agreement


def test_agreement_known_answer():
    # L=2, D=5.
    #   en: a = {(0,0), (0,1), (1,2)}         b = {(0,1), (1,2), (1,3)}
    #       intersection 2, union 4, jaccard 0.5
    #   fr: a = {(1,3), (1,4)}                b = {}           -> 0/2 = 0
    #   de: only in b: {(0,4)}                a = {} (absent)  -> 0/1 = 0
    #   all: a = {00, 01, 12, 13, 14} (5)     b = {01, 12, 13, 04} (4)
    #        intersection {01, 12, 13} = 3, union 6 -> 0.5
    a = NeuronSelection(["en", "fr"], {"en": [[0, 1], [2]], "fr": [[], [3, 4]]}, 2, 5)
    b = NeuronSelection(
        ["en", "fr", "de"], {"en": [[1], [2, 3]], "fr": [[], []], "de": [[4], []]}, 2, 5
    )
    df = agreement(a, b)
    assert list(df.index) == ["en", "fr", "de", "all"]
    assert df.loc["en"].tolist() == [3, 3, 2, 4, 0.5]
    assert df.loc["fr"].tolist() == [2, 0, 0, 2, 0.0]
    assert df.loc["de"].tolist() == [0, 1, 0, 1, 0.0]
    assert df.loc["all"].tolist() == [5, 4, 3, 6, 0.5]
    assert agreement(a, a)["jaccard"].tolist() == [1.0, 1.0, 1.0]
    empty = NeuronSelection(["en"], {"en": [[], []]}, 2, 5)
    assert math.isnan(agreement(empty, empty).loc["en", "jaccard"])
    with pytest.raises(ValueError, match="different shapes"):
        agreement(a, NeuronSelection(["en"], {"en": [[]]}, 1, 5))


# --------------------------------------------------------------------------- stability


def test_stability_identical_replicates():
    over_zero, n = random_counts(9)
    ref = identify(over_zero, n, LANGS5)
    reps = 3
    boot = over_zero.expand(reps, -1, -1, -1)
    res = stability(boot, n.expand(reps, -1), LANGS5, LapeConfig(), ref)
    assert res.n_replicates == reps
    for lang in LANGS5:
        assert torch.equal(res.frequency[lang], ref.mask(lang).float())
    nonempty = [lang for lang in LANGS5 if ref.mask(lang).any()]
    assert (res.jaccard[nonempty + ["all"]] == 1.0).all().all()
    assert res.mean_jaccard[nonempty].tolist() == [1.0] * len(nonempty)
    frame = res.to_frame()
    assert len(frame) == reps * (len(LANGS5) + 1)
    assert {"replicate", "language", "count", "count_reference", "jaccard"} <= set(frame.columns)
    summ = res.summary()
    assert summ.loc[nonempty[0], "n_stable"] == ref.mask(nonempty[0]).sum().item()


def test_stability_matches_agreement_on_perturbed_replicates():
    over_zero, n = random_counts(9)
    ref = identify(over_zero, n, LANGS5)
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 2000, (2, *over_zero.shape), generator=g)
    boot = (over_zero + noise).clamp_max(n.min())
    res = stability(boot, n.expand(2, -1), LANGS5, LapeConfig(), ref)
    for r in range(2):
        expected = agreement(identify(boot[r], n, LANGS5), ref)["jaccard"]
        got = res.jaccard.loc[r, list(expected.index)]
        assert got.tolist() == pytest.approx(expected.tolist(), nan_ok=True)
    assert ((res.frequency["zh"] >= 0) & (res.frequency["zh"] <= 1)).all()


def test_stability_checks_shapes():
    over_zero, n = random_counts(9)
    ref = identify(over_zero, n, LANGS5)
    with pytest.raises(ValueError, match="differ from the reference"):
        stability(over_zero[None], n[None], LANGS5[::-1], LapeConfig(), ref)
    with pytest.raises(ValueError, match="boot_n must be"):
        stability(over_zero[None], n, LANGS5, LapeConfig(), ref)
