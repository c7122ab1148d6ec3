"""Tables of lape_utils.analysis: known answers on small hand-built selections, and what the
paper's published neuron sets really show (on the shared copies; skipped when absent)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lape_utils import published as published_mod
from lape_utils.analysis import (
    depth_profile,
    entropy_table,
    layer_counts,
    layer_distribution,
    layer_region_shares,
    layer_share,
    overlap,
    probability_profiles,
    region_layers,
    relative_depth,
    selection_frequencies,
    stability_table,
)
from lape_utils.lape import LapeConfig, identify, stability
from lape_utils.published import (
    OFFICIAL_MODELS,
    compare_with_published,
    published_counts,
    published_sets,
    to_official,
)
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats


def masks(n_layers: int, n_neurons: int, members: dict[str, list[tuple[int, int]]]):
    """{lang: [(layer, neuron), ...]} -> {lang: bool [layer, neuron]}."""
    out = {}
    for lang, pairs in members.items():
        m = torch.zeros(n_layers, n_neurons, dtype=torch.bool)
        for layer, neuron in pairs:
            m[layer, neuron] = True
        out[lang] = m
    return out


# A hand-built selection, languages deliberately NOT in the module order (ja, en, zh).
# L = 4 layers, D = 5 neurons.
#   ja: (0,0) (0,1) (3,4)          -> per layer [2, 0, 0, 1]
#   en: (0,1) (2,2)                -> per layer [1, 0, 1, 0]
#   zh: (3,4) (3,0) (1,3)          -> per layer [0, 1, 0, 2]
# distinct per layer: layer 0 {0,1} = 2, layer 1 {3} = 1, layer 2 {2} = 1, layer 3 {0,4} = 2
SEL = NeuronSelection.from_masks(
    masks(
        4,
        5,
        {
            "ja": [(0, 0), (0, 1), (3, 4)],
            "en": [(0, 1), (2, 2)],
            "zh": [(3, 4), (3, 0), (1, 3)],
        },
    )
)


# --------------------------------------------------------------------------- layers


def test_layer_distribution_known_answer_and_language_order():
    df = layer_distribution(SEL)
    assert list(df.columns) == ["en", "zh", "ja"]  # module order, not the selection's
    assert df.index.name == "layer" and list(df.index) == [0, 1, 2, 3]
    assert df["ja"].tolist() == [2, 0, 0, 1]
    assert df["en"].tolist() == [1, 0, 1, 0]
    assert df["zh"].tolist() == [0, 1, 0, 2]
    with_all = layer_distribution(SEL, union=True)
    assert list(with_all.columns) == ["en", "zh", "ja", "all"]
    assert with_all["all"].tolist() == [2, 1, 1, 2]  # shared neurons counted once


def test_layer_share_is_counts_over_layer_width():
    share = layer_share(SEL, union=True)
    assert share["ja"].tolist() == pytest.approx([0.4, 0.0, 0.0, 0.2])
    assert share["all"].tolist() == pytest.approx([0.4, 0.2, 0.2, 0.4])


def test_relative_depth():
    assert relative_depth(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert relative_depth(1).tolist() == [0.0]
    with pytest.raises(ValueError, match="n_layers"):
        relative_depth(0)


def test_depth_profile_known_answer():
    prof = depth_profile(SEL)  # distinct neurons: [2, 1, 1, 2] of 6
    assert prof["count"].tolist() == [2, 1, 1, 2]
    assert prof["fraction"].tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 2 / 6])
    assert prof["density"].tolist() == pytest.approx([4 / 3, 2 / 3, 2 / 3, 4 / 3])  # x L
    assert prof["density"].mean() == pytest.approx(1.0)  # uniform would be 1 everywhere
    assert prof["cumulative"].iloc[-1] == pytest.approx(1.0)
    assert prof["relative_depth"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert depth_profile(SEL, "en")["count"].tolist() == [1, 0, 1, 0]
    empty = NeuronSelection.from_masks(masks(3, 2, {"en": []}))
    assert depth_profile(empty)["fraction"].isna().all()


@pytest.mark.parametrize(
    ("n_layers", "bottom", "middle", "top"),
    [
        (30, range(0, 3), range(3, 22), range(22, 30)),  # 7.5 top layers round up to 8
        (32, range(0, 3), range(3, 24), range(24, 32)),
        (40, range(0, 4), range(4, 30), range(30, 40)),
        (80, range(0, 8), range(8, 60), range(60, 80)),
        (4, range(0, 0), range(0, 3), range(3, 4)),  # 0.4 bottom layers -> none
    ],
)
def test_region_layers_table(n_layers, bottom, middle, top):
    assert region_layers(n_layers) == {"bottom": bottom, "middle": middle, "top": top}


def test_region_layers_rejects_bad_fractions():
    with pytest.raises(ValueError, match="bottom"):
        region_layers(10, bottom=0.8, top=0.5)
    with pytest.raises(ValueError, match="bottom"):
        region_layers(10, bottom=-0.1)


def test_layer_region_shares_known_answer():
    # L = 10: bottom = layer 0, top = round(2.5) = 3 layers: 7, 8, 9; middle 1..6.
    sel = NeuronSelection.from_masks(
        masks(
            10,
            3,
            {
                "fr": [(0, 0), (5, 0), (8, 0), (9, 0)],  # 1 bottom, 1 middle, 2 top
                "es": [(9, 0), (9, 1)],  # all top; (9,0) shared with fr
                "de": [],
            },
        )
    )
    df = layer_region_shares(sel)
    assert list(df.index) == ["fr", "es", "de", "all"]
    assert df.loc["fr", ["bottom", "middle", "top"]].tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert df.loc["es", ["bottom", "middle", "top"]].tolist() == pytest.approx([0, 0, 1])
    assert df.loc["de", ["bottom", "middle", "top"]].isna().all()  # no neurons: no shares
    # distinct: (0,0) (5,0) (8,0) (9,0) (9,1) -> 1 / 1 / 3 of 5
    assert df.loc["all", "count"] == 5
    assert df.loc["all", ["bottom", "middle", "top"]].tolist() == pytest.approx([0.2, 0.2, 0.6])
    # other fractions move the borders: bottom 20% = layers 0-1, top 10% = layer 9
    df2 = layer_region_shares(sel, bottom=0.2, top=0.1)
    assert df2.loc["fr", ["bottom", "middle", "top"]].tolist() == pytest.approx([0.25, 0.5, 0.25])


# --------------------------------------------------------------------------- overlap


def test_overlap_known_answer():
    counts, jac = overlap(SEL)
    assert list(counts.index) == list(counts.columns) == ["en", "zh", "ja"]
    # en {(0,1),(2,2)}; zh {(1,3),(3,0),(3,4)}; ja {(0,0),(0,1),(3,4)}
    assert counts.to_numpy().tolist() == [[2, 0, 1], [0, 3, 1], [1, 1, 3]]
    assert jac.loc["en", "ja"] == pytest.approx(1 / 4)  # |{(0,1)}| / |4 distinct|
    assert jac.loc["zh", "ja"] == pytest.approx(1 / 5)
    assert jac.loc["en", "zh"] == 0.0
    assert np.diag(jac.to_numpy()).tolist() == [1.0, 1.0, 1.0]
    assert (jac.to_numpy() == jac.to_numpy().T).all()


def test_overlap_empty_language_is_nan_not_zero():
    sel = NeuronSelection.from_masks(masks(2, 2, {"en": [(0, 0)], "ko": []}))
    counts, jac = overlap(sel)
    assert counts.loc["ko", "ko"] == 0
    assert math.isnan(jac.loc["ko", "ko"])
    assert jac.loc["en", "ko"] == 0.0


# --------------------------------------------------------------------------- published


def test_compare_with_published_on_hand_sets():
    # "ours": SEL, 4 x 5 = 20 neurons, 6 distinct = 30%; per language 2..3 = 10-15%.
    other = NeuronSelection.from_masks(masks(2, 10, {"en": [(1, 0)], "zh": [(1, 1), (1, 2)]}))
    df = compare_with_published(SEL, {"toy": other}, ours_name="mine")
    assert list(df.index) == ["mine", "toy"]
    assert df.loc["mine", "total_neurons"] == 20
    assert df.loc["mine", "selected"] == 6
    assert df.loc["mine", "pct_selected"] == pytest.approx(30.0)
    assert df.loc["mine", "pct_language_min"] == pytest.approx(10.0)
    assert df.loc["mine", "pct_language_max"] == pytest.approx(15.0)
    # toy: L = 2 -> bottom round(0.2) = 0 layers, top round(0.5) = 1 layer (layer 1)
    assert df.loc["toy", ["bottom", "middle", "top"]].tolist() == pytest.approx([0, 0, 1])
    assert compare_with_published(None, {"toy": other}).index.tolist() == ["toy"]
    with pytest.raises(ValueError, match="twice"):
        compare_with_published(SEL, {"ours": other})


def test_published_sets_lookup(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown published"):
        published_sets(["GPT-5"])
    with pytest.raises(FileNotFoundError, match="Phi-2-2.7B"):
        published_sets(["Phi-2-2.7B"], directory=tmp_path)
    # the environment variable of selection.official_path, no download
    monkeypatch.setenv("LAPE_OFFICIAL_DIR", str(tmp_path))
    monkeypatch.setattr(published_mod, "download_official", _no_network)
    with pytest.raises(FileNotFoundError, match="LAPE_OFFICIAL_DIR"):
        published_sets(["Phi-2-2.7B"], download=False)
    sel = NeuronSelection.from_masks(masks(32, 10240, {"en": [(31, 7)]}))
    to_official(sel, tmp_path / "Phi-2-2.7B.neuron.pth")
    got = published_sets(["Phi-2-2.7B"], download=False)
    assert list(got) == ["Phi-2-2.7B"]
    assert got["Phi-2-2.7B"].n_neurons == 10240
    assert got["Phi-2-2.7B"].indices["en"][31].tolist() == [7]


def _no_network(*args, **kwargs):  # pragma: no cover - must not be called
    raise AssertionError("download_official must not be called with download=False")


@pytest.fixture(scope="module")
def published():
    """The seven published sets' per-layer counts, shipped in data/published (offline)."""
    return published_counts()


