"""Figures: where the neurons sit and overlap, how thresholds cut, how stable they are, effects.

Conventions (``shared/docs/style.md``):

* ``plot_*`` functions take ``ax=None`` (``None``: a new figure) and return the ``Axes``
  drawn on; multi-panel ones take ``axes`` and return an array of them. Only
  :func:`save_figure` writes a file; nothing calls ``show``.
* Inputs are selections or labelled DataFrames (index = layer, columns = language, or tidy).
  Languages appear in the module order (``"all"`` last), each in its :func:`language_color`.
* Plots are seaborn's; a heatmap's mesh is ``ax.collections[0]``. Counts use
  :data:`SEQUENTIAL_CMAP`, differences (ΔNLL) :data:`DIVERGING_CMAP` centred at 0; fixed
  ``vmin``/``vmax`` are honoured, so that a widget redraw keeps its scale.
* ``config`` (a LapeConfig, a dict of its fields or a selection; by default the selection
  drawn) adds its label as the title's second line; ``title`` replaces the whole title.
"""

from __future__ import annotations

import html
import logging
import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import HTML
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from lape_utils import analysis
from lape_utils.languages import LANGUAGE_ORDER, language_name, sort_languages
from lape_utils.lape import LapeConfig, StabilityResult
from lape_utils.selection import NeuronSelection

logger = logging.getLogger(__name__)

__all__ = [
    "DIVERGING_CMAP",
    "LANGUAGE_COLORS",
    "SEQUENTIAL_CMAP",
    "SET_COLORS",
    "language_color",
    "plot_convergence",
    "plot_entropy_distribution",
    "plot_language_counts",
    "plot_layer_distribution",
    "plot_layer_distribution_grid",
    "plot_overlap",
    "plot_ppl_comparison",
    "plot_ppl_heatmap",
    "plot_probability_profiles",
    "plot_stability",
    "plot_steering_sweep",
    "plot_threshold_effect",
    "save_figure",
    "top_contexts_html",
]

#: Sequential colormap for counts, shares and probabilities (light = 0).
SEQUENTIAL_CMAP = "magma_r"
#: Diverging colormap for differences (ΔNLL); red = worse than without intervention.
DIVERGING_CMAP = "RdBu_r"

#: One fixed colour per language of :data:`LANGUAGE_ORDER` (matplotlib's ``tab10``).
LANGUAGE_COLORS: dict[str, str] = {
    lang: mcolors.to_hex(plt.get_cmap("tab10")(i)) for i, lang in enumerate(LANGUAGE_ORDER)
}
#: Colours of the neuron sets in steering figures (LAPE first, then the controls).
SET_COLORS: dict[str, str] = {"lape": "#1f4e9c", "random": "#e07b39", "matched": "#3a923a"}

_OTHER_COLORS = [mcolors.to_hex(c) for c in plt.get_cmap("tab20b").colors]
_ALL = "all"


def language_color(lang: str) -> str:
    """Return the fixed colour of a language.

    Args:
        lang: Language code, or ``"all"``.

    Returns:
        :data:`LANGUAGE_COLORS`'s; grey for ``"all"``; else a ``tab20b`` colour by hash.
    """
    if lang in LANGUAGE_COLORS:
        return LANGUAGE_COLORS[lang]
    if lang == _ALL:
        return "#444444"
    return _OTHER_COLORS[zlib.crc32(lang.encode()) % len(_OTHER_COLORS)]


# ============================================================================ helpers


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _axes_array(axes: Any, n: int, figsize: tuple[float, float], ncols: int = 0) -> np.ndarray:
    """``n`` Axes: the given ones, or a new figure's (in a row, or ``ncols`` to a row)."""
    if axes is None:
        ncols = ncols or n
        _, grid = plt.subplots(math.ceil(n / ncols), ncols, figsize=figsize,
                               layout="constrained", squeeze=False)
        for spare in grid.ravel()[n:]:
            spare.set_visible(False)
        return grid.ravel()[:n]
    arr = np.asarray(axes, dtype=object).ravel()
    if arr.size != n:
        raise ValueError(f"need {n} axes for this figure, got {arr.size}.")
    return arr


