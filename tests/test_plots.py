"""Every plot of lape_utils.plots rendered headless (Agg), checking what it shows: labels,
numbers of bars/cells/lines, language order, colours and colour limits, titles."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lape_utils import analysis, plots  # noqa: E402
from lape_utils import published as published_mod  # noqa: E402
from lape_utils.languages import LANGUAGE_ORDER  # noqa: E402
from lape_utils.lape import LapeConfig, identify, stability  # noqa: E402
from lape_utils.selection import NeuronSelection  # noqa: E402
from lape_utils.stats import ActivationStats  # noqa: E402

CFG = LapeConfig(top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.5)


@pytest.fixture(autouse=True)
def _headless(request, monkeypatch):
    """No plot function may save or show: only save_figure writes files."""

    def refuse(*args, **kwargs):
        raise AssertionError("plot functions must not call savefig/show")

    if "save_figure" not in request.node.name:
        monkeypatch.setattr(Figure, "savefig", refuse)
    monkeypatch.setattr(plt, "show", refuse)
    yield
    plt.close("all")


def masks(n_layers, n_neurons, members):
    out = {}
    for lang, pairs in members.items():
        m = torch.zeros(n_layers, n_neurons, dtype=torch.bool)
        for layer, neuron in pairs:
            m[layer, neuron] = True
        out[lang] = m
    return out


# languages NOT in the module order; config carried like identify() does
SEL = NeuronSelection.from_masks(
    masks(
        4,
        5,
        {
            "ja": [(0, 0), (0, 1), (3, 4)],  # per layer [2, 0, 0, 1]
            "en": [(0, 1), (2, 2)],  # [1, 0, 1, 0]
            "zh": [(3, 4), (3, 0), (1, 3)],  # [0, 1, 0, 2]
        },
    ),
    config=CFG.to_dict(),
)
ORDER = ["en", "zh", "ja"]

# CASE2 of test_lape: zh/en, L=2, D=3; tau = bar = 0.1, cut-off H = 0.5004 (see test_analysis)
OZ2 = torch.tensor([[[5, 0], [2, 4], [0, 0]], [[1, 2], [0, 16], [8, 4]]])
STATS2 = ActivationStats(languages=["zh", "en"], n=torch.tensor([10, 20]), over_zero=OZ2)


def mesh(ax: Axes):
    return ax.collections[0]


def xticklabels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def yticklabels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


# --------------------------------------------------------------------------- colours


def test_language_colors_fixed_and_distinct():
    assert list(plots.LANGUAGE_COLORS) == list(LANGUAGE_ORDER)
    assert len(set(plots.LANGUAGE_COLORS.values())) == len(LANGUAGE_ORDER)
    assert plots.language_color("zh") == plots.LANGUAGE_COLORS["zh"]
    other = plots.language_color("pt")
    assert other == plots.language_color("pt")  # stable
    assert mcolors.is_color_like(other)
    assert plots.language_color("all") == "#444444"


# --------------------------------------------------------------------------- layers


def test_layer_heatmap_cells_order_labels_title_and_clim():
    ax = plots.plot_layer_distribution(SEL)
    assert isinstance(ax, Axes)
    m = mesh(ax)
    assert m.get_array().shape == (4, 3)  # layers x languages
    np.testing.assert_array_equal(
        np.asarray(m.get_array()), analysis.layer_distribution(SEL).to_numpy()
    )
    assert xticklabels(ax) == ORDER
    assert yticklabels(ax) == ["0", "1", "2", "3"]
    assert ax.get_ylim() == (0.0, 4.0)  # layer 0 at the bottom
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("language", "layer")
    assert CFG.label() in ax.get_title()  # the selection carries its config
    assert m.get_clim() == (0.0, 2.0)
    assert m.get_cmap().name == plots.SEQUENTIAL_CMAP
    # counts are written in the cells
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        str(v) for v in analysis.layer_distribution(SEL).to_numpy().ravel()
    )


def test_layer_heatmap_fixed_limits_and_given_axes():
    _, given = plt.subplots()
    ax = plots.plot_layer_distribution(SEL, given, vmin=0, vmax=10, colorbar=False)
    assert ax is given
    assert mesh(ax).get_clim() == (0.0, 10.0)
    assert len(ax.figure.axes) == 1  # no colour bar


def test_layer_distribution_dataframe_columns_reordered():
    df = pd.DataFrame({"ja": [1, 2], "ko": [0, 1], "en": [3, 0]})
    ax = plots.plot_layer_distribution(df, kind="lines")
    assert [line.get_label() for line in ax.get_lines()] == ["en", "ja", "ko"]
    assert ax.get_title() == "Language-specific neurons per layer"  # no config known


def test_layer_lines_and_share():
    ax = plots.plot_layer_distribution(SEL, kind="lines")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ORDER
    assert [line.get_color() for line in lines] == [plots.LANGUAGE_COLORS[x] for x in ORDER]
    assert lines[2].get_ydata().tolist() == [2, 0, 0, 1]  # ja
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "neurons"
    ax = plots.plot_layer_distribution(SEL, kind="share")
    assert ax.get_lines()[2].get_ydata().tolist() == pytest.approx([40.0, 0, 0, 20.0])  # % of 5
    assert ax.get_ylabel() == "% of the layer's neurons"
    with pytest.raises(ValueError, match="n_neurons"):
        plots.plot_layer_distribution(analysis.layer_distribution(SEL), kind="share")
    with pytest.raises(ValueError, match="kind"):
        plots.plot_layer_distribution(SEL, kind="pie")


def test_layer_distribution_grid():
    other = NeuronSelection.from_masks(masks(6, 3, {"fr": [(5, 0)], "en": [(0, 1)]}))
    axes = plots.plot_layer_distribution_grid({"A": SEL, "B": other}, ncols=4)
    assert isinstance(axes, np.ndarray) and len(axes) == 2
    assert [a.get_title() for a in axes] == ["A", "B"]
    assert len(axes[1].get_lines()) == 2
    assert axes[0].get_legend() is not None and axes[1].get_legend() is None


def test_language_counts_bars():
    ax = plots.plot_language_counts(SEL)
    bars = ax.patches
    assert len(bars) == 3
    assert [b.get_height() for b in bars] == [2, 3, 3]
    assert xticklabels(ax) == ORDER
    assert [mcolors.to_hex(b.get_facecolor()) for b in bars] == [
        plots.LANGUAGE_COLORS[x] for x in ORDER
    ]
    assert ax.get_ylabel() == "neurons"
    assert CFG.label() in ax.get_title()
    ax = plots.plot_language_counts(SEL, percent=True)
    assert [b.get_height() for b in ax.patches] == pytest.approx([10.0, 15.0, 15.0])  # of 20
    assert ax.get_ylabel() == "% of all FFN neurons"
    s = pd.Series({"ru": 4, "de": 2})
    ax = plots.plot_language_counts(s)
    assert xticklabels(ax) == ["de", "ru"]
    with pytest.raises(ValueError, match="n_total"):
        plots.plot_language_counts(s, percent=True)


def test_overlap_counts_diagonal_uncoloured_and_jaccard():
    ax = plots.plot_overlap(SEL)
    m = mesh(ax)
    arr = m.get_array()
    assert arr.shape == (3, 3)
    assert np.ma.getmaskarray(arr).tolist() == np.eye(3, dtype=bool).tolist()
    assert arr.filled(-1).tolist() == [[-1, 0, 1], [0, -1, 1], [1, 1, -1]]
    assert m.get_clim() == (0.0, 1.0)  # scale of the off-diagonal values
    assert xticklabels(ax) == ORDER and yticklabels(ax) == ORDER
    assert ax.get_ylim() == (3.0, 0.0)  # first language on top
    assert "2" in [t.get_text() for t in ax.texts]  # the diagonal is still written
    ax = plots.plot_overlap(SEL, metric="jaccard", vmin=0, vmax=1, colour_diagonal=True)
    m = mesh(ax)
    assert m.get_clim() == (0.0, 1.0)
    assert np.asarray(m.get_array())[0, 2] == pytest.approx(0.25)
    assert "Jaccard" in ax.get_title() and CFG.label() in ax.get_title()
    counts, jac = analysis.overlap(SEL)
    ax = plots.plot_overlap(jac.loc[["ja", "en", "zh"], ["zh", "ja", "en"]], metric="jaccard")
    assert xticklabels(ax) == ORDER and yticklabels(ax) == ORDER


# --------------------------------------------------------------------------- thresholds


def test_entropy_distribution_marks_thresholds():
    table = analysis.entropy_table(STATS2, CFG)
    ax = plots.plot_entropy_distribution(table)
    labels = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
    cut = [k for k in labels if k.startswith("selection cut-off")]
    assert len(cut) == 1 and labels[cut[0]] == pytest.approx(table.cutoff)
    logk = [k for k in labels if k.startswith("log K")]
    assert labels[logk[0]] == pytest.approx(math.log(2))
    # histograms (60 bins each) of the 4 neurons passing the filter and the 3 selected
    assert [len(c) for c in ax.containers] == [60, 60]
    assert sum(p.get_height() for p in ax.containers[0]) == 4
    assert sum(p.get_height() for p in ax.containers[1]) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"passing the filter (4)", "selected (3)"} <= set(legend)
    assert ax.get_xlabel() == "LAPE entropy H (nats)"
    assert CFG.label() in ax.get_title()
    axes = plots.plot_entropy_distribution(table, which="both", bins=10)
    assert isinstance(axes, np.ndarray) and len(axes) == 2
    marks = {line.get_label().split(" = ")[0]: line.get_xdata()[0] for line in axes[1].get_lines()}
    assert marks["filter tau"] == pytest.approx(0.1) and marks["bar"] == pytest.approx(0.1)
    assert sum(p.get_height() for p in axes[1].containers[0]) == 12  # all L*D*K values
    assert axes[1].get_yscale() == "log"
    with pytest.raises(ValueError, match="which"):
        plots.plot_entropy_distribution(table, which="tau")


def test_probability_profiles_heatmap_and_lines():
    sel = identify(OZ2, torch.tensor([10, 20]), ["zh", "en"], CFG)
    prof = analysis.probability_profiles(STATS2, sel, "en")
    ax = plots.plot_probability_profiles(prof, language="en", bar=0.1, config=CFG)
    m = mesh(ax)
    assert m.get_array().shape == (2, 2)
    assert xticklabels(ax) == ["en", "zh"]
    assert yticklabels(ax) == ["L1.1", "L1.2"]
    assert m.get_clim() == pytest.approx((0.0, 0.8))
    assert "2 en neurons" in ax.get_title() and CFG.label() in ax.get_title()
    ax = plots.plot_probability_profiles(prof, kind="lines", language="en", bar=0.1, vmax=1)
    lines = ax.get_lines()
    assert len(lines) == 3  # 2 neurons + the bar
    assert lines[-1].get_ydata()[0] == pytest.approx(0.1)
    assert mcolors.to_hex(lines[0].get_color()) == plots.LANGUAGE_COLORS["en"]
    assert xticklabels(ax) == ["en", "zh"]
    ax = plots.plot_probability_profiles(prof, vmin=0, vmax=1)
    assert mesh(ax).get_clim() == (0.0, 1.0)


# --------------------------------------------------------------------------- stability


@pytest.fixture(scope="module")
def stab():
    g = torch.Generator().manual_seed(5)
    n = torch.tensor([1000, 1000, 1000])
    oz = torch.randint(0, 1000, (2, 50, 3), generator=g)
    langs = ["ja", "en", "zh"]
    cfg = LapeConfig(top_rate=0.1, filter_rate=0.5, activation_bar_ratio=0.5)
    ref = identify(oz, n, langs, cfg)
    boot = torch.stack([oz, oz, oz.flip(1), oz])
    return stability(boot, n.expand(4, -1), langs, cfg, ref), cfg


def test_stability_frequency_lines(stab):
    res, cfg = stab
    ax = plots.plot_stability(res, config=cfg)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ORDER
    assert lines[0].get_xdata().tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    freq = analysis.selection_frequencies(res)
    for line, lang in zip(lines, ORDER):
        assert sum(line.get_ydata()) == (freq["language"] == lang).sum()
    assert "4 replicates" in ax.get_title() and cfg.label() in ax.get_title()
    ax = plots.plot_stability(freq)
    assert len(ax.get_lines()) == 3
    assert ax.get_lines()[0].get_xdata().tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    ax = plots.plot_stability(freq[freq["frequency"] > 0.5], n_replicates=4)
    assert ax.get_lines()[0].get_xdata().tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_stability_jaccard_bars(stab):
    res, _ = stab
    ax = plots.plot_stability(res, kind="jaccard")
    bars = ax.patches
    assert xticklabels(ax) == [*ORDER, "all"]
    expected = analysis.stability_table(res)["mean_jaccard"].tolist()
    assert [b.get_height() for b in bars] == pytest.approx(expected)
    assert ax.get_ylim() == (0.0, 1.05)
    assert mcolors.to_hex(bars[-1].get_facecolor()) == "#444444"
    ax = plots.plot_stability(analysis.stability_table(res), kind="jaccard")
    assert len(ax.patches) == 4


# --------------------------------------------------------------------------- published


def test_published_comparison_hand_sets():
    other = NeuronSelection.from_masks(masks(10, 3, {"en": [(9, 0), (9, 1)], "fr": [(0, 0)]}))
    axes = published_mod.plot_published_comparison({"toy": other}, SEL, ours_name="mine")
    assert len(axes) == 2
    depth, regions = axes
    lines = depth.get_lines()
    assert [line.get_label() for line in lines] == ["mine", "toy"]
    assert lines[0].get_color() == "black"
    assert lines[1].get_xdata().tolist() == pytest.approx(np.linspace(0, 1, 10))
    assert lines[1].get_ydata()[-1] == pytest.approx(2 / 3 * 10)  # density = fraction x L
    assert depth.get_xlim() == (0.0, 1.0)
    assert yticklabels(regions) == ["mine", "toy"]
    # three stacked containers bottom / middle / top, one bar per model
    widths = [[b.get_width() for b in c] for c in regions.containers]
    table = published_mod.compare_with_published(SEL, {"toy": other}, ours_name="mine")
    for region, w in zip(analysis.REGIONS, widths):
        assert w == pytest.approx(table[region].tolist())
    assert CFG.label() in depth.get_title()
    ax = published_mod.plot_published_comparison({"toy": other}, kind="regions")
    assert yticklabels(ax) == ["toy"]


def test_published_comparison_on_the_shipped_counts():
    published = published_mod.published_counts()
    ax = published_mod.plot_published_comparison(published, kind="regions")
    assert yticklabels(ax) == list(published)
    tops = [b.get_width() for b in ax.containers[2]]
    assert tops == pytest.approx([0.422, 0.342, 0.470, 0.984, 0.755, 0.728, 0.857], abs=1e-3)
    ax = published_mod.plot_published_comparison(published, kind="depth")
    assert len(ax.get_lines()) == 7


# --------------------------------------------------------------------------- perplexity

LANGS = ["en", "zh", "ja"]


def ppl_records() -> pd.DataFrame:
    """Tidy records shaped like PplMatrix.tidy(): none row, LAPE rows, random rows.

    ΔNLL: LAPE diagonal 0.5 (zh: 0.8), off-diagonal 0.05 (zh -> ja: 0.3); random 0.01,
    except random ja -> en: -0.02.
    """
    rows = []
    for e in LANGS:
        rows.append(dict(row="none", kind="none", deactivated="", evaluated=e, nll=2.0))
    for kind in ("lape", "random"):
        for d in LANGS:
            for e in LANGS:
                if kind == "lape":
                    delta = (0.8 if d == "zh" else 0.5) if d == e else 0.05
                    if (d, e) == ("zh", "ja"):
                        delta = 0.3
                else:
                    delta = -0.02 if (d, e) == ("ja", "en") else 0.01
                label = d if kind == "lape" else f"{d} (random)"
                rows.append(
                    dict(row=label, kind=kind, deactivated=d, evaluated=e, nll=2.0 + delta)
                )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter
    df["delta_nll"] = df["nll"] - 2.0
    df["ppl"] = np.exp(df["nll"])
    return df


def test_ppl_heatmap_diverging_centred_at_zero():
    df = ppl_records()
    ax = plots.plot_ppl_heatmap(df, config=CFG)
    m = mesh(ax)
    assert m.get_array().shape == (3, 3)  # baseline row left out
    assert m.get_clim() == pytest.approx((-0.8, 0.8))  # symmetric: centred at 0
    assert m.get_cmap().name == plots.DIVERGING_CMAP
    assert xticklabels(ax) == LANGS and yticklabels(ax) == LANGS
    arr = np.asarray(m.get_array())
    assert np.diag(arr).tolist() == pytest.approx([0.5, 0.8, 0.5])
    assert arr[1, 2] == pytest.approx(0.3)  # zh deactivated, ja evaluated
    assert ax.get_xlabel() == "evaluated language"
    assert ax.get_ylabel() == "deactivated neurons of"
    assert "LAPE" in ax.get_title() and CFG.label() in ax.get_title()
    diag_boxes = [p for p in ax.patches if not p.get_fill()]
    assert len(diag_boxes) == 3


def test_ppl_heatmap_random_kind_fixed_and_asymmetric_limits():
    df = ppl_records()
    ax = plots.plot_ppl_heatmap(df, kind="random")
    assert mesh(ax).get_clim() == pytest.approx((-0.02, 0.02))
    assert "random control" in ax.get_title()
    ax = plots.plot_ppl_heatmap(df, vmin=-1, vmax=1)
    assert mesh(ax).get_clim() == (-1.0, 1.0)
    ax = plots.plot_ppl_heatmap(df, vmin=-0.1, vmax=1)
    norm = mesh(ax).norm
    assert isinstance(norm, mcolors.TwoSlopeNorm) and norm.vcenter == 0.0
    assert mesh(ax).get_clim() == (-0.1, 1.0)
    ax = plots.plot_ppl_heatmap(df, vmax=2)  # one limit given: mirrored
    assert mesh(ax).get_clim() == (-2.0, 2.0)
    with pytest.raises(ValueError, match="vmin < 0 < vmax"):
        plots.plot_ppl_heatmap(df, vmin=0.1, vmax=1)
    with pytest.raises(ValueError, match="no rows of kind"):
        plots.plot_ppl_heatmap(df, kind="probability")


def test_ppl_heatmap_absolute_values_sequential_with_baseline():
    df = ppl_records()
    ax = plots.plot_ppl_heatmap(df, value="ppl", include_baseline=True, fmt=".1f")
    m = mesh(ax)
    assert m.get_array().shape == (4, 3)
    assert yticklabels(ax) == ["none", *LANGS]
    assert m.get_cmap().name == plots.SEQUENTIAL_CMAP
    assert np.asarray(m.get_array())[0].tolist() == pytest.approx([math.exp(2)] * 3)
    with pytest.raises(ValueError, match="not a column"):
        plots.plot_ppl_heatmap(df, value="bleu")


@pytest.mark.parametrize("style", ["table", "prefixed"])
def test_ppl_heatmap_pivoted_input(style):
    df = ppl_records()
    wide = df.pivot(index="row", columns="evaluated", values="delta_nll")
    if style == "prefixed":  # "lape:zh" / "random:zh" row labels
        wide.index = [
            r if r == "none" else (f"random:{r.split()[0]}" if "random" in r else f"lape:{r}")
            for r in wide.index
        ]
    wide = wide[["ja", "en", "zh"]]
    ax = plots.plot_ppl_heatmap(wide)
    assert xticklabels(ax) == LANGS and yticklabels(ax) == LANGS
    assert np.diag(np.asarray(mesh(ax).get_array())).tolist() == pytest.approx([0.5, 0.8, 0.5])
    ax = plots.plot_ppl_heatmap(wide, kind="random")
    assert np.asarray(mesh(ax).get_array())[2, 0] == pytest.approx(-0.02)


def test_ppl_heatmap_accepts_pplmatrix():
    evaluate = pytest.importorskip("lape_utils.evaluate")
    recs = ppl_records()[["row", "kind", "deactivated", "evaluated", "nll"]].copy()
    recs["n_neurons"] = 3
    recs["tokens"] = 100
    pm = evaluate.PplMatrix(recs)
    for table in (pm.tidy(), pm.table("delta_nll")):
        ax = plots.plot_ppl_heatmap(table)
        assert np.diag(np.asarray(mesh(ax).get_array())).tolist() == pytest.approx(
            [0.5, 0.8, 0.5]
        )
        assert mesh(ax).get_clim() == pytest.approx((-0.8, 0.8))


def test_ppl_comparison_shares_one_scale():
    df = ppl_records()
    axes = plots.plot_ppl_comparison(df, config=CFG)
    assert isinstance(axes, np.ndarray) and len(axes) == 2
    clims = [mesh(a).get_clim() for a in axes]
    assert clims[0] == clims[1] == pytest.approx((-0.8, 0.8))
    assert "LAPE" in axes[0].get_title() and "random" in axes[1].get_title()
    assert len(axes[0].figure.axes) == 3  # two heatmaps + one shared colour bar
    wide = {
        k: df[df["kind"] == k].pivot(index="row", columns="evaluated", values="delta_nll")
        for k in ("lape", "random")
    }
    axes = plots.plot_ppl_comparison(wide, vmin=-1, vmax=1)
    assert [mesh(a).get_clim() for a in axes] == [(-1.0, 1.0), (-1.0, 1.0)]
    assert "random control" in axes[1].get_title()


# --------------------------------------------------------------------------- steering


def sweep() -> pd.DataFrame:
    """Shaped like steer.strength_sweep(): one row per (strength, neuron set)."""
    rows = []
    for s in (0.5, 1.0, 2.0, 4.0):
        for k in ("random", "lape", "matched"):
            rate = min(1.0, s / 4) if k == "lape" else 0.05
            rows.append(dict(target="fr", source="en", strength=s, neurons=k, target_rate=rate,
                             target_rate_lo=max(0.0, rate - 0.1), target_rate_hi=rate + 0.1,
                             output_ppl=4 + 10 * s if k == "lape" else 4.5,
                             output_ppl_unsteered=4.0))
    return pd.DataFrame(rows)


def test_steering_sweep_rate_and_cost_per_set():
    axes = plots.plot_steering_sweep(sweep(), config=CFG)
    assert isinstance(axes, np.ndarray) and len(axes) == 2
    rate, cost = axes
    lines = rate.get_lines()
    assert [line.get_label() for line in lines] == ["lape", "random", "matched"]
    colors = [mcolors.to_hex(line.get_color()) for line in lines]
    assert len(set(colors)) == 3 and colors[0] == plots.SET_COLORS["lape"]
    assert lines[0].get_xdata().tolist() == [0.5, 1.0, 2.0, 4.0]
    assert lines[0].get_ydata().tolist() == [0.125, 0.25, 0.5, 1.0]
    assert rate.get_ylim() == pytest.approx((0, 1.02))
    assert len(rate.collections) == 3  # one Wilson band per set
    assert "French" in rate.get_ylabel() and "en → fr" in rate.get_title()
    assert CFG.label() in rate.get_title()
    ppl = {line.get_label(): line for line in cost.get_lines()}
    assert ppl["lape"].get_ydata().tolist() == [9.0, 14.0, 24.0, 44.0]
    assert cost.get_ylim()[0] == 0  # from zero: the ratios are compared by eye
    assert "unsteered (4)" in ppl and "cost" in cost.get_title()


def test_steering_sweep_averages_and_needs_its_columns():
    df = pd.DataFrame({"strength": [1, 1, 2, 2], "target_rate": [0.2, 0.4, 0.6, 1.0],
                       "output_ppl": [1, 3, 5, 7]})
    rate, cost = plots.plot_steering_sweep(df)
    assert rate.get_lines()[0].get_ydata().tolist() == pytest.approx([0.3, 0.8])
    assert cost.get_lines()[0].get_ydata().tolist() == pytest.approx([2, 6])
    with pytest.raises(ValueError, match="output_ppl"):
        plots.plot_steering_sweep(df.drop(columns="output_ppl"))


# --------------------------------------------------------------------------- contexts


def test_top_contexts_html_shades_every_token():
    rows = []
    for lang in ("ja", "en"):
        for i in range(4):
            rows.append(dict(language=lang, activation=float(i), tokens=["日本", " a", "<b>"],
                             activations=[float(i), -1.0, 0.5], center=0))
    df = pd.DataFrame(rows)
    df.attrs.update(layer=3, neuron=17)
    view = plots.top_contexts_html(df, language="ja", n_per_language=3)
    html = view._repr_html_()
    assert "neuron L3.17 (Japanese neuron)" in html
    assert html.count('class="lape-token"') == 2 * 3 * 3  # 2 languages x 3 contexts x 3
    assert html.index("<code>en</code>") < html.index("<code>ja</code>")  # module order
    assert "日本" in html and "&lt;b&gt;" in html  # any script, escaped
    assert "rgba(" in html and "1.00)" in html  # the largest activation fully shaded
    assert "0.00)" in html  # negative activations unshaded
    assert plots.top_contexts_html(df.iloc[:0]).data.count("no contexts") == 1
    with pytest.raises(ValueError, match="activations"):
        plots.top_contexts_html(df.drop(columns="activations"))


# --------------------------------------------------------------------------- common


def test_every_plot_uses_the_given_axes():
    table = analysis.entropy_table(STATS2, CFG)
    sel = identify(OZ2, torch.tensor([10, 20]), ["zh", "en"], CFG)
    calls = [
        lambda ax: plots.plot_layer_distribution(SEL, ax),
        lambda ax: plots.plot_layer_distribution(SEL, ax, kind="lines"),
        lambda ax: plots.plot_language_counts(SEL, ax),
        lambda ax: plots.plot_overlap(SEL, ax),
        lambda ax: plots.plot_entropy_distribution(table, ax),
        lambda ax: plots.plot_probability_profiles(
            analysis.probability_profiles(STATS2, sel, "en"), ax
        ),
        lambda ax: published_mod.plot_published_comparison({"x": SEL}, None, ax, kind="depth"),
        lambda ax: plots.plot_ppl_heatmap(ppl_records(), ax),
    ]
    for call in calls:
        fig, ax = plt.subplots()
        assert call(ax) is ax
        plt.close(fig)


def test_save_figure(tmp_path):
    ax = plots.plot_language_counts(SEL)
    out = plots.save_figure(ax, tmp_path / "sub" / "counts.png")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = plots.plot_ppl_comparison(ppl_records())
    assert plots.save_figure(axes, tmp_path / "ppl.svg").read_text().lstrip().startswith("<?xml")
    fig = ax.figure
    plots.save_figure(fig, tmp_path / "counts.png", close=True)
    assert not plt.fignum_exists(fig.number)
    _, a1 = plt.subplots()
    _, a2 = plt.subplots()
    with pytest.raises(ValueError, match="different figures"):
        plots.save_figure([a1, a2], tmp_path / "x.png")
    with pytest.raises(TypeError, match="Axes"):
        plots.save_figure("figure", tmp_path / "x.png")


def test_ppl_comparison_draws_every_control_and_marks_intervals_excluding_zero():
    df = ppl_records()
    matched = df[df["kind"] == "random"].assign(
        kind="matched", row=lambda d: d["deactivated"] + " (matched)",
        delta_nll=lambda d: d["delta_nll"] * 3,
    )
    df = pd.concat([df, matched], ignore_index=True)
    # intervals: every LAPE cell excludes 0, no control cell does
    df["excludes_zero"] = df["kind"] == "lape"
    axes = plots.plot_ppl_comparison(df)
    assert len(axes) == 3
    assert "activity-matched" in axes[2].get_title()
    assert "bold: 95% interval excludes 0" in axes[0].get_title()
    assert {t.get_fontweight() for t in axes[0].texts} == {"bold"}
    assert all(t.get_fontweight() != "bold" for t in axes[1].texts + axes[2].texts)
    ax = plots.plot_ppl_heatmap(df, kind="matched")
    assert np.asarray(mesh(ax).get_array())[2, 0] == pytest.approx(-0.06)


# --------------------------------------------------------------------------- evidence


def test_convergence_plot_shows_jaccard_and_sizes_per_budget():
    table = pd.DataFrame({
        "snapshot": [0, 0, "full", "full"], "fraction": [0.5, 0.5, 1.0, 1.0],
        "tokens": [500.0, 500.0, 1000.0, 1000.0], "language": ["zh", "en", "zh", "en"],
        "count": [3, 1, 4, 2], "jaccard": [0.6, 1.0, 1.0, 1.0],
    })
    jac, size = plots.plot_convergence(table, config=CFG)
    lines = {line.get_label(): line for line in jac.get_lines() if not line.get_label().startswith("_")}
    assert list(lines) == ["en", "zh"]  # the module order
    assert lines["zh"].get_xdata().tolist() == [500.0, 1000.0]
    assert lines["zh"].get_ydata().tolist() == [0.6, 1.0]
    assert mcolors.to_hex(lines["zh"].get_color()) == plots.LANGUAGE_COLORS["zh"]
    assert jac.get_xscale() == "log" and jac.get_ylim() == (0, 1.05)
    assert any(line.get_ydata()[0] == 0.9 for line in jac.get_lines())  # the verdict line
    sizes = {line.get_label(): line.get_ydata().tolist() for line in size.get_lines()}
    assert sizes["zh"] == [3, 4] and size.get_ylim()[0] == 0
    assert CFG.label() in jac.get_title()


def test_threshold_effect_plot_shows_own_and_other_languages():
    table = pd.DataFrame({
        "top_rate": [0.005, 0.01, 0.005, 0.01], "language": ["fr", "fr", "zh", "zh"],
        "n_neurons": [30, 70, 20, 60], "diag_delta": [0.5, 1.4, 0.7, 2.6],
        "diag_lo": [0.4, 1.2, 0.6, 2.4], "diag_hi": [0.6, 1.6, 0.8, 2.8],
        "offdiag_mean_delta": [0.01, 0.04, 0.2, 0.4],
    })
    effect, size = plots.plot_threshold_effect(table)
    lines = {line.get_label(): line for line in effect.get_lines()}
    assert lines["zh"].get_xdata().tolist() == [0.5, 1.0]  # percent
    assert lines["zh"].get_ydata().tolist() == [0.7, 2.6]
    assert lines["zh (others)"].get_ydata().tolist() == [0.2, 0.4]
    assert lines["zh (others)"].get_linestyle() == "--"
    assert len(effect.collections) == 2  # one interval band per language
    assert effect.get_xscale() == "log"
    sizes = {line.get_label(): line.get_ydata().tolist() for line in size.get_lines()}
    assert sizes == {"fr": [30, 70], "zh": [20, 60]} and size.get_ylim()[0] == 0
