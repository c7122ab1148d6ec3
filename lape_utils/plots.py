"""Figures of the workbook: where language-specific neurons sit, how they overlap, how the
thresholds cut, how stable they are, what deactivating and steering them does.

Conventions (``shared/docs/style.md``):

* Every ``plot_*`` function takes ``ax=None`` (a new figure is made when ``None``) and
  returns the ``Axes`` it drew on; multi-panel functions return a NumPy array of ``Axes``
  (documented on each). Nothing here calls ``savefig`` or ``show``: :func:`save_figure` is
  the one place that writes a file.
* Inputs are selections or plain DataFrames with documented columns (index = layer,
  columns = language, or tidy). Languages always appear in the module-level order
  :data:`~lape_utils.languages.LANGUAGE_ORDER` and always in the same colour
  (:data:`LANGUAGE_COLORS`, :func:`language_color`).
* Counts use the sequential colormap :data:`SEQUENTIAL_CMAP`; differences (ΔNLL) use the
  diverging :data:`DIVERGING_CMAP` centred at 0. Heatmaps accept fixed ``vmin``/``vmax`` so
  that a widget redraw keeps its scale.
* When a :class:`~lape_utils.lape.LapeConfig` is known (passed, or carried by the selection)
  its :meth:`~lape_utils.lape.LapeConfig.label` is part of the title.

Heatmaps are ``pcolormesh`` meshes: ``ax.collections[0]`` is the mesh (its
``get_array()`` holds the cell values, ``get_clim()`` the colour limits).
"""

from __future__ import annotations

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
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle

from lape_utils import analysis
from lape_utils.languages import LANGUAGE_ORDER, sort_languages
from lape_utils.lape import LapeConfig, StabilityResult
from lape_utils.selection import NeuronSelection

logger = logging.getLogger(__name__)

__all__ = [
    "DIVERGING_CMAP",
    "LANGUAGE_COLORS",
    "SEQUENTIAL_CMAP",
    "language_color",
    "plot_entropy_distribution",
    "plot_language_counts",
    "plot_layer_distribution",
    "plot_layer_distribution_grid",
    "plot_overlap",
    "plot_ppl_comparison",
    "plot_ppl_heatmap",
    "plot_probability_profiles",
    "plot_published_comparison",
    "plot_stability",
    "plot_steering_sweep",
    "plot_top_contexts",
    "save_figure",
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
_ALL_COLOR = "#444444"
_ALL = "all"


def language_color(lang: str) -> str:
    """Colour of a language: :data:`LANGUAGE_COLORS`, else a fixed colour from ``tab20b``
    chosen by a hash of the code (the same in every session); dark grey for ``"all"``."""
    if lang in LANGUAGE_COLORS:
        return LANGUAGE_COLORS[lang]
    if lang == _ALL:
        return _ALL_COLOR
    return _OTHER_COLORS[zlib.crc32(lang.encode()) % len(_OTHER_COLORS)]


# ============================================================================ helpers


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _axes_array(
    axes: Sequence[Axes] | np.ndarray | None, n: int, figsize: tuple[float, float]
) -> np.ndarray:
    if axes is None:
        _, arr = plt.subplots(1, n, figsize=figsize, layout="constrained", squeeze=False)
        return arr[0]
    arr = np.asarray(axes, dtype=object).ravel()
    if arr.size != n:
        raise ValueError(f"need {n} axes for this figure, got {arr.size}.")
    return arr


def _config_label(config: Any) -> str | None:
    """Label of a LapeConfig, a config dict, or the config of a selection; None if unknown."""
    if config is None:
        return None
    if isinstance(config, NeuronSelection):
        config = config.config or None
        if config is None:
            return None
    if isinstance(config, LapeConfig):
        return config.label()
    if isinstance(config, Mapping):
        return LapeConfig.from_dict(config).label()
    if isinstance(config, str):
        return config
    raise TypeError(
        f"config must be a LapeConfig, a dict of its fields or a label string, got "
        f"{type(config).__name__}."
    )


def _title(ax: Axes, base: str | None, config: Any, title: str | None = None) -> None:
    """``title`` if given, else ``base`` with the config label on a second line."""
    if title is not None:
        ax.set_title(title)
        return
    label = _config_label(config)
    parts = [p for p in (base, label) if p]
    if parts:
        ax.set_title("\n".join(parts), fontsize="medium")


def _language_columns(columns: Sequence[str]) -> list[str]:
    """Columns in the module order, ``"all"`` last."""
    cols = [str(c) for c in columns]
    has_all = _ALL in cols
    ordered = sort_languages(c for c in cols if c != _ALL)
    return ordered + ([_ALL] if has_all else [])


def _text_color(rgba: Sequence[float]) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _heatmap(
    ax: Axes,
    values: np.ndarray,
    *,
    xlabels: Sequence[str],
    ylabels: Sequence[str],
    cmap: str,
    norm: mcolors.Normalize,
    annot: bool,
    fmt: str,
    top_down: bool,
    colorbar: bool,
    cbar_label: str | None,
    ytick_step: int = 1,
    mask: np.ndarray | None = None,
):
    """Draw a ``[rows, cols]`` matrix as a pcolormesh with cells at integer positions.

    NaN cells are not drawn (nor written); cells in ``mask`` are not coloured (the axes
    background shows) but their values are still written.
    """
    full = np.ma.masked_invalid(np.asarray(values, dtype=float))
    data = full if mask is None else np.ma.masked_where(np.asarray(mask, bool), full)
    mesh = ax.pcolormesh(data, cmap=cmap, norm=norm, edgecolors="none")
    n_rows, n_cols = data.shape
    ax.set_xticks(np.arange(n_cols) + 0.5, labels=list(xlabels))
    yt = np.arange(0, n_rows, max(1, ytick_step))
    ax.set_yticks(yt + 0.5, labels=[ylabels[i] for i in yt])
    ax.set_xlim(0, n_cols)
    ax.set_ylim(0, n_rows)
    if top_down:
        ax.invert_yaxis()
    ax.tick_params(length=0)
    if annot:
        cm = plt.get_cmap(cmap)
        for i in range(n_rows):
            for j in range(n_cols):
                v = full[i, j]
                if np.ma.is_masked(v):
                    continue
                hidden = np.ma.is_masked(data[i, j])
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="black" if hidden else _text_color(cm(norm(v))),
                )
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=cbar_label)
    return mesh


