"""Interactive panels (ipywidgets 8): the threshold explorer and the steering panel.

Each panel is a thin layer of widgets over plain, tested functions (:func:`reidentify`,
:func:`save_selection`, :func:`run_steering`). Sliders act on release; bad input shows as a
message in the panel, never as a traceback. Each panel has a static copy that survives export
to HTML (widgets need a live kernel)::

    from lape_utils.widgets import threshold_explorer
    explorer = threshold_explorer(stats, config=config, save_dir=CACHE_DIR / "selections")
    explorer                    # the live panel
    explorer.display_static()   # the static copy (figure + table) for exported HTML
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
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image as PILImage

from lape_utils import analysis, plots
from lape_utils.intervene import InterventionError
from lape_utils.languages import language_name, sort_languages
from lape_utils.lape import LapeConfig, identify
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats
from lape_utils.steering import MODES, PAPER_GENERATION, SteerSpec, steer

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

#: Default slider ``(min, max, step)`` per threshold; a config value outside widens it.
DEFAULT_RANGES: dict[str, tuple[float, float, float]] = {
    "top_rate": (0.0005, 0.03, 0.0005),
    "filter_rate": (0.5, 0.995, 0.005),
    "activation_bar_ratio": (0.5, 0.995, 0.005),
}

#: Per threshold: slider label, readout format and tooltip.
_SLIDERS = {
    "top_rate": ("top_rate", ".2%", "fraction of all FFN neurons selected (lowest LAPE "
                 "entropy first); paper 1%"),
    "filter_rate": ("filter_rate", ".3f", "quantile of all activation probabilities: a neuron "
                    "at or below it in every language is excluded; paper 0.95"),
    "activation_bar_ratio": ("bar_ratio", ".3f", "quantile of all activation probabilities a "
                             "selected neuron must exceed in a language to belong to it; "
                             "paper 0.95"),
}

_MODE_TOOLTIPS = [  # one per mode of MODES
    "set the target's neurons to strength x their mean activation on the target (paper)",
    "add strength x the mean activation on the target",
    "multiply the target's neurons' activation by strength",
]

_LIVE_DPI = 90  # resolution of the live figure (lower is faster)
_STYLE = {"description_width": "80px"}
_LEVEL_COLOURS = {"info": "#555555", "ok": "#1a7f37", "warning": "#9a6700", "error": "#cf222e"}
_FALLBACK_HINT = (  # shown where a front end cannot display the widget
    "(an ipywidgets panel: it needs a live kernel and the ipywidgets 8 manager, e.g. "
    "JupyterLab 4 with jupyterlab_widgets, Notebook 7, VS Code; display_static() shows a "
    "static copy)"
)

_W = TypeVar("_W", bound=widgets.DOMWidget)


def _tagged(css_class: str, widget: _W) -> _W:
    """``widget`` with a CSS class (the browser test finds the parts of a panel by them)."""
    widget.add_class(css_class)
    return widget


def _language_options(codes: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, code)`` options of a language picker, in the module order."""
    return [(f"{code} · {language_name(code)}", code) for code in sort_languages(codes)]


# ============================================================================ plain callbacks


@contextmanager
def _lape_warnings() -> Iterator[list[logging.LogRecord]]:
    """Catch what :mod:`lape_utils.lape` logs at WARNING and above, to show it in a panel."""
    handler = BufferingHandler(capacity=10_000)
    handler.setLevel(logging.WARNING)
    log = logging.getLogger("lape_utils.lape")
    log.addHandler(handler)
    try:
        yield handler.buffer
    finally:
        log.removeHandler(handler)


