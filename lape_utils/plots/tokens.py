"""The HTML token view: a neuron's top-activating contexts, each token shaded by activation.

HTML rather than a figure, so that the browser draws any script.
"""

from __future__ import annotations

import html

import pandas as pd
from IPython.display import HTML
from matplotlib import colors as mcolors

from lape_utils.languages import language_name

from ._common import _language_order, _require, language_color

__all__ = ["top_contexts_html"]


# ============================================================================ inspection


def _token_span(text: str, value: float, scale: float, rgb: tuple, center: bool) -> str:
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, value / scale))
    shown = html.escape(text.replace("\n", "⏎")) or "&nbsp;"
    style = f"background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.2f});"
    if center:
        style += " outline: 1px solid #333; font-weight: bold;"
    return (f'<span class="lape-token" title="{value:.3g}" style="{style} white-space: pre;">'
            f"{shown}</span>")


def top_contexts_html(
    df: pd.DataFrame, *, language: str | None = None, n_per_language: int = 5
) -> HTML:
    """The contexts that activate a neuron most, each token shaded by the activation.

    Shade = activation / the largest, in the neuron's language colour (hover: the value);
    the top token is outlined.

    Args:
        df: :func:`lape_utils.capture.top_activating_contexts` (``language``, ``activation``,
            ``tokens``, ``activations``, ``center``; ``attrs`` ``layer`` and ``neuron``).
        language: The language whose neuron this is (named in the title, sets the colour).
        n_per_language: Contexts shown per language (highest activation first).

    Returns:
        IPython ``HTML`` (``.data``): the browser draws any script, matplotlib's font cannot.
    """
    _require(df, ["language", "activation", "tokens", "activations", "center"], "the table")
    layer, neuron = df.attrs.get("layer"), df.attrs.get("neuron")
    who = f"neuron L{layer}.{neuron}" if layer is not None else "a neuron"
    if language:
        who += f" ({language_name(language)} neuron)"
    rgb = tuple(int(255 * c) for c in mcolors.to_rgb(language_color(language or "all")))
    scale = max((max(a) for a in df["activations"] if len(a)), default=0.0)
    lines = [f'<div class="lape-contexts"><b>Top-activating contexts of {html.escape(who)}'
             f"</b> · shade = activation / {scale:.3g}"]
    if df.empty:
        lines.append("<div><i>no contexts</i></div>")
    langs = df["language"].astype(str)
    for lang in _language_order(langs.unique()):
        part = df[langs == lang].sort_values("activation", ascending=False)
        for _, r in part.head(n_per_language).iterrows():
            spans = "".join(_token_span(t, v, scale, rgb, i == r["center"])
                            for i, (t, v) in enumerate(zip(r["tokens"], r["activations"])))
            lines.append(f'<div style="margin: 2px 0"><code>{html.escape(lang)}</code> '
                         f'<code>{r["activation"]:.3g}</code> {spans}</div>')
    return HTML("\n".join(lines) + "</div>")