def test_shipped_counts_match_the_published_files(official_dir, published):
    files = published_sets(directory=official_dir)
    assert list(files) == list(published) == list(OFFICIAL_MODELS)
    for name, sel in files.items():
        pd.testing.assert_frame_equal(layer_counts(sel), published[name], check_names=False)
        assert published[name].attrs["n_neurons"] == sel.n_neurons


def test_published_sets_are_one_percent(published):
    assert list(published) == list(OFFICIAL_MODELS)
    df = compare_with_published(None, published)
    assert df["pct_selected"].round(2).tolist() == [1.0] * 7
    assert df.loc["LLaMA-2-7B", "selected"] == 3523
    # per language: 0.016-0.574% of all neurons (the paper says 0.02-0.34%)
    assert df["pct_language_min"].min() == pytest.approx(0.0164, abs=1e-3)  # Phi-2 en
    assert df["pct_language_max"].max() == pytest.approx(0.574, abs=1e-3)  # BLOOM id


def test_published_region_shares_what_the_files_show(published):
    """What the seven published sets really show (bottom 10% / top 25% of layers).

    Shares of each set's distinct neurons::

        LLaMA-2-7B   bottom 0.26  middle 0.32  top 0.42   (bottom + top 0.68)
        LLaMA-2-13B  bottom 0.26  middle 0.40  top 0.34   (bottom + top 0.60)
        LLaMA-2-70B  bottom 0.21  middle 0.32  top 0.47   (bottom + top 0.68)
        BLOOM-7B     bottom 0.00  middle 0.02  top 0.98
        Mistral-7B   bottom 0.03  middle 0.21  top 0.75
        OPT-6.7B     bottom 0.03  middle 0.25  top 0.73
        Phi-2-2.7B   bottom 0.01  middle 0.14  top 0.86

    The paper's claim holds: LLaMA-2 has a bottom cluster (layers 0-1) plus the top
    layers; the others sit mostly in the top quarter. But for LLaMA-2-13B the middle
    region is larger than the top quarter, and bottom + top is only 60%.
    """
    df = compare_with_published(None, published)
    expected = {
        "LLaMA-2-7B": (0.255, 0.323, 0.422),
        "LLaMA-2-13B": (0.262, 0.396, 0.342),
        "LLaMA-2-70B": (0.206, 0.324, 0.470),
        "BLOOM-7B": (0.000, 0.016, 0.984),
        "Mistral-7B": (0.034, 0.211, 0.755),
        "OPT-6.7B": (0.026, 0.246, 0.728),
        "Phi-2-2.7B": (0.008, 0.135, 0.857),
    }
    for model, shares in expected.items():
        assert df.loc[model, ["bottom", "middle", "top"]].tolist() == pytest.approx(
            shares, abs=1e-3
        ), model
    llama = ["LLaMA-2-7B", "LLaMA-2-13B", "LLaMA-2-70B"]
    others = ["BLOOM-7B", "Mistral-7B", "OPT-6.7B", "Phi-2-2.7B"]
    assert (df.loc[llama, "bottom"] > 0.2).all()  # a real bottom cluster ...
    assert (df.loc[others, "bottom"] < 0.05).all()  # ... that the others lack
    assert ((df.loc[llama, "bottom"] + df.loc[llama, "top"]) >= 0.6).all()
    assert (df.loc[others, "top"] > 0.7).all()
    assert df.loc["LLaMA-2-13B", "middle"] > df.loc["LLaMA-2-13B", "top"]
    # the LLaMA-2 bottom cluster is layers 0-1: layer 0 is the largest layer of 7B and 13B
    for model in llama:
        d = layer_counts(published[model])["all"]
        assert d.iloc[:2].sum() / d.sum() > 0.18
    assert layer_counts(published["LLaMA-2-7B"])["all"].iloc[:2].tolist() == [
        768,
        125,
    ]


