"""The explorer's figure: layer heatmap, overlap heatmap and bars, pyplot-free.

The live copy redraws only what changes (blitting) so that a slider move stays fast.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image as PILImage

from lape_utils import analysis, plots
from lape_utils.selection import NeuronSelection

_LIVE_DPI = 90  # resolution of the live figure (lower is faster)


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
