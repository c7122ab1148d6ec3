"""Figures of the workbook.

Where language-specific neurons sit, how they overlap, how the thresholds cut, how stable
they are, what deactivating and steering them does.

Conventions (``shared/docs/style.md``):

* Every ``plot_*`` function takes ``ax=None`` (a new figure is made when ``None``) and
  returns the ``Axes`` it drew on; multi-panel functions return a NumPy array of ``Axes``.
  Nothing here calls ``savefig`` or ``show``: :func:`save_figure` is the one place that
  writes a file.
* Inputs are selections or labelled DataFrames (index = layer, columns = language, or
  tidy). Languages appear in the module order :data:`~lape_utils.languages.LANGUAGE_ORDER`,
  each in its fixed colour (:data:`LANGUAGE_COLORS`, :func:`language_color`).
* The statistics plots are seaborn's (``heatmap``, ``histplot``, ``barplot``,
  ``lineplot``). A heatmap's mesh is ``ax.collections[0]`` (``get_array()`` holds the
  cells, ``get_clim()`` the colour limits). Counts use the sequential
  :data:`SEQUENTIAL_CMAP`; differences (ΔNLL) the diverging :data:`DIVERGING_CMAP` centred
  at 0. Fixed ``vmin``/``vmax`` are honoured, so that a widget redraw keeps its scale.
* When a :class:`~lape_utils.lape.LapeConfig` is known (passed, or carried by the
  selection) its :meth:`~lape_utils.lape.LapeConfig.label` is part of the title.
"""

from __future__ import annotations

import html
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
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

_OTHER_COLORS = [mcolors.to_hex(c) for c in plt.get_cmap("tab20b").colors]
_ALL = "all"


def language_color(lang: str) -> str:
    """Return the fixed colour of a language.

    Args:
        lang: Language code, or ``"all"``.

    Returns:
        Its colour in :data:`LANGUAGE_COLORS`; dark grey for ``"all"``; for any other code a
        colour of ``tab20b`` chosen by a hash of the code (the same in every session).

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


def _axes_array(axes: Any, n: int, figsize: tuple[float, float]) -> np.ndarray:
    if axes is None:
        return plt.subplots(1, n, figsize=figsize, layout="constrained", squeeze=False)[1][0]
    arr = np.asarray(axes, dtype=object).ravel()
    if arr.size != n:
        raise ValueError(f"need {n} axes for this figure, got {arr.size}.")
    return arr


def _title(ax: Axes, base: str, config: Any, title: str | None = None) -> None:
    """Set ``title`` if given, else ``base`` with the config's label on a second line.

    ``config`` is a LapeConfig, a dict of its fields, a label string, a selection (its
    config is used) or ``None`` (no label).
    """
    if title is not None:
        ax.set_title(title)
        return
    if isinstance(config, NeuronSelection):
        config = config.config or None
    if isinstance(config, Mapping):
        config = LapeConfig.from_dict(config)
    if isinstance(config, LapeConfig):
        config = config.label()
    if config is not None and not isinstance(config, str):
        raise TypeError(
            f"config must be a LapeConfig, a dict of its fields or a label string, got "
            f"{type(config).__name__}."
        )
    ax.set_title("\n".join(p for p in (base, config) if p), fontsize="medium")


def _language_columns(columns: Sequence[str]) -> list[str]:
    """Sort language labels in the module order, ``"all"`` last."""
    cols = [str(c) for c in columns]
    return sort_languages(c for c in cols if c != _ALL) + ([_ALL] if _ALL in cols else [])


def _palette(langs: Sequence[str]) -> dict[str, str]:
    return {lang: language_color(lang) for lang in langs}


def _norm(
    values: np.ndarray, vmin: float | None, vmax: float | None, diverging: bool = False
) -> mcolors.Normalize:
    """Colour scale of a heatmap.

    Sequential: ``vmin`` (default ``min(0, smallest value)``) to ``vmax`` (default the
    largest value). Diverging, centred at 0: ``±max|value|``, or ``±`` the one limit given;
    two given limits must straddle 0, and asymmetric ones keep 0 at the centre colour with a
    ``TwoSlopeNorm`` (seaborn's ``center=`` would crop the colormap instead).
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
    ax: Axes,
    table: pd.DataFrame,
    norm: mcolors.Normalize,
    cmap: str,
    label: str,
    mask: np.ndarray | None = None,
    **kws: Any,
) -> None:
    """Draw ``sns.heatmap`` of a labelled table, first row on top, tick labels horizontal.

    NaN cells are neither coloured nor written. Cells in ``mask`` are left uncoloured (the
    axes background shows) but still written: by hand, since seaborn skips masked cells.
    ``kws`` (``annot``, ``fmt``, ``cbar``, ``yticklabels``) go to ``sns.heatmap``. Tick
    labels are given explicitly (every one, or every ``yticklabels``-th row): seaborn's
    automatic choice draws the whole figure once to measure them, which costs more than
    the heatmap.
    """
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


def _lines(
    ax: Axes, data: pd.DataFrame, x: str, y: str, hue: str, palette: Mapping, **kws: Any
) -> list[Line2D]:
    """Draw ``sns.lineplot``, one line per ``hue`` level in ``palette`` order, labelled.

    Repeated ``x`` values are averaged. Each line is labelled by its level, so that
    ``ax.get_lines()`` and ``ax.legend()`` name them (seaborn leaves them unnamed).
    """
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


def _long(wide: pd.DataFrame, index: str, columns: str, value: str) -> pd.DataFrame:
    """Melt a wide table into tidy rows (``index``, ``columns``, ``value``)."""
    wide = wide.rename_axis(index=index).reset_index()
    return wide.melt(id_vars=index, var_name=columns, value_name=value)


