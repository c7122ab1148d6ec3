"""Figures of causal evidence: what deactivating or steering neurons does, next to controls.

Differences (ΔNLL) use the diverging palette centred at 0, one scale shared across panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from lape_utils.languages import language_name, sort_languages

from ._common import (
    DIVERGING_CMAP,
    SEQUENTIAL_CMAP,
    SET_COLORS,
    _axes_array,
    _band,
    _heatmap,
    _lines,
    _log_x,
    _long,
    _norm,
    _require,
    _title,
    language_color,
)

__all__ = [
    "plot_ppl_comparison",
    "plot_ppl_heatmap",
    "plot_steering_sweep",
    "plot_threshold_effect",
]


# ============================================================================ thresholds


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