# --------------------------------------------------------------------------- entropy

# CASE2 of tests/test_lape.py with real codes: language a -> "zh", b -> "en".
# L=2, D=3, n = [10, 20]; P per neuron (zh, en):
#   (0,0) [.5, 0]  H 0 ; (0,1) [.2,.2] H log 2 ; (0,2) [0, 0] never active
#   (1,0) [.1,.1] H log 2 ; (1,1) [0, .8] H 0 ; (1,2) [.8,.2] H 0.500402
# tau = bar = 0.1 (rate 0.5): candidates (0,0) (0,1) (1,1) (1,2); top_rate 0.5 selects 3:
# (0,0) (1,1) (1,2); cut-off = H(1,2); (1,2) is assigned to both languages.
OZ2 = torch.tensor([[[5, 0], [2, 4], [0, 0]], [[1, 2], [0, 16], [8, 4]]])
STATS2 = ActivationStats(languages=["zh", "en"], n=torch.tensor([10, 20]), over_zero=OZ2)
CFG2 = LapeConfig(top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.5)
H12 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))


def test_entropy_table_known_answer():
    t = entropy_table(STATS2, CFG2)
    assert t.tau == pytest.approx(0.1) and t.bar == pytest.approx(0.1)
    assert t.n_candidates == 4 and t.n_selected == 3
    assert t.cutoff == pytest.approx(H12, rel=1e-6)
    assert t.max_entropy == pytest.approx(math.log(2))
    assert t.languages == ["en", "zh"]
    f = t.frame.set_index(["layer", "neuron"])
    assert len(f) == 6
    assert f["passes_filter"].tolist() == [True, True, False, False, True, True]
    assert f["selected"].tolist() == [True, False, False, False, True, True]
    assert f["n_languages"].tolist() == [1, 0, 0, 0, 1, 2]
    assert f["entropy"].tolist() == pytest.approx(
        [0, math.log(2), 0, math.log(2), 0, H12], rel=1e-6
    )
    assert f["max_prob"].tolist() == pytest.approx([0.5, 0.2, 0, 0.1, 0.8, 0.8])
    assert f.loc[(1, 1), "top_language"] == "en"
    assert f.loc[(1, 2), ["prob_en", "prob_zh"]].tolist() == pytest.approx([0.2, 0.8])
    assert sorted(t.probabilities().round(6).tolist()) == sorted(
        [0.5, 0, 0.2, 0.2, 0, 0, 0.1, 0.1, 0, 0.8, 0.8, 0.2]
    )
    assert len(t.passing()) == 4
    assert t.config == CFG2