def _title(ax: Axes, base: str, config: Any, title: str | None = None) -> None:
    """Set ``title`` if given, else ``base`` with the config's label (or label string) below."""
    if title is not None:
        ax.set_title(title)
        return
    if isinstance(config, NeuronSelection):
        config = config.config or None
    if isinstance(config, Mapping):
        config = LapeConfig.from_dict(config)
    label = config.label() if isinstance(config, LapeConfig) else config
    ax.set_title("\n".join(p for p in (base, label) if isinstance(p, str) and p),
                 fontsize="medium")


def _language_order(labels: Iterable[Any]) -> list[str]:
    """Language labels as text in the module order, ``"all"`` last."""
    labels = [str(c) for c in labels]
    return sort_languages(c for c in labels if c != _ALL) + [_ALL] * (_ALL in labels)


def _ordered(table: Any, *axes: str) -> Any:
    """``table`` with its language ``axes`` (``"index"``, ``"columns"``) in language order."""
    for axis in axes:
        table = table.rename(**{axis: str})
        table = table.reindex(**{axis: _language_order(getattr(table, axis))})
    return table


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{', '.join(map(repr, missing))}: not a column of {what}, which has "
            f"{list(df.columns)}."
        )


def _counts(data: NeuronSelection | pd.DataFrame) -> pd.DataFrame:
    """Neurons per layer and language of a selection, or a count table in language order."""
    if isinstance(data, NeuronSelection):
        return analysis.layer_distribution(data)
    if isinstance(data, pd.DataFrame):
        return _ordered(data, "columns")
    raise TypeError(
        f"expected a NeuronSelection or a DataFrame (index layer, columns language), got "
        f"{type(data).__name__}."
    )


def _long(wide: pd.DataFrame, index: str, columns: str, value: str) -> pd.DataFrame:
    """Melt a wide table into tidy rows (``index``, ``columns``, ``value``)."""
    wide = wide.rename_axis(index=index).reset_index()
    return wide.melt(id_vars=index, var_name=columns, value_name=value)


