"""Figures of a selection and its statistics.

Where the neurons sit, how many each language got, how the languages overlap, how the
thresholds cut, and how stable the selection is over replicates and token budgets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from lape_utils import analysis
from lape_utils.lape import StabilityResult
from lape_utils.selection import NeuronSelection

from ._common import (
    _ALL,
    SEQUENTIAL_CMAP,
    _axes,
    _axes_array,
    _bars,
    _counts,
    _heatmap,
    _lines,
    _log_x,
    _long,
    _norm,
    _ordered,
    _require,
    _title,
    language_color,
)

__all__ = [
    "plot_convergence",
    "plot_entropy_distribution",
    "plot_language_counts",
    "plot_layer_distribution",
    "plot_layer_distribution_grid",
    "plot_overlap",
    "plot_probability_profiles",
    "plot_stability",
]


# ============================================================================ layers


def plot_layer_distribution(
    data: NeuronSelection | pd.DataFrame,
    ax: Axes | None = None,
    *,
    kind: Literal["heatmap", "lines", "share"] = "heatmap",
    config: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    annot: bool | None = None,
    colorbar: bool = True,
    title: str | None = None,
) -> Axes:
    """Where each language's neurons sit: neurons per layer and language.

    Args:
        data: A selection, or :func:`lape_utils.analysis.layer_distribution` counts.
        ax: Axes to draw on (a new figure if ``None``).
        kind: ``"heatmap"`` (layer 0 at the bottom), ``"lines"`` (one per language) or
            ``"share"`` (lines in % of the layer; needs a selection or ``attrs["n_neurons"]``).
        config: Config for the title (see the module docstring).
        vmin: Lower colour limit of the heatmap (default 0).
        vmax: Upper colour limit of the heatmap (default the largest count).
        annot: Write the counts in the cells (default: when there are at most 200 cells).
        colorbar: Add a colour bar to the heatmap.
        title: Replace the default title.

    Returns:
        The Axes.

    Raises:
        ValueError: ``kind`` is unknown, or ``"share"`` without the layer width.
    """
    counts = _counts(data)
    if kind == "heatmap":
        ax = _heatmap(
            ax, counts, _norm(counts.to_numpy(), vmin, vmax), SEQUENTIAL_CMAP, "neurons",
            row_height=0.17, annot=counts.size <= 200 if annot is None else annot,
            fmt=".0f" if pd.api.types.is_integer_dtype(counts.to_numpy()) else ".2g",
            cbar=colorbar, yticklabels=math.ceil(len(counts) / 20) or 1,
        )
        ax.invert_yaxis()  # layer 0 at the bottom
        ax.set(xlabel="language", ylabel="layer")
    elif kind in ("lines", "share"):
        ylabel = "neurons"
        if kind == "share":
            width = getattr(data, "n_neurons", None) or data.attrs.get("n_neurons")
            if not width:
                raise ValueError(
                    "kind='share' needs the layer width n_neurons: pass a selection, or a "
                    "table with attrs['n_neurons'] (lape_utils.analysis.layer_counts)."
                )
            counts, ylabel = counts * (100.0 / width), "% of the layer's neurons"
        ax = _axes(ax, (7.0, 3.5))
        _lines(ax, _long(counts, "layer", "language", "n"), "layer", "n", lw=1.6)
        ax.set(xlabel="layer", ylabel=ylabel, ylim=(0, None))
        ax.legend(title="language", fontsize="small", ncols=2 if counts.shape[1] > 5 else 1)
    else:
        raise ValueError(f"kind must be 'heatmap', 'lines' or 'share', got {kind!r}.")
    _title(ax, "Language-specific neurons per layer", data if config is None else config, title)
    return ax


def plot_layer_distribution_grid(
    selections: Mapping[str, NeuronSelection],
    *,
    ncols: int = 4,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> np.ndarray:
    """Neurons per layer of several selections (``kind="lines"``), one panel each, titled.

    Args:
        selections: ``{name: selection}``, e.g. :func:`lape_utils.published.published_sets`.
        ncols: Panels per row.
        axes: One Axes per selection; a new figure if ``None`` (its spare panels hidden).

    Returns:
        Flat array of the Axes, one per selection; only the first keeps its legend.
    """
    if not selections:
        raise ValueError("no selections to draw.")
    ncols = max(1, min(ncols, len(selections)))
    nrows = math.ceil(len(selections) / ncols)
    axes = _axes_array(axes, len(selections), (4.2 * ncols, 3.2 * nrows), ncols)
    for i, (ax, (name, sel)) in enumerate(zip(axes, selections.items())):
        plot_layer_distribution(sel, ax=ax, kind="lines", title=name)
        if i > 0:
            ax.get_legend().remove()
    return axes


def plot_language_counts(
    data: NeuronSelection | pd.DataFrame | pd.Series,
    ax: Axes | None = None,
    *,
    percent: bool = False,
    config: Any = None,
    annotate: bool = True,
    title: str | None = None,
) -> Axes:
    """One bar per language: how many neurons each language got.

    Args:
        data: A selection, per-layer counts (summed), or a Series indexed by language.
        ax: Axes to draw on.
        percent: Show percent of all FFN neurons (``L·D``; needs a selection), not counts.
        config: Config for the title.
        annotate: Write the value above each bar.
        title: Replace the default title.

    Returns:
        The Axes (one bar patch per language, in the module order).

    Raises:
        ValueError: ``percent`` for a table.
    """
    counts = _ordered(data, "index") if isinstance(data, pd.Series) else _counts(data).sum(axis=0)
    values, ylabel, fmt = counts.to_numpy(dtype=float), "neurons", "{:,.0f}"
    if percent:
        if not isinstance(data, NeuronSelection):
            raise ValueError("percent=True needs a selection, to know n_total = L·D neurons.")
        n_total = data.n_layers * data.n_neurons
        values, ylabel, fmt = values * 100.0 / n_total, "% of all FFN neurons", "{:.3f}"
    ax = _bars(ax, counts.index, values)
    if annotate:
        for bars in ax.containers:
            ax.bar_label(bars, fmt=fmt, fontsize="small", padding=2)
        ax.margins(y=0.12)
    ax.set_ylabel(ylabel)
    _title(ax, "Language-specific neurons per language", data if config is None else config,
           title)
    return ax


def plot_overlap(
    data: NeuronSelection | pd.DataFrame,
    ax: Axes | None = None,
    *,
    metric: Literal["count", "jaccard"] = "count",
    config: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    annot: bool = True,
    colour_diagonal: bool = False,
    colorbar: bool = True,
    title: str | None = None,
) -> Axes:
    """Neurons shared between languages, as a language × language heatmap.

    Args:
        data: A selection, or a square table such as :func:`lape_utils.analysis.overlap`'s.
        ax: Axes to draw on.
        metric: ``"count"`` (``|A ∩ B|``) or ``"jaccard"`` (``|A ∩ B| / |A ∪ B|``).
        config: Config for the title.
        vmin: Lower colour limit (default 0).
        vmax: Upper colour limit (default the largest coloured value).
        annot: Write the values in the cells.
        colour_diagonal: Colour the diagonal too (by default only written: it would dominate).
        colorbar: Add a colour bar.
        title: Replace the default title.

    Returns:
        The Axes; rows top to bottom and columns left to right in the module order.
    """
    if metric not in ("count", "jaccard"):
        raise ValueError(f"metric must be 'count' or 'jaccard', got {metric!r}.")
    jaccard = metric == "jaccard"
    own = isinstance(data, NeuronSelection)
    table = analysis.overlap(data)[int(jaccard)] if own else _ordered(data, "index", "columns")
    values = table.to_numpy(dtype=float)
    mask = None if colour_diagonal else table.index.to_numpy()[:, None] == table.columns.to_numpy()
    ax = _heatmap(
        ax, table, _norm(values if mask is None else values[~mask], vmin, vmax),
        SEQUENTIAL_CMAP, "Jaccard" if jaccard else "shared neurons", mask, row_height=0.55,
        annot=annot, fmt=".2f" if jaccard else ".0f", cbar=colorbar,
    )
    ax.set_facecolor("#e6e6e6")  # the uncoloured diagonal
    ax.set(xlabel="language", ylabel="language")
    base = "Overlap (Jaccard)" if jaccard else "Shared neurons"
    _title(ax, base, data if config is None else config, title)
    return ax


# ============================================================================ thresholds


def plot_entropy_distribution(
    table: analysis.EntropyTable,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    which: Literal["entropy", "probability", "both"] = "entropy",
    bins: int = 60,
) -> Axes | np.ndarray:
    """Show how the thresholds cut: histograms (log counts) with the thresholds marked.

    The entropy panel shows the neurons passing the filter and the selected ones, with the
    cut-off and ``log K``; the probability panel all ``P`` values, with ``tau`` and ``bar``.

    Args:
        table: From :func:`lape_utils.analysis.entropy_table`.
        ax: One Axes, or two for ``"both"``.
        which: Which panel(s).
        bins: Histogram bins.

    Returns:
        The Axes, or an array of two Axes ``[entropy, probability]`` for ``"both"``.
    """
    if which == "both":
        axes = _axes_array(ax, 2, (11.0, 3.8))
        for a, w in zip(axes, ("entropy", "probability")):
            plot_entropy_distribution(table, a, which=w, bins=bins)
        return axes
    if which not in ("entropy", "probability"):
        raise ValueError(f"which must be 'entropy', 'probability' or 'both', got {which!r}.")
    cfg = table.config
    if which == "entropy":
        passing = table.passing()
        h = passing["entropy"].to_numpy()
        bins = np.linspace(0.0, max(table.max_entropy, h.max(initial=0.0)), bins + 1)
        hists = [(h, "#bbbbbb", "passing the filter"),
                 (h[passing["selected"].to_numpy()], "#d62728", "selected")]
        marks = [(table.cutoff, "black", "--", f"selection cut-off H = {table.cutoff:.3g}"),
                 (table.max_entropy, "grey", ":", f"log K = {table.max_entropy:.3g}")]
        labels = ("LAPE entropy H (nats)", "neurons",
                  f"Entropy of the {table.n_candidates:,} neurons passing the filter")
    else:
        hists = [(table.probabilities(), "#7f7f7f", "all P values")]
        marks = [(table.tau, "#1f77b4", "--",
                  f"filter tau = {table.tau:.3g} (q{cfg.filter_rate:g})"),
                 (table.bar, "#d62728", ":",
                  f"bar = {table.bar:.3g} (q{cfg.activation_bar_ratio:g})")]
        labels = ("activation probability P (pooled over layers, neurons, languages)",
                  "values", "Activation probability and thresholds")
    ax = _axes(ax, (6.0, 3.8))
    for values, colour, label in hists:
        sns.histplot(x=values, bins=bins, color=colour, alpha=1, ax=ax,
                     label=f"{label} ({len(values):,})")
    for x, colour, ls, label in marks:
        if math.isfinite(x):
            ax.axvline(x, color=colour, ls=ls, lw=1.4, label=label)
    ax.set(xlabel=labels[0], ylabel=labels[1], yscale="log")
    ax.legend(fontsize="small")
    _title(ax, labels[2], cfg)
    return ax


def plot_probability_profiles(
    profiles: pd.DataFrame,
    ax: Axes | None = None,
    *,
    kind: Literal["heatmap", "lines"] = "heatmap",
    language: str | None = None,
    bar: float | None = None,
    config: Any = None,
    vmin: float | None = 0.0,
    vmax: float | None = None,
) -> Axes:
    """Activation probability across languages of selected neurons.

    Args:
        profiles: :func:`lape_utils.analysis.probability_profiles`: a row per neuron (index
            ``(layer, neuron)`` or any label), a column of ``P`` per language.
        ax: Axes to draw on.
        kind: ``"heatmap"`` (rows ``L<layer>.<neuron>``) or ``"lines"`` (a line per neuron).
        language: The language whose neurons these are (title; line colour).
        bar: Mark the assignment threshold (``EntropyTable.bar``).
        config: Config for the title.
        vmin: Lower colour limit (default 0).
        vmax: Upper colour limit (default the largest P).

    Returns:
        The Axes.
    """
    df = _ordered(profiles, "columns")
    if isinstance(df.index, pd.MultiIndex) and df.index.nlevels == 2:
        df.index = [f"L{a}.{b}" for a, b in df.index]
    label = "activation probability P"
    if kind == "heatmap":
        ax = _heatmap(
            ax, df, _norm(df.to_numpy(dtype=float), vmin, vmax), SEQUENTIAL_CMAP, label,
            row_height=0.22, annot=df.size <= 150, fmt=".2f",
            yticklabels=math.ceil(len(df) / 40) or 1,
        )
        if bar is not None:
            ax.collections[0].colorbar.ax.axhline(bar, color="cyan", lw=2)
        ax.set(xlabel="language", ylabel="neuron (layer.index)")
    elif kind == "lines":
        ax = _axes(ax, (1.5 + 0.7 * max(df.shape[1], 3), 3.8))
        long = _long(df, "neuron", "language", "p")
        if len(df):  # seaborn fails on an empty table with units
            sns.lineplot(
                long, x="language", y="p", units="neuron", estimator=None, ax=ax,
                color=language_color(language) if language else "#1f77b4",
                alpha=max(0.15, min(0.9, 6.0 / len(df))), lw=1.2, marker="o", ms=3,
            )
        if bar is not None:
            ax.axhline(bar, color="black", ls=":", lw=1.2, label=f"bar = {bar:.3g}")
            ax.legend(fontsize="small")
        ax.set(ylabel=label, ylim=(0, None))
    else:
        raise ValueError(f"kind must be 'heatmap' or 'lines', got {kind!r}.")
    of = f"{language} " if language else ""
    _title(ax, f"Activation probability of {len(df)} {of}neurons", config)
    return ax


# ============================================================================ stability


def plot_stability(
    result: StabilityResult | pd.DataFrame,
    ax: Axes | None = None,
    *,
    kind: Literal["frequency", "jaccard"] = "frequency",
    n_replicates: int | None = None,
    config: Any = None,
) -> Axes:
    """How stable the selection is over bootstrap replicates.

    Args:
        result: A :class:`~lape_utils.lape.StabilityResult`, or its table:
            :func:`~lape_utils.analysis.stability_table` (``mean_jaccard``, optional
            ``std_jaccard``) or :func:`~lape_utils.analysis.selection_frequencies`
            (``language``, ``frequency``).
        ax: Axes to draw on.
        kind: ``"frequency"`` (per language, neurons per selection frequency; stable piles
            up at 1) or ``"jaccard"`` (bars of the mean Jaccard with the reference, ± std).
        n_replicates: Replicates of a frequency table (default ``1 / smallest frequency``).
        config: Config for the title.

    Returns:
        The Axes.
    """
    own = isinstance(result, StabilityResult)
    if kind == "jaccard":
        table = analysis.stability_table(result) if own else result
        _require(table, ["mean_jaccard"], "a stability table")
        table = _ordered(table, "index")
        mean = table["mean_jaccard"].to_numpy(dtype=float)
        ax = _bars(ax, table.index, mean)
        if "std_jaccard" in table:
            err = np.nan_to_num(table["std_jaccard"].to_numpy(dtype=float))
            ax.errorbar(np.arange(len(table)), mean, yerr=err, fmt="none", ecolor="black",
                        capsize=3, lw=1)
        ax.set(ylim=(0, 1.05), ylabel="mean Jaccard with the reference set")
        over = f" over {result.n_replicates} replicates" if own else ""
        _title(ax, f"Stability of the selection{over}", config)
        return ax
    if kind != "frequency":
        raise ValueError(f"kind must be 'frequency' or 'jaccard', got {kind!r}.")
    freq = analysis.selection_frequencies(result) if own else result
    _require(freq, ["language", "frequency"], "a frequency table")
    if own:
        n_replicates = result.n_replicates
    elif n_replicates is None:
        vals = freq["frequency"].to_numpy(dtype=float)
        n_replicates = int(round(1.0 / vals[vals > 0].min())) if (vals > 0).any() else 1
    n_rep = int(n_replicates)
    k = (freq["frequency"].to_numpy(dtype=float) * n_rep).round().astype(int)  # k/n_rep
    hist = pd.crosstab(k, freq["language"].astype(str)).reindex(range(1, n_rep + 1), fill_value=0)
    hist.index = hist.index / n_rep
    ax = _axes(ax, (6.0, 3.5))
    _lines(ax, _long(hist, "frequency", "language", "neurons"), "frequency", "neurons",
           marker="o", ms=4, lw=1.4)
    ax.set(xlim=(0, 1.02), ylim=(0, None), xlabel="selection frequency over bootstrap replicates",
           ylabel="neurons (selected at least once)")
    ax.legend(title="language", fontsize="small", ncols=2)
    _title(ax, f"Selection frequency ({n_rep} replicates)", config)
    return ax


def plot_convergence(
    table: pd.DataFrame, axes: Sequence[Axes] | np.ndarray | None = None, *,
    config: Any = None,
) -> np.ndarray:
    """How the selection changes with the token budget (from budget snapshots).

    Args:
        table: :func:`lape_utils.analysis.convergence` (columns ``tokens``, ``language``,
            ``count``, ``jaccard``).
        axes: Two Axes.
        config: Config for the titles.

    Returns:
        ``[jaccard, counts]`` against tokens per language (log): per language and ``"all"``
        the Jaccard to the full-budget selection (:data:`~lape_utils.analysis.CONVERGED_AT`
        dotted), and the neurons selected (the distinct total in the title).
    """
    axes = _axes_array(axes, 2, (12.0, 3.8))
    total = table.loc[table["language"].astype(str) == _ALL, "count"]
    size_title = "Selection size with the budget" + (
        f" (distinct, all languages: {int(total.iloc[-1]):,})" if len(total) else "")
    panels = (("jaccard", "Jaccard to the full-budget selection", 1.05,
               "Convergence of the selection with the budget", table),
              ("count", "neurons selected", None, size_title,  # "all" would flatten the others
               table[table["language"].astype(str) != _ALL]))
    for ax, (y, label, top, base, data) in zip(axes, panels):
        _lines(ax, data, "tokens", y, marker="o", ms=4, lw=1.4)
        _log_x(ax, table["tokens"], "tokens per language")
        ax.set(ylabel=label, ylim=(0, top))
        ax.legend(title="language", fontsize="small", ncols=2)
        _title(ax, base, config)
    axes[0].axhline(analysis.CONVERGED_AT, color="grey", ls=":", lw=1)
    return axes
