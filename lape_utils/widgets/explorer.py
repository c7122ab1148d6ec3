"""The threshold explorer: move the three LAPE thresholds and the languages, see the selection.

Every change re-identifies at once (:func:`reidentify`, a plain function) and redraws; nothing
here touches a model.
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

import ipywidgets as widgets
import pandas as pd
import torch
from matplotlib.figure import Figure

from lape_utils import analysis, plots
from lape_utils.languages import language_name, sort_languages
from lape_utils.lape import LapeConfig, identify
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats

from ._live_figure import _figure, _LiveFigure
from ._panel import (
    _STYLE,
    _language_options,
    _Panel,
    _tagged,
    render_message_html,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RANGES",
    "THRESHOLDS",
    "ExplorerPanel",
    "config_from_values",
    "counts_table",
    "reidentify",
    "render_counts_html",
    "save_selection",
    "selection_filename",
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


# ============================================================================ the panel


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