def test_entropy_table_agrees_with_identify_on_random_counts():
    g = torch.Generator().manual_seed(3)
    n = torch.tensor([500, 400, 300])
    oz = torch.randint(0, 300, (3, 40, 3), generator=g)
    stats = ActivationStats(languages=["fr", "es", "en"], n=n, over_zero=oz)
    cfg = LapeConfig(top_rate=0.05, filter_rate=0.8, activation_bar_ratio=0.9)
    t = entropy_table(stats, cfg)
    sel = identify(oz, n, stats.languages, cfg)
    picked = t.frame.loc[t.frame["selected"], ["layer", "neuron"]].to_numpy().tolist()
    assert picked == sel.selected.tolist()
    passing = t.passing()
    # every selected neuron is at or below the cut-off, every other passing one at or above
    assert (passing.loc[passing["selected"], "entropy"] <= t.cutoff).all()
    assert (passing.loc[~passing["selected"], "entropy"] >= t.cutoff - 1e-7).all()
    assert t.tau == sel.provenance["identification"]["filter_threshold"]


def test_probability_profiles_order_and_columns():
    sel = identify(OZ2, torch.tensor([10, 20]), ["zh", "en"], CFG2)  # en: (1,1) (1,2)
    prof = probability_profiles(STATS2, sel, "en")
    assert list(prof.columns) == ["en", "zh"]
    assert prof.index.names == ["layer", "neuron"]
    # (1,1) H 0 first, then (1,2) H 0.50
    assert prof.index.tolist() == [(1, 1), (1, 2)]
    assert prof.loc[(1, 2)].tolist() == pytest.approx([0.2, 0.8])
    assert len(probability_profiles(STATS2, sel, "zh", k=1)) == 1
    with pytest.raises(KeyError, match="ko"):
        probability_profiles(STATS2, sel, "ko")
    wrong = ActivationStats(["zh", "en"], torch.tensor([1, 1]), torch.zeros(3, 3, 2))
    with pytest.raises(ValueError, match="layers, neurons"):
        probability_profiles(wrong, sel, "en")