def _norm(
    values: np.ndarray, vmin: float | None, vmax: float | None, diverging: bool = False
) -> mcolors.Normalize:
    """Colour scale: ``vmin`` (default ``min(0, smallest)``) to ``vmax`` (default largest).

    Diverging: ``±max|value|`` or ``±`` the one limit given; two limits must straddle 0, and
    asymmetric ones keep 0 at the centre colour (``TwoSlopeNorm``; seaborn's would crop).
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not diverging:
        lo = float(vmin) if vmin is not None else float(finite.min(initial=0.0))
        hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        return mcolors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    if vmin is not None and vmax is not None:
        if not vmin < 0 < vmax:
            raise ValueError(
                f"a diverging scale centred at 0 needs vmin < 0 < vmax, got vmin={vmin}, "
                f"vmax={vmax}."
            )
        if not math.isclose(-vmin, vmax):
            return mcolors.TwoSlopeNorm(vcenter=0.0, vmin=vmin, vmax=vmax)
    given = vmax if vmax is not None else vmin
    m = abs(float(given)) if given is not None else float(np.abs(finite).max(initial=0.0))
    m = m if m > 0 and math.isfinite(m) else 1e-3
    return mcolors.Normalize(vmin=-m, vmax=m)


def _heatmap(
    ax: Axes | None,
    table: pd.DataFrame,
    norm: mcolors.Normalize,
    cmap: str,
    label: str,
    mask: np.ndarray | None = None,
    row_height: float = 0.5,
    **kws: Any,
) -> Axes:
    """Draw ``sns.heatmap`` of a labelled table, first row on top, tick labels horizontal.

    Cells in ``mask`` stay uncoloured but are written (by hand: seaborn skips them). Tick
    labels are explicit: seaborn's automatic ones draw the whole figure to measure them.
    """
    n_rows, n_cols = table.shape
    ax = _axes(ax, (1.6 + 0.65 * max(n_cols, 3), max(2.8, 1.2 + row_height * max(n_rows, 3))))
    kws.setdefault("yticklabels", True)
    sns.heatmap(
        table, ax=ax, cmap=cmap, norm=norm, vmin=norm.vmin, vmax=norm.vmax, mask=mask,
        xticklabels=True, annot_kws={"fontsize": "small"}, cbar_kws={"label": label}, **kws,
    )
    ax.tick_params(axis="y", labelrotation=0)
    if kws.get("annot") and mask is not None:
        values = table.to_numpy(dtype=float)
        for i, j in zip(*np.nonzero(mask & np.isfinite(values))):
            ax.text(j + 0.5, i + 0.5, format(values[i, j], kws["fmt"]), ha="center",
                    va="center", fontsize="small", color=".15")
    return ax


def _lines(
    ax: Axes, data: pd.DataFrame, x: str, y: str, hue: str = "language",
    palette: Mapping | None = None, **kws: Any,
) -> list[Line2D]:
    """Draw ``sns.lineplot``, a line per ``hue`` level (default: languages), labelled by it.

    Repeated ``x`` are averaged; the labels name the lines for ``ax.legend()``.
    """
    if palette is None:
        data = data.assign(**{hue: data[hue].astype(str)})
        palette = {lang: language_color(lang) for lang in _language_order(data[hue].unique())}
    start = len(ax.get_lines())
    sns.lineplot(
        data, x=x, y=y, hue=hue, hue_order=list(palette), palette=dict(palette),
        errorbar=None, legend=False, ax=ax, **kws,
    )
    drawn = set(data.dropna(subset=[x, y])[hue])
    lines = list(ax.get_lines())[start:]
    for line, level in zip(lines, [lv for lv in palette if lv in drawn], strict=True):
        line.set_label(str(level))
    return lines


def _band(ax: Axes, data: pd.DataFrame, x: str, lo: str, hi: str, color: str) -> None:
    """Shade the interval ``lo``..``hi`` along ``x`` (the averages of repeated ``x``)."""
    part = data.groupby(x)[[lo, hi]].mean()
    ax.fill_between(part.index, part[lo], part[hi], color=color, alpha=0.15, lw=0)


def _log_x(ax: Axes, values: Iterable[float], label: str) -> None:
    """Log-scaled x axis ticked at the data's values, written plainly (1,000, not 10³)."""
    ticks = sorted(set(values))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{v:,.0f}" if v >= 100 else f"{v:g}" for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel(label)


def _bars(ax: Axes | None, labels: Iterable[str], values: np.ndarray) -> Axes:
    """Draw one ``sns.barplot`` bar per language, in this order and its exact colour."""
    labels = list(labels)
    ax = _axes(ax, (1.5 + 0.6 * max(len(labels), 3), 3.5))
    sns.barplot(
        x=labels, y=values, hue=labels, palette=[language_color(x) for x in labels],
        saturation=1, errorbar=None, legend=False, ax=ax,
    )
    ax.set_xlabel("language")
    return ax


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


def plot_threshold_effect(
    table: pd.DataFrame, axes: Sequence[Axes] | np.ndarray | None = None
) -> np.ndarray:
    """What ``top_rate`` does to the evidence: ΔNLL on the own language and on the others.

    Args:
        table: :func:`lape_utils.evaluate.threshold_effect` (``top_rate``, ``language``,
            ``n_neurons``, ``diag_delta``, ``diag_lo``, ``diag_hi``, ``offdiag_mean_delta``).
        axes: Two Axes.

    Returns:
        ``[effect, size]`` against ``top_rate`` in % (log): per language the diagonal ΔNLL
        (solid, 95% band) and mean off-diagonal ΔNLL (dashed); the neurons selected.
    """
    axes = _axes_array(axes, 2, (12.0, 3.8))
    effect, size = axes
    df = table.assign(pct=table["top_rate"] * 100, language=table["language"].astype(str))
    for line in _lines(effect, df, "pct", "diag_delta", marker="o", ms=4, lw=1.6):
        _band(effect, df[df["language"] == line.get_label()], "pct", "diag_lo", "diag_hi",
               line.get_color())
    for line in _lines(effect, df, "pct", "offdiag_mean_delta", ls="--", lw=1, marker="."):
        line.set_label(f"{line.get_label()} (others)")
    effect.axhline(0, color="black", lw=0.8)
    effect.set_ylabel("ΔNLL (nats) when zeroed")
    _lines(size, df, "pct", "n_neurons", marker="o", ms=4, lw=1.4)
    size.set(ylim=(0, None), ylabel="neurons of the language")
    for ax, base in zip(axes, ("Own language (solid) and the others (dashed)", "Selection size")):
        _log_x(ax, df["pct"], "top_rate (% of all neurons selected)")
        ax.legend(fontsize="small", ncols=2)
        _title(ax, base, None)
    return axes