def _bars(ax: Axes, langs: Sequence[str], values: np.ndarray) -> None:
    """Draw one ``sns.barplot`` bar per language, in this order and its exact colour."""
    sns.barplot(
        x=list(langs), y=values, hue=list(langs), palette=_palette(langs), saturation=1,
        errorbar=None, legend=False, ax=ax,
    )
    ax.set_xlabel("language")


def _selection_counts(data: NeuronSelection | pd.DataFrame) -> pd.DataFrame:
    if isinstance(data, NeuronSelection):
        return analysis.layer_distribution(data)
    if isinstance(data, pd.DataFrame):
        df = data.rename(columns=str)
        return df[_language_columns(df.columns)]
    raise TypeError(
        f"expected a NeuronSelection or a DataFrame (index layer, columns language), got "
        f"{type(data).__name__}."
    )


# ============================================================================ layers


def plot_layer_distribution(
    data: NeuronSelection | pd.DataFrame,
    ax: Axes | None = None,
    *,
    kind: Literal["heatmap", "lines", "share"] = "heatmap",
    n_neurons: int | None = None,
    config: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    annot: bool | None = None,
    colorbar: bool = True,
    title: str | None = None,
) -> Axes:
    """Where each language's neurons sit: neurons per layer and language.

    Args:
        data: A selection, or counts as :func:`lape_utils.analysis.layer_distribution`
            returns them (index ``layer``, one column per language).
        ax: Axes to draw on (a new figure if ``None``).
        kind: ``"heatmap"``: layers on the y axis (layer 0 at the bottom), languages on the x
            axis, colour = count (sequential). ``"lines"``: x = layer, y = count, one line
            per language in its colour. ``"share"``: the same lines as percent of the
            layer's FFN neurons.
        n_neurons: FFN neurons per layer, needed for ``"share"`` when ``data`` is a
            DataFrame.
        config: A :class:`~lape_utils.lape.LapeConfig` (or dict) for the title; by default
            the selection's own.
        vmin: Lower colour limit of the heatmap (default 0).
        vmax: Upper colour limit of the heatmap (default the largest count). Fix both so
            that redraws keep one scale.
        annot: Write the counts in the cells (default: when there are at most 200 cells).
        colorbar: Add a colour bar to the heatmap.
        title: Replace the default title.

    Returns:
        The Axes.

    Raises:
        ValueError: ``kind`` is unknown, or ``"share"`` of a DataFrame without
            ``n_neurons``.

    """
    counts = _selection_counts(data)
    if config is None and isinstance(data, NeuronSelection):
        config = data
    langs = list(counts.columns)
    base = "Language-specific neurons per layer"
    if kind == "heatmap":
        ax = _axes(ax, (1.0 + 0.65 * max(len(langs), 2), max(3.0, 1.0 + 0.17 * len(counts))))
        _heatmap(
            ax, counts, _norm(counts.to_numpy(), vmin, vmax), SEQUENTIAL_CMAP, "neurons",
            annot=counts.size <= 200 if annot is None else annot, cbar=colorbar,
            fmt=".0f" if pd.api.types.is_integer_dtype(counts.to_numpy()) else ".2g",
            yticklabels=math.ceil(len(counts) / 20) or 1,
        )
        ax.invert_yaxis()  # layer 0 at the bottom
        ax.set(xlabel="language", ylabel="layer")
        _title(ax, base, config, title)
        return ax
    if kind not in ("lines", "share"):
        raise ValueError(f"kind must be 'heatmap', 'lines' or 'share', got {kind!r}.")
    ylabel = "neurons"
    if kind == "share":
        if n_neurons is None and not isinstance(data, NeuronSelection):
            raise ValueError(
                "kind='share' with a DataFrame needs n_neurons= (FFN neurons per layer)."
            )
        counts = counts * (100.0 / (n_neurons or data.n_neurons))
        ylabel = "% of the layer's neurons"
    ax = _axes(ax, (7.0, 3.5))
    _lines(ax, _long(counts, "layer", "language", "n"), "layer", "n", "language",
           _palette(langs), lw=1.6)
    ax.set(xlabel="layer", ylabel=ylabel, ylim=(0, None))
    ax.legend(title="language", fontsize="small", ncols=2 if len(langs) > 5 else 1)
    _title(ax, base, config, title)
    return ax