# --------------------------------------------------------------------------- stability


def test_stability_table_and_frequencies():
    g = torch.Generator().manual_seed(5)
    n = torch.tensor([1000, 1000, 1000])
    oz = torch.randint(0, 1000, (2, 50, 3), generator=g)
    langs = ["ja", "en", "zh"]
    cfg = LapeConfig(top_rate=0.1, filter_rate=0.5, activation_bar_ratio=0.5)
    ref = identify(oz, n, langs, cfg)
    boot = torch.stack([oz, oz, oz.flip(1)])  # 2 identical replicates + 1 different one
    res = stability(boot, n.expand(3, -1), langs, cfg, ref)
    table = stability_table(res)
    assert list(table.index) == ["en", "zh", "ja", "all"]
    for lang in ["en", "zh", "ja"]:
        count = int(ref.mask(lang).sum())
        assert table.loc[lang, "count_reference"] == count
        # frequency >= 2/3 for the reference neurons, so all are stable at 0.6
        assert stability_table(res, stable_at=0.6).loc[lang, "n_stable"] == count
        assert table.loc[lang, "n_ever"] >= count
    assert pd.isna(table.loc["all", "n_stable"])
    freq = selection_frequencies(res)
    assert list(freq.columns) == ["language", "layer", "neuron", "frequency"]
    assert freq["language"].unique().tolist() == ["en", "zh", "ja"]
    assert set(np.round(freq["frequency"], 6)) <= {round(1 / 3, 6), round(2 / 3, 6), 1.0}
    assert len(freq[freq["language"] == "en"]) == table.loc["en", "n_ever"]
