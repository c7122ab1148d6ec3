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

The figures of a selection and its statistics are in :mod:`.selection`, those of causal
evidence in :mod:`.evidence`, the HTML token view in :mod:`.tokens`; all share
:mod:`._common` (colours, style helpers, :func:`save_figure`).
"""

from ._common import (
    DIVERGING_CMAP,
    LANGUAGE_COLORS,
    SEQUENTIAL_CMAP,
    SET_COLORS,
    language_color,
    save_figure,
)
from .evidence import (
    plot_ppl_comparison,
    plot_ppl_heatmap,
    plot_steering_sweep,
    plot_threshold_effect,
)
from .selection import (
    plot_convergence,
    plot_entropy_distribution,
    plot_language_counts,
    plot_layer_distribution,
    plot_layer_distribution_grid,
    plot_overlap,
    plot_probability_profiles,
    plot_stability,
)
from .tokens import top_contexts_html

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