# ============================================================================ deactivation

_NONE_LABELS = {"", "none", "nan"}
_KIND_LABELS = {"lape": "LAPE neurons", "random": "random control",
                "matched": "activity-matched control"}


def _parse_row(label: str) -> tuple[str, str]:
    """``(kind, language)`` of a row label: ``"none"``, ``"zh"``, ``"zh (random)"``, ..."""
    s = str(label).strip()
    if s.lower() in _NONE_LABELS:
        return "none", ""
    if ":" in s:
        kind, lang = s.split(":", 1)
        return kind.strip(), lang.strip()
    if s.endswith(")") and " (" in s:
        lang, kind = s[:-1].split(" (", 1)
        return kind.strip(), lang.strip()
    return "lape", s


def _ppl_long(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """A :func:`plot_ppl_heatmap` table as tidy rows (``kind``, ``deactivated``, ``evaluated``).

    Columns ``value`` and, from a tidy table that has it, ``excludes_zero`` (as 0/1).
    """
    if {"deactivated", "evaluated"} <= set(df.columns):  # tidy
        _require(df, [value], "the table")
        long = df.assign(value=df[value], deactivated=df["deactivated"].fillna(""))
        if "kind" not in long:
            long["kind"] = long["row"].map(_parse_row).str[0] if "row" in long else "lape"
        if "excludes_zero" in long:
            long["excludes_zero"] = long["excludes_zero"].astype(float)
    else:  # pivoted: index = row label, columns = evaluated language
        long = _long(df.rename(index=str, columns=str), "row", "evaluated", "value")
        parsed = long["row"].map(_parse_row)
        long["kind"], long["deactivated"] = parsed.str[0], parsed.str[1]
    long = long.astype({"kind": str, "deactivated": str, "evaluated": str, "value": float})
    long.loc[long["deactivated"].str.lower().isin(_NONE_LABELS), "kind"] = "none"
    return long


def _kind(long: pd.DataFrame, kind: str | None) -> str:
    """Check ``kind`` against the table's row kinds; default ``"lape"`` or the only kind."""
    kinds = [k for k in dict.fromkeys(long["kind"]) if k != "none"]
    if kind is None and "lape" not in kinds and len(kinds) != 1:
        raise ValueError(f"the table holds several kinds {kinds}; choose one with kind=.")
    kind = kind or ("lape" if "lape" in kinds else kinds[0])
    if kind not in kinds:
        raise ValueError(f"no rows of kind {kind!r} in the table; it has {kinds}.")
    return kind


def _ppl_matrix(
    long: pd.DataFrame, kind: str, column: str = "value", include_baseline: bool = False
) -> pd.DataFrame:
    """One kind's matrix of ``column`` (cells averaged), deactivated × evaluated; ``none`` atop."""
    cols = sort_languages(long["evaluated"])
    wide = long[long["kind"] == kind].pivot_table(
        index="deactivated", columns="evaluated", values=column, aggfunc="mean", dropna=False
    )
    wide = wide.reindex(index=sort_languages(wide.index), columns=cols)
    if include_baseline:
        base = long[long["kind"] == "none"]
        if base.empty:
            raise ValueError("include_baseline=True but the table has no 'none' row.")
        none = base.groupby("evaluated")[column].mean().reindex(cols).rename("none")
        wide = pd.concat([none.to_frame().T, wide])
    return wide.rename_axis(index="deactivated", columns="evaluated")


def _value_style(value: str) -> tuple[str, bool]:
    """Label of a quantity (``delta_nll`` -> ``ΔNLL``) and whether it is a difference."""
    label = value.replace("delta_", "Δ").replace("nll", "NLL").replace("ppl", "PPL")
    return label, value.startswith(("delta", "Δ"))


def _ppl_panel(
    ax: Axes | None, long: pd.DataFrame, wide: pd.DataFrame, kind: str, value: str,
    norm: mcolors.Normalize, *, fmt: str = ".2f", cbar: bool = True, config: Any = None,
) -> Axes:
    """Draw one kind's matrix; outline the diagonal; bold where the interval excludes 0."""
    label, delta = _value_style(value)
    cmap = DIVERGING_CMAP if delta else SEQUENTIAL_CMAP
    ax = _heatmap(ax, wide, norm, cmap, label, annot=True, fmt=fmt, cbar=cbar)
    cols = list(wide.columns)
    for i, lang in enumerate(wide.index):
        if lang in cols:
            ax.add_patch(Rectangle((cols.index(lang), i), 1, 1, fill=False, ec="black", lw=1.2,
                                   clip_on=False))
    base = f"{label} after deactivation ({_KIND_LABELS.get(kind, kind)})"
    if delta and "excludes_zero" in long and "none" not in wide.index:  # not with a baseline
        sig = _ppl_matrix(long, kind, "excludes_zero").reindex_like(wide).fillna(0) > 0.5
        for text in ax.texts:
            x, y = text.get_position()
            if sig.iloc[int(y), int(x)]:
                text.set_fontweight("bold")
            else:
                text.set_alpha(0.55)
        base += "\nbold: 95% interval excludes 0"
    ax.set(xlabel="evaluated language", ylabel="deactivated neurons of")
    _title(ax, base, config)
    return ax


def plot_ppl_heatmap(
    df: pd.DataFrame,
    ax: Axes | None = None,
    value: str = "delta_nll",
    *,
    kind: str | None = None,
    include_baseline: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = ".2f",
    config: Any = None,
) -> Axes:
    """Draw the perplexity-change matrix: rows = deactivated language, columns = evaluated.

    Values are written in the cells, diagonal cells outlined; differences (``delta_*``) use
    the diverging colormap, in bold where ``excludes_zero``.

    Args:
        df: Tidy (:meth:`~lape_utils.evaluate.PplMatrix.tidy`: ``deactivated`` (empty or
            ``"none"``: the baseline), ``evaluated``, ``value``, ``kind`` or ``row``,
            optional ``excludes_zero``; a cell's rows averaged) or pivoted
            (:meth:`~lape_utils.evaluate.PplMatrix.table`; index ``"zh"``/``"lape:zh"``,
            ``"zh (random)"``/``"random:zh"``, ``"none"``).
        ax: Axes to draw on.
        value: Column (tidy) or quantity (pivoted) shown; also the colour-bar label.
        kind: Which rows: ``"lape"``, ``"random"``, ... (default ``"lape"`` or the only one).
        include_baseline: Add the ``"none"`` row on top (useful for ``nll``/``ppl``).
        vmin: Lower colour limit.
        vmax: Upper colour limit.
        fmt: Format of the written values.
        config: Config for the title.

    Returns:
        The Axes (rows and columns in the module order).

    Raises:
        ValueError: ``value`` not in the table, ``kind`` without rows, or bad difference limits.
    """
    long = _ppl_long(df, value)
    kind = _kind(long, kind)
    wide = _ppl_matrix(long, kind, include_baseline=include_baseline)
    norm = _norm(wide.to_numpy(dtype=float), vmin, vmax, _value_style(value)[1])
    return _ppl_panel(ax, long, wide, kind, value, norm, fmt=fmt, config=config)


def plot_ppl_comparison(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    axes: Sequence[Axes] | np.ndarray | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    config: Any = None,
) -> np.ndarray:
    """Draw the ΔNLL of LAPE deactivation next to its controls, on one colour scale.

    Args:
        df: A :func:`plot_ppl_heatmap` table of LAPE and control rows, or ``{kind: table}``.
        axes: One Axes per kind.
        vmin: Lower colour limit (default from all matrices, symmetric).
        vmax: Upper colour limit.
        config: Config for the titles.

    Returns:
        The Axes: LAPE, then the controls in table order, sharing one colour bar.
    """
    value = "delta_nll"
    if isinstance(df, Mapping):  # one table per kind: its rows take the key as their kind
        parts = {name: _ppl_long(table, value) for name, table in df.items()}
        long = pd.concat([p[p["kind"] == _kind(p, None)].assign(kind=name)
                          for name, p in parts.items()])
    else:
        long = _ppl_long(df, value)
    kinds = sorted(dict.fromkeys(k for k in long["kind"] if k != "none"), key=lambda k: k != "lape")
    wides = [_ppl_matrix(long, k) for k in kinds]
    norm = _norm(np.concatenate([w.to_numpy(dtype=float).ravel() for w in wides]), vmin, vmax,
                 diverging=True)
    width = (1.5 + 0.7 * max(wides[0].shape[1], 3)) * len(kinds) + 1.0
    axes = _axes_array(axes, len(kinds), (width, 4.2))
    for ax, kind, wide in zip(axes, kinds, wides):
        _ppl_panel(ax, long, wide, kind, value, norm, cbar=False, config=config)
    axes[0].figure.colorbar(axes[0].collections[0], ax=list(axes), label="ΔNLL")
    return axes


# ============================================================================ steering


def plot_steering_sweep(
    df: pd.DataFrame,
    axes: Sequence[Axes] | np.ndarray | None = None,
    *,
    config: Any = None,
) -> np.ndarray:
    """Steering strength against the target-language rate and against the fluency cost.

    Args:
        df: :func:`lape_utils.steering.strength_sweep` (columns ``strength``, ``neurons``,
            ``target_rate``, ``output_ppl``; optional ``target_rate_lo``/``_hi``,
            ``output_ppl_unsteered``, ``target``, ``source``); a (set, strength)'s rows averaged.
        axes: Two Axes.
        config: Config for the titles.

    Returns:
        ``[rate, cost]``: per neuron set (:data:`SET_COLORS`) the target-language rate (95%
        band) and the answers' perplexity (unsteered: dashed grey).
    """
    _require(df, ["strength", "target_rate", "output_ppl"], "the sweep")
    data = df.assign(neurons=df["neurons"].astype(str) if "neurons" in df else "lape")
    present = list(dict.fromkeys(data["neurons"]))  # known sets first, in SET_COLORS order
    palette = {n: c for n, c in SET_COLORS.items() if n in present} | {
        n: language_color(n) for n in present if n not in SET_COLORS}
    target = str(data["target"].iloc[0]) if "target" in data else None
    sources = data["source"].dropna() if "source" in data else []
    source = str(sources.iloc[0]) if len(sources) else None
    rate, cost = axes = _axes_array(axes, 2, (12.0, 3.8))
    for line in _lines(rate, data, "strength", "target_rate", "neurons", palette, marker="o",
                       lw=1.8):
        if {"target_rate_lo", "target_rate_hi"} <= set(data.columns):
            _band(rate, data[data["neurons"] == line.get_label()], "strength",
                  "target_rate_lo", "target_rate_hi", line.get_color())
    rate.set(ylim=(0, 1.02),
             ylabel=f"share of answers in {language_name(target) if target else 'the target'}")
    _lines(cost, data, "strength", "output_ppl", "neurons", palette, marker="s", lw=1.6)
    if "output_ppl_unsteered" in data:
        base = float(data["output_ppl_unsteered"].mean())
        cost.axhline(base, color="grey", ls="--", lw=1, label=f"unsteered ({base:.3g})")
    cost.set(ylim=(0, None), ylabel="perplexity of the answers (unmodified model)")
    route = f" {source} → {target}" if source and target else f" {target}" if target else ""
    for ax, what in ((rate, "target-language rate"), (cost, "cost in fluency")):
        ax.set_xlabel("strength (× mean activation on the target)")
        ax.legend(title="neurons", fontsize="small")
        _title(ax, f"Steering{route}: {what}", config)
    return axes


# ============================================================================ inspection


def _token_span(text: str, value: float, scale: float, rgb: tuple, center: bool) -> str:
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, value / scale))
    shown = html.escape(text.replace("\n", "⏎")) or "&nbsp;"
    style = f"background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.2f});"
    if center:
        style += " outline: 1px solid #333; font-weight: bold;"
    return (f'<span class="lape-token" title="{value:.3g}" style="{style} white-space: pre;">'
            f"{shown}</span>")


