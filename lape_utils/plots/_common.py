"""What the figure modules share: the colours, the style helpers and :func:`save_figure`.

Helpers draw in the house style (seaborn, language order, config in the title, fixed colour
limits); the figure modules import them from here and never from each other.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D

from lape_utils import analysis
from lape_utils.languages import LANGUAGE_ORDER, sort_languages
from lape_utils.lape import LapeConfig
from lape_utils.selection import NeuronSelection

logger = logging.getLogger(__name__)

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