def plot_layer_distribution_grid(
    selections: Mapping[str, NeuronSelection],
    *,
    kind: Literal["heatmap", "lines", "share"] = "lines",
    ncols: int = 4,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> np.ndarray:
    """:func:`plot_layer_distribution` of several selections, one panel each, titled by name.

    Args:
        selections: ``{name: selection}``, e.g. the paper's seven sets from
            :func:`lape_utils.analysis.published_sets`.
        kind: As in :func:`plot_layer_distribution`.
        ncols: Panels per row.
        axes: Axes to draw on (at least ``len(selections)``); a new figure if ``None``.

    Returns:
        Flat array of the Axes drawn on (one per selection, in the mapping's order); unused
        panels of a new grid are hidden. Only the first panel keeps its legend.

    """
    n = len(selections)
    if n == 0:
        raise ValueError("no selections to draw.")
    if axes is None:
        ncols = max(1, min(ncols, n))
        nrows = math.ceil(n / ncols)
        _, grid = plt.subplots(
            nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained", squeeze=False
        )
        flat = grid.ravel()
        for extra in flat[n:]:
            extra.set_visible(False)
    else:
        flat = np.asarray(axes, dtype=object).ravel()
        if flat.size < n:
            raise ValueError(f"need {n} axes, got {flat.size}.")
    for ax, (name, sel) in zip(flat, selections.items()):
        plot_layer_distribution(sel, ax=ax, kind=kind, title=name, annot=False)
        if kind != "heatmap" and ax is not flat[0]:
            ax.get_legend().remove()
    return flat[:n]


def plot_language_counts(
    data: NeuronSelection | pd.DataFrame | pd.Series,
    ax: Axes | None = None,
    *,
    percent: bool = False,
    n_total: int | None = None,
    config: Any = None,
    annotate: bool = True,
    title: str | None = None,
) -> Axes:
    """One bar per language: how many neurons each language got.

    Args:
        data: A selection; per-layer counts (index layer, columns language; summed over
            layers); or a Series indexed by language.
        ax: Axes to draw on.
        percent: Show percent of all FFN neurons (``L·D``) instead of counts.
        n_total: ``L·D``, needed for ``percent`` when ``data`` is not a selection.
        config: LapeConfig (or dict) for the title; by default the selection's.
        annotate: Write the value above each bar.
        title: Replace the default title.

    Returns:
        The Axes (one bar patch per language, in the module order).

    Raises:
        ValueError: ``percent`` without ``n_total`` for a table.

    """
    if isinstance(data, NeuronSelection):
        counts = analysis.layer_distribution(data).sum(axis=0)
        n_total = data.n_layers * data.n_neurons
        config = data if config is None else config
    elif isinstance(data, pd.DataFrame):
        counts = _selection_counts(data).sum(axis=0)
    elif isinstance(data, pd.Series):
        counts = data.rename(index=str)
        counts = counts[_language_columns(counts.index)]
    else:
        raise TypeError(f"expected a selection, DataFrame or Series, got {type(data).__name__}.")
    values = counts.to_numpy(dtype=float)
    ylabel, fmt = "neurons", "{:,.0f}"
    if percent:
        if not n_total:
            raise ValueError("percent=True needs n_total= (L·D) unless data is a selection.")
        values = values * 100.0 / n_total
        ylabel, fmt = "% of all FFN neurons", "{:.3f}"
    ax = _axes(ax, (1.2 + 0.6 * max(len(counts), 3), 3.5))
    _bars(ax, list(counts.index), values)
    if annotate:
        for bars in ax.containers:
            ax.bar_label(bars, fmt=fmt, fontsize="small", padding=2)
        ax.margins(y=0.12)
    ax.set_ylabel(ylabel)
    _title(ax, "Language-specific neurons per language", config, title)
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

    The diagonal (a language with itself: its size, or Jaccard 1) would dominate the colour
    scale, so by default its cells are left uncoloured (grey background) and only written;
    the colour scale then spans the off-diagonal values.

    Args:
        data: A selection, or a square DataFrame (index and columns = languages), e.g. one
            of the two tables of :func:`lape_utils.analysis.overlap`.
        ax: Axes to draw on.
        metric: ``"count"`` (``|A ∩ B|``, diagonal = set sizes) or ``"jaccard"``
            (``|A ∩ B| / |A ∪ B|``). Picks the table of a selection; labels either way.
        config: LapeConfig (or dict) for the title; by default the selection's.
        vmin: Lower colour limit (default 0).
        vmax: Upper colour limit (default the largest coloured value).
        annot: Write the values in the cells.
        colour_diagonal: Colour the diagonal too.
        colorbar: Add a colour bar.
        title: Replace the default title.

    Returns:
        The Axes; rows top to bottom and columns left to right in the module order.

    """
    if metric not in ("count", "jaccard"):
        raise ValueError(f"metric must be 'count' or 'jaccard', got {metric!r}.")
    if isinstance(data, NeuronSelection):
        table = analysis.overlap(data)[0 if metric == "count" else 1]
        config = data if config is None else config
    else:
        table = data.rename(index=str, columns=str)
        table = table.reindex(
            index=_language_columns(table.index), columns=_language_columns(table.columns)
        )
    values = table.to_numpy(dtype=float)
    diag = table.index.to_numpy()[:, None] == table.columns.to_numpy()[None, :]
    mask = None if colour_diagonal else diag
    ax = _axes(ax, (1.5 + 0.6 * max(len(table.columns), 3), 1.0 + 0.55 * max(len(table), 3)))
    ax.set_facecolor("#e6e6e6")
    _heatmap(
        ax, table, _norm(values if mask is None else values[~mask], vmin, vmax),
        SEQUENTIAL_CMAP, "shared neurons" if metric == "count" else "Jaccard", mask,
        annot=annot, fmt=".2f" if metric == "jaccard" else ".0f", cbar=colorbar,
    )
    ax.set(xlabel="language", ylabel="language")
    _title(ax, "Shared neurons" if metric == "count" else "Overlap (Jaccard)", config, title)
    return ax


# ============================================================================ thresholds


def plot_entropy_distribution(
    table: analysis.EntropyTable,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    which: Literal["entropy", "probability", "both"] = "entropy",
    bins: int = 60,
    title: str | None = None,
) -> Axes | np.ndarray:
    """Show how the thresholds cut.

    The entropy of the neurons passing the filter with the selection cut-off, and/or the
    pooled activation probabilities with ``tau`` and ``bar``.

    Histograms (``ax.containers``) and marked lines (``ax.get_lines()``, each with a
    ``label``):

    * entropy panel: the neurons passing the filter (grey) and the selected ones (red) over
      the same ``bins``; lines ``"selection cut-off H = …"`` at
      :attr:`EntropyTable.cutoff` and ``"log K = …"`` (the entropy of a neuron equally
      active in all languages);
    * probability panel: all ``P`` values; lines ``"filter tau = …"`` and ``"bar = …"``.

    Args:
        table: From :func:`lape_utils.analysis.entropy_table`.
        ax: One Axes (``which`` = ``"entropy"`` or ``"probability"``) or two (``"both"``);
            new figure if ``None``.
        which: Which panel(s).
        bins: Histogram bins (the count axis is logarithmic).
        title: Replace the default title (of every panel).

    Returns:
        The Axes, or an array of two Axes ``[entropy, probability]`` for ``"both"``.

    """
    if which == "both":
        axes = _axes_array(ax, 2, (11.0, 3.8))
        for a, w in zip(axes, ("entropy", "probability")):
            plot_entropy_distribution(table, a, which=w, bins=bins, title=title)
        return axes
    if which not in ("entropy", "probability"):
        raise ValueError(f"which must be 'entropy', 'probability' or 'both', got {which!r}.")
    ax = _axes(ax, (6.0, 3.8))
    if which == "entropy":
        passing = table.passing()
        h = passing["entropy"].to_numpy()
        sel = passing.loc[passing["selected"], "entropy"].to_numpy()
        edges = np.linspace(0.0, max(table.max_entropy, h.max(initial=0.0)), bins + 1)
        sns.histplot(x=h, bins=edges, color="#bbbbbb", alpha=1, ax=ax,
                     label=f"passing the filter ({len(h):,})")
        sns.histplot(x=sel, bins=edges, color="#d62728", alpha=1, ax=ax,
                     label=f"selected ({len(sel):,})")
        if math.isfinite(table.cutoff):
            ax.axvline(table.cutoff, color="black", ls="--", lw=1.2,
                       label=f"selection cut-off H = {table.cutoff:.3g}")
        ax.axvline(table.max_entropy, color="grey", ls=":", lw=1.2,
                   label=f"log K = {table.max_entropy:.3g}")
        ax.set(xlabel="LAPE entropy H (nats)", ylabel="neurons")
        base = f"Entropy of the {table.n_candidates:,} neurons passing the filter"
    else:
        p = table.probabilities()
        cfg = table.config
        sns.histplot(x=p, bins=bins, color="#7f7f7f", alpha=1, ax=ax,
                     label=f"all P ({p.size:,} values)")
        ax.axvline(table.tau, color="#1f77b4", ls="--", lw=1.4,
                   label=f"filter tau = {table.tau:.3g} (q{cfg.filter_rate:g})")
        ax.axvline(table.bar, color="#d62728", ls=":", lw=1.6,
                   label=f"bar = {table.bar:.3g} (q{cfg.activation_bar_ratio:g})")
        ax.set(xlabel="activation probability P (pooled over layers, neurons, languages)",
               ylabel="values")
        base = "Activation probability and thresholds"
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    _title(ax, base, table.config, title)
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
    title: str | None = None,
) -> Axes:
    """Activation probability across languages of selected neurons.

    Args:
        profiles: Wide DataFrame, one row per neuron (index ``(layer, neuron)`` or any
            label), one column of ``P`` per language, as
            :func:`lape_utils.analysis.probability_profiles` returns it.
        ax: Axes to draw on.
        kind: ``"heatmap"`` (rows = neurons labelled ``L<layer>.<neuron>``, top = most
            specific; columns = languages; sequential colour) or ``"lines"`` (x =
            languages, one line per neuron).
        language: The language whose neurons these are (title; line colour).
        bar: Draw the assignment threshold (``EntropyTable.bar``): a horizontal line in
            ``"lines"``, a mark on the colour bar in ``"heatmap"``.
        config: LapeConfig (or dict) for the title.
        vmin: Lower colour limit (default 0).
        vmax: Upper colour limit (default the largest P).
        title: Replace the default title.

    Returns:
        The Axes.

    """
    df = profiles.rename(columns=str)
    df = df[_language_columns(df.columns)]
    if isinstance(df.index, pd.MultiIndex) and df.index.nlevels == 2:
        df.index = [f"L{a}.{b}" for a, b in df.index]
    base = f"Activation probability of {len(df)} {language + ' ' if language else ''}neurons"
    label = "activation probability P"
    if kind == "heatmap":
        ax = _axes(ax, (1.5 + 0.6 * max(df.shape[1], 3), max(2.5, 1.0 + 0.22 * len(df))))
        _heatmap(
            ax, df, _norm(df.to_numpy(dtype=float), vmin, vmax), SEQUENTIAL_CMAP, label,
            annot=df.size <= 150, fmt=".2f", yticklabels=math.ceil(len(df) / 40) or 1,
        )
        if bar is not None:
            ax.collections[0].colorbar.ax.axhline(bar, color="cyan", lw=2)
        ax.set(xlabel="language", ylabel="neuron (layer.index)")
    elif kind == "lines":
        ax = _axes(ax, (1.5 + 0.7 * max(df.shape[1], 3), 3.8))
        long = _long(df, "neuron", "language", "p")
        long["language"] = pd.Categorical(long["language"], categories=list(df.columns))
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
    _title(ax, base, config, title)
    return ax


# ============================================================================ stability


def plot_stability(
    result: StabilityResult | pd.DataFrame,
    ax: Axes | None = None,
    *,
    kind: Literal["frequency", "jaccard"] = "frequency",
    n_replicates: int | None = None,
    config: Any = None,
    title: str | None = None,
) -> Axes:
    """How stable the selection is over bootstrap replicates.

    Args:
        result: A :class:`~lape_utils.lape.StabilityResult`. For ``kind="jaccard"`` also a
            table from :func:`lape_utils.analysis.stability_table` (columns
            ``mean_jaccard``, optional ``std_jaccard``); for ``"frequency"`` a tidy table
            from :func:`lape_utils.analysis.selection_frequencies` (columns ``language``,
            ``frequency``).
        ax: Axes to draw on.
        kind: ``"frequency"``: per language, how many neurons were selected in what fraction
            of the replicates (one line per language, a point per possible fraction
            ``k / n_replicates``; neurons never selected are not counted; a stable
            selection piles up at 1). ``"jaccard"``: one bar per language
            (then ``"all"``, grey) of the mean Jaccard of the replicates' sets with the
            reference set, error bar = standard deviation (drawn by hand: seaborn's
            ``barplot`` only draws error bars it computes itself); y from 0 to 1.
        n_replicates: Number of replicates, for a frequency table (default: read from the
            result, or taken as ``1 / smallest frequency`` of a table).
        config: LapeConfig (or dict) for the title.
        title: Replace the default title.

    Returns:
        The Axes.

    """
    if kind == "jaccard":
        table = (
            analysis.stability_table(result) if isinstance(result, StabilityResult) else result
        )
        if "mean_jaccard" not in table.columns:
            raise ValueError(
                f"a stability table needs a 'mean_jaccard' column; got {list(table.columns)}."
            )
        table = table.rename(index=str)
        table = table.loc[_language_columns(table.index)]
        ax = _axes(ax, (1.5 + 0.6 * max(len(table), 3), 3.5))
        mean = table["mean_jaccard"].to_numpy(dtype=float)
        _bars(ax, list(table.index), mean)
        if "std_jaccard" in table:
            err = np.nan_to_num(table["std_jaccard"].to_numpy(dtype=float))
            ax.errorbar(np.arange(len(table)), mean, yerr=err, fmt="none", ecolor="black",
                        capsize=3, lw=1)
        ax.set(ylim=(0, 1.05), ylabel="mean Jaccard with the reference set")
        n = f" over {result.n_replicates} replicates" if isinstance(result, StabilityResult) else ""
        _title(ax, f"Stability of the selection{n}", config, title)
        return ax
    if kind != "frequency":
        raise ValueError(f"kind must be 'frequency' or 'jaccard', got {kind!r}.")
    if isinstance(result, StabilityResult):
        freq, n_rep = analysis.selection_frequencies(result), result.n_replicates
    else:
        freq = result
        if not {"language", "frequency"} <= set(freq.columns):
            raise ValueError(
                f"a frequency table needs 'language' and 'frequency' columns; got "
                f"{list(freq.columns)}."
            )
        vals = freq["frequency"].to_numpy(dtype=float)
        vals = vals[vals > 0]
        n_rep = int(round(1.0 / vals.min())) if vals.size else 1
        n_rep = n_rep if n_replicates is None else int(n_replicates)
    edges = (np.arange(n_rep + 1) + 0.5) / n_rep  # one bin per possible k/n_rep, k=1..n_rep
    langs = freq["language"].astype(str)
    hist = pd.DataFrame(
        {lang: np.histogram(freq["frequency"][langs == lang], bins=edges)[0]
         for lang in _language_columns(langs.unique())},
        index=np.arange(1, n_rep + 1) / n_rep,
    )
    ax = _axes(ax, (6.0, 3.5))
    _lines(ax, _long(hist, "frequency", "language", "neurons"), "frequency", "neurons",
           "language", _palette(hist.columns), marker="o", ms=4, lw=1.4)
    ax.set(xlim=(0, 1.02), ylim=(0, None), xlabel="selection frequency over bootstrap replicates",
           ylabel="neurons (selected at least once)")
    ax.legend(title="language", fontsize="small", ncols=2)
    _title(ax, f"Selection frequency ({n_rep} replicates)", config, title)
    return ax


def plot_convergence(
    table: pd.DataFrame, axes: Sequence[Axes] | np.ndarray | None = None, *,
    config: Any = None,
) -> np.ndarray:
    """How the selection changes with the token budget (from budget snapshots).

    Args:
        table: :func:`lape_utils.analysis.convergence` (columns ``tokens``, ``language``,
            ``count``, ``jaccard``).
        axes: Two Axes; new figure if ``None``.
        config: LapeConfig (or dict) for the titles.

    Returns:
        ``[jaccard, counts]``: per language (and ``"all"``, grey) the Jaccard of the
        selection at each budget to the full-budget one (y from 0 to 1, the 0.9 line of
        :data:`lape_utils.analysis.CONVERGED_AT` dotted), and the neurons selected per
        language; x = tokens per language (log scale).
    """
    axes = _axes_array(axes, 2, (12.0, 3.8))
    df = table.assign(language=table["language"].astype(str))
    palette = _palette(_language_columns(df["language"].unique()))
    for ax, y, label in ((axes[0], "jaccard", "Jaccard to the full-budget selection"),
                         (axes[1], "count", "neurons selected")):
        _lines(ax, df, "tokens", y, "language", palette, marker="o", ms=4, lw=1.4)
        ax.set(xscale="log", xlabel="tokens per language", ylabel=label)
        ax.legend(title="language", fontsize="small", ncols=2)
    axes[0].axhline(analysis.CONVERGED_AT, color="grey", ls=":", lw=1)
    axes[0].set_ylim(0, 1.05)
    axes[1].set_ylim(bottom=0)
    _title(axes[0], "Convergence of the selection with the budget", config)
    _title(axes[1], "Selection size with the budget", config)
    return axes


def plot_threshold_effect(
    table: pd.DataFrame, axes: Sequence[Axes] | np.ndarray | None = None
) -> np.ndarray:
    """What ``top_rate`` does to the evidence: ΔNLL on the own language and on the others.

    Args:
        table: :func:`lape_utils.evaluate.threshold_effect` (columns ``top_rate``,
            ``language``, ``n_neurons``, ``diag_delta``, ``diag_lo``, ``diag_hi``,
            ``offdiag_mean_delta``).
        axes: Two Axes; new figure if ``None``.

    Returns:
        ``[effect, size]``: per language, the diagonal ΔNLL (solid, with its 95% interval
        as a band) and the mean off-diagonal ΔNLL (dashed) against ``top_rate`` in percent
        (log scale); and the neurons selected per language. y from 0 in the size panel.
    """
    axes = _axes_array(axes, 2, (12.0, 3.8))
    df = table.assign(language=table["language"].astype(str), pct=table["top_rate"] * 100)
    palette = _palette(_language_columns(df["language"].unique()))
    ax = axes[0]
    _lines(ax, df, "pct", "diag_delta", "language", palette, marker="o", ms=4, lw=1.6)
    off = _lines(ax, df, "pct", "offdiag_mean_delta", "language", palette, ls="--", lw=1,
                 marker=".")
    for line in off:
        line.set_label(f"{line.get_label()} (others)")
    for lang, part in df.groupby("language", sort=False):
        part = part.sort_values("pct")
        ax.fill_between(part["pct"], part["diag_lo"], part["diag_hi"], color=palette[lang],
                        alpha=0.15, lw=0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xscale="log", xlabel="top_rate (% of all neurons selected)",
           ylabel="ΔNLL (nats) when zeroed")
    ax.legend(fontsize="small", ncols=2)
    _title(ax, "Own language (solid) and the others (dashed)", None)
    _lines(axes[1], df, "pct", "n_neurons", "language", palette, marker="o", ms=4, lw=1.4)
    axes[1].set(xscale="log", ylim=(0, None), xlabel="top_rate (% of all neurons selected)",
                ylabel="neurons of the language")
    axes[1].legend(fontsize="small", ncols=2)
    _title(axes[1], "Selection size", None)
    return axes


# ============================================================================ deactivation

_NONE_LABELS = {"", "none", "nan"}


def _parse_row(label: str) -> tuple[str, str]:
    """Split a row label into (kind, language).

    Labels: ``"none"``, ``"zh"``, ``"zh (random)"``, ``"zh (matched)"``, ``"lape:zh"``,
    ``"random:zh"``.
    """
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


def _ppl_matrix(
    df: pd.DataFrame, value: str, kind: str | None, include_baseline: bool = False
) -> tuple[pd.DataFrame, str]:
    """Pivot a tidy or pivoted perplexity table to one kind's matrix.

    Returns the matrix (index deactivated, columns evaluated, module order; the baseline
    row ``"none"`` on top if asked) and its kind.
    """
    if {"deactivated", "evaluated"} <= set(df.columns):  # tidy
        if value not in df.columns:
            raise ValueError(
                f"value {value!r} is not a column of the table; it has {list(df.columns)}."
            )
        long = df.assign(value=df[value], deactivated=df["deactivated"].fillna(""))
        if "kind" not in long:
            long["kind"] = long["row"].map(_parse_row).str[0] if "row" in long else "lape"
    else:  # pivoted: index = row label, columns = evaluated language
        long = _long(df.rename(index=str, columns=str), "row", "evaluated", "value")
        parsed = long["row"].map(_parse_row)
        long["kind"], long["deactivated"] = parsed.str[0], parsed.str[1]
    long = long.astype({"kind": str, "deactivated": str, "evaluated": str, "value": float})
    long.loc[long["deactivated"].str.lower().isin(_NONE_LABELS), "kind"] = "none"
    kinds = [k for k in long["kind"].unique() if k != "none"]
    if kind is None:
        kind = "lape" if "lape" in kinds else (kinds[0] if len(kinds) == 1 else None)
        if kind is None:
            raise ValueError(f"the table holds several kinds {kinds}; choose one with kind=.")
    if kind not in kinds:
        raise ValueError(f"no rows of kind {kind!r} in the table; it has {kinds}.")
    cols = sort_languages(long["evaluated"])
    wide = long[long["kind"] == kind].pivot_table(
        index="deactivated", columns="evaluated", values="value", aggfunc="mean", dropna=False
    )
    wide = wide.reindex(index=sort_languages(wide.index), columns=cols)
    if include_baseline:
        base = long[long["kind"] == "none"]
        if base.empty:
            raise ValueError("include_baseline=True but the table has no 'none' row.")
        none = base.groupby("evaluated")["value"].mean().reindex(cols).rename("none")
        wide = pd.concat([none.to_frame().T, wide])
    return wide.rename_axis(index="deactivated", columns="evaluated"), kind


def _is_delta(value: str) -> bool:
    return value.startswith("delta") or value.startswith("Δ")


def _value_label(value: str) -> str:
    return value.replace("delta_", "Δ").replace("nll", "NLL").replace("ppl", "PPL")


_KIND_LABELS = {"lape": "LAPE neurons", "random": "random control",
                "matched": "activity-matched control"}


def _significance(df: pd.DataFrame, value: str, kind: str, wide: pd.DataFrame):
    """Cells whose 95% interval excludes 0 (``excludes_zero`` of a tidy table), or None."""
    if not _is_delta(value) or "excludes_zero" not in df.columns:
        return None
    sig = _ppl_matrix(df.assign(excludes_zero=df["excludes_zero"].astype(float)),
                      "excludes_zero", kind)[0]
    return sig.reindex_like(wide).fillna(0).to_numpy() > 0.5


def _ppl_axes(
    ax: Axes, wide: pd.DataFrame, value: str, kind: str, norm: mcolors.Normalize,
    fmt: str, cbar: bool, config: Any, title: str | None, sig: np.ndarray | None = None,
) -> None:
    """Draw one perplexity matrix; outline its diagonal cells by hand (seaborn cannot).

    With ``sig`` (cells whose interval excludes 0) those values are written in bold and
    the others in grey, and the title says so.
    """
    cmap = DIVERGING_CMAP if _is_delta(value) else SEQUENTIAL_CMAP
    _heatmap(ax, wide, norm, cmap, _value_label(value), annot=True, fmt=fmt, cbar=cbar)
    cols = list(wide.columns)
    for i, lang in enumerate(wide.index):
        if lang in cols:
            ax.add_patch(Rectangle((cols.index(lang), i), 1, 1, fill=False, ec="black", lw=1.2,
                                   clip_on=False))
    if sig is not None:
        for text in ax.texts:
            x, y = text.get_position()
            if sig[int(y), int(x)]:
                text.set_fontweight("bold")
            else:
                text.set_alpha(0.55)
    ax.set(xlabel="evaluated language", ylabel="deactivated neurons of")
    base = f"{_value_label(value)} after deactivation ({_KIND_LABELS.get(kind, kind)})"
    if sig is not None:
        base += "\nbold: 95% interval excludes 0"
    _title(ax, base, config, title)


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
    title: str | None = None,
) -> Axes:
    """Draw the perplexity-change matrix: rows = deactivated language, columns = evaluated.

    Accepted tables:

    * tidy, one row per (deactivated set, evaluated language), as
      :meth:`lape_utils.evaluate.PplMatrix.tidy` returns it: columns ``deactivated``
      (language code; ``""``/``"none"``/NaN for the no-intervention baseline),
      ``evaluated``, the ``value`` column (``delta_nll``, ``nll``, ``ppl``, ...) and
      ``kind`` (``"lape"``, ``"random"``, ``"none"``) or a ``row`` label to read it from.
      Several rows for one cell (e.g. random seeds) are averaged.
    * pivoted: index = row label, columns = evaluated language, as
      :meth:`~lape_utils.evaluate.PplMatrix.table` returns it. Row labels ``"zh"`` or
      ``"lape:zh"`` are LAPE rows, ``"zh (random)"`` or ``"random:zh"`` random-control rows,
      ``"none"`` the baseline.

    Values whose name starts with ``delta`` use the diverging colormap centred at 0
    (symmetric limits ``±max|value|`` unless ``vmin``/``vmax`` are given; asymmetric given
    limits keep 0 at the centre colour with a ``TwoSlopeNorm``); other values (``nll``,
    ``ppl``) the sequential one. The values are written in the cells; diagonal cells
    (deactivated = evaluated) are outlined.

    Args:
        df: The table.
        ax: Axes to draw on.
        value: Column (tidy) or quantity (pivoted) shown; also the colour-bar label.
        kind: ``"lape"`` or ``"random"`` rows (default ``"lape"``, or the only kind there).
        include_baseline: Add the ``"none"`` row on top (useful for ``nll``/``ppl``).
        vmin: Lower colour limit.
        vmax: Upper colour limit.
        fmt: Format of the written values.
        config: LapeConfig (or dict, or selection) for the title.
        title: Replace the default title.

    Returns:
        The Axes (rows top to bottom, columns left to right in the module order).

    Raises:
        ValueError: ``value`` is not in the table, ``kind`` has no rows, or the given
            limits of a difference do not straddle 0.

    """
    wide, kind = _ppl_matrix(df, value, kind, include_baseline)
    norm = _norm(wide.to_numpy(dtype=float), vmin, vmax, _is_delta(value))
    ax = _axes(ax, (1.8 + 0.7 * max(wide.shape[1], 3), 1.2 + 0.5 * max(len(wide), 3)))
    sig = None if include_baseline else _significance(df, value, kind, wide)
    _ppl_axes(ax, wide, value, kind, norm, fmt, True, config, title, sig)
    return ax


def plot_ppl_comparison(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    value: str = "delta_nll",
    axes: Sequence[Axes] | np.ndarray | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    config: Any = None,
) -> np.ndarray:
    """Draw LAPE deactivation next to its controls, on one shared colour scale.

    Args:
        df: A table with LAPE and control rows (as for :func:`plot_ppl_heatmap`), or
            ``{"lape": table, "random": table, ...}`` with one (pivoted or tidy) table per
            kind. With a tidy table holding intervals, cells whose interval excludes 0 are
            written in bold.
        value: Quantity shown.
        axes: One Axes per kind (LAPE, then each control); new figure if ``None``.
        vmin: Lower colour limit (default from all matrices, symmetric for deltas).
        vmax: Upper colour limit.
        config: LapeConfig (or dict, or selection) for the titles.

    Returns:
        Array of the Axes (LAPE, then the controls in table order: ``random``,
        ``matched``); every mesh has the same colour limits and they share one colour bar.

    """
    if isinstance(df, Mapping):
        kinds = list(df)
        mats = {k: _ppl_matrix(df[k], value, None)[0] for k in kinds}
        sigs = dict.fromkeys(kinds)
    else:
        present = [_parse_row(r)[0] for r in df["row"]] if "row" in df else []
        kinds = ["lape", *[k for k in dict.fromkeys(df.get("kind", present))
                          if k not in ("lape", "none")]]
        mats = {k: _ppl_matrix(df, value, k)[0] for k in kinds}
        sigs = {k: _significance(df, value, k, mats[k]) for k in kinds}
    allv = np.concatenate([m.to_numpy(dtype=float).ravel() for m in mats.values()])
    norm = _norm(allv, vmin, vmax, _is_delta(value))
    n_cols = max(m.shape[1] for m in mats.values())
    axes = _axes_array(axes, len(kinds),
                       ((1.5 + 0.7 * max(n_cols, 3)) * len(kinds) + 1.0, 4.2))
    for a, k in zip(axes, kinds):
        _ppl_axes(a, mats[k], value, k, norm, ".2f", False, config, None, sigs[k])
    axes[0].figure.colorbar(axes[0].collections[0], ax=list(axes), label=_value_label(value))
    return axes


# ============================================================================ steering


#: Colours of the neuron sets in steering figures (LAPE first, then the controls).
SET_COLORS: dict[str, str] = {"lape": "#1f4e9c", "random": "#e07b39", "matched": "#3a923a"}


def plot_steering_sweep(
    df: pd.DataFrame,
    axes: Sequence[Axes] | np.ndarray | None = None,
    *,
    config: Any = None,
) -> np.ndarray:
    """Steering strength against the target-language rate and against the fluency cost.

    Args:
        df: :func:`lape_utils.steering.strength_sweep` (columns ``strength``, ``neurons``,
            ``target_rate`` with optional ``target_rate_lo``/``_hi``, ``output_ppl``,
            ``output_ppl_unsteered``, and ``target``/``source``, which name the languages
            in the titles). Several rows per (set, strength) are averaged.
        axes: Two Axes; new figure if ``None``.
        config: LapeConfig (or dict, or selection) for the titles.

    Returns:
        ``[rate, cost]``: the share of answers in the target language per neuron set (one
        distinct colour each, LAPE first; the 95% Wilson interval as a band; y from 0 to
        1), and the perplexity of the answers under the unmodified model (y from 0; the
        unsteered answers' as a dashed grey line).
    """
    need = {"strength", "target_rate", "output_ppl"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ValueError(f"columns {missing} missing; the sweep has {list(df.columns)}.")
    data = df.assign(neurons=df["neurons"] if "neurons" in df else "lape")
    sets = sorted(data["neurons"].astype(str).unique(),
                  key=lambda n: (n != "lape", list(SET_COLORS).index(n) if n in SET_COLORS else 9))
    others = iter(sns.color_palette("Dark2", len(sets)).as_hex())
    palette = {n: SET_COLORS.get(n) or next(others) for n in sets}
    mean = data.groupby(["neurons", "strength"], sort=False).mean(numeric_only=True).reset_index()
    target = str(data["target"].iloc[0]) if "target" in data else None
    source = str(data["source"].iloc[0]) if "source" in data and data["source"].notna().any() \
        else None
    axes = _axes_array(axes, 2, (12.0, 3.8))
    rate, cost = axes
    _lines(rate, mean, "strength", "target_rate", "neurons", palette, marker="o", lw=1.8)
    if {"target_rate_lo", "target_rate_hi"} <= set(mean.columns):
        for name, part in mean.groupby("neurons", sort=False):
            rate.fill_between(part["strength"], part["target_rate_lo"], part["target_rate_hi"],
                              color=palette[name], alpha=0.15, lw=0)
    rate.set(ylim=(0, 1.02), xlabel="strength (× mean activation on the target)",
             ylabel=f"share of answers in {language_name(target) if target else 'the target'}")
    rate.legend(title="neurons", fontsize="small")
    _lines(cost, mean, "strength", "output_ppl", "neurons", palette, marker="s", lw=1.6)
    if "output_ppl_unsteered" in mean:
        base = float(mean["output_ppl_unsteered"].mean())
        cost.axhline(base, color="grey", ls="--", lw=1, label=f"unsteered ({base:.3g})")
    cost.set(ylim=(0, None), xlabel="strength (× mean activation on the target)",
             ylabel="perplexity of the answers (unmodified model)")
    cost.legend(title="neurons", fontsize="small")
    route = f"{source} → {target}" if source and target else (target or "")
    _title(rate, f"Steering {route}: target-language rate".strip(), config)
    _title(cost, f"Steering {route}: cost in fluency".strip(), config)
    return axes


# ============================================================================ inspection


class HTMLView:
    """HTML that Jupyter renders (``_repr_html_``) and exports as is; ``data`` is the markup.

    Text of any script is drawn by the browser, so CJK, Cyrillic or Korean contexts are
    readable where a matplotlib font would show empty boxes.
    """

    def __init__(self, data: str) -> None:
        self.data = data

    def _repr_html_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        return f"HTMLView({len(self.data)} characters of HTML)"


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
) -> HTMLView:
    """The contexts that activate a neuron most, each token shaded by the activation.

    One line per context, languages in the module order; the top token is outlined; the
    shade of every token is its activation divided by the neuron's largest (negative
    activations unshaded), in the colour of the language the neuron belongs to (hover a
    token for its value).

    Args:
        df: :func:`lape_utils.capture.top_activating_contexts` (columns ``language``,
            ``activation``, ``tokens``, ``activations``, ``center``; ``attrs`` ``layer``
            and ``neuron``).
        language: The language whose neuron this is (named in the title, sets the colour).
        n_per_language: Contexts shown per language (highest activation first).

    Returns:
        An :class:`HTMLView` titled with the layer, neuron and language.
    """
    need = {"language", "activation", "tokens", "activations", "center"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ValueError(f"columns {missing} missing; the table has {list(df.columns)}.")
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
    for lang in _language_columns(df["language"].astype(str).unique()):
        part = df[df["language"].astype(str) == lang].sort_values("activation", ascending=False)
        for _, r in part.head(n_per_language).iterrows():
            spans = "".join(_token_span(t, v, scale, rgb, i == r["center"])
                            for i, (t, v) in enumerate(zip(r["tokens"], r["activations"])))
            lines.append(
                f'<div style="margin: 2px 0"><code>{html.escape(lang)}</code> '
                f'<code>{r["activation"]:.3g}</code> {spans}</div>'
            )
    return HTMLView("\n".join(lines) + "</div>")


# ============================================================================ saving


def save_figure(
    obj: Axes | Figure | SubFigure | np.ndarray | Sequence[Axes],
    path: str | os.PathLike,
    *,
    dpi: int = 150,
    close: bool = False,
    **savefig_kwargs: Any,
) -> Path:
    """Write the figure holding ``obj`` to ``path`` (the one place that saves figures).

    The format follows the suffix (``.png``, ``.svg``, ``.pdf``); parent folders are made;
    an existing file is replaced (figures are products of a run, re-made by re-running).

    Args:
        obj: An Axes, an array/list of Axes (of one figure), or a Figure.
        path: Target file.
        dpi: Resolution of raster formats.
        close: Close the figure afterwards (frees memory in long pipelines).
        **savefig_kwargs: Passed to ``Figure.savefig`` (default ``bbox_inches="tight"``).

    Returns:
        The path written.

    """
    if isinstance(obj, (Figure, SubFigure, Axes)):
        fig = obj.get_figure(root=True)
    else:
        items = [a for a in np.asarray(obj, dtype=object).ravel() if a is not None]
        if not items or not all(isinstance(a, Axes) for a in items):
            raise TypeError(
                f"save_figure needs an Axes, Axes array or Figure, got {type(obj).__name__}."
            )
        figs = {id(a.get_figure(root=True)): a.get_figure(root=True) for a in items}
        if len(figs) != 1:
            raise ValueError(f"the Axes belong to {len(figs)} different figures; save each.")
        fig = next(iter(figs.values()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        logger.info("replacing %s", path)
    savefig_kwargs.setdefault("bbox_inches", "tight")
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    logger.info("saved figure %s", path)
    if close:
        plt.close(fig)
    return path