def top_contexts_html(
    df: pd.DataFrame, *, language: str | None = None, n_per_language: int = 5
) -> HTML:
    """The contexts that activate a neuron most, each token shaded by the activation.

    Shade = activation / the largest, in the neuron's language colour (hover: the value);
    the top token is outlined.

    Args:
        df: :func:`lape_utils.capture.top_activating_contexts` (``language``, ``activation``,
            ``tokens``, ``activations``, ``center``; ``attrs`` ``layer`` and ``neuron``).
        language: The language whose neuron this is (named in the title, sets the colour).
        n_per_language: Contexts shown per language (highest activation first).

    Returns:
        IPython ``HTML`` (``.data``): the browser draws any script, matplotlib's font cannot.
    """
    _require(df, ["language", "activation", "tokens", "activations", "center"], "the table")
    layer, neuron = df.attrs.get("layer"), df.attrs.get("neuron")
    who = f"neuron L{layer}.{neuron}" if layer is not None else "a neuron"
    if language:
        who += f" ({language_name(language)} neuron)"
    rgb = tuple(int(255 * c) for c in mcolors.to_rgb(language_color(language or "all")))
    scale = max((max(a) for a in df["activations"] if len(a)), default=0.0)
    lines = [f'<div class="lape-contexts"><b>Top-activating contexts of {html.escape(who)}'
             f"</b> · shade = activation / {scale:.3g}"]
    if df.empty:
        lines.append("<div><i>no contexts</i></div>")
    langs = df["language"].astype(str)
    for lang in _language_order(langs.unique()):
        part = df[langs == lang].sort_values("activation", ascending=False)
        for _, r in part.head(n_per_language).iterrows():
            spans = "".join(_token_span(t, v, scale, rgb, i == r["center"])
                            for i, (t, v) in enumerate(zip(r["tokens"], r["activations"])))
            lines.append(f'<div style="margin: 2px 0"><code>{html.escape(lang)}</code> '
                         f'<code>{r["activation"]:.3g}</code> {spans}</div>')
    return HTML("\n".join(lines) + "</div>")