def _sequential_norm(
    values: np.ndarray, vmin: float | None, vmax: float | None, *, log: bool = False
) -> mcolors.Normalize:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if vmin is not None:
        lo = float(vmin)
    else:
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    if log:
        return mcolors.SymLogNorm(linthresh=1.0, vmin=lo, vmax=hi, base=10)
    return mcolors.Normalize(vmin=lo, vmax=hi)


def _diverging_norm(
    values: np.ndarray, vmin: float | None, vmax: float | None
) -> mcolors.Normalize:
    """Centred at 0: symmetric limits from the data (or the one limit given); both limits
    given and asymmetric -> TwoSlopeNorm with vcenter 0."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if vmin is not None and vmax is not None:
        if not vmin < 0 < vmax:
            raise ValueError(
                f"a diverging scale centred at 0 needs vmin < 0 < vmax, got vmin={vmin}, "
                f"vmax={vmax}."
            )
        if math.isclose(-vmin, vmax):
            return mcolors.Normalize(vmin=vmin, vmax=vmax)
        return mcolors.TwoSlopeNorm(vcenter=0.0, vmin=vmin, vmax=vmax)
    if vmax is not None or vmin is not None:
        m = abs(float(vmax if vmax is not None else vmin))
    else:
        m = float(np.abs(finite).max()) if finite.size else 0.0
    if m == 0 or not math.isfinite(m):
        m = 1e-3
    return mcolors.Normalize(vmin=-m, vmax=m)


def _selection_counts(data: NeuronSelection | pd.DataFrame) -> pd.DataFrame:
    if isinstance(data, NeuronSelection):
        return analysis.layer_distribution(data)
    if isinstance(data, pd.DataFrame):
        df = data.copy()
        df.columns = [str(c) for c in df.columns]
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
    log: bool = False,
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
        log: Symmetric-log colour scale (counts are often dominated by a few layers).
        annot: Write the counts in the cells (default: when there are at most 200 cells).
        colorbar: Add a colour bar to the heatmap.
        title: Replace the default title.

    Returns:
        The Axes.
    """
    counts = _selection_counts(data)
    if config is None and isinstance(data, NeuronSelection):
        config = data
    langs = list(counts.columns)
    layers = [str(x) for x in counts.index]
    if kind == "heatmap":
        ax = _axes(ax, (1.0 + 0.65 * max(len(langs), 2), max(3.0, 1.0 + 0.17 * len(layers))))
        norm = _sequential_norm(counts.to_numpy(), vmin, vmax, log=log)
        if annot is None:
            annot = counts.size <= 200
        _heatmap(
            ax,
            counts.to_numpy(),
            xlabels=langs,
            ylabels=layers,
            cmap=SEQUENTIAL_CMAP,
            norm=norm,
            annot=annot,
            fmt=".0f" if np.issubdtype(counts.to_numpy().dtype, np.integer) else ".2g",
            top_down=False,
            colorbar=colorbar,
            cbar_label="neurons",
            ytick_step=max(1, math.ceil(len(layers) / 20)),
        )
        ax.set_xlabel("language")
        ax.set_ylabel("layer")
        _title(ax, "Language-specific neurons per layer", config, title)
        return ax
    if kind not in ("lines", "share"):
        raise ValueError(f"kind must be 'heatmap', 'lines' or 'share', got {kind!r}.")
    ax = _axes(ax, (7.0, 3.5))
    if kind == "share":
        if n_neurons is None:
            if not isinstance(data, NeuronSelection):
                raise ValueError(
                    "kind='share' with a DataFrame needs n_neurons= (FFN neurons per layer)."
                )
            n_neurons = data.n_neurons
        values = counts * (100.0 / n_neurons)
        ylabel = "% of the layer's neurons"
    else:
        values = counts
        ylabel = "neurons"
    x = np.asarray(counts.index, dtype=float)
    for lang in langs:
        ax.plot(x, values[lang].to_numpy(), label=lang, color=language_color(lang), lw=1.6)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(title="language", fontsize="small", ncols=2 if len(langs) > 5 else 1)
    _title(ax, "Language-specific neurons per layer", config, title)
    return ax


