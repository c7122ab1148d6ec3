"""What both panels share: the ``_Panel`` base (status line, display), CSS tags and styles.

Also the status-message renderer both panels use; nothing here depends on LAPE or steering.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, TypeVar

import ipywidgets as widgets

from lape_utils.languages import language_name, sort_languages

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