# ============================================================================ saving


def save_figure(
    obj: Axes | Figure | SubFigure | np.ndarray | Sequence[Axes],
    path: str | os.PathLike,
    *,
    close: bool = False,
) -> Path:
    """Write the figure holding ``obj`` to ``path`` (the one place that saves figures).

    The suffix gives the format (150 dpi, tight box); folders are made, a file replaced.

    Args:
        obj: An Axes, an array/list of Axes (of one figure), or a Figure.
        path: Target file.
        close: Close the figure afterwards (frees memory in long pipelines).

    Returns:
        The path written.
    """
    single = isinstance(obj, (Figure, SubFigure, Axes))
    items = [obj] if single else [a for a in np.asarray(obj, dtype=object).ravel() if a is not None]
    if not items or not all(isinstance(a, (Figure, SubFigure, Axes)) for a in items):
        raise TypeError(
            f"save_figure needs an Axes, Axes array or Figure, got {type(obj).__name__}."
        )
    figs = {a.get_figure(root=True) for a in items}
    if len(figs) != 1:
        raise ValueError(f"the Axes belong to {len(figs)} different figures; save each.")
    (fig,) = figs
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        logger.info("replacing %s", path)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    logger.info("saved figure %s", path)
    if close:
        plt.close(fig)
    return path