def config_from_values(values: Mapping[str, float], base: LapeConfig | None = None) -> LapeConfig:
    """A :class:`~lape_utils.lape.LapeConfig` from slider values (rounded: slider float noise).

    Args:
        values: ``{threshold name: value}``; missing thresholds keep ``base``'s.
        base: The config to vary (default: the paper's).

    Returns:
        The validated config.

    Raises:
        ValueError: an unknown threshold name, or a value the config rejects.
        TypeError: a value that is not a number.
    """
    unknown = sorted(set(values) - set(THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; the thresholds are {list(THRESHOLDS)}")
    clean = {
        name: round(float(v), 6) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        for name, v in values.items()
    }
    return dataclasses.replace(base or LapeConfig(), **clean)


def _check_picked(available: Sequence[str], languages: Sequence[str] | None) -> list[str]:
    """The picked languages in the statistics' order; at least two, all known."""
    if isinstance(languages, str):  # "en, fr"
        languages = languages.replace(",", " ").split()
    picked = list(available) if languages is None else [str(x) for x in languages]
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
    """Neurons per language of ``selection``, and the distinct total.

    Returns:
        Indexed by ``language`` (module order, then ``"all"``, distinct): ``name``,
        ``neurons`` and ``percent`` (of all ``L·D`` FFN neurons).
    """
    # summed over layers, the "all" column (distinct per layer) is the distinct total
    neurons = analysis.layer_distribution(selection, union=True).sum(axis=0).astype(int)
    names = [language_name(lang) for lang in neurons.index[:-1]] + ["all languages (distinct)"]
    df = pd.DataFrame({"name": names, "neurons": neurons}).rename_axis("language")
    df["percent"] = df["neurons"] * 100.0 / (selection.n_layers * selection.n_neurons)
    return df


def _reidentify(
    stats: ActivationStats,
    config_values: Mapping[str, float],
    languages: Sequence[str] | None,
    base_config: LapeConfig | None,
) -> tuple[NeuronSelection | None, pd.DataFrame | None, str, str]:
    """:func:`reidentify`, and the level of its message (``"ok"``, ``"warning"``, ``"error"``)."""
    try:
        langs = _check_picked(stats.languages, languages)
        config = config_from_values(config_values, base_config)
        over_zero, n = _columns(stats, langs)
        with _lape_warnings() as records:
            sel = identify(over_zero, n, langs, config, provenance=stats.provenance)
    except (TypeError, ValueError) as err:
        return None, None, f"Not re-identified: {err}", "error"
    notes = [record.getMessage() for record in records]
    table = counts_table(sel)
    ident = sel.provenance.get("identification", {})
    total = sel.n_layers * sel.n_neurons
    distinct = int(table.loc[analysis.ALL, "neurons"])
    if ident.get("n_requested", 1) == 0:
        notes.append(
            f"round(L·D·top_rate) = round({total} x {config.top_rate:g}) = 0: no neuron is "
            "selected; raise top_rate"
        )
    msg = " · ".join([
        f"{distinct:,} distinct neurons ({distinct * 100 / total:.2f}% of {total:,}) for "
        f"{len(langs)} languages",
        f"filter τ = {ident.get('filter_threshold', math.nan):.4g}, "
        f"bar = {ident.get('activation_bar', math.nan):.4g}",
        *notes,
    ])
    return sel, table, msg, "warning" if notes else "ok"


def reidentify(
    stats: ActivationStats,
    config_values: Mapping[str, float],
    languages: Sequence[str] | None = None,
    *,
    base_config: LapeConfig | None = None,
) -> tuple[NeuronSelection | None, pd.DataFrame | None, str]:
    """Identify the neurons again with new thresholds and languages (the explorer's callback).

    Never raises for bad input; the identification's warnings go into the message.

    Args:
        stats: Cached activation statistics.
        config_values: ``{threshold: value}`` for any of :data:`THRESHOLDS`.
        languages: The competing languages, the only columns LAPE sees (>= 2; default all).
        base_config: Config for the thresholds not in ``config_values``.

    Returns:
        ``(selection, counts_table(selection), one-line summary)``, or ``(None, None, error)``.
    """
    return _reidentify(stats, config_values, languages, base_config)[:3]


def _html_row(tag: str, cells: Sequence[str], attrs: str = "") -> str:
    """One table row; the first two cells align left, the others right."""
    return f"<tr{attrs}>" + "".join(
        f'<{tag} style="text-align:{"left" if i < 2 else "right"};padding:1px 8px">{c}</{tag}>'
        for i, c in enumerate(cells)
    ) + "</tr>"


def render_counts_html(
    table: pd.DataFrame,
    *,
    previous: pd.DataFrame | Mapping[str, int] | None = None,
    caption: str | None = None,
) -> str:
    """The counts table as HTML (``<table class="lape-counts">``, a row per language).

    Args:
        table: :func:`counts_table` output.
        previous: Counts before the last change (table or ``{language: neurons}``): a ``Δ`` column.
        caption: Table caption (e.g. the config label).

    Returns:
        HTML; each row carries ``data-lang``, each count ``data-count``.
    """
    if isinstance(previous, pd.DataFrame):
        previous = previous["neurons"].to_dict()
    head = ["language", "", "neurons", "% of all"] + (["Δ"] if previous is not None else [])
    out = ['<table class="lape-counts" style="border-collapse:collapse;font-size:0.9em">']
    if caption:
        out.append(f'<caption style="text-align:left">{html.escape(caption)}</caption>')
    out.append(f"<thead>{_html_row('th', head)}</thead><tbody>")
    for lang, row in table.iterrows():
        code, count = html.escape(str(lang)), int(row["neurons"])
        swatch = f'<span style="color:{plots.language_color(str(lang))}">■</span> '
        cells = [
            f"{'' if lang == analysis.ALL else swatch}<b>{code}</b>",
            html.escape(str(row["name"])),
            f'<span data-count="{count}">{count:,}</span>',
            f"{row['percent']:.3f}",
        ]
        if previous is not None and lang not in previous:
            cells.append("new")
        elif previous is not None:
            delta = count - int(previous[lang])
            cells.append(f"{delta:+,}" if delta else "·")
        attrs = f' data-lang="{code}"'
        if lang == analysis.ALL:
            attrs += ' style="border-top:1px solid #999;font-weight:bold"'
        out.append(_html_row("td", cells, attrs))
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
    thresholds = f"top{cfg.top_rate:g}_filter{cfg.filter_rate:g}_bar{cfg.activation_bar_ratio:g}"
    return f"lape_{thresholds}_{'-'.join(languages)}.pt"


def save_selection(
    selection: NeuronSelection, save_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Save a selection (:meth:`NeuronSelection.save`) as ``save_dir`` / :func:`selection_filename`.

    Args:
        selection: The selection.
        save_dir: Folder (created if missing).
        overwrite: Replace an existing file.

    Returns:
        The path written (its ``.json`` sidecar lies next to it).

    Raises:
        FileExistsError: the file exists and ``overwrite`` is false.
    """
    name = selection_filename(selection.config, selection.languages)
    return selection.save(Path(save_dir) / name, overwrite=overwrite)


# ============================================================================ figures


def _figure(
    n_layers: int, n_lang: int, dpi: float, extra_height: float = 0.0
) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure with the explorer's three axes: layers, overlap, bars."""
    height = min(max(3.4, 1.4 + 0.11 * n_layers), 6.5) + extra_height
    width = min(max(10.0, 3.0 + 1.2 * n_lang), 15.0)
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, 3, width_ratios=[1.0, 1.15, 1.0])


class _LiveFigure:
    """The explorer's figure: layer heatmap, overlap heatmap and bars, updated in place.

    Drawn first for ``ceiling`` (the selection at the largest ``top_rate``), which fixes the
    colour limits and the bar axis. The static parts are cached as a background;
    :meth:`update` redraws only the animated artists on it (blitting).
    """

    def __init__(self, ceiling: NeuronSelection, heatmap_vmax: float | None, title: str) -> None:
        counts = analysis.layer_distribution(ceiling)
        self.languages = list(counts.columns)
        k = len(self.languages)
        self.fig, (ax_heat, ax_ov, ax_bar) = _figure(ceiling.n_layers, k, _LIVE_DPI)
        plots.plot_layer_distribution(
            counts, ax=ax_heat, vmin=0, vmax=heatmap_vmax, annot=False, colorbar=False,
            title="Neurons per layer",
        )
        plots.plot_overlap(
            ceiling, ax=ax_ov, vmin=0, annot=False, colorbar=False, title="Shared neurons"
        )
        self.heat_mesh, self.ov_mesh = ax_heat.collections[0], ax_ov.collections[0]
        # colour bars with an arrow: cells beyond the fixed limit saturate
        self.fig.colorbar(self.heat_mesh, ax=ax_heat, extend="max", label="neurons")
        self.fig.colorbar(self.ov_mesh, ax=ax_ov, extend="max", label="shared neurons")
        self.diagonal = np.eye(k, dtype=bool)
        cells = [(i, j) for i in range(k) for j in range(k)] if k <= 10 else []
        self.ov_texts = [  # numbers in the overlap cells (more than 10 languages: none)
            ax_ov.text(j + 0.5, i + 0.5, "", ha="center", va="center", fontsize="x-small")
            for i, j in cells
        ]
        plots.plot_language_counts(counts, ax=ax_bar, annotate=False, title="Neurons per language")
        self.bars = list(ax_bar.patches)
        self.bar_top = max(float(counts.sum(axis=0).max()), 1.0) * 1.18
        ax_bar.set_ylim(0, self.bar_top)
        self.bar_texts = [
            ax_bar.text(b.get_x() + b.get_width() / 2, 0, "", ha="center", va="bottom",
                        fontsize="x-small")
            for b in self.bars
        ]
        # the layout reserves room for the title as it is at the first draw: give it text
        self.title = self.fig.suptitle(title, fontsize="medium")
        self._animated = [
            self.heat_mesh, self.ov_mesh, *self.ov_texts, *self.bars, *self.bar_texts, self.title
        ]
        for artist in self._animated:
            artist.set_animated(True)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def update(self, selection: NeuronSelection, title: str) -> bytes:
        """Show ``selection`` (same languages as the figure); returns the PNG."""
        counts = analysis.layer_distribution(selection)
        self.heat_mesh.set_array(counts.to_numpy(dtype=float))
        ov = analysis.overlap(selection)[0].to_numpy(dtype=float)
        self.ov_mesh.set_array(np.ma.masked_where(self.diagonal, ov))
        if self.ov_texts:
            # zero off the diagonal stays blank (the lightest colour says it; blank text
            # costs nothing to draw); text colour from the cell's luminance, in one pass
            rgba = self.ov_mesh.cmap(self.ov_mesh.norm(ov))
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
        self.fig.canvas.restore_region(self.background)
        for artist in self._animated:
            self.fig.draw_artist(artist)
        buf = io.BytesIO()  # PIL at the lowest compression: faster than savefig
        PILImage.fromarray(np.asarray(self.fig.canvas.buffer_rgba())).save(
            buf, format="png", compress_level=1
        )
        return buf.getvalue()


# ============================================================================ explorer


class _Panel:
    """What both panels share: a status line, and display as their widget."""

    widget: widgets.Box
    message: widgets.HTML

    def _show(self, text: str, level: str) -> None:
        self.message.value = render_message_html(text, level)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """The widget's mime bundle, with a text fallback that says what it is and what to do."""
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = f"{self!r}\n{_FALLBACK_HINT}"
        return bundle


def _slider(name: str, value: float, bounds: tuple[float, float, float]) -> widgets.FloatSlider:
    lo, hi, step = bounds
    description, readout, tooltip = _SLIDERS[name]
    return _tagged(f"lape-{name.replace('_', '-')}", widgets.FloatSlider(
        value=value, min=min(lo, value), max=max(hi, value), step=step, description=description,
        readout_format=readout, continuous_update=False, tooltip=tooltip, style=_STYLE,
        layout={"width": "420px"},
    ))


class ExplorerPanel(_Panel):
    """A panel to move the LAPE thresholds and see the selection change live.

    Every change of a slider or of the languages re-identifies (:func:`reidentify`) and
    redraws the counts table and the figure, whose colour limits are fixed per set of
    languages by the largest ``top_rate`` (cells beyond saturate).

    Args:
        stats: Activation statistics, or the directory they were saved to.
        config: Initial thresholds.
        languages: Initially picked languages (default all; at least two).
        save_dir: Folder for *Save selection* (``None`` disables it).
        ranges: ``{threshold: (min, max, step)}`` replacing :data:`DEFAULT_RANGES`.
        heatmap_vmax: Fixed upper colour limit of the layer heatmap (neurons per cell).

    Attributes:
        widget: The ipywidgets container (the panel displays itself too).
        sliders: ``{threshold: FloatSlider}`` for :data:`THRESHOLDS`.
        language_picker: ``SelectMultiple`` of the competing languages.
        counts_html, image, message: The counts table, the live figure (PNG), the status.
        save_button, overwrite, save_status: *Save selection*, its overwrite ``Checkbox``
            and the outcome of the last save.
        selection, counts, config: The current (last valid) selection, its counts, its config.
        timings: Seconds of the last update: ``identify``, ``redraw`` and ``total``.

    Raises:
        TypeError: ``config`` is not a LapeConfig or ``stats`` not statistics.
        ValueError: bad ``languages`` or ``ranges``.
    """

    def __init__(
        self,
        stats: ActivationStats | str | os.PathLike,
        *,
        config: LapeConfig = LapeConfig(),
        languages: Sequence[str] | None = None,
        save_dir: str | os.PathLike | None = None,
        ranges: Mapping[str, tuple[float, float, float]] | None = None,
        heatmap_vmax: float | None = None,
    ) -> None:
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
        self.stats, self.base_config, self.heatmap_vmax = stats, config, heatmap_vmax
        self.save_dir = None if save_dir is None else Path(save_dir)
        bounds = dict(DEFAULT_RANGES)
        for name, rng in (ranges or {}).items():
            if name not in THRESHOLDS:
                raise ValueError(f"unknown threshold {name!r} in ranges; use {list(THRESHOLDS)}")
            lo, hi, step = (float(x) for x in rng)
            if not (lo < hi and step > 0):
                raise ValueError(f"range of {name} must be (min < max, step > 0), got {rng!r}")
            bounds[name] = (lo, hi, step)
        langs = _check_picked(stats.languages, languages)

        self.sliders = {
            name: _slider(name, getattr(config, name), bounds[name]) for name in THRESHOLDS
        }
        self.language_picker = _tagged("lape-languages", widgets.SelectMultiple(
            options=_language_options(stats.languages), value=tuple(langs),
            rows=min(len(stats.languages), 10), description="languages",
            tooltip="languages that compete (ctrl/shift-click to pick several)",
            style=_STYLE, layout={"width": "260px", "margin": "0 12px 0 0"},
        ))
        self.counts_html = _tagged("lape-counts-box", widgets.HTML())
        self.message = _tagged("lape-explorer-message", widgets.HTML())
        self.image = _tagged("lape-figure", widgets.Image(layout={"max_width": "100%"}))
        self.save_button = _tagged("lape-save", widgets.Button(
            description="Save selection", icon="save", disabled=self.save_dir is None,
            tooltip="pass save_dir= to threshold_explorer to enable saving"
            if self.save_dir is None else f"write the current selection to {self.save_dir}",
        ))
        self.overwrite = widgets.Checkbox(description="overwrite", indent=False,
                                          layout={"width": "110px"})
        self.save_status = _tagged("lape-save-status", widgets.HTML())

        self.selection: NeuronSelection | None = None
        self.counts: pd.DataFrame | None = None
        self.config: LapeConfig | None = None
        self.timings: dict[str, float] = {}
        self._live: _LiveFigure | None = None

        controls = widgets.VBox(
            [*self.sliders.values(), widgets.HBox([self.save_button, self.overwrite]),
             self.save_status],
            layout={"min_width": "430px", "margin": "0 12px 0 0"},
        )
        row = widgets.HBox([controls, self.language_picker, self.counts_html],
                           layout={"flex_flow": "row wrap"})
        self.widget = _tagged("lape-explorer", widgets.VBox([row, self.message, self.image]))
        self.update()
        for picker in (*self.sliders.values(), self.language_picker):
            picker.observe(self._on_change, names="value")
        self.save_button.on_click(self._on_save)

    # ------------------------------------------------------------------ updates and saving

    def _ceiling(self, langs: list[str], config: LapeConfig) -> NeuronSelection | None:
        """The selection at the slider's largest top_rate: it fixes the colour limits."""
        top_rate = min(self.sliders["top_rate"].max, 1.0)
        try:
            with _lape_warnings():  # its warnings are not the current selection's
                return identify(*_columns(self.stats, langs), langs,
                                dataclasses.replace(config, top_rate=top_rate))
        except (TypeError, ValueError) as err:
            logger.debug("colour limits from the current selection (%s)", err)
            return None

    def update(self) -> None:
        """Re-identify with the current widget values and redraw (what every change runs)."""
        t0 = time.perf_counter()
        values = {name: slider.value for name, slider in self.sliders.items()}
        sel, table, msg, level = _reidentify(
            self.stats, values, self.language_picker.value, self.base_config
        )
        t1 = time.perf_counter()
        if sel is None:
            self._show(msg + " (the figure and table still show the last valid selection)",
                       "error")
            return
        config = LapeConfig.from_dict(sel.config)
        title = f"{config.label()} · {len(sel.languages)} languages"
        rebuild = self._live is None or self._live.languages != sort_languages(sel.languages)
        if rebuild:  # first draw, or other languages: a new figure with new colour limits
            ceiling = self._ceiling(sel.languages, config) or sel
            self._live = _LiveFigure(ceiling, self.heatmap_vmax, title)
        self.image.value = self._live.update(sel, title)
        self.counts_html.value = render_counts_html(table, previous=self.counts,
                                                    caption=config.label())
        t2 = time.perf_counter()
        self.selection, self.counts, self.config = sel, table, config
        self.timings = {"identify": t1 - t0, "redraw": t2 - t1, "total": t2 - t0}
        self._show(
            f"{msg} · identified in {1000 * (t1 - t0):.0f} ms, "
            f"{'figure built' if rebuild else 'redrawn'} in {1000 * (t2 - t1):.0f} ms",
            level,
        )

    def _on_change(self, _change: dict) -> None:
        try:
            self.update()
        except Exception as err:  # a panel never shows a traceback
            logger.debug("explorer update failed", exc_info=True)
            self._show(f"Update failed: {type(err).__name__}: {err}", "error")

    def _on_save(self, _button: widgets.Button | None = None) -> None:
        """Save the current selection with :func:`save_selection` (what *Save selection* does)."""
        try:
            if self.save_dir is None:
                raise ValueError("no save_dir; pass save_dir= to threshold_explorer")
            if self.selection is None:
                raise ValueError("no valid selection to save; fix the thresholds first")
            path = save_selection(self.selection, self.save_dir, overwrite=self.overwrite.value)
            text, level = f"Saved {path}", "ok"
        except FileExistsError as err:
            text, level = f"{err}. Tick 'overwrite' to replace it.", "warning"
        except Exception as err:  # a panel never shows a traceback
            logger.debug("save failed", exc_info=True)
            text, level = f"Not saved: {type(err).__name__}: {err}", "error"
        self.save_status.value = render_message_html(text, level)

    # ------------------------------------------------------------------ static copies

    def static_figure(self) -> Figure:
        """The live figure's panels for the current selection, pyplot-free, limits fitted to it.

        Raises:
            ValueError: there is no valid selection.
        """
        sel = self.selection
        if sel is None:
            raise ValueError("no valid selection to draw; fix the thresholds first")
        fig, (ax_heat, ax_ov, ax_bar) = _figure(sel.n_layers, len(sel.languages), 100, 0.4)
        plots.plot_layer_distribution(sel, ax=ax_heat, title="Neurons per layer")
        plots.plot_overlap(sel, ax=ax_ov, title="Shared neurons")
        plots.plot_language_counts(sel, ax=ax_bar, title="Neurons per language")
        fig.suptitle(f"{self.config.label()} · {sel.total_distinct():,} distinct neurons",
                     fontsize="medium")
        return fig

    def static_png(self) -> bytes:
        """:meth:`static_figure` encoded as PNG."""
        buf = io.BytesIO()
        self.static_figure().savefig(buf, format="png")
        return buf.getvalue()

    def display_static(self) -> None:
        """Show the static copy (figure, counts table) as plain outputs that survive HTML export."""
        from IPython.display import HTML, Image, display

        if self.selection is None:
            display(HTML(render_message_html("no valid selection to show", "error")))
            return
        display(Image(data=self.static_png(), format="png"))
        display(HTML(render_counts_html(self.counts, caption=self.config.label())))

    def __repr__(self) -> str:
        return (
            f"ExplorerPanel({self.stats.n_layers}x{self.stats.n_neurons}, "
            f"languages={list(self.language_picker.value)}, config={self.config})"
        )


#: The explorer under the name the notebooks use: ``threshold_explorer(stats, ...)``.
threshold_explorer = ExplorerPanel


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
    """One unsteered and one steered answer by :func:`~lape_utils.steering.steer` (the callback).

    Args:
        model: The loaded model.
        neurons: Its language-specific neurons.
        stats: Its activation statistics (mean activations, for ``set`` and ``add``).
        prompt: The question (whitespace around it is stripped).
        source: The prompt's language, or ``None``.
        target: The language to steer to.
        mode: ``"set"``, ``"add"`` or ``"scale"``.
        strength: Multiplier of the mode.
        max_new_tokens: Tokens to generate.
        zero_source: Also deactivate the source language's neurons.

    Returns:
        Plain values: the arguments, the prompt's row of :attr:`SteerResult.rows
        <lape_utils.steering.SteerResult.rows>` and ``seconds``.

    Raises:
        lape_utils.intervene.InterventionError: bad input, before any generation.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InterventionError("the prompt is empty; type a question")
    started = time.perf_counter()
    out: dict[str, Any] = {
        "prompt": prompt.strip(), "source": source or None, "target": target, "mode": mode,
        "strength": float(strength), "max_new_tokens": int(max_new_tokens),
        "zero_source": bool(zero_source),
    }
    spec = SteerSpec(target, source=out["source"], zero_source=out["zero_source"], mode=mode,
                     strength=strength)
    generation = dataclasses.replace(PAPER_GENERATION, max_new_tokens=int(max_new_tokens))
    rows = steer(model, neurons, stats, [out["prompt"]], spec, generation=generation).rows
    out.update(rows.drop(columns=["neurons", "prompt"]).to_dict("records")[0])  # plain values
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
    name = f"{html.escape(language_name(lang))} ({html.escape(lang)})" if lang else "nothing"
    if label == lang and lang:
        verdict = f"{name}, confidence {score:.2f}"
    else:
        verdict = f"{html.escape(label)} (best guess {name}, confidence {score:.2f})"
    body = html.escape(text) if text.strip() else "<i>(empty answer)</i>"
    return (
        f'<div class="lape-answer {css_class}" style="border:1px solid #ccc;padding:6px;'
        f'border-radius:4px;min-height:4em">'
        f"<b>{html.escape(heading)}</b>"
        f'<div class="lape-answer-text" style="white-space:pre-wrap;margin:4px 0">{body}</div>'
        f'<div class="lape-detected" data-lang="{html.escape(label)}">detected: {verdict}</div>'
        "</div>"
    )


class SteeringPanel(_Panel):
    """A panel to steer generation towards a language and compare with the plain answer.

    Only *Generate* generates (:func:`run_steering`): both answers side by side, with the
    detected language and its confidence.

    Args:
        model: The loaded model (:func:`lape_utils.load_model`).
        neurons: Its language-specific neurons.
        stats: Its activation statistics (``set``/``add`` use their mean activations).
        prompts: Questions to offer (default the built-in ones of the source language).
        source: The prompts' language (default ``"en"`` when the neuron set has it).
        target: The language to steer to (default the first other language).
        mode: Initial mode, ``"set"``, ``"add"`` or ``"scale"``.
        strength: Initial strength.
        max_new_tokens: Initial number of tokens to generate.
        zero_source: Initially also deactivate the source's neurons.

    Attributes:
        widget: The ipywidgets container (the panel displays itself too).
        prompt, source, target, mode, strength, max_new_tokens, zero_source: The settings.
        examples: ``Dropdown`` of the questions; picking one fills :attr:`prompt`.
        generate_button: Runs :meth:`generate`.
        message, unsteered_html, steered_html: The status, and the two answers.
        results: Every result of :func:`run_steering` so far.
    """

    def __init__(
        self,
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
        self.prompt = _tagged("lape-prompt", widgets.Textarea(
            value=self.prompts[0] if self.prompts else "", placeholder="type a question",
            description="prompt", rows=3, style=_STYLE, layout={"width": "95%"},
        ))
        self.examples = widgets.Dropdown(
            options=self._example_options(), value=None, description="examples", style=_STYLE,
            layout={"width": "95%"},
        )
        self.source = widgets.Dropdown(
            options=[("none", None), *_language_options(neurons.languages)], value=source,
            description="source", style=_STYLE, layout={"width": "260px"},
            tooltip="the prompt's language (deactivated with 'zero source')",
        )
        self.target = widgets.Dropdown(
            options=_language_options(targets), value=target, description="target",
            style=_STYLE, layout={"width": "260px"},
        )
        self.mode = widgets.ToggleButtons(
            options=list(MODES), value=mode, description="mode", tooltips=_MODE_TOOLTIPS,
            style=_STYLE | {"button_width": "70px"},
        )
        self.strength = widgets.FloatSlider(
            value=float(strength), min=min(0.0, strength), max=max(10.0, strength), step=0.1,
            description="strength", continuous_update=False, readout_format=".2f",
            style=_STYLE, layout={"width": "420px"},
        )
        self.max_new_tokens = widgets.IntSlider(
            value=int(max_new_tokens), min=1, max=max(256, int(max_new_tokens)), step=1,
            description="max tokens", continuous_update=False, style=_STYLE,
            layout={"width": "420px"},
        )
        self.zero_source = widgets.Checkbox(value=bool(zero_source), indent=False,
                                            description="also deactivate the source's neurons")
        self.generate_button = _tagged("lape-generate", widgets.Button(
            description="Generate", button_style="primary", icon="play",
            tooltip="generate the unsteered and the steered answer",
        ))
        self.message = _tagged("lape-steering-message", widgets.HTML(
            render_message_html("press Generate to compare the two answers", "info")
        ))
        self.unsteered_html = _tagged("lape-unsteered",
                                      widgets.HTML(layout={"width": "49%", "margin": "0 1% 0 0"}))
        self.steered_html = _tagged("lape-steered", widgets.HTML(layout={"width": "49%"}))

        self.examples.observe(self._on_example, names="value")
        self.source.observe(self._on_source, names="value")
        for w in (self.prompt, self.target, self.mode, self.strength, self.max_new_tokens,
                  self.zero_source):
            w.observe(self._on_setting, names="value")
        self.generate_button.on_click(lambda _button: self.generate())

        languages = widgets.HBox([self.source, self.target, self.zero_source],
                                 layout={"flex_flow": "row wrap"})
        answers = widgets.HBox([self.unsteered_html, self.steered_html], layout={"width": "100%"})
        self.widget = _tagged("lape-steering", widgets.VBox([
            self.prompt, self.examples, languages, self.mode, self.strength,
            self.max_new_tokens, widgets.HBox([self.generate_button]), self.message, answers,
        ]))

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
        if self._builtin:  # the built-in questions follow the source language
            was_example = self.prompt.value in self.prompts or not self.prompt.value.strip()
            self.prompts = self._load_prompts(change["new"])
            self.examples.unobserve(self._on_example, names="value")
            self.examples.options = self._example_options()
            self.examples.value = None
            self.examples.observe(self._on_example, names="value")
            if was_example and self.prompts:  # a typed question is kept
                self.prompt.value = self.prompts[0]
        self._on_setting(change)

    def _on_setting(self, _change: dict) -> None:
        if self.results:
            self._show("settings changed since the answers below; press Generate", "info")

    # ------------------------------------------------------------------ generation

    def generate(self) -> dict[str, Any] | None:
        """Generate with the current settings and show both answers (what *Generate* does).

        Returns:
            The :func:`run_steering` result, or ``None`` on failure (shown in the panel).
        """
        button = self.generate_button
        button.disabled, button.description = True, "Generating…"
        self._show("generating the unsteered and the steered answer…", "info")
        try:
            result = run_steering(
                self.model, self.neurons, self.stats, self.prompt.value, self.source.value,
                self.target.value, self.mode.value, float(self.strength.value),
                int(self.max_new_tokens.value), zero_source=bool(self.zero_source.value),
            )
        except Exception as err:  # a panel never shows a traceback
            logger.debug("steering failed", exc_info=True)
            self._show(f"Not generated: {type(err).__name__}: {err}", "error")
            return None
        finally:
            button.disabled, button.description = False, "Generate"
        self.results.append(result)
        setting = f"{result['mode']} × {result['strength']:g}"
        if result["zero_source"]:
            setting += f", {result['source']} neurons zeroed"
        headings = {"unsteered": "unsteered",
                    "steered": f"steered to {result['target']} ({setting})"}
        for kind, box in (("unsteered", self.unsteered_html), ("steered", self.steered_html)):
            box.value = render_answer_html(
                headings[kind], result[kind], result[f"{kind}_lang"], result[f"{kind}_score"],
                result[f"{kind}_label"], css_class=f"lape-{kind}-answer",
            )
        self._show(f"done in {result['seconds']:.1f} s · chrF of steered vs unsteered "
                   f"{result['chrf']:.0f}", "ok")
        return result

    # ------------------------------------------------------------------ static copies

    def static_table(self) -> pd.DataFrame:
        """Every answer generated so far, one row per Generate (a normal, exportable output).

        Returns:
            DataFrame with ``prompt``, ``target``, ``mode``, ``strength``, ``unsteered``,
            ``unsteered_detected``, ``steered``, ``steered_detected`` and ``chrf``.
        """
        rows = [
            r | {f"{k}_detected": f"{r[k + '_label']} ({r[k + '_score']:.2f})"
                 for k in ("unsteered", "steered")}
            for r in self.results
        ]
        return pd.DataFrame(rows, columns=[
            "prompt", "target", "mode", "strength", "unsteered", "unsteered_detected",
            "steered", "steered_detected", "chrf",
        ])

    def display_static(self) -> None:
        """Display :meth:`static_table` as a normal HTML output (survives HTML export)."""
        from IPython.display import HTML, display

        table = self.static_table()
        if table.empty:
            display(HTML(render_message_html("no answer generated yet", "info")))
        else:
            display(HTML(table.to_html(index=False, classes="lape-steering-table")))

    def __repr__(self) -> str:
        return (
            f"SteeringPanel({getattr(self.model, 'name', self.model)!r}, "
            f"languages={self.neurons.languages}, {len(self.results)} results)"
        )


#: The steering panel under the name the notebooks use: ``steering_panel(model, ...)``.
steering_panel = SteeringPanel
