"""Interactive panels (ipywidgets 8): the threshold explorer and the steering panel.

The explorer (:mod:`.explorer`) re-identifies live on every slider move and never touches a
model; the steering panel (:mod:`.steering`) generates only when its button is pressed. Each
panel is a thin layer of widgets over plain functions (:func:`reidentify`,
:func:`save_selection`, :func:`run_steering`) that the tests call without a browser. Sliders
act on release; bad input shows as a message in the panel, never as a traceback. Each panel
has a static copy that survives export to HTML (widgets need a live kernel)::

    from lape_utils.widgets import threshold_explorer
    explorer = threshold_explorer(stats, config=config, save_dir=CACHE_DIR / "selections")
    explorer                    # the live panel
    explorer.display_static()   # the static copy (figure + table) for exported HTML
"""

from lape_utils.steering import MODES  # offered here for the steering panel's callers

from ._panel import render_message_html
from .explorer import (
    DEFAULT_RANGES,
    THRESHOLDS,
    ExplorerPanel,
    config_from_values,
    counts_table,
    reidentify,
    render_counts_html,
    save_selection,
    selection_filename,
    threshold_explorer,
)
from .steering import (
    SteeringPanel,
    render_answer_html,
    run_steering,
    steering_panel,
)

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
