"""Interactive panels (ipywidgets 8): the threshold explorer and the steering panel.

Two panels, each a thin layer of widgets over plain functions that do the work and are
tested without a browser:

* :func:`threshold_explorer` re-identifies language-specific neurons from cached
  :class:`~lape_utils.stats.ActivationStats` whenever a threshold slider or the language
  picker changes (:func:`reidentify`), and redraws the per-language counts
  (:func:`counts_table`, :func:`render_counts_html`), the layer heatmap, the overlap
  heatmap and the per-language bars with colour limits fixed when the panel is built, so
  the scale does not jump. The current selection can be saved (:func:`save_selection`).
* :func:`steering_panel` generates, on a button only, an unsteered and a steered answer
  side by side with their detected language and confidence (:func:`run_steering`, which
  calls :func:`lape_utils.steering.steer`; no generation code lives here).

Cheap work is live, expensive work waits for a button: sliders use
``continuous_update=False`` (one update when the slider is released, or per arrow key),
generation runs only on *Generate*. Bad input (a threshold the config rejects, fewer than
two languages, an empty prompt, a language missing from the neuron set...) is shown as a
message in the panel, never as a traceback.

Speed: re-identification is :func:`lape_utils.lape.identify` (milliseconds to tens of
milliseconds). The redraw keeps one matplotlib figure (no pyplot, Agg canvas): axes,
ticks, titles and colour bars are drawn once into a cached background, and each update
only changes the data of the meshes, bars and labels, restores the background, draws those
artists and encodes the PNG shown in an ``ipywidgets.Image``. Measured by
``benchmarks/bench_widgets.py``.

Each panel has a static fallback that survives export of the executed notebook to HTML
(widgets need a live kernel or saved widget state): :meth:`ExplorerPanel.static_figure` /
:meth:`ExplorerPanel.display_static` (full figure with numbers in the cells, plus the counts
table) and :meth:`SteeringPanel.static_table` / :meth:`SteeringPanel.display_static` (the
answers generated so far).

Typical notebook cells::

    from lape_utils.widgets import threshold_explorer
    explorer = threshold_explorer(stats, config=config, save_dir=CACHE_DIR / "selections")
    explorer                    # the live panel
    explorer.display_static()   # the static copy (figure + table) for exported HTML

If the panels show as text (``ExplorerPanel(...)`` or ``VBox(...)``) instead of widgets,
the front end lacks the ipywidgets 8 manager: JupyterLab 4 needs ``jupyterlab_widgets``
(installed with ``ipywidgets>=8``) in the environment that runs JupyterLab; classic
Notebook 7 likewise; VS Code's Jupyter extension renders ipywidgets 8 itself.
"""

from __future__ import annotations

import dataclasses
import html
import io
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lape_utils import analysis, plots
from lape_utils.languages import language_name, sort_languages
from lape_utils.lape import LapeConfig, identify
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats

if TYPE_CHECKING:
    from lape_utils.models import LapeModel

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RANGES",
    "MODES",
    "THRESHOLDS",
    "ExplorerPanel",
    "SteeringPanel",
    "config_from_values",
    "counts_table",
    "render_answer_html",
    "render_counts_html",
    "render_message_html",
    "reidentify",
    "run_steering",
    "save_selection",
    "selection_filename",
    "steering_panel",
    "threshold_explorer",
]

#: The three thresholds of :class:`~lape_utils.lape.LapeConfig`, in slider order.
THRESHOLDS: tuple[str, ...] = ("top_rate", "filter_rate", "activation_bar_ratio")

#: Default slider ``(min, max, step)`` per threshold. A config value outside the range
#: widens it. The colour limits of the explorer are fixed from the selection at the
#: largest ``top_rate`` of its range.
DEFAULT_RANGES: dict[str, tuple[float, float, float]] = {
    "top_rate": (0.0005, 0.03, 0.0005),
    "filter_rate": (0.5, 0.995, 0.005),
    "activation_bar_ratio": (0.5, 0.995, 0.005),
}

_READOUT = {"top_rate": ".2%", "filter_rate": ".3f", "activation_bar_ratio": ".3f"}
_DESCRIPTION = {"top_rate": "top_rate", "filter_rate": "filter_rate",
                "activation_bar_ratio": "bar_ratio"}
_TOOLTIP = {
    "top_rate": "fraction of all FFN neurons selected (lowest LAPE entropy first); paper 1%",
    "filter_rate": "quantile of all activation probabilities: a neuron at or below it in "
    "every language is excluded; paper 0.95",
    "activation_bar_ratio": "quantile of all activation probabilities a selected neuron must "
    "exceed in a language to belong to it; paper 0.95",
}

#: Steering modes of :func:`lape_utils.steering.steer`.
MODES: tuple[str, ...] = ("set", "add", "scale")

_MODE_TOOLTIPS = (
    "set the target's neurons to strength x their mean activation on the target (paper)",
    "add strength x the mean activation on the target",
    "multiply the target's neurons' activation by strength",
)

_LIVE_DPI = 90  # resolution of the live figure (lower is faster)

_LEVEL_COLOURS = {"info": "#555555", "ok": "#1a7f37", "warning": "#9a6700", "error": "#cf222e"}

_ALL = "all"


_FALLBACK_HINT = (
    "(an ipywidgets panel: it needs a live kernel and a front end with the ipywidgets 8 "
    "manager, e.g. JupyterLab 4 with jupyterlab_widgets, Notebook 7, VS Code; "
    "display_static() shows a static copy)"
)


def _bundle(panel: Any, widget: widgets.Widget, **kwargs: Any) -> dict:
    """The widget's mime bundle with a text fallback that says what it is and what to do."""
    bundle = dict(widget._repr_mimebundle_(**kwargs) or {})
    bundle["text/plain"] = f"{panel!r}\n{_FALLBACK_HINT}"
    return bundle


# ============================================================================ plain callbacks


