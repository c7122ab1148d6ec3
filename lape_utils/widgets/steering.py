"""The steering panel: steer generation towards a language, next to the plain answer.

Only the *Generate* button generates (:func:`run_steering`, a plain function); changing a
setting only says that the answers shown are out of date.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from lape_utils.intervene import InterventionError
from lape_utils.languages import language_name, sort_languages
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats
from lape_utils.steering import MODES, PAPER_GENERATION, SteerSpec, steer

from ._panel import (
    _STYLE,
    _language_options,
    _Panel,
    _tagged,
    render_message_html,
)

if TYPE_CHECKING:
    from lape_utils.models import LapeModel

logger = logging.getLogger(__name__)

__all__ = ["SteeringPanel", "render_answer_html", "run_steering", "steering_panel"]

_MODE_TOOLTIPS = [  # one per mode of MODES
    "set the target's neurons to strength x their mean activation on the target (paper)",
    "add strength x the mean activation on the target",
    "multiply the target's neurons' activation by strength",
]


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