def plot_layer_distribution_grid(
    selections: Mapping[str, NeuronSelection],
    *,
    kind: Literal["heatmap", "lines", "share"] = "lines",
    ncols: int = 4,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> np.ndarray:
    """:func:`plot_layer_distribution` of several selections (e.g. the paper's seven sets),
    one panel each, titled by name.

    Args:
        selections: ``{name: selection}``, e.g. from
            :func:`lape_utils.analysis.published_sets`.
        kind: As in :func:`plot_layer_distribution`.
        ncols: Panels per row.
        axes: Axes to draw on (at least ``len(selections)``); a new figure if ``None``.

    Returns:
        Flat array of the Axes drawn on (one per selection, in the mapping's order); unused
        panels of a new grid are hidden.
    """
    n = len(selections)
    if n == 0:
        raise ValueError("no selections to draw.")
    if axes is None:
        ncols = max(1, min(ncols, n))
        nrows = math.ceil(n / ncols)
        fig, grid = plt.subplots(
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
        plot_layer_distribution(
            sel, ax=ax, kind=kind, title=name, colorbar=kind == "heatmap", annot=False
        )
        if kind != "heatmap" and ax.get_legend() is not None and ax is not flat[0]:
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
    """
    if isinstance(data, NeuronSelection):
        counts = analysis.layer_distribution(data).sum(axis=0)
        n_total = data.n_layers * data.n_neurons
        if config is None:
            config = data
    elif isinstance(data, pd.DataFrame):
        counts = _selection_counts(data).sum(axis=0)
    elif isinstance(data, pd.Series):
        counts = data.copy()
        counts.index = [str(i) for i in counts.index]
        counts = counts[_language_columns(counts.index)]
    else:
        raise TypeError(f"expected a selection, DataFrame or Series, got {type(data).__name__}.")
    if percent:
        if not n_total:
            raise ValueError("percent=True needs n_total= (L·D) unless data is a selection.")
        values = counts.to_numpy(dtype=float) * 100.0 / n_total
        ylabel, fmt = "% of all FFN neurons", "{:.3f}"
    else:
        values = counts.to_numpy(dtype=float)
        ylabel, fmt = "neurons", "{:,.0f}"
    langs = list(counts.index)
    ax = _axes(ax, (1.2 + 0.6 * max(len(langs), 3), 3.5))
    bars = ax.bar(langs, values, color=[language_color(x) for x in langs])
    if annotate:
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize="small", padding=2)
        ax.margins(y=0.12)
    ax.set_xlabel("language")
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
        counts, jac = analysis.overlap(data)
        table = counts if metric == "count" else jac
        if config is None:
            config = data
    else:
        table = data.copy()
        table.index = [str(i) for i in table.index]
        table.columns = [str(c) for c in table.columns]
        order = _language_columns(table.columns)
        table = table.reindex(index=_language_columns(table.index), columns=order)
    values = table.to_numpy(dtype=float)
    diag = np.array(
        [[r == c for c in table.columns] for r in table.index], dtype=bool
    ).reshape(values.shape)
    mask = None if colour_diagonal else diag
    coloured = values if mask is None else values[~mask]
    norm = _sequential_norm(coloured, vmin, vmax)
    ax = _axes(ax, (1.5 + 0.6 * max(len(table.columns), 3), 1.0 + 0.55 * max(len(table), 3)))
    ax.set_facecolor("#e6e6e6")
    _heatmap(
        ax,
        values,
        xlabels=list(table.columns),
        ylabels=list(table.index),
        cmap=SEQUENTIAL_CMAP,
        norm=norm,
        annot=annot,
        fmt=".2f" if metric == "jaccard" else ".0f",
        top_down=True,
        colorbar=colorbar,
        cbar_label="shared neurons" if metric == "count" else "Jaccard",
        mask=mask,
    )
    ax.set_xlabel("language")
    ax.set_ylabel("language")
    base = "Shared neurons" if metric == "count" else "Overlap (Jaccard)"
    _title(ax, base, config, title)
    return ax


# ============================================================================ thresholds


def plot_entropy_distribution(
    table: analysis.EntropyTable,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    which: Literal["entropy", "probability", "both"] = "entropy",
    bins: int = 60,
    log: bool = True,
    title: str | None = None,
) -> Axes | np.ndarray:
    """How the thresholds cut: the entropy of neurons passing the filter with the selection
    cut-off, and/or the pooled activation probabilities with ``tau`` and ``bar``.

    Marked lines (``ax.get_lines()``, each with a ``label``):

    * entropy panel: ``"selection cut-off H = …"`` at :attr:`EntropyTable.cutoff` and
      ``"log K = …"`` (the entropy of a neuron equally active in all languages);
    * probability panel: ``"filter tau = …"`` and ``"bar = …"``.

    Args:
        table: From :func:`lape_utils.analysis.entropy_table`.
        ax: One Axes (``which`` = ``"entropy"`` or ``"probability"``) or two (``"both"``);
            new figure if ``None``.
        which: Which panel(s).
        bins: Histogram bins.
        log: Logarithmic count axis.
        title: Replace the default title (of every panel).

    Returns:
        The Axes, or an array of two Axes ``[entropy, probability]`` for ``"both"``.
    """
    if which == "both":
        axes = _axes_array(ax, 2, (11.0, 3.8))
        plot_entropy_distribution(table, axes[0], which="entropy", bins=bins, log=log, title=title)
        plot_entropy_distribution(
            table, axes[1], which="probability", bins=bins, log=log, title=title
        )
        return axes
    if which not in ("entropy", "probability"):
        raise ValueError(f"which must be 'entropy', 'probability' or 'both', got {which!r}.")
    ax = _axes(ax, (6.0, 3.8))
    if which == "entropy":
        passing = table.passing()
        h = passing["entropy"].to_numpy()
        top = max(table.max_entropy, float(h.max()) if h.size else 0.0)
        edges = np.linspace(0.0, top, bins + 1)
        ax.hist(h, bins=edges, color="#bbbbbb", label=f"passing the filter ({len(h):,})", log=log)
        sel = passing.loc[passing["selected"], "entropy"].to_numpy()
        ax.hist(sel, bins=edges, color="#d62728", label=f"selected ({len(sel):,})", log=log)
        if math.isfinite(table.cutoff):
            ax.axvline(
                table.cutoff, color="black", ls="--", lw=1.2,
                label=f"selection cut-off H = {table.cutoff:.3g}",
            )
        ax.axvline(
            table.max_entropy, color="grey", ls=":", lw=1.2,
            label=f"log K = {table.max_entropy:.3g}",
        )
        ax.set_xlabel("LAPE entropy H (nats)")
        ax.set_ylabel("neurons")
        base = f"Entropy of the {table.n_candidates:,} neurons passing the filter"
    else:
        p = table.probabilities()
        ax.hist(p, bins=bins, color="#7f7f7f", log=log, label=f"all P ({p.size:,} values)")
        ax.axvline(
            table.tau, color="#1f77b4", ls="--", lw=1.4,
            label=f"filter tau = {table.tau:.3g} (q{table.config.filter_rate:g})",
        )
        ax.axvline(
            table.bar, color="#d62728", ls=":", lw=1.6,
            label=f"bar = {table.bar:.3g} (q{table.config.activation_bar_ratio:g})",
        )
        ax.set_xlabel("activation probability P (pooled over layers, neurons, languages)")
        ax.set_ylabel("values")
        base = "Activation probability and thresholds"
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
    colorbar: bool = True,
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
        colorbar: Add a colour bar (heatmap).
        title: Replace the default title.

    Returns:
        The Axes.
    """
    df = profiles.copy()
    df.columns = [str(c) for c in df.columns]
    langs = _language_columns(df.columns)
    df = df[langs]
    if isinstance(df.index, pd.MultiIndex) and df.index.nlevels == 2:
        labels = [f"L{a}.{b}" for a, b in df.index]
    else:
        labels = [str(i) for i in df.index]
    base = (
        f"Activation probability of {len(df)} {language} neurons"
        if language
        else f"Activation probability of {len(df)} neurons"
    )
    if kind == "heatmap":
        ax = _axes(ax, (1.5 + 0.6 * max(len(langs), 3), max(2.5, 1.0 + 0.22 * len(df))))
        values = df.to_numpy(dtype=float)
        norm = _sequential_norm(values, vmin, vmax)
        mesh = _heatmap(
            ax,
            values,
            xlabels=langs,
            ylabels=labels,
            cmap=SEQUENTIAL_CMAP,
            norm=norm,
            annot=values.size <= 150,
            fmt=".2f",
            top_down=True,
            colorbar=False,
            cbar_label=None,
            ytick_step=max(1, math.ceil(len(df) / 40)),
        )
        if colorbar:
            cb = ax.figure.colorbar(mesh, ax=ax, label="activation probability P")
            if bar is not None:
                cb.ax.axhline(bar, color="cyan", lw=2)
        ax.set_xlabel("language")
        ax.set_ylabel("neuron (layer.index)")
    elif kind == "lines":
        ax = _axes(ax, (1.5 + 0.7 * max(len(langs), 3), 3.8))
        color = language_color(language) if language else "#1f77b4"
        x = np.arange(len(langs))
        alpha = max(0.15, min(0.9, 6.0 / max(len(df), 1)))
        for row in df.to_numpy(dtype=float):
            ax.plot(x, row, color=color, alpha=alpha, lw=1.2, marker="o", ms=3)
        if bar is not None:
            ax.axhline(bar, color="black", ls=":", lw=1.2, label=f"bar = {bar:.3g}")
            ax.legend(fontsize="small")
        ax.set_xticks(x, labels=langs)
        ax.set_xlabel("language")
        ax.set_ylabel("activation probability P")
        ax.set_ylim(bottom=0)
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
            reference set, error bar = standard deviation; y from 0 to 1.
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
        table = table.copy()
        table.index = [str(i) for i in table.index]
        table = table.loc[_language_columns(table.index)]
        langs = list(table.index)
        mean = table["mean_jaccard"].to_numpy(dtype=float)
        err = table["std_jaccard"].to_numpy(dtype=float) if "std_jaccard" in table else None
        ax = _axes(ax, (1.5 + 0.6 * max(len(langs), 3), 3.5))
        ax.bar(
            langs, mean, yerr=None if err is None else np.nan_to_num(err),
            color=[language_color(x) for x in langs], capsize=3,
        )
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("language")
        ax.set_ylabel("mean Jaccard with the reference set")
        n = f" over {result.n_replicates} replicates" if isinstance(result, StabilityResult) else ""
        _title(ax, f"Stability of the selection{n}", config, title)
        return ax
    if kind != "frequency":
        raise ValueError(f"kind must be 'frequency' or 'jaccard', got {kind!r}.")
    if isinstance(result, StabilityResult):
        freq = analysis.selection_frequencies(result)
        n_rep = result.n_replicates
    else:
        freq = result
        if not {"language", "frequency"} <= set(freq.columns):
            raise ValueError(
                f"a frequency table needs 'language' and 'frequency' columns; got "
                f"{list(freq.columns)}."
            )
        vals = freq["frequency"].to_numpy(dtype=float)
        vals = vals[vals > 0]
        if n_replicates is not None:
            n_rep = int(n_replicates)
        else:
            n_rep = int(round(1.0 / vals.min())) if vals.size else 1
    edges = (np.arange(n_rep + 1) + 0.5) / n_rep  # one bin per possible k/n_rep, k=1..n_rep
    centres = np.arange(1, n_rep + 1) / n_rep
    ax = _axes(ax, (6.0, 3.5))
    for lang in _language_columns(freq["language"].astype(str).unique()):
        f = freq.loc[freq["language"].astype(str) == lang, "frequency"].to_numpy(dtype=float)
        hist, _ = np.histogram(f, bins=edges)
        ax.plot(centres, hist, marker="o", ms=4, color=language_color(lang), label=lang, lw=1.4)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("selection frequency over bootstrap replicates")
    ax.set_ylabel("neurons (selected at least once)")
    ax.legend(title="language", fontsize="small", ncols=2)
    _title(ax, f"Selection frequency ({n_rep} replicates)", config, title)
    return ax


# ============================================================================ published


def plot_published_comparison(
    published: Mapping[str, NeuronSelection],
    ours: NeuronSelection | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    kind: Literal["depth", "regions", "both"] = "both",
    ours_name: str = "ours",
    bottom: float = 0.1,
    top: float = 0.25,
    title: str | None = None,
) -> Axes | np.ndarray:
    """Our selection next to the paper's published sets: where in the network they sit.

    Args:
        published: ``{model name: selection}``, e.g. from
            :func:`lape_utils.analysis.published_sets`.
        ours: Our selection (drawn first, black), or ``None``.
        ax: One Axes for ``"depth"``/``"regions"``, two for ``"both"``; new figure if
            ``None``.
        kind: ``"depth"``: one line per model, x = relative depth (0 = first layer, 1 =
            last), y = density of its distinct selected neurons (fraction per layer × L, so
            1 = uniform whatever the depth); the bottom and top regions are shaded (at the
            fractions ``bottom`` and ``1 - top``; the exact layers per model are those of
            :func:`lape_utils.analysis.region_layers`).
            ``"regions"``: one horizontal stacked bar per model (ours on top) of the shares in
            the bottom / middle / top layers (:func:`lape_utils.analysis.layer_region_shares`).
            ``"both"``: the two side by side.
        ours_name: Label of our selection.
        bottom: Fraction of layers counted as bottom.
        top: Fraction of layers counted as top.
        title: Replace the default title.

    Returns:
        The Axes, or an array ``[depth, regions]`` for ``"both"``.
    """
    if kind == "both":
        axes = _axes_array(ax, 2, (13.0, 4.2))
        for a, k in zip(axes, ("depth", "regions")):
            plot_published_comparison(
                published, ours, a, kind=k, ours_name=ours_name, bottom=bottom, top=top,
                title=title,
            )
        return axes
    sets: dict[str, NeuronSelection] = {}
    if ours is not None:
        sets[ours_name] = ours
    sets.update(published)
    if not sets:
        raise ValueError("nothing to compare: no published set and no selection of ours.")
    palette = plt.get_cmap("Dark2").colors
    model_colors = {}
    i = 0
    for name in sets:
        if ours is not None and name == ours_name:
            model_colors[name] = "black"
        else:
            model_colors[name] = mcolors.to_hex(palette[i % len(palette)])
            i += 1
    config = ours if ours is not None else None
    if kind == "depth":
        ax = _axes(ax, (7.0, 4.2))
        ax.axvspan(0, bottom, color="#eeeeee", zorder=0)
        ax.axvspan(1 - top, 1, color="#eeeeee", zorder=0)
        for name, sel in sets.items():
            prof = analysis.depth_profile(sel)
            ax.plot(
                prof["relative_depth"], prof["density"], label=name, color=model_colors[name],
                lw=2.4 if name == ours_name and ours is not None else 1.3,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("relative depth (0 = first layer, 1 = last)")
        ax.set_ylabel("density of selected neurons (1 = uniform)")
        ax.legend(fontsize="small")
        _title(ax, "Where the neurons sit", config, title)
        return ax
    if kind != "regions":
        raise ValueError(f"kind must be 'depth', 'regions' or 'both', got {kind!r}.")
    table = analysis.compare_with_published(
        ours, published, ours_name=ours_name, bottom=bottom, top=top
    )
    ax = _axes(ax, (7.0, 1.2 + 0.45 * len(table)))
    y = np.arange(len(table))
    left = np.zeros(len(table))
    region_colors = {"bottom": "#4c72b0", "middle": "#cccccc", "top": "#dd8452"}
    labels = {
        "bottom": f"bottom {bottom:.0%} of layers",
        "middle": "middle",
        "top": f"top {top:.0%} of layers",
    }
    for region in analysis.REGIONS:
        w = table[region].to_numpy(dtype=float)
        bars = ax.barh(y, w, left=left, color=region_colors[region], label=labels[region])
        ax.bar_label(
            bars, labels=[f"{v:.0%}" if v >= 0.06 else "" for v in w], label_type="center",
            fontsize="small",
        )
        left += np.nan_to_num(w)
    ax.set_yticks(y, labels=list(table.index))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the selected neurons")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3)
    _title(ax, "Share of the neurons in each layer region", config, title)
    return ax


# ============================================================================ deactivation

_NONE_LABELS = {"", "none", "nan"}


def _parse_row(label: str) -> tuple[str, str]:
    """Row label -> (kind, language): ``"none"``, ``"zh"``, ``"zh (random)"``,
    ``"lape:zh"``, ``"random:zh"``."""
    s = str(label).strip()
    if s.lower() in _NONE_LABELS:
        return "none", ""
    if ":" in s:
        kind, lang = s.split(":", 1)
        return kind.strip(), lang.strip()
    if s.endswith("(random)"):
        return "random", s[: -len("(random)")].strip()
    return "lape", s


def _ppl_long(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """Any accepted perplexity table -> long frame (kind, deactivated, evaluated, value)."""
    if {"deactivated", "evaluated"} <= set(df.columns):
        if value not in df.columns:
            raise ValueError(
                f"value {value!r} is not a column of the table; it has {list(df.columns)}."
            )
        deact = df["deactivated"].fillna("").astype(str)
        if "kind" in df.columns:
            kind = df["kind"].astype(str)
        elif "row" in df.columns:
            kind = df["row"].map(lambda r: _parse_row(r)[0])
        else:
            kind = pd.Series("lape", index=df.index)
        kind = kind.where(~deact.str.lower().isin(_NONE_LABELS), "none")
        return pd.DataFrame(
            {
                "kind": kind.to_numpy(),
                "deactivated": deact.to_numpy(),
                "evaluated": df["evaluated"].astype(str).to_numpy(),
                "value": df[value].to_numpy(dtype=float),
            }
        )
    # pivoted: index = row label, columns = evaluated language
    long = df.copy()
    long.index = [str(i) for i in long.index]
    long.columns = [str(c) for c in long.columns]
    long.index.name = "row"
    long = long.reset_index().melt(id_vars="row", var_name="evaluated", value_name="value")
    parsed = long["row"].map(_parse_row)
    return pd.DataFrame(
        {
            "kind": parsed.map(lambda t: t[0]),
            "deactivated": parsed.map(lambda t: t[1]),
            "evaluated": long["evaluated"],
            "value": long["value"].astype(float),
        }
    )


def _ppl_matrix(
    df: pd.DataFrame, value: str, kind: str | None, include_baseline: bool
) -> tuple[pd.DataFrame, str]:
    """Wide matrix (index deactivated, columns evaluated, module order) and its kind."""
    long = _ppl_long(df, value)
    kinds = [k for k in long["kind"].unique() if k != "none"]
    if kind is None:
        kind = "lape" if "lape" in kinds else (kinds[0] if len(kinds) == 1 else None)
        if kind is None:
            raise ValueError(f"the table holds several kinds {kinds}; choose one with kind=.")
    if kind not in kinds:
        raise ValueError(f"no rows of kind {kind!r} in the table; it has {kinds}.")
    part = long[long["kind"] == kind]
    wide = part.pivot_table(
        index="deactivated", columns="evaluated", values="value", aggfunc="mean", dropna=False
    )
    rows = sort_languages(wide.index)
    cols = sort_languages(long["evaluated"].unique())
    wide = wide.reindex(index=rows, columns=cols)
    if include_baseline:
        base = long[long["kind"] == "none"]
        if base.empty:
            raise ValueError("include_baseline=True but the table has no 'none' row.")
        b = base.groupby("evaluated")["value"].mean().reindex(cols)
        wide = pd.concat([pd.DataFrame([b.to_numpy()], index=["none"], columns=cols), wide])
    wide.index.name = "deactivated"
    wide.columns.name = "evaluated"
    return wide, kind


def _is_delta(value: str) -> bool:
    return value.startswith("delta") or value.startswith("Δ")


def plot_ppl_heatmap(
    df: pd.DataFrame,
    ax: Axes | None = None,
    value: str = "delta_nll",
    *,
    kind: str | None = None,
    include_baseline: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    annot: bool = True,
    fmt: str = ".2f",
    colorbar: bool = True,
    config: Any = None,
    title: str | None = None,
) -> Axes:
    """The perplexity-change matrix: rows = deactivated language, columns = evaluated one.

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
    ``ppl``) the sequential one. Diagonal cells (deactivated = evaluated) are outlined.

    Args:
        df: The table.
        ax: Axes to draw on.
        value: Column (tidy) or quantity (pivoted) shown; also the colour-bar label.
        kind: ``"lape"`` or ``"random"`` rows (default ``"lape"``, or the only kind there).
        include_baseline: Add the ``"none"`` row on top (useful for ``nll``/``ppl``).
        vmin: Lower colour limit.
        vmax: Upper colour limit.
        annot: Write the values in the cells.
        fmt: Format of the written values.
        colorbar: Add a colour bar.
        config: LapeConfig (or dict, or selection) for the title.
        title: Replace the default title.

    Returns:
        The Axes (rows top to bottom, columns left to right in the module order).
    """
    wide, kind_name = _ppl_matrix(df, value, kind, include_baseline)
    values = wide.to_numpy(dtype=float)
    delta = _is_delta(value)
    if delta:
        norm, cmap = _diverging_norm(values, vmin, vmax), DIVERGING_CMAP
    else:
        norm, cmap = _sequential_norm(values, vmin, vmax), SEQUENTIAL_CMAP
    n_rows, n_cols = values.shape
    ax = _axes(ax, (1.8 + 0.7 * max(n_cols, 3), 1.2 + 0.5 * max(n_rows, 3)))
    _heatmap(
        ax,
        values,
        xlabels=list(wide.columns),
        ylabels=list(wide.index),
        cmap=cmap,
        norm=norm,
        annot=annot,
        fmt=fmt,
        top_down=True,
        colorbar=colorbar,
        cbar_label=value.replace("delta_", "Δ"),
    )
    cols = list(wide.columns)
    for i, lang in enumerate(wide.index):
        if lang in cols:
            ax.add_patch(
                Rectangle((cols.index(lang), i), 1, 1, fill=False, ec="black", lw=1.2)
            )
    ax.set_xlabel("evaluated language")
    ax.set_ylabel("deactivated neurons of")
    label = {"lape": "LAPE neurons", "random": "random control"}.get(kind_name, kind_name)
    base = f"{value.replace('delta_', 'Δ')} after deactivation" + (f" ({label})" if label else "")
    _title(ax, base, config, title)
    return ax


def plot_ppl_comparison(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    value: str = "delta_nll",
    axes: Sequence[Axes] | np.ndarray | None = None,
    *,
    kinds: Sequence[str] = ("lape", "random"),
    vmin: float | None = None,
    vmax: float | None = None,
    annot: bool = True,
    config: Any = None,
) -> np.ndarray:
    """LAPE deactivation next to the random control, on one shared colour scale.

    Args:
        df: A table with both kinds (as for :func:`plot_ppl_heatmap`), or
            ``{kind: table}`` with one (pivoted or tidy) table per kind.
        value: Quantity shown.
        axes: Two (``len(kinds)``) Axes; new figure if ``None``.
        kinds: Which kinds, left to right.
        vmin: Lower colour limit (default from both matrices, symmetric for deltas).
        vmax: Upper colour limit.
        annot: Write the values in the cells.
        config: LapeConfig (or dict, or selection) for the titles.

    Returns:
        Array of the Axes, one per kind; both meshes have the same colour limits and share
        one colour bar.
    """
    kinds = list(kinds)
    if isinstance(df, Mapping):
        tables = {k: df[k] for k in kinds}
        mats = {k: _ppl_matrix(tables[k], value, None, False)[0] for k in kinds}
    else:
        tables = {k: df for k in kinds}
        mats = {k: _ppl_matrix(df, value, k, False)[0] for k in kinds}
    allv = np.concatenate([m.to_numpy(dtype=float).ravel() for m in mats.values()])
    if _is_delta(value):
        norm = _diverging_norm(allv, vmin, vmax)
    else:
        norm = _sequential_norm(allv, vmin, vmax)
    lo, hi = norm.vmin, norm.vmax
    n_cols = max(m.shape[1] for m in mats.values())
    axes = _axes_array(axes, len(kinds), ((1.5 + 0.7 * max(n_cols, 3)) * len(kinds) + 1.0, 4.2))
    for a, k in zip(axes, kinds):
        plot_ppl_heatmap(
            tables[k], a, value, kind=k if not isinstance(df, Mapping) else None,
            vmin=lo, vmax=hi, annot=annot, colorbar=False, config=config,
        )
        if isinstance(df, Mapping):  # kind came from the mapping, not the table
            lab = {"lape": "LAPE neurons", "random": "random control"}.get(k, k)
            _title(a, f"{value.replace('delta_', 'Δ')} after deactivation ({lab})", config)
    mesh = axes[0].collections[0]
    axes[0].figure.colorbar(mesh, ax=list(axes), label=value.replace("delta_", "Δ"))
    return axes


# ============================================================================ steering


def plot_steering_sweep(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    x: str = "strength",
    target: str = "target_rate",
    source: str | None = "source_rate",
    cost: str | None = None,
    by: str | None = None,
    cost_label: str | None = None,
    config: Any = None,
    title: str | None = None,
) -> Axes:
    """Steering strength against how often the output is in the target language, and what
    it costs.

    Expected columns (as :func:`lape_utils.steer.strength_sweep` returns them):
    ``strength``; ``target_rate`` (share of outputs in the target language, 0..1);
    optionally ``source_rate``; a cost column; optionally a grouping column such as
    ``neurons`` (``"lape"``/``"random"``) or ``mode``. Several rows per (group, strength)
    are averaged.

    The rates are drawn on the left axis (0..1; target solid with circles, source dashed),
    the cost on a second y axis on the right (dotted, squares): ``ax.right_ax`` (the pandas
    convention). Groups get the line colours of the ``tab10`` cycle (LAPE first).

    Args:
        df: The sweep.
        ax: Axes to draw on.
        x: Strength column.
        target: Target-rate column.
        source: Source-rate column (skipped when absent, ``None`` or all NaN).
        cost: Cost column; default the first present of ``"cost"``, ``"drift"`` (100 −
            chrF to the unsteered answer), ``"output_ppl"``. ``None`` and none present: no
            right axis.
        by: Grouping column; default ``"neurons"`` when present.
        cost_label: y label of the cost axis (default the column name).
        config: LapeConfig (or dict, or selection) for the title.
        title: Replace the default title.

    Returns:
        The rate Axes; the cost axis is ``ax.right_ax`` (absent without a cost column).
    """
    for col in (x, target):
        if col not in df.columns:
            raise ValueError(f"column {col!r} missing; the sweep has {list(df.columns)}.")
    if cost is None:
        cost = next((c for c in ("cost", "drift", "output_ppl") if c in df.columns), None)
    elif cost not in df.columns:
        raise ValueError(f"cost column {cost!r} missing; the sweep has {list(df.columns)}.")
    if by is None and "neurons" in df.columns:
        by = "neurons"
    if source is not None and (source not in df.columns or df[source].isna().all()):
        source = None
    cols = [c for c in (target, source, cost) if c]
    groups = [(None, df)] if by is None else list(df.groupby(by, sort=False))
    if by is not None:
        groups.sort(key=lambda g: (str(g[0]) != "lape", str(g[0]) != "random"))
    ax = _axes(ax, (6.5, 3.8))
    right = ax.twinx() if cost else None
    cycle = plt.get_cmap("tab10").colors
    for i, (name, part) in enumerate(groups):
        agg = part.groupby(x)[cols].mean().sort_index()
        color = cycle[i % len(cycle)]
        suffix = f" ({name})" if name is not None else ""
        ax.plot(agg.index, agg[target], color=color, marker="o", lw=1.8, label=f"{target}{suffix}")
        if source:
            ax.plot(
                agg.index, agg[source], color=color, ls="--", marker="v", lw=1.2,
                label=f"{source}{suffix}",
            )
        if right is not None:
            right.plot(
                agg.index, agg[cost], color=color, ls=":", marker="s", lw=1.2,
                label=f"{cost}{suffix}",
            )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(x)
    ax.set_ylabel("share of outputs in the language")
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel(cost_label or cost)
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
        ax.right_ax = right
    ax.legend(handles, labels, fontsize="small", loc="best")
    _title(ax, "Steering: strength sweep", config, title)
    return ax


# ============================================================================ inspection


def _window(context: str, token: str, width: int) -> str:
    """Whitespace-collapsed context, the token's first occurrence marked «…», cut to about
    ``width`` characters around it."""
    text = " ".join(str(context).split())
    tok = str(token).strip()
    pos = text.find(tok) if tok else -1
    if pos >= 0:
        text = f"{text[:pos]}«{tok}»{text[pos + len(tok):]}"
    if len(text) <= width:
        return text
    if pos < 0:
        return text[: width - 1] + "…"
    start = max(0, min(pos - width // 2, len(text) - width))
    out = text[start : start + width]
    return ("…" if start > 0 else "") + out + ("…" if start + width < len(text) else "")


def plot_top_contexts(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    n_per_language: int = 5,
    max_context: int = 70,
    title: str | None = None,
) -> Axes:
    """A table of the tokens and contexts that activate a neuron most, per language.

    Args:
        df: Columns ``language``, ``token``, ``context`` (text around the token) and
            ``activation``; optional ``layer`` and ``neuron`` (named in the title when they
            hold one value each).
        ax: Axes to draw on (its frame is hidden).
        n_per_language: Rows kept per language (highest activation first).
        max_context: Characters of context shown: a window around the token's first
            occurrence, which is marked ``«token»`` (whitespace collapsed).
        title: Replace the default title.

    Returns:
        The Axes; ``ax.tables[0]`` has a header row (``language``, ``activation``,
        ``token``, ``context``) then the rows, languages in the module order, the language
        cell in the language's colour.
    """
    need = {"language", "token", "context", "activation"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ValueError(f"columns {missing} missing; the table has {list(df.columns)}.")
    rows = []
    for lang in _language_columns(df["language"].astype(str).unique()):
        part = df[df["language"].astype(str) == lang].sort_values("activation", ascending=False)
        for _, r in part.head(n_per_language).iterrows():
            rows.append(
                [
                    lang,
                    f"{float(r['activation']):.3g}",
                    repr(str(r["token"]))[1:-1],
                    _window(r["context"], r["token"], max_context),
                ]
            )
    ax = _axes(ax, (11.0, 0.7 + 0.26 * (max(len(rows), 1) + 1)))
    ax.axis("off")
    where = ""
    if {"layer", "neuron"} <= set(df.columns) and len(df):
        if df["layer"].nunique() == 1 and df["neuron"].nunique() == 1:
            where = f" of neuron {int(df['layer'].iloc[0])}.{int(df['neuron'].iloc[0])}"
    if not rows:
        ax.text(0.5, 0.5, "no contexts", ha="center", va="center", transform=ax.transAxes)
        _title(ax, f"Top-activating contexts{where}", None, title)
        return ax
    header = ["language", "activation", "token", "context"]
    table = ax.table(
        cellText=rows,
        colLabels=header,
        bbox=(0.0, 0.0, 1.0, 1.0),
        cellLoc="left",
        colLoc="left",
        colWidths=[0.08, 0.09, 0.12, 0.71],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (i, j), cell in table.get_celld().items():
        cell.PAD = 0.02 if j == 3 else 0.08  # padding is a fraction of the cell's width
        if i == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#eeeeee")
        elif j == 0:
            cell.set_facecolor(mcolors.to_rgba(language_color(rows[i - 1][0]), 0.35))
    _title(ax, f"Top-activating contexts{where}", None, title)
    return ax


# ============================================================================ saving


def _root_figure(obj: Any) -> Figure:
    fig = obj
    while not isinstance(fig, Figure):
        fig = fig.figure
    return fig


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
        fig = _root_figure(obj)
    else:
        items = [a for a in np.asarray(obj, dtype=object).ravel() if a is not None]
        if not items or not all(isinstance(a, Axes) for a in items):
            raise TypeError(
                f"save_figure needs an Axes, Axes array or Figure, got {type(obj).__name__}."
            )
        figs = {id(_root_figure(a)): _root_figure(a) for a in items}
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