class _ListHandler(logging.Handler):
    """Collects the messages of WARNING-and-above records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _collect_warnings(name: str) -> Iterator[list[str]]:
    """Catch the warnings a library logger emits, to show them in a panel."""
    log = logging.getLogger(name)
    handler = _ListHandler()
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)


def config_from_values(
    values: Mapping[str, float], base: LapeConfig | None = None
) -> LapeConfig:
    """A :class:`~lape_utils.lape.LapeConfig` from slider values.

    Values are rounded to 6 decimals (slider steps such as 0.5 + 91 x 0.005 carry float
    noise), then validated by the config.

    Args:
        values: ``{threshold name: value}``; missing thresholds keep ``base``'s.
        base: The config to vary (default: the paper's).

    Returns:
        The validated config.

    Raises:
        ValueError: an unknown threshold name, or a value the config rejects (the message
            names the field, the value and the allowed range).
        TypeError: a value that is not a number.
    """
    unknown = sorted(set(values) - set(THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; the thresholds are {list(THRESHOLDS)}")
    clean = {}
    for name, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = round(float(value), 6)
        clean[name] = value
    return dataclasses.replace(base or LapeConfig(), **clean)


def _check_picked(available: Sequence[str], languages: Sequence[str] | None) -> list[str]:
    """The picked languages in the statistics' order; at least two, all known."""
    if languages is None:
        picked = list(available)
    elif isinstance(languages, str):
        picked = [x for x in languages.replace(",", " ").split() if x]
    else:
        picked = [str(x) for x in languages]
    unknown = [x for x in picked if x not in available]
    if unknown:
        raise ValueError(
            f"language(s) {unknown} are not in the statistics; they hold {list(available)}"
        )
    if len(set(picked)) < 2:
        raise ValueError(
            f"pick at least two languages (picked: {picked or 'none'}): LAPE compares "
            "languages with each other, and with one language every neuron has entropy 0"
        )
    return [x for x in available if x in picked]


def _columns(stats: ActivationStats, languages: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``over_zero [layer, neuron, picked]`` and ``n [picked]`` (no copy when all are picked)."""
    if languages == list(stats.languages):
        return stats.over_zero, stats.n
    idx = [stats.index(lang) for lang in languages]
    return stats.over_zero[..., idx], stats.n[idx]


def counts_table(selection: NeuronSelection) -> pd.DataFrame:
    """Neurons per language, and the distinct total.

    Args:
        selection: The selection.

    Returns:
        DataFrame indexed by ``language`` (module order, then ``"all"`` = distinct neurons
        in any language): ``name`` (English name), ``neurons`` and ``percent`` (of all
        ``L·D`` FFN neurons).
    """
    totals = analysis.layer_distribution(selection).sum(axis=0)
    total_neurons = selection.n_layers * selection.n_neurons
    rows = {
        lang: {"name": language_name(lang), "neurons": int(totals[lang])} for lang in totals.index
    }
    rows[_ALL] = {"name": "all languages (distinct)", "neurons": selection.total_distinct()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df["percent"] = df["neurons"] * 100.0 / total_neurons
    df.index.name = "language"
    return df.astype({"neurons": int, "percent": float})


def _reidentify(
    over_zero: torch.Tensor,
    n: torch.Tensor,
    languages: list[str],
    config_values: Mapping[str, float],
    base_config: LapeConfig | None,
    provenance: Mapping[str, Any] | None,
) -> tuple[NeuronSelection | None, pd.DataFrame | None, str, str]:
    """:func:`reidentify` on already-chosen columns; also returns the message level."""
    try:
        config = config_from_values(config_values, base_config)
    except (TypeError, ValueError) as err:
        return None, None, f"Not re-identified: {err}", "error"
    with _collect_warnings("lape_utils.lape") as notes:
        try:
            sel = identify(over_zero, n, languages, config, provenance=provenance)
        except (TypeError, ValueError) as err:
            return None, None, f"Not re-identified: {err}", "error"
    table = counts_table(sel)
    ident = sel.provenance.get("identification", {})
    total = sel.n_layers * sel.n_neurons
    distinct = int(table.loc[_ALL, "neurons"])
    msg = (
        f"{distinct:,} distinct neurons ({distinct * 100 / total:.2f}% of {total:,}) for "
        f"{len(languages)} languages · filter τ = {ident.get('filter_threshold', math.nan):.4g}"
        f", bar = {ident.get('activation_bar', math.nan):.4g}"
    )
    level = "ok"
    if ident.get("n_requested", 1) == 0:
        notes.append(
            f"round(L·D·top_rate) = round({total} x {config.top_rate:g}) = 0: no neuron is "
            "selected; raise top_rate"
        )
    if notes:
        msg += " · " + " · ".join(notes)
        level = "warning"
    return sel, table, msg, level


def reidentify(
    stats: ActivationStats,
    config_values: Mapping[str, float],
    languages: Sequence[str] | None = None,
    *,
    base_config: LapeConfig | None = None,
) -> tuple[NeuronSelection | None, pd.DataFrame | None, str]:
    """Identify the neurons again with new thresholds and languages (the explorer's callback).

    Never raises for bad input: a rejected threshold or language choice comes back as
    ``(None, None, message)``. Warnings of the identification (e.g. fewer neurons pass the
    filter than requested) are appended to the message instead of being logged.

    Args:
        stats: Cached activation statistics.
        config_values: ``{threshold: value}`` for any of :data:`THRESHOLDS`.
        languages: The languages that compete (at least two; default all of ``stats``).
            LAPE is computed over these columns only, so the picked set changes the result.
        base_config: Config for the thresholds not in ``config_values``.

    Returns:
        ``(selection, counts, message)``: the new selection, :func:`counts_table` of it and
        a one-line summary (distinct neurons, thresholds reached, warnings); or
        ``(None, None, error message)``.
    """
    try:
        langs = _check_picked(stats.languages, languages)
    except ValueError as err:
        return None, None, f"Not re-identified: {err}"
    over_zero, n = _columns(stats, langs)
    sel, table, msg, _ = _reidentify(
        over_zero, n, langs, config_values, base_config, stats.provenance
    )
    return sel, table, msg


def render_counts_html(
    table: pd.DataFrame,
    *,
    previous: pd.DataFrame | Mapping[str, int] | None = None,
    caption: str | None = None,
) -> str:
    """The counts table as HTML (``<table class="lape-counts">``, a row per language).

    Args:
        table: :func:`counts_table` output.
        previous: The counts before the last change (a counts table or ``{language:
            neurons}``); adds a ``Δ`` column.
        caption: Table caption (e.g. the config label).

    Returns:
        HTML text; each row carries ``data-lang`` and each count ``data-count`` attributes.
    """
    if isinstance(previous, pd.DataFrame):
        previous = previous["neurons"].to_dict()
    head = ["language", "", "neurons", "% of all"] + (["Δ"] if previous is not None else [])
    align = ["left", "left"] + ["right"] * (len(head) - 2)
    out = [
        '<table class="lape-counts" style="border-collapse:collapse;font-size:0.9em">',
    ]
    if caption:
        out.append(f'<caption style="text-align:left">{html.escape(caption)}</caption>')
    out.append(
        "<thead><tr>"
        + "".join(
            f'<th style="text-align:{a};padding:1px 8px">{h}</th>'
            for h, a in zip(head, align, strict=True)
        )
        + "</tr></thead><tbody>"
    )
    for lang, row in table.iterrows():
        count = int(row["neurons"])
        is_all = lang == _ALL
        swatch = (
            ""
            if is_all
            else f'<span style="color:{plots.language_color(str(lang))}">■</span> '
        )
        cells = [
            f"{swatch}<b>{html.escape(str(lang))}</b>",
            html.escape(str(row["name"])),
            f'<span data-count="{count}">{count:,}</span>',
            f"{row['percent']:.3f}",
        ]
        if previous is not None:
            before = previous.get(lang)
            if before is None:
                cells.append("new")
            else:
                delta = count - int(before)
                cells.append(f"{delta:+,}" if delta else "·")
        style = ' style="border-top:1px solid #999;font-weight:bold"' if is_all else ""
        out.append(
            f'<tr data-lang="{html.escape(str(lang))}"{style}>'
            + "".join(
                f'<td style="text-align:{a};padding:1px 8px">{c}</td>'
                for c, a in zip(cells, align, strict=True)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def render_message_html(text: str, level: str = "info") -> str:
    """A one-line status message (``<div class="lape-message lape-<level>">``).

    Args:
        text: Plain text (escaped here).
        level: ``"info"``, ``"ok"``, ``"warning"`` or ``"error"``.
    """
    colour = _LEVEL_COLOURS.get(level, _LEVEL_COLOURS["info"])
    return (
        f'<div class="lape-message lape-{level}" style="color:{colour};white-space:pre-wrap">'
        f"{html.escape(text)}</div>"
    )


def selection_filename(config: LapeConfig | Mapping[str, float], languages: Sequence[str]) -> str:
    """File name of a saved selection, e.g. ``lape_top0.01_filter0.95_bar0.95_en-fr-zh.pt``."""
    cfg = config if isinstance(config, LapeConfig) else LapeConfig.from_dict(config)
    return (
        f"lape_top{cfg.top_rate:g}_filter{cfg.filter_rate:g}_bar{cfg.activation_bar_ratio:g}_"
        + "-".join(languages)
        + ".pt"
    )


def save_selection(
    selection: NeuronSelection,
    save_dir: str | os.PathLike,
    *,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a selection with :meth:`NeuronSelection.save` under ``save_dir``.

    Args:
        selection: The selection.
        save_dir: Folder (created if missing).
        name: File name (default :func:`selection_filename` of its config and languages).
        overwrite: Replace an existing file.

    Returns:
        The path written (its ``.json`` sidecar lies next to it).

    Raises:
        FileExistsError: the file exists and ``overwrite`` is false.
    """
    name = name or selection_filename(selection.config, selection.languages)
    return selection.save(Path(save_dir) / name, overwrite=overwrite)


# ============================================================================ live figure


def _off_diagonal_max(table: pd.DataFrame) -> float:
    values = table.to_numpy(dtype=float)
    if values.shape[0] < 2:
        return 0.0
    return float(values[~np.eye(values.shape[0], dtype=bool)].max())


@dataclasses.dataclass(frozen=True)
class _Limits:
    """Fixed colour and axis limits of one explorer figure."""

    heatmap: float
    overlap: float
    counts: float


def _limits_from(selection: NeuronSelection) -> _Limits:
    counts = analysis.layer_distribution(selection)
    ov = analysis.overlap(selection)[0]
    return _Limits(
        heatmap=max(float(counts.to_numpy().max(initial=0)), 1.0),
        overlap=max(_off_diagonal_max(ov), 1.0),
        counts=max(float(counts.sum(axis=0).max()), 1.0),
    )


def _figure_size(n_layers: int, n_lang: int) -> tuple[float, float]:
    height = min(max(3.4, 1.4 + 0.11 * n_layers), 6.5)
    width = min(max(10.0, 3.0 + 1.2 * n_lang), 15.0)
    return width, height


def _png(fig: Figure) -> bytes:
    """PNG of what the Agg canvas holds now (no redraw)."""
    from PIL import Image as PILImage

    rgba = np.asarray(fig.canvas.buffer_rgba())
    buf = io.BytesIO()
    PILImage.fromarray(rgba).save(buf, format="png", compress_level=1)
    return buf.getvalue()


class _LiveFigure:
    """One figure (layer heatmap, overlap heatmap, per-language bars) updated in place.

    The static parts (axes, ticks, titles, colour bars) are drawn once into a cached
    background; :meth:`update` only changes the data of the animated artists and redraws
    those on top of the background (blitting on the Agg canvas).
    """

    def __init__(
        self, selection: NeuronSelection, limits: _Limits, *, title: str, dpi: float
    ) -> None:
        counts = analysis.layer_distribution(selection)
        self.languages = list(counts.columns)
        self.limits = limits
        k = len(self.languages)
        fig = Figure(figsize=_figure_size(selection.n_layers, k), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax_heat, ax_ov, ax_bar = fig.subplots(1, 3, width_ratios=[1.0, 1.15, 1.0])
        self.fig = fig

        plots.plot_layer_distribution(
            counts, ax=ax_heat, vmin=0, vmax=limits.heatmap, annot=False, colorbar=False,
            title="Neurons per layer",
        )
        self.heat_mesh = ax_heat.collections[0]
        fig.colorbar(self.heat_mesh, ax=ax_heat, extend="max", label="neurons")

        ov = analysis.overlap(selection)[0]
        plots.plot_overlap(
            ov, ax=ax_ov, vmin=0, vmax=limits.overlap, annot=False, colorbar=False,
            title="Shared neurons",
        )
        self.ov_mesh = ax_ov.collections[0]
        fig.colorbar(self.ov_mesh, ax=ax_ov, extend="max", label="shared neurons")
        self.diagonal = np.eye(k, dtype=bool)
        self.ov_norm = self.ov_mesh.norm
        self.cmap = colormaps[plots.SEQUENTIAL_CMAP]
        self.ov_texts = []
        if k <= 10:
            for i in range(k):
                for j in range(k):
                    self.ov_texts.append(
                        ax_ov.text(j + 0.5, i + 0.5, "", ha="center", va="center",
                                   fontsize="x-small", animated=True)
                    )

        totals = counts.sum(axis=0)
        plots.plot_language_counts(
            totals, ax=ax_bar, annotate=False, title="Neurons per language"
        )
        self.bars = list(ax_bar.patches)
        self.bar_top = limits.counts * 1.18
        ax_bar.set_ylim(0, self.bar_top)
        self.bar_texts = [
            ax_bar.text(b.get_x() + b.get_width() / 2, 0, "", ha="center", va="bottom",
                        fontsize="x-small", animated=True)
            for b in self.bars
        ]
        # the layout reserves room for the title as it is at the first draw: give it text
        self.title = fig.suptitle(title, fontsize="medium", animated=True)
        for artist in (self.heat_mesh, self.ov_mesh, *self.bars):
            artist.set_animated(True)
        fig.canvas.draw()
        self.background = fig.canvas.copy_from_bbox(fig.bbox)
        self._animated = [
            self.heat_mesh, self.ov_mesh, *self.ov_texts, *self.bars, *self.bar_texts, self.title
        ]

    def update(self, selection: NeuronSelection, title: str) -> bytes:
        """Show ``selection`` (same languages as at construction); returns the PNG."""
        counts = analysis.layer_distribution(selection)
        if list(counts.columns) != self.languages:
            raise ValueError(
                f"the figure was built for {self.languages}, got {list(counts.columns)}"
            )
        self.heat_mesh.set_array(counts.to_numpy(dtype=float))
        ov = analysis.overlap(selection)[0].to_numpy(dtype=float)
        self.ov_mesh.set_array(np.ma.masked_where(self.diagonal, ov))
        if self.ov_texts:
            # zero off the diagonal stays blank (the lightest colour says it; blank text
            # costs nothing to draw); text colour from the cell's luminance, in one pass
            rgba = self.cmap(self.ov_norm(ov))
            light = (rgba[..., :3] @ np.array([0.299, 0.587, 0.114])) > 0.55
            for text, v, is_light, on_diag in zip(
                self.ov_texts, ov.ravel(), light.ravel(), self.diagonal.ravel(), strict=True
            ):
                text.set_text(f"{v:.0f}" if v or on_diag else "")
                text.set_color("black" if on_diag or is_light else "white")
        for bar, text, total in zip(self.bars, self.bar_texts, counts.sum(axis=0), strict=True):
            bar.set_height(float(total))
            text.set_text(f"{int(total):,}")
            text.set_y(min(float(total), self.bar_top * 0.93))
        self.title.set_text(title)
        return self.render()

    def render(self) -> bytes:
        """Background plus the animated artists, as PNG bytes."""
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for artist in self._animated:
            self.fig.draw_artist(artist)
        return _png(self.fig)


def _static_figure(selection: NeuronSelection, *, dpi: float = 100) -> Figure:
    """The explorer's three panels at full detail (numbers in the cells), no pyplot.

    Colour limits are those of this selection (what the figure shows).
    """
    counts = analysis.layer_distribution(selection)
    w, h = _figure_size(selection.n_layers, len(counts.columns))
    fig = Figure(figsize=(w, h + 0.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_heat, ax_ov, ax_bar = fig.subplots(1, 3, width_ratios=[1.0, 1.15, 1.0])
    lim = _limits_from(selection)
    plots.plot_layer_distribution(
        counts, ax=ax_heat, vmin=0, vmax=lim.heatmap, title="Neurons per layer"
    )
    plots.plot_overlap(
        analysis.overlap(selection)[0], ax=ax_ov, vmin=0, vmax=lim.overlap,
        title="Shared neurons",
    )
    plots.plot_language_counts(counts, ax=ax_bar, title="Neurons per language")
    label = LapeConfig.from_dict(selection.config).label() if selection.config else ""
    fig.suptitle(
        f"{label} · {selection.total_distinct():,} distinct neurons", fontsize="medium"
    )
    return fig


# ============================================================================ explorer


def _slider(name: str, value: float, bounds: tuple[float, float, float]) -> widgets.FloatSlider:
    lo, hi, step = bounds
    lo, hi = min(lo, value), max(hi, value)
    slider = widgets.FloatSlider(
        value=value, min=lo, max=hi, step=step, description=_DESCRIPTION[name],
        readout_format=_READOUT[name], continuous_update=False, tooltip=_TOOLTIP[name],
        style={"description_width": "80px"}, layout=widgets.Layout(width="420px"),
    )
    slider.add_class(f"lape-{name.replace('_', '-')}")
    return slider


class ExplorerPanel:
    """The threshold explorer; build it with :func:`threshold_explorer`.

    Attributes:
        stats: The statistics it re-identifies from.
        widget: The ipywidgets container to display (the panel displays itself too).
        sliders: ``{threshold: FloatSlider}`` for :data:`THRESHOLDS`.
        language_picker: ``SelectMultiple`` of the competing languages.
        counts_html: ``HTML`` widget holding :func:`render_counts_html`.
        image: ``Image`` widget holding the live figure (PNG).
        message: ``HTML`` widget with the last status or error.
        save_button: Saves the current selection under ``save_dir``.
        overwrite: ``Checkbox``: let *Save* replace an existing file.
        save_status: ``HTML`` widget with the outcome of the last save.
        selection: The current :class:`~lape_utils.selection.NeuronSelection` (the last
            valid one when the current input is rejected).
        counts: :func:`counts_table` of :attr:`selection`.
        config: The :class:`~lape_utils.lape.LapeConfig` of :attr:`selection`.
        timings: Seconds spent by the last update: ``identify`` (re-identification and
            counts), ``redraw`` (figure and table) and ``total``.
        save_dir: Where *Save* writes (``None``: saving disabled).
    """

    def __init__(
        self,
        stats: ActivationStats,
        *,
        config: LapeConfig,
        languages: Sequence[str] | None,
        save_dir: str | os.PathLike | None,
        ranges: Mapping[str, tuple[float, float, float]] | None,
        heatmap_vmax: float | None,
    ) -> None:
        self.stats = stats
        self.base_config = config
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.heatmap_vmax = heatmap_vmax
        bounds = dict(DEFAULT_RANGES)
        for name, rng in (ranges or {}).items():
            if name not in THRESHOLDS:
                raise ValueError(f"unknown threshold {name!r} in ranges; use {list(THRESHOLDS)}")
            lo, hi, step = (float(x) for x in rng)
            if not (lo < hi and step > 0):
                raise ValueError(f"range of {name} must be (min < max, step > 0), got {rng!r}")
            bounds[name] = (lo, hi, step)
        self.ranges = bounds
        langs = _check_picked(stats.languages, languages)

        self.sliders = {
            name: _slider(name, getattr(config, name), bounds[name]) for name in THRESHOLDS
        }
        self.language_picker = widgets.SelectMultiple(
            options=[
                (f"{code} · {language_name(code)}", code)
                for code in sort_languages(stats.languages)
            ],
            value=tuple(langs),
            rows=min(len(stats.languages), 10),
            description="languages",
            tooltip="languages that compete (ctrl/shift-click to pick several)",
            style={"description_width": "80px"},
            layout=widgets.Layout(width="260px", margin="0 12px 0 0"),
        )
        self.language_picker.add_class("lape-languages")
        self.counts_html = widgets.HTML()
        self.counts_html.add_class("lape-counts-box")
        self.message = widgets.HTML()
        self.message.add_class("lape-explorer-message")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.image.add_class("lape-figure")
        self.save_button = widgets.Button(
            description="Save selection",
            icon="save",
            disabled=self.save_dir is None,
            tooltip=(
                "pass save_dir= to threshold_explorer to enable saving"
                if self.save_dir is None
                else f"write the current selection to {self.save_dir}"
            ),
        )
        self.save_button.add_class("lape-save")
        self.overwrite = widgets.Checkbox(value=False, description="overwrite", indent=False,
                                          layout=widgets.Layout(width="110px"))
        self.save_status = widgets.HTML()
        self.save_status.add_class("lape-save-status")

        self.selection: NeuronSelection | None = None
        self.counts: pd.DataFrame | None = None
        self.config: LapeConfig | None = None
        self.timings: dict[str, float] = {}
        self._columns_cache: tuple[tuple[str, ...], torch.Tensor, torch.Tensor] | None = None
        self._live: _LiveFigure | None = None
        self._limits: _Limits | None = None

        controls = widgets.VBox(
            [*self.sliders.values(),
             widgets.HBox([self.save_button, self.overwrite]), self.save_status],
            layout=widgets.Layout(min_width="430px", margin="0 12px 0 0"),
        )
        self.widget = widgets.VBox(
            [
                widgets.HBox([controls, self.language_picker, self.counts_html],
                             layout=widgets.Layout(flex_flow="row wrap")),
                self.message,
                self.image,
            ]
        )
        self.widget.add_class("lape-explorer")
        self.update()
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        self.language_picker.observe(self._on_change, names="value")
        self.save_button.on_click(self._on_save)

    # ------------------------------------------------------------------ updates

    def _picked_columns(self, langs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(langs)
        if self._columns_cache is None or self._columns_cache[0] != key:
            oz, n = _columns(self.stats, langs)
            self._columns_cache = (key, oz, n)
        return self._columns_cache[1], self._columns_cache[2]

    def _limits_for(
        self, oz: torch.Tensor, n: torch.Tensor, langs: list[str], sel: NeuronSelection,
        config: LapeConfig,
    ) -> _Limits:
        """Fixed limits: the selection at the largest top_rate of the slider."""
        ceiling = sel
        top_max = self.sliders["top_rate"].max
        try:
            cfg = dataclasses.replace(config, top_rate=min(top_max, 1.0))
            with _collect_warnings("lape_utils.lape"):
                ceiling = identify(oz, n, langs, cfg)
        except (TypeError, ValueError) as err:  # fall back to the current selection
            logger.debug("colour limits from the current selection (%s)", err)
        lim = _limits_from(ceiling)
        return _Limits(
            heatmap=float(self.heatmap_vmax or lim.heatmap),
            overlap=lim.overlap,
            counts=lim.counts,
        )

    def update(self) -> None:
        """Re-identify with the current widget values and redraw (what every change runs)."""
        t0 = time.perf_counter()
        values = {name: s.value for name, s in self.sliders.items()}
        try:
            langs = _check_picked(self.stats.languages, self.language_picker.value)
        except ValueError as err:
            self._show(f"Not re-identified: {err}", "error")
            return
        oz, n = self._picked_columns(langs)
        sel, table, msg, level = _reidentify(
            oz, n, langs, values, self.base_config, self.stats.provenance
        )
        t1 = time.perf_counter()
        if sel is None:
            self._show(msg + " (the figure and table still show the last valid selection)",
                       "error")
            return
        config = LapeConfig.from_dict(sel.config)
        title = f"{config.label()} · {len(langs)} languages"
        rebuild = self._live is None or self._live.languages != sort_languages(langs)
        if rebuild:  # first draw, or other languages: new figure and colour limits
            self._limits = self._limits_for(oz, n, langs, sel, config)
            self._live = _LiveFigure(sel, self._limits, title=title, dpi=_LIVE_DPI)
        png = self._live.update(sel, title)
        self.image.value = png
        self.counts_html.value = render_counts_html(
            table, previous=self.counts, caption=config.label()
        )
        t2 = time.perf_counter()
        self.selection, self.counts, self.config = sel, table, config
        self.timings = {"identify": t1 - t0, "redraw": t2 - t1, "total": t2 - t0}
        self._show(
            f"{msg} · identified in {1000 * (t1 - t0):.0f} ms, "
            f"{'figure built' if rebuild else 'redrawn'} in {1000 * (t2 - t1):.0f} ms",
            level,
        )

    def _on_change(self, change: dict) -> None:
        try:
            self.update()
        except Exception as err:  # a panel never shows a traceback
            logger.debug("explorer update failed", exc_info=True)
            self._show(f"Update failed: {type(err).__name__}: {err}", "error")

    def _show(self, text: str, level: str) -> None:
        self.message.value = render_message_html(text, level)

    # ------------------------------------------------------------------ saving

    def save(self, name: str | None = None, *, overwrite: bool | None = None) -> Path:
        """Save the current selection under :attr:`save_dir` (what *Save* does).

        Args:
            name: File name (default :func:`selection_filename`).
            overwrite: Replace an existing file (default: the checkbox).

        Returns:
            The path written.

        Raises:
            ValueError: no ``save_dir`` was given or there is no valid selection.
            FileExistsError: the file exists and overwriting is off.
        """
        if self.save_dir is None:
            raise ValueError("this explorer has no save_dir; pass save_dir= to threshold_explorer")
        if self.selection is None:
            raise ValueError("no valid selection to save; fix the thresholds first")
        ow = self.overwrite.value if overwrite is None else overwrite
        return save_selection(self.selection, self.save_dir, name=name, overwrite=ow)

    def _on_save(self, _button: widgets.Button | None = None) -> None:
        try:
            path = self.save()
        except FileExistsError as err:
            self.save_status.value = render_message_html(
                f"{err}. Tick 'overwrite' to replace it.", "warning"
            )
        except Exception as err:  # a panel never shows a traceback
            logger.debug("save failed", exc_info=True)
            self.save_status.value = render_message_html(
                f"Not saved: {type(err).__name__}: {err}", "error"
            )
        else:
            self.save_status.value = render_message_html(f"Saved {path}", "ok")

    # ------------------------------------------------------------------ static copies

    def static_figure(self, *, dpi: float = 100) -> Figure:
        """The current selection as a normal matplotlib figure (numbers in the cells).

        Same panels as the live figure, with colour limits fitted to what it shows (the live
        figure keeps the limits fixed for the whole slider range so redraws do not jump; a
        static copy shows one selection and would be washed out by them). It is not
        managed by pyplot: display it with :meth:`display_static` or save it with
        :func:`lape_utils.plots.save_figure`.

        Raises:
            ValueError: there is no valid selection.
        """
        if self.selection is None:
            raise ValueError("no valid selection to draw; fix the thresholds first")
        return _static_figure(self.selection, dpi=dpi)

    def static_png(self, *, dpi: float = 100) -> bytes:
        """:meth:`static_figure` encoded as PNG."""
        buf = io.BytesIO()
        self.static_figure(dpi=dpi).savefig(buf, format="png")
        return buf.getvalue()

    def display_static(self, *, dpi: float = 100) -> None:
        """Display the static copy (figure as PNG, counts table as HTML) as normal outputs.

        These outputs survive export of the executed notebook to HTML, unlike the widget.
        """
        from IPython.display import HTML, Image, display

        if self.selection is None or self.counts is None:
            display(HTML(render_message_html("no valid selection to show", "error")))
            return
        display(Image(data=self.static_png(dpi=dpi), format="png"))
        display(HTML(render_counts_html(self.counts, caption=self.config.label())))

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return _bundle(self, self.widget, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ExplorerPanel({self.stats.n_layers}x{self.stats.n_neurons}, "
            f"languages={list(self.language_picker.value)}, config={self.config})"
        )


def threshold_explorer(
    stats: ActivationStats | str | os.PathLike,
    *,
    config: LapeConfig = LapeConfig(),
    languages: Sequence[str] | None = None,
    save_dir: str | os.PathLike | None = None,
    ranges: Mapping[str, tuple[float, float, float]] | None = None,
    heatmap_vmax: float | None = None,
) -> ExplorerPanel:
    """A panel to move the LAPE thresholds and see the selection change live.

    Three sliders (``top_rate``, ``filter_rate``, ``activation_bar_ratio``) and a language
    picker; every change re-identifies from ``stats`` (:func:`reidentify`) and redraws the
    counts table, the layer heatmap, the overlap heatmap and the per-language bars. Colour
    limits and the bar axis are fixed when the panel is built (and when the picked
    languages change), from the selection at the largest ``top_rate`` of the slider; cells
    beyond the limit saturate (the colour bar's arrow). *Save selection* writes the current
    selection under ``save_dir``.

    Args:
        stats: Activation statistics, or a directory saved by
            :meth:`ActivationStats.save <lape_utils.stats.ActivationStats.save>`.
        config: Initial thresholds.
        languages: Initially picked languages (default all; at least two).
        save_dir: Folder for *Save selection* (``None`` disables it).
        ranges: ``{threshold: (min, max, step)}`` replacing :data:`DEFAULT_RANGES`.
        heatmap_vmax: Fixed upper colour limit of the layer heatmap (neurons per cell).

    Returns:
        An :class:`ExplorerPanel`; the last expression of a cell displays it.

    Raises:
        TypeError: ``config`` is not a LapeConfig or ``stats`` not statistics.
        ValueError: bad ``languages`` or ``ranges``.
    """
    if isinstance(stats, (str, os.PathLike)):
        stats = ActivationStats.load(stats)
    if not isinstance(stats, ActivationStats):
        raise TypeError(
            f"stats must be ActivationStats (or a directory holding them), got "
            f"{type(stats).__name__}"
        )
    if not isinstance(config, LapeConfig):
        raise TypeError(
            f"config must be a LapeConfig, got {type(config).__name__}; use "
            "LapeConfig.from_dict(...) for a dict"
        )
    return ExplorerPanel(
        stats, config=config, languages=languages, save_dir=save_dir, ranges=ranges,
        heatmap_vmax=heatmap_vmax,
    )


# ============================================================================ steering


def run_steering(
    model: LapeModel,
    neurons: NeuronSelection,
    stats: ActivationStats | None,
    prompt: str,
    source: str | None,
    target: str,
    mode: str,
    strength: float,
    max_new_tokens: int,
    *,
    zero_source: bool = False,
) -> dict[str, Any]:
    """Generate one unsteered and one steered answer (the steering panel's callback).

    A thin wrapper over :func:`lape_utils.steering.steer` for a single prompt (greedy
    decoding, the paper's repetition penalty 1.1).

    Args:
        model: The loaded model.
        neurons: Its language-specific neurons.
        stats: Its activation statistics (mean activations; needed by ``set`` and ``add``).
        prompt: The question (whitespace around it is stripped).
        source: The prompt's language, or ``None``.
        target: The language to steer to.
        mode: ``"set"``, ``"add"`` or ``"scale"``.
        strength: Multiplier of the mode.
        max_new_tokens: Tokens to generate.
        zero_source: Also deactivate the source language's neurons.

    Returns:
        ``{"prompt", "source", "target", "mode", "strength", "max_new_tokens",
        "zero_source", "unsteered", "steered", "unsteered_lang", "unsteered_score",
        "unsteered_label", "steered_lang", "steered_score", "steered_label", "chrf",
        "target_mass_unsteered", "target_mass_steered", "seconds"}``.

    Raises:
        lape_utils.intervene.InterventionError: bad input (empty prompt, a language not in
            the neuron set or statistics, source == target, an unknown mode, a non-finite
            strength, statistics of another model), checked before any generation.
    """
    from lape_utils.intervene import InterventionError
    from lape_utils.steering import PAPER_GENERATION, SteerSpec, steer

    if not isinstance(prompt, str) or not prompt.strip():
        raise InterventionError("the prompt is empty; type a question")
    if int(max_new_tokens) < 1:
        raise InterventionError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    started = time.perf_counter()
    spec = SteerSpec(target, source=source or None, zero_source=bool(zero_source), mode=mode,
                     strength=strength)
    generation = dataclasses.replace(PAPER_GENERATION, max_new_tokens=int(max_new_tokens))
    result = steer(model, neurons, stats, [prompt.strip()], spec, generation=generation)
    row = result.rows.iloc[0]
    out: dict[str, Any] = {
        "prompt": prompt.strip(),
        "source": source or None,
        "target": target,
        "mode": mode,
        "strength": float(strength),
        "max_new_tokens": int(max_new_tokens),
        "zero_source": bool(zero_source),
    }
    for key in (
        "unsteered", "steered", "unsteered_lang", "unsteered_score", "unsteered_label",
        "steered_lang", "steered_score", "steered_label", "chrf",
        "target_mass_unsteered", "target_mass_steered",
    ):
        value = row[key]
        out[key] = value.item() if hasattr(value, "item") else value
    out["seconds"] = time.perf_counter() - started
    return out


def render_answer_html(
    heading: str, text: str, lang: str, score: float, label: str, *, css_class: str = ""
) -> str:
    """One answer: heading, the text (escaped, line breaks kept) and its detected language.

    Args:
        heading: e.g. ``"unsteered"``.
        text: The generated text.
        lang: Top language of the identifier.
        score: Its confidence in [0, 1].
        label: The trusted label (``lang``, ``"mixed"`` or ``"unknown"``).
        css_class: Extra class of the outer ``div``.
    """
    if label == lang and lang:
        name = html.escape(language_name(lang))
        verdict = f"{name} ({html.escape(lang)}), confidence {score:.2f}"
    else:
        guess = f"{html.escape(language_name(lang))} ({html.escape(lang)})" if lang else "nothing"
        verdict = f"{html.escape(label)} (best guess {guess}, confidence {score:.2f})"
    body = html.escape(text) if text.strip() else "<i>(empty answer)</i>"
    return (
        f'<div class="lape-answer {css_class}" style="border:1px solid #ccc;padding:6px;'
        f'border-radius:4px;min-height:4em">'
        f"<b>{html.escape(heading)}</b>"
        f'<div class="lape-answer-text" style="white-space:pre-wrap;margin:4px 0">{body}</div>'
        f'<div class="lape-detected" data-lang="{html.escape(label)}">detected: {verdict}</div>'
        "</div>"
    )


def _describe(result: Mapping[str, Any]) -> str:
    zero = f", {result['source']} neurons zeroed" if result.get("zero_source") else ""
    return f"steered to {result['target']} ({result['mode']} × {result['strength']:g}{zero})"


class SteeringPanel:
    """The steering panel; build it with :func:`steering_panel`.

    Attributes:
        model, neurons, stats: What generation uses.
        widget: The ipywidgets container to display (the panel displays itself too).
        prompt: ``Textarea`` with the question.
        examples: ``Dropdown`` of built-in questions in the source language; picking one
            fills :attr:`prompt`.
        source, target: ``Dropdown`` of languages (source may be ``None``).
        mode: ``ToggleButtons`` ``set``/``add``/``scale``.
        strength: ``FloatSlider``.
        max_new_tokens: ``IntSlider``.
        zero_source: ``Checkbox``: also deactivate the source language's neurons.
        generate_button: Runs :meth:`generate`; nothing else generates.
        message: ``HTML`` status or error.
        unsteered_html, steered_html: ``HTML`` widgets with the two answers.
        results: Every result dict of :func:`run_steering` so far.
    """

    def __init__(
        self,
        model: LapeModel,
        neurons: NeuronSelection,
        stats: ActivationStats | None,
        *,
        prompts: Sequence[str] | str | None,
        source: str | None,
        target: str | None,
        mode: str,
        strength: float,
        max_new_tokens: int,
        zero_source: bool,
    ) -> None:
        if not isinstance(neurons, NeuronSelection):
            raise TypeError(f"neurons must be a NeuronSelection, got {type(neurons).__name__}")
        if stats is not None and not isinstance(stats, ActivationStats):
            raise TypeError(f"stats must be ActivationStats or None, got {type(stats).__name__}")
        if mode not in MODES:
            raise ValueError(f"unknown steering mode {mode!r}; use one of {MODES}")
        self.model, self.neurons, self.stats = model, neurons, stats
        self.results: list[dict[str, Any]] = []

        targets = sort_languages(
            lang for lang in neurons.languages if stats is None or lang in stats.languages
        )
        if not targets:
            raise ValueError(
                f"no language is both in the neuron set ({neurons.languages}) and in the "
                f"statistics ({stats.languages if stats else None})"
            )
        if source is not None and source not in neurons.languages:
            raise ValueError(f"source {source!r} is not in the neuron set {neurons.languages}")
        if target is not None and target not in targets:
            raise ValueError(f"target {target!r} must be one of {targets}")
        if source is None and "en" in neurons.languages and target != "en":
            source = "en"
        if target is None:
            target = next((x for x in targets if x != source), targets[0])

        self._builtin = prompts is None
        self.prompts = self._load_prompts(source) if prompts is None else (
            [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        )
        self.prompt = widgets.Textarea(
            value=self.prompts[0] if self.prompts else "",
            placeholder="type a question",
            description="prompt",
            rows=3,
            layout=widgets.Layout(width="95%"),
            style={"description_width": "80px"},
        )
        self.prompt.add_class("lape-prompt")
        self.examples = widgets.Dropdown(
            options=self._example_options(), value=None, description="examples",
            style={"description_width": "80px"}, layout=widgets.Layout(width="95%"),
        )
        self.examples.observe(self._on_example, names="value")
        lang_opts = [(f"{x} · {language_name(x)}", x) for x in sort_languages(neurons.languages)]
        self.source = widgets.Dropdown(
            options=[("none", None), *lang_opts], value=source, description="source",
            tooltip="the prompt's language (deactivated with 'zero source')",
            style={"description_width": "80px"}, layout=widgets.Layout(width="260px"),
        )
        self.target = widgets.Dropdown(
            options=[(f"{x} · {language_name(x)}", x) for x in targets], value=target,
            description="target", style={"description_width": "80px"},
            layout=widgets.Layout(width="260px"),
        )
        self.mode = widgets.ToggleButtons(
            options=list(MODES), value=mode, description="mode", tooltips=list(_MODE_TOOLTIPS),
            style={"description_width": "80px", "button_width": "70px"},
        )
        self.strength = widgets.FloatSlider(
            value=float(strength), min=min(0.0, strength), max=max(10.0, strength), step=0.1,
            description="strength", continuous_update=False, readout_format=".2f",
            style={"description_width": "80px"}, layout=widgets.Layout(width="420px"),
        )
        self.max_new_tokens = widgets.IntSlider(
            value=int(max_new_tokens), min=1, max=max(256, int(max_new_tokens)), step=1,
            description="max tokens", continuous_update=False,
            style={"description_width": "80px"}, layout=widgets.Layout(width="420px"),
        )
        self.zero_source = widgets.Checkbox(
            value=bool(zero_source), description="also deactivate the source's neurons",
            indent=False,
        )
        self.generate_button = widgets.Button(
            description="Generate", button_style="primary", icon="play",
            tooltip="generate the unsteered and the steered answer",
        )
        self.generate_button.add_class("lape-generate")
        self.message = widgets.HTML(
            render_message_html("press Generate to compare the two answers", "info")
        )
        self.message.add_class("lape-steering-message")
        self.unsteered_html = widgets.HTML(layout=widgets.Layout(width="49%", margin="0 1% 0 0"))
        self.unsteered_html.add_class("lape-unsteered")
        self.steered_html = widgets.HTML(layout=widgets.Layout(width="49%"))
        self.steered_html.add_class("lape-steered")

        self.source.observe(self._on_source, names="value")
        for w in (self.prompt, self.target, self.mode, self.strength, self.max_new_tokens,
                  self.zero_source):
            w.observe(self._on_setting, names="value")
        self.generate_button.on_click(self._on_generate)

        self.widget = widgets.VBox(
            [
                self.prompt,
                self.examples,
                widgets.HBox([self.source, self.target, self.zero_source],
                             layout=widgets.Layout(flex_flow="row wrap")),
                self.mode,
                self.strength,
                self.max_new_tokens,
                widgets.HBox([self.generate_button]),
                self.message,
                widgets.HBox([self.unsteered_html, self.steered_html],
                             layout=widgets.Layout(width="100%")),
            ]
        )
        self.widget.add_class("lape-steering")

    # ------------------------------------------------------------------ prompts

    @staticmethod
    def _load_prompts(language: str | None) -> list[str]:
        from lape_utils.corpus import load_prompts

        try:
            return load_prompts("builtin", language=language or "en")
        except (OSError, ValueError) as err:
            logger.info("no built-in prompts for %s (%s)", language, err)
            return []

    def _example_options(self) -> list[tuple[str, str]]:
        return [(p if len(p) <= 70 else p[:69] + "…", p) for p in self.prompts]

    def _on_example(self, change: dict) -> None:
        if change["new"]:
            self.prompt.value = change["new"]

    def _on_source(self, change: dict) -> None:
        if self._builtin:
            was_example = self.prompt.value in self.prompts or not self.prompt.value.strip()
            self.prompts = self._load_prompts(change["new"])
            self.examples.unobserve(self._on_example, names="value")
            self.examples.options = self._example_options()
            self.examples.value = None
            self.examples.observe(self._on_example, names="value")
            if was_example and self.prompts:
                self.prompt.value = self.prompts[0]
        self._on_setting(change)

    def _on_setting(self, _change: dict) -> None:
        if self.results:
            self._show("settings changed since the answers below; press Generate", "info")

    # ------------------------------------------------------------------ generation

    def settings(self) -> dict[str, Any]:
        """The current widget values, as :func:`run_steering` arguments."""
        return {
            "prompt": self.prompt.value,
            "source": self.source.value,
            "target": self.target.value,
            "mode": self.mode.value,
            "strength": float(self.strength.value),
            "max_new_tokens": int(self.max_new_tokens.value),
            "zero_source": bool(self.zero_source.value),
        }

    def generate(self) -> dict[str, Any] | None:
        """Generate with the current settings and show both answers (what *Generate* does).

        Returns:
            The :func:`run_steering` result, or ``None`` when it failed (the error is shown
            in the panel).
        """
        settings = self.settings()
        button = self.generate_button
        button.disabled, button.description = True, "Generating…"
        self._show("generating the unsteered and the steered answer…", "info")
        try:
            result = run_steering(
                self.model, self.neurons, self.stats, settings.pop("prompt"),
                settings.pop("source"), settings.pop("target"), settings.pop("mode"),
                settings.pop("strength"), settings.pop("max_new_tokens"),
                **settings,
            )
        except Exception as err:  # a panel never shows a traceback
            logger.debug("steering failed", exc_info=True)
            self._show(f"Not generated: {type(err).__name__}: {err}", "error")
            return None
        finally:
            button.disabled, button.description = False, "Generate"
        self.results.append(result)
        self.unsteered_html.value = render_answer_html(
            "unsteered", result["unsteered"], result["unsteered_lang"],
            result["unsteered_score"], result["unsteered_label"], css_class="lape-unsteered-answer",
        )
        self.steered_html.value = render_answer_html(
            _describe(result), result["steered"], result["steered_lang"],
            result["steered_score"], result["steered_label"], css_class="lape-steered-answer",
        )
        self._show(
            f"done in {result['seconds']:.1f} s · chrF of steered vs unsteered "
            f"{result['chrf']:.0f}",
            "ok",
        )
        return result

    def _on_generate(self, _button: widgets.Button | None = None) -> None:
        self.generate()

    def _show(self, text: str, level: str) -> None:
        self.message.value = render_message_html(text, level)

    # ------------------------------------------------------------------ static copies

    def static_table(self) -> pd.DataFrame:
        """Every answer generated so far, one row per Generate (a normal, exportable output).

        Returns:
            DataFrame with ``prompt``, ``target``, ``mode``, ``strength``, ``unsteered``,
            ``unsteered_detected``, ``steered``, ``steered_detected`` and ``chrf``.
        """
        cols = ["prompt", "target", "mode", "strength", "unsteered", "unsteered_detected",
                "steered", "steered_detected", "chrf"]
        rows = []
        for r in self.results:
            rows.append({
                **{k: r[k] for k in ("prompt", "target", "mode", "strength", "unsteered",
                                     "steered", "chrf")},
                "unsteered_detected": f"{r['unsteered_label']} ({r['unsteered_score']:.2f})",
                "steered_detected": f"{r['steered_label']} ({r['steered_score']:.2f})",
            })
        return pd.DataFrame(rows, columns=cols)

    def display_static(self) -> None:
        """Display :meth:`static_table` as a normal HTML output (survives HTML export)."""
        from IPython.display import HTML, display

        table = self.static_table()
        if table.empty:
            display(HTML(render_message_html("no answer generated yet", "info")))
            return
        display(HTML(table.to_html(index=False, classes="lape-steering-table")))

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return _bundle(self, self.widget, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SteeringPanel({getattr(self.model, 'name', self.model)!r}, "
            f"languages={self.neurons.languages}, {len(self.results)} results)"
        )


def steering_panel(
    model: LapeModel,
    neurons: NeuronSelection,
    stats: ActivationStats | None,
    *,
    prompts: Sequence[str] | str | None = None,
    source: str | None = None,
    target: str | None = None,
    mode: str = "set",
    strength: float = 1.0,
    max_new_tokens: int = 32,
    zero_source: bool = False,
) -> SteeringPanel:
    """A panel to steer generation towards a language and compare with the plain answer.

    Prompt, source and target language, mode, strength, max new tokens and a *Generate*
    button; a click runs :func:`run_steering` (:func:`lape_utils.steering.steer`) and shows the
    unsteered and the steered answer side by side with the detected language and its
    confidence. Nothing generates before the click; errors appear in the panel.

    Args:
        model: The loaded model (:func:`lape_utils.load_model`).
        neurons: Its language-specific neurons.
        stats: Its activation statistics (``set``/``add`` use their mean activations).
        prompts: Questions to offer (default: ``data/prompts/<source>.txt`` via
            :func:`lape_utils.corpus.load_prompts`); the first fills the prompt box.
        source: The prompts' language (default ``"en"`` when the neuron set has it).
        target: The language to steer to (default the first other language).
        mode: Initial mode, ``"set"``, ``"add"`` or ``"scale"``.
        strength: Initial strength.
        max_new_tokens: Initial number of tokens to generate.
        zero_source: Initially also deactivate the source's neurons.

    Returns:
        A :class:`SteeringPanel`; the last expression of a cell displays it.
    """
    return SteeringPanel(
        model, neurons, stats, prompts=prompts, source=source, target=target, mode=mode,
        strength=strength, max_new_tokens=max_new_tokens, zero_source=zero_source,
    )
