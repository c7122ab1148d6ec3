"""Exercises of the four notebooks, ARENA style: a stub to fill in, a check that explains.

Every exercise has an objective, an estimated time, a difficulty (1-3 stars), a stub the
student fills in the notebook, a check here and a hidden solution in
:mod:`lape_utils.solutions`. A notebook cell runs::

    from lape_utils import exercises as ex

    def toy_entropy(p: list[float]) -> float:
        ...  # the student's code

    ex.check_toy_entropy(toy_entropy)     # -> a green "✓ ..." or red "✗ ..." box
    ex.show_solution("toy_entropy")       # in a collapsed cell: the solution's code
    ex.overview("01")                     # the exercises of notebook 01, as a table

A check never raises for a wrong answer: it returns :class:`Feedback` saying in plain words
what is wrong (an unfilled stub, an exception in the student's code, or the typical mistake
its answer matches), so a notebook run headless with the stubs unfilled shows feedback, not
a traceback. The ground truth is the package itself (:func:`~lape_utils.lape.lape_entropy`,
:func:`~lape_utils.lape.kth_quantile`, :func:`~lape_utils.intervene.apply_op`,
:func:`~lape_utils.evaluate.nll`, ...), on inputs the check builds or on the notebook's data.
"""

from __future__ import annotations

import functools
import html
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest, norm

from lape_utils import solutions
from lape_utils.analysis import overlap, probability_profiles
from lape_utils.config import LapeConfig
from lape_utils.evaluate import nll
from lape_utils.intervene import Intervention, InterventionError, apply_op, forward_logits
from lape_utils.languages import language_name
from lape_utils.lape import activation_probability, identify, kth_quantile, lape_entropy
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats

__all__ = [
    "EXERCISES",
    "Exercise",
    "Feedback",
    "Solution",
    "check_assign_languages",
    "check_most_specific_neuron",
    "check_overlap_prediction",
    "check_pooled_threshold",
    "check_shared_zero",
    "check_specificity_table",
    "check_steered_activation",
    "check_target_mass",
    "check_toy_entropy",
    "check_wilson_interval",
    "check_zero_in_trace",
    "overview",
    "show_solution",
]


# ============================================================================ machinery


@dataclass(frozen=True)
class Feedback:
    """What a check says about an answer: passed or not, and why, in plain words.

    Renders in Jupyter as a green "✓ ..." or red "✗ ..." box; ``repr`` is the same text.

    Attributes:
        passed: Whether the answer is right.
        message: The explanation (what is right, or the first thing that is wrong).
    """

    passed: bool
    message: str

    def __repr__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.message}"

    def _repr_html_(self) -> str:
        colour, background = ("#1a7f37", "#dafbe1") if self.passed else ("#cf222e", "#ffebe9")
        return (
            f'<div style="border-left: 4px solid {colour}; background: {background}; '
            'color: #1f2328; padding: 6px 10px; white-space: pre-wrap; font-family: '
            f'sans-serif;"><b style="color: {colour}">{"✓" if self.passed else "✗"}</b> '
            f"{html.escape(self.message)}</div>"
        )


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook.

    Attributes:
        name: Identifier; also the name of the function the student writes and of its
            solution in :mod:`lape_utils.solutions`.
        notebook: ``"01"`` .. ``"04"``.
        title: Short title.
        objective: What the student will be able to do (or see) afterwards.
        minutes: Estimated time.
        difficulty: 1 (★) to 3 (★★★).
        check: The check, ``check(answer, *data) -> Feedback``.
    """

    name: str
    notebook: str
    title: str
    objective: str
    minutes: int
    difficulty: int
    check: Callable[..., Feedback]

    @property
    def stars(self) -> str:
        """The difficulty as stars, e.g. ``"★★"``."""
        return "★" * self.difficulty


#: Every exercise by name, in notebook order.
EXERCISES: dict[str, Exercise] = {}


class _Stop(Exception):
    """Ends a check early with its feedback (never leaves this module)."""

    def __init__(self, feedback: Feedback):
        super().__init__(feedback.message)
        self.feedback = feedback


def _fail(message: str) -> NoReturn:
    raise _Stop(Feedback(False, message))


def _exercise(name: str, notebook: str, title: str, objective: str, minutes: int,
              difficulty: int):
    """Registers a check as an exercise; the check returns Feedback, or stops with it."""

    def register(check: Callable[..., Feedback]) -> Callable[..., Feedback]:
        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> Feedback:
            try:
                return check(*args, **kwargs)
            except _Stop as stop:
                return stop.feedback

        EXERCISES[name] = Exercise(name, notebook, title, objective, minutes, difficulty, run)
        return run

    return register


def _call(fn: Any, *args: Any, hint: Callable[[Exception], str] | None = None) -> Any:
    """Calls the student's function; an unfilled stub or an exception ends the check.

    ``hint(err)`` may add an explanation of a typical exception.
    """
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        _fail(
            f"pass the function itself, without calling it: got a {type(fn).__name__} "
            f"({_short(fn)}), not a function."
        )
    try:
        return fn(*args)
    except NotImplementedError:
        _fail(
            f"not done yet: replace `raise NotImplementedError` in `{name}` with your code, "
            "then run this cell again."
        )
    except Exception as err:  # the student's bug, reported in one line
        lines = str(err).strip().splitlines()
        text = lines[0][:200] if lines else ""
        line = None
        code = getattr(fn, "__code__", None)
        tb = err.__traceback__
        while tb is not None:  # the deepest line of the student's own file
            if code is not None and tb.tb_frame.f_code.co_filename == code.co_filename:
                line = tb.tb_lineno - code.co_firstlineno + 1
            tb = tb.tb_next
        where = f" (line {line} of `{name}`)" if line else ""
        _fail(_join(f"your `{name}` raised {type(err).__name__}: {text}{where}.",
                    hint(err) if hint else ""))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _row(t: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in t.tolist()]


def _number(value: Any, name: str) -> float:
    """The student's answer as a float, or a failure saying what came back instead."""
    if value is None:
        _fail(f"`{name}` returned None: did you forget `return`?")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if (value.size if isinstance(value, np.ndarray) else value.numel()) != 1:
            _fail(
                f"`{name}` returned an array of shape {tuple(value.shape)}; return one number "
                "(a float; `.item()` turns a one-element tensor into one)."
            )
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        _fail(f"`{name}` returned {type(value).__name__} {_short(value)}; return one number.")


def _tensor(value: Any, name: str) -> torch.Tensor:
    if value is None:
        _fail(f"`{name}` returned None: did you forget `return`?")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        _fail(f"`{name}` returned {type(value).__name__} {_short(value)}; return a tensor.")


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _diagnose(answer: float, mistakes: list[tuple[float, str]], tol: float = 1e-6) -> str:
    """The message of the first typical mistake whose value equals the answer, or ``""``."""
    return next((msg for value, msg in mistakes if _close(answer, value, tol)), "")


def _join(head: str, why: str) -> str:
    """``head``, then the diagnosis ``why`` as a sentence of its own (if any).

    A leading plain word is capitalised; code (``math.log``, ``torch.quantile``) is not.
    """
    if not why:
        return head
    first = why.split(" ", 1)[0]
    return f"{head} {why[0].upper() + why[1:] if first.isalpha() else why}"


def _ok(message: str) -> Feedback:
    return Feedback(True, message)


def _lang(code: str) -> str:
    return language_name(code)


# ============================================================================ 01 detection

_ENTROPY_CASES = (
    [0.8, 0.4, 0.2],  # no zero, not summing to 1: shows log base and normalisation
    [0.5, 0.0, 0.25],  # a zero: 0·log 0
    [0.3, 0.3, 0.3],  # equally active everywhere: ln 3
    [0.0, 0.7, 0.0],  # one language only: 0
    [0.0, 0.0, 0.0],  # never active: 0, not NaN
)


def _entropy_hint(err: Exception) -> str:
    if "math domain error" in str(err):
        return ("math.log(0) is undefined: 0·log 0 must count as 0, so skip the languages "
                "where Q = 0.")
    if isinstance(err, ZeroDivisionError):
        return "a never-active neuron has sum(P) = 0: return 0.0 for it (its entropy is 0)."
    return ""


@_exercise(
    "toy_entropy", "01", "The LAPE entropy of one neuron",
    "Compute a neuron's LAPE score by hand from its activation probabilities in three "
    "languages: normalise across languages, natural log, 0·log 0 = 0.",
    10, 1,
)
def check_toy_entropy(toy_entropy: Callable[[list[float]], float]) -> Feedback:
    """Checks ``toy_entropy(p) -> float`` on five neurons against :func:`lape_entropy`.

    Args:
        toy_entropy: The student's function.

    Returns:
        The feedback.
    """
    for p in _ENTROPY_CASES:
        truth = float(lape_entropy(torch.tensor(p, dtype=torch.float64)))
        answer = _number(_call(toy_entropy, list(p), hint=_entropy_hint), "toy_entropy")
        if _close(answer, truth):
            continue
        head = f"for p = {p} you returned {_fmt(answer)}; expected {_fmt(truth)}."
        if math.isnan(answer) and sum(p) == 0:
            _fail(
                f"{head} A neuron that is never active (all P = 0) has Q = 0 everywhere and "
                "entropy 0: your answer is NaN because sum(P) = 0 and 0/0 is NaN. Return 0.0 "
                "when sum(p) == 0."
            )
        if math.isnan(answer):
            _fail(
                f"{head} 0·log 0 must count as 0: your answer is NaN (log 0 = -inf, and "
                "0 × -inf is NaN). Skip the languages where Q = 0."
            )
        total = sum(p)
        q = [x / total for x in p] if total else [0.0] * len(p)

        def h(values, log):
            return -sum(x * log(x) for x in values if x > 0)

        why = _diagnose(answer, [
            (h(q, math.log2), "You used log base 2; LAPE uses the natural log (math.log or "
                              "torch.log)."),
            (h(q, math.log10), "You used log base 10; LAPE uses the natural log (math.log)."),
            (h(p, math.log), "You did not normalise P across languages first: Q = P / sum(P), "
                             "then H = -sum(Q · ln Q)."),
            (h(p, math.log2), "You did not normalise P across languages first (Q = P / sum(P)) "
                              "and used log base 2 instead of the natural log."),
            (-truth, "Your sign is wrong: H = -sum(Q · ln Q), which is never negative."),
        ])
        _fail(_join(head, why))
    return _ok(
        "toy_entropy is right on all 5 neurons: 0 for a neuron active in one language only "
        f"(or never active), ln 3 = {math.log(3):.4f} for one equally active in all three."
    )


def _threshold_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(7)
    cases = []
    # N = 2·25·3 = 150 values, rate 0.93: N·rate = 139.5 -> round 140 (int() would give 139)
    for (layers, neurons), rate in (((2, 25), 0.93), ((3, 40), 0.95), ((3, 40), 0.5)):
        n = torch.tensor([1000, 640, 1250])
        frac = torch.rand(layers, neurons, 3, generator=gen) ** 3  # mostly small, like real P
        cases.append(((frac * n).round().long(), n, rate))
    return cases


@_exercise(
    "pooled_threshold", "01", "The filter threshold tau, as the reference computes it",
    "Compute the pooled quantile the filter and the activation bar use: P = over_zero / n, "
    "pooled over layers, neurons and languages, the round(N·rate)-th smallest value.",
    15, 2,
)
def check_pooled_threshold(pooled_threshold: Callable[..., float]) -> Feedback:
    """Checks ``pooled_threshold(over_zero, n, rate) -> float`` against :func:`kth_quantile`.

    Args:
        pooled_threshold: The student's function.

    Returns:
        The feedback.
    """
    for over_zero, n, rate in _threshold_cases():
        n_layers, _, n_lang = over_zero.shape
        p = activation_probability(over_zero, n)
        truth = kth_quantile(p, rate)
        raw = _call(pooled_threshold, over_zero.clone(), n.clone(), rate)
        size = raw.numel() if torch.is_tensor(raw) else getattr(raw, "size", 1)
        if isinstance(raw, (torch.Tensor, np.ndarray)) and size in (n_lang, n_layers):
            per = "language" if size == n_lang else "layer"
            _fail(
                f"you returned {size} values, one threshold per {per}; tau is ONE number: "
                "pool P over layers, neurons AND languages (flatten everything) and take "
                "one quantile."
            )
        answer = _number(raw, "pooled_threshold")
        if _close(answer, truth):
            continue
        flat = p.flatten()
        k = round(flat.numel() * rate)

        def kth(values, j):
            return values.flatten().kthvalue(j).values.item()

        mistakes = [
            (torch.quantile(flat.double(), rate).item(),
             "torch.quantile (like numpy.quantile) interpolates between two neighbouring "
             "values; the reference takes the k-th smallest value itself, "
             "flat.kthvalue(round(N · rate)), so tau is always one of the P values."),
            (kth(over_zero.float(), k),
             "you took the quantile of the counts over_zero; divide by n first: "
             "P = over_zero / n."),
            (torch.quantile(over_zero.flatten().double(), rate).item(),
             "you took the quantile of the counts over_zero; divide by n first: "
             "P = over_zero / n (and take the k-th smallest, not torch.quantile)."),
            (kth(over_zero / n.sum(), k),
             "you divided by the total number of tokens; divide each language's counts by "
             "its own n[k]: P = over_zero / n (n broadcasts over the last axis)."),
            (kth(flat, int(flat.numel() * rate)),
             "you truncated N · rate with int(); the reference rounds: k = round(N · rate)."),
            (kth(flat, min(k + 1, flat.numel())),
             "off by one: kthvalue is 1-indexed (kthvalue(1) is the minimum); with a 0-indexed "
             "sort take sorted(P)[k - 1]."),
            (kth(flat, max(k - 1, 1)),
             "off by one: you took the (k - 1)-th smallest; take the k-th, k = round(N · rate) "
             "(kthvalue(k), or sorted(P)[k - 1] 0-indexed)."),
            (sum(kth_quantile(p[..., j], rate) for j in range(n_lang)) / n_lang,
             "you averaged one threshold per language; tau is ONE quantile of all P pooled "
             "over layers, neurons and languages."),
            (sum(kth_quantile(p[i], rate) for i in range(n_layers)) / n_layers,
             "you averaged one threshold per layer; tau is ONE quantile of all P pooled over "
             "layers, neurons and languages."),
            (kth_quantile(p, 1 - rate),
             "you took the (1 - rate) quantile; tau is the round(N · rate)-th SMALLEST value."),
        ]
        why = _diagnose(answer, mistakes, tol=1e-6)
        _fail(_join(f"on counts of shape {tuple(over_zero.shape)} with rate {rate} you "
                    f"returned {_fmt(answer)}; tau is {_fmt(truth)}.", why))
    return _ok(
        "pooled_threshold matches lape_utils.kth_quantile on 3 cases: one number for all "
        "layers, neurons and languages, the round(N · rate)-th smallest P."
    )


# bar 0.25; rows 2 and 6 hold a P equal to the bar (dyadic numbers: exact in float32)
_ASSIGN_P = torch.tensor([
    [0.875, 0.0625, 0.125, 0.0],
    [0.625, 0.5, 0.0, 0.125],
    [0.25, 0.75, 0.25, 0.0],
    [0.125, 0.1875, 0.0625, 0.0],
    [0.375, 0.4375, 0.5, 0.3125],
    [0.0, 0.0, 0.3125, 0.0],
    [0.25, 0.0, 0.0, 0.0],
    [0.1875, 0.625, 0.0, 0.875],
])
_ASSIGN_BAR = 0.25


def _one_hot_argmax(p: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).bool()


@_exercise(
    "assign_languages", "01", "Which languages a selected neuron belongs to",
    "Assign each selected neuron to EVERY language whose activation probability exceeds the "
    "bar, so that one neuron can belong to several languages.",
    10, 1,
)
def check_assign_languages(assign_languages: Callable[..., torch.Tensor]) -> Feedback:
    """Checks ``assign_languages(p_selected, bar) -> bool [n, lang]`` on 8 neurons.

    Args:
        assign_languages: The student's function.

    Returns:
        The feedback.
    """
    p, bar = _ASSIGN_P, _ASSIGN_BAR
    truth = p > bar
    answer = _tensor(_call(assign_languages, p.clone(), bar), "assign_languages")
    if tuple(answer.shape) == tuple(p.T.shape):
        _fail(
            f"your answer has shape {tuple(answer.shape)}, [lang, n]; return [n, lang] like "
            f"p_selected {tuple(p.shape)}: one row per neuron, one column per language."
        )
    if tuple(answer.shape) != tuple(p.shape):
        _fail(
            f"your answer has shape {tuple(answer.shape)}; return a bool tensor shaped like "
            f"p_selected, {tuple(p.shape)} [n, lang]."
        )
    if answer.dtype != torch.bool:
        if not bool(((answer == 0) | (answer == 1)).all()):
            _fail(f"return a bool tensor (True where the neuron belongs); got {answer.dtype} "
                  "values other than 0 and 1.")
        answer = answer != 0
    if torch.equal(answer, truth):
        return _ok(
            "assign_languages is right: rows 1, 4 and 7 belong to several languages, rows 3 "
            "and 6 to none (a P equal to the bar does not count)."
        )
    q = p / p.sum(dim=1, keepdim=True)
    mistakes = [
        (p >= bar, "a neuron whose P equals the bar exactly does not belong: use > bar, not "
                   ">= bar (rows 2 and 6 hold a P of exactly 0.25)."),
        (_one_hot_argmax(p), "each neuron got exactly one language (the argmax); a neuron "
                             "belongs to EVERY language whose P exceeds the bar (row 1 has "
                             "P = 0.625 and 0.5: both languages), and to none if no P does "
                             "(row 3)."),
        (_one_hot_argmax(p) & truth, "each neuron got at most one language (the argmax); a "
                                     "neuron belongs to EVERY language whose P exceeds the "
                                     "bar (row 1 has P = 0.625 and 0.5: both languages)."),
        (p < bar, "you inverted the test: a neuron belongs where P > bar."),
        (p <= bar, "you inverted the test: a neuron belongs where P > bar."),
        (q > bar, "compare P itself with the bar, not the normalised Q = P / sum(P)."),
    ]
    why = next((msg for wrong, msg in mistakes if torch.equal(answer, wrong)), "")
    row = int((answer != truth).any(dim=1).nonzero()[0, 0])
    _fail(_join(f"row {row} (P = {p[row].tolist()}, bar = {bar}): you returned "
                f"{answer[row].tolist()}, expected {truth[row].tolist()}.", why))


# ============================================================================ 02 distribution

_SCRIPTS = {
    **dict.fromkeys(("en", "fr", "es", "de", "it", "pt", "nl", "vi", "id", "ms", "tr", "pl",
                     "cs", "sv", "da", "fi", "ro", "ca"), "Latin"),
    **dict.fromkeys(("ru", "uk", "bg", "sr", "be", "kk", "mk"), "Cyrillic"),
    "zh": "Han", "ja": "Han and kana", "ko": "Hangul", "ar": "Arabic", "fa": "Arabic",
    "hi": "Devanagari", "mr": "Devanagari", "el": "Greek", "he": "Hebrew", "th": "Thai",
}


def _why_shared(a: str, b: str) -> str:
    sa, sb = _SCRIPTS.get(a), _SCRIPTS.get(b)
    if {a, b} == {"zh", "ja"}:
        return ("Chinese and Japanese both write with Han characters, so many tokens, and "
                "the neurons that read them, are common to both.")
    if {a, b} == {"ja", "ko"}:
        return ("Japanese and Korean are written differently but have similar grammar (verb "
                "last, particles after nouns) and many words borrowed from Chinese.")
    if sa and sa == sb:
        return (f"{_lang(a)} and {_lang(b)} are both written in the {sa} script and share "
                "word pieces, so the same neurons fire on both.")
    return ("Their scripts differ, so what they share is something else: numbers, names, "
            "punctuation, loanwords, or similar subjects in the corpus.")


@_exercise(
    "overlap_prediction", "02", "Predict which languages share the most neurons",
    "Before looking at the overlap plot, predict the two languages that share the most "
    "neurons, then see how script and vocabulary explain the overlap.",
    5, 1,
)
def check_overlap_prediction(prediction: Any, selection: NeuronSelection) -> Feedback:
    """Checks a predicted pair of languages against the selection's largest overlap.

    Args:
        prediction: Two language codes, e.g. ``("fr", "es")`` (order free), or a function
            without arguments that returns them.
        selection: The notebook's selection.

    Returns:
        The feedback (a tie with the largest overlap passes).
    """
    if callable(prediction):
        prediction = _call(prediction)
    langs = list(selection.languages)
    if prediction is None or prediction is Ellipsis:
        _fail("not done yet: write your prediction, two language codes such as "
              f"({langs[0]!r}, {langs[-1]!r}).")
    if (not isinstance(prediction, (tuple, list)) or len(prediction) != 2
            or not all(isinstance(x, str) for x in prediction)):
        _fail(f"give two language codes as a tuple, e.g. ({langs[0]!r}, {langs[-1]!r}); got "
              f"{_short(prediction)}.")
    a, b = (x.strip().lower() for x in prediction)
    unknown = [x for x in (a, b) if x not in langs]
    if unknown:
        _fail(f"{unknown} not in the selection; use codes of its languages: {langs}.")
    if a == b:
        _fail(f"name two different languages; you named {a!r} twice.")
    counts, _ = overlap(selection)
    order = list(counts.index)
    pairs = sorted(
        ((int(counts.loc[x, y]), x, y) for i, x in enumerate(order) for y in order[i + 1:]),
        key=lambda t: -t[0],
    )
    best, x, y = pairs[0]
    top = ", ".join(f"{p}–{q} {c}" for c, p, q in pairs[:3])
    mine = int(counts.loc[a, b])
    if best == 0:
        return _ok(f"no two languages share a neuron in this selection, so any pair ties "
                   f"(top pairs: {top}).")
    if mine == best:
        return _ok(f"right: {a}–{b} share {mine} neurons, the most of any pair (top pairs: "
                   f"{top}). {_why_shared(a, b)}")
    _fail(f"{a}–{b} share {mine} neurons, but {x}–{y} share the most: {best} (top pairs: "
          f"{top}). {_why_shared(x, y)}")


# thresholds for 3 layers x 24 neurons: select 10% of 72, bar and filter at the 0.7 quantile
_CONFIG_SMALL = LapeConfig(top_rate=0.1, filter_rate=0.7, activation_bar_ratio=0.7)


def _synthetic_stats() -> tuple[ActivationStats, NeuronSelection]:
    """Small statistics where English neurons fire in every language, and their selection.

    Every neuron has an activity shared by all languages; a fifth of the neurons are
    specific to one of fr, zh, ja. The neurons active in English are thus active
    everywhere, and English gets the fewest neurons, as in real models.
    """
    gen = torch.Generator().manual_seed(3)
    langs = ["en", "fr", "zh", "ja"]
    n = torch.tensor([800, 1000, 1200, 900])
    shared = torch.rand(3, 24, 1, generator=gen) ** 2 * 0.5
    p = shared * (0.8 + 0.4 * torch.rand(3, 24, 4, generator=gen))
    specific = torch.rand(3, 24, generator=gen) < 0.2
    who = torch.randint(1, 4, (3, 24), generator=gen)
    p[specific] = 0.02
    p[specific, who[specific]] = 0.4 + 0.4 * torch.rand(int(specific.sum()), generator=gen)
    over_zero = (p.clamp(max=1) * n).round().long()
    stats = ActivationStats(langs, n, over_zero)
    return stats, identify(over_zero, n, langs, _CONFIG_SMALL)


def _specificity(stats: Any, selection: NeuronSelection, bar: float | None = None) -> pd.DataFrame:
    p = activation_probability(stats.over_zero, stats.n)
    if bar is None:
        bar = kth_quantile(p, selection.config.get("activation_bar_ratio", 0.95))
    active = {lang: int((p[..., k] > bar).sum()) for k, lang in enumerate(stats.languages)}
    selected = {lang: int(selection.mask(lang).sum()) for lang in stats.languages}
    df = pd.DataFrame({"active": active, "selected": selected})
    df["share"] = df["selected"] / df["active"].where(df["active"] > 0)
    return df


def _specificity_mistakes(stats: Any, selection: NeuronSelection) -> list[tuple[str, Any, str]]:
    p = activation_probability(stats.over_zero, stats.n)
    ratio = selection.config.get("activation_bar_ratio", 0.95)
    bar = kth_quantile(p, ratio)
    langs = list(stats.languages)
    ge = pd.Series({lang: int((p[..., k] >= bar).sum()) for k, lang in enumerate(langs)})
    own = pd.Series({lang: int((p[..., k] > kth_quantile(p[..., k], ratio)).sum())
                     for k, lang in enumerate(langs)})
    among = pd.Series({lang: int((p[..., k][selection.mask(lang)] > bar).sum())
                       for k, lang in enumerate(langs)})
    union = selection.union()
    among_all = pd.Series({lang: int((p[..., k][union] > bar).sum())
                           for k, lang in enumerate(langs)})
    literal = pd.Series({lang: int((p[..., k] > ratio).sum()) for k, lang in enumerate(langs)})
    anyact = pd.Series({lang: int((stats.over_zero[..., k] > 0).sum())
                        for k, lang in enumerate(langs)})
    truth = _specificity(stats, selection)
    return [
        ("active", ge, "count P > bar, not P >= bar: the bar is itself one of the P values."),
        ("active", own, "the bar is ONE number for all languages, the quantile of all P pooled "
                        "over layers, neurons and languages; you took one per language."),
        ("active", among, "'active' counts ALL the model's neurons whose P in the language "
                          "exceeds the bar, not only the selected ones."),
        ("active", among_all, "'active' counts ALL the model's neurons whose P in the language "
                              "exceeds the bar, not only the selected ones."),
        ("active", literal, f"the bar is the {ratio:g} QUANTILE of all P "
                            f"(kth_quantile(P, {ratio:g}) = {bar:.4g}), not the number "
                            f"{ratio:g} itself."),
        ("active", anyact, "you counted neurons active on at least one token; 'active' here "
                           "means P > bar, the activation bar of identification."),
        ("share", truth["active"] / truth["selected"],
         "share = selected / active, not active / selected."),
        ("share", truth["share"] * 100, "share is a fraction (selected / active), not a "
                                        "percentage."),
    ]


def _compare_table(answer: Any, stats: Any, selection: NeuronSelection, where: str) -> None:
    if answer is None:
        _fail("`specificity_table` returned None: did you forget `return`?")
    if not isinstance(answer, pd.DataFrame):
        _fail(f"return a pandas DataFrame; got {type(answer).__name__}.")
    truth = _specificity(stats, selection)
    missing = [c for c in truth.columns if c not in answer.columns]
    if missing:
        _fail(f"your table has no column(s) {missing}; it needs active, selected and share "
              f"(it has {list(answer.columns)}).")
    if answer.index.has_duplicates:
        _fail(f"your table has a language twice in its index {list(answer.index)[:12]}; one "
              "row per language.")
    if set(map(str, answer.index)) != set(truth.index):
        hint = (" (use .set_index('language'))" if "language" in answer.columns else "")
        _fail(f"index the rows by language code, one per language of the statistics "
              f"{list(truth.index)}; your index is {list(answer.index)[:12]}{hint}.")
    answer = answer.set_axis(list(map(str, answer.index))).loc[truth.index]
    for column in truth.columns:
        mine = pd.to_numeric(answer[column], errors="coerce").astype(float)
        want = truth[column].astype(float)
        same = np.isclose(mine.to_numpy(), want.to_numpy(), rtol=1e-6, atol=1e-9, equal_nan=True)
        if same.all():
            continue
        lang = truth.index[int(np.flatnonzero(~same)[0])]
        why = next(
            (msg for col, wrong, msg in _specificity_mistakes(stats, selection)
             if col == column and np.allclose(mine.to_numpy(), wrong.astype(float).reindex(
                 truth.index).to_numpy(), rtol=1e-6, atol=1e-9, equal_nan=True)),
            "",
        )
        _fail(_join(f"{where}: column {column!r}, language {lang!r}: you have "
                    f"{_fmt(mine[lang])}, expected {_fmt(want[lang])}.", why))


def _conclusion(stats: Any, selection: NeuronSelection) -> str:
    """What the table says about English (or the language with the fewest neurons).

    ``selected = active x share``: a language gets few neurons because few neurons are
    active in it, or because a small share of them is specific. The second is measured by
    how many of its active neurons are active in every language (high entropy).
    """
    table = _specificity(stats, selection)
    k = len(table)
    focus = "en" if "en" in table.index else table["selected"].idxmin()
    name, row, others = _lang(focus), table.loc[focus], table.drop(index=focus)
    if not row["active"]:
        return f"{name} has no neuron active above the bar, so none can be selected."
    rank = int(table["active"].rank(ascending=False, method="min")[focus])
    smallest = row["share"] <= table["share"].min()
    text = (f"{name} has {int(row['active']):,} neurons active above the bar (rank {rank} of "
            f"{k}) and {int(row['selected'])} selected: a share of {row['share']:.1%}"
            + (", the smallest." if smallest else "."))
    fewest = table["selected"].idxmin()
    if table.loc[fewest, "selected"] < row["selected"]:
        text += f" (Here {_lang(fewest)} has the fewest neurons, not {name}.)"
    if others.empty:
        return text
    p = activation_probability(stats.over_zero, stats.n)
    active = p > kth_quantile(p, selection.config.get("activation_bar_ratio", 0.95))
    everywhere = active.all(dim=-1)
    frac = {lang: float(everywhere[active[..., j]].float().mean()) if bool(active[..., j].any())
            else math.nan for j, lang in enumerate(stats.languages)}
    frac_others = float(np.nanmedian([v for lang, v in frac.items() if lang != focus]))
    share_others = float(others["share"].median())
    if row["share"] < share_others:
        times = f" {share_others / row['share']:.1f}x" if row["share"] > 0 else ""
        text += (f" Its share is{times} smaller than the other languages' median "
                 f"({share_others:.1%})")
        if frac[focus] > frac_others:
            text += (f": {frac[focus]:.0%} of the neurons active in {name} are active in all "
                     f"{k} languages (median of the others: {frac_others:.0%}); they fire "
                     "whatever the language, so their LAPE entropy is high and few of them are "
                     "specific enough to be selected.")
        else:
            text += (f"; {frac[focus]:.0%} of its active neurons are active in all {k} "
                     f"languages (median of the others: {frac_others:.0%}).")
    active_others = float(others["active"].median())
    if row["active"] < active_others:
        text += (f" {name} also has fewer neurons active above the bar than the others' "
                 f"median ({active_others:,.0f}), so fewer candidates.")
    return text


@_exercise(
    "specificity_table", "02", "Why does English get the fewest neurons?",
    "Explain with the data why English gets the fewest neurons: per language, how many "
    "neurons are active above the bar, how many are selected, and the share selected.",
    20, 2,
)
def check_specificity_table(specificity_table: Callable[..., pd.DataFrame], stats: Any,
                            selection: NeuronSelection) -> Feedback:
    """Checks ``specificity_table(stats, selection) -> DataFrame`` and states the conclusion.

    Runs the student's function on a small built-in case, then on the notebook's data, and
    says what the numbers show about English (or the language with the fewest neurons).

    Args:
        specificity_table: The student's function.
        stats: The notebook's activation statistics.
        selection: The notebook's selection (made from ``stats``).

    Returns:
        The feedback.
    """
    small_stats, small_sel = _synthetic_stats()
    _compare_table(_call(specificity_table, small_stats, small_sel), small_stats, small_sel,
                   "on a small test case (4 languages, 3 layers x 24 neurons)")
    _compare_table(_call(specificity_table, stats, selection), stats, selection,
                   "on your statistics")
    return _ok(f"your table matches. {_conclusion(stats, selection)}")


def _specific_case() -> tuple[ActivationStats, NeuronSelection]:
    """Neurons of fr: two with entropy 0 (P 0.4 and 0.8), one with the highest P, one flat."""
    n = torch.tensor([1000, 1000, 1000])
    over_zero = torch.zeros(2, 8, 3, dtype=torch.long)
    rows = {(0, 1): [0, 400, 0], (1, 3): [0, 800, 0], (0, 5): [100, 950, 0],
            (1, 0): [500, 500, 500], (1, 6): [0, 300, 300], (0, 2): [600, 0, 0]}
    for (layer, j), counts in rows.items():
        over_zero[layer, j] = torch.tensor(counts)
    fr = [(0, 1), (0, 5), (1, 0), (1, 3), (1, 6)]
    masks = {lang: torch.zeros(2, 8, dtype=torch.bool) for lang in ("en", "fr", "zh")}
    for layer, j in fr:
        masks["fr"][layer, j] = True
    masks["en"][0, 2] = True
    masks["zh"][1, 6] = True
    selected = torch.tensor(sorted(set(fr) | {(0, 2)}))
    prob = activation_probability(over_zero, n)[selected[:, 0], selected[:, 1]]
    selection = NeuronSelection.from_masks(masks, selected=selected, selected_prob=prob,
                                           selected_entropy=lape_entropy(prob))
    return ActivationStats(["en", "fr", "zh"], n, over_zero), selection


def _pair(value: Any, name: str) -> tuple[int, int]:
    if value is None:
        _fail(f"`{name}` returned None: did you forget `return`?")
    if isinstance(value, (int, np.integer)) or (torch.is_tensor(value) and value.numel() == 1):
        _fail(f"`{name}` returned one number ({_short(value)}); return (layer, neuron), "
              "not a flat index.")
    try:
        items = value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else list(value)
        if len(items) != 2:
            raise ValueError
        return int(items[0]), int(items[1])
    except (TypeError, ValueError):
        _fail(f"`{name}` returned {_short(value)}; return a pair (layer, neuron) of ints.")


def _check_specific(fn: Callable, stats: Any, selection: NeuronSelection, lang: str,
                    where: str) -> tuple[int, int]:
    truth = tuple(int(x) for x in probability_profiles(stats, selection, lang, k=1).index[0])
    answer = _pair(_call(fn, stats, selection, lang), "most_specific_neuron")
    if answer == truth:
        return truth
    p = activation_probability(stats.over_zero, stats.n)
    j = list(stats.languages).index(lang)
    members = [tuple(int(x) for x in row) for row in selection.mask(lang).nonzero().tolist()]
    h = {m: float(lape_entropy(p[m].double())) + 0.0 for m in members}  # + 0.0: no -0.0
    own = {m: float(p[m][j]) for m in members}
    if answer not in h:
        if answer[::-1] in h:
            _fail(f"{where}: you returned {answer}; that looks like (neuron, layer): return "
                  "(layer, neuron).")
        _fail(f"{where}: {answer} is not one of {lang}'s neurons; search only "
              f"selection.indices[{lang!r}] (the most specific is {truth}).")
    low = min(h.values())
    ties = sorted(m for m in members if math.isclose(h[m], low, abs_tol=1e-12))
    head = (f"{where}: you returned {answer} (entropy {h[answer]:.3f}, P in {lang} "
            f"{own[answer]:.3g}); the most specific {lang} neuron is {truth} (entropy "
            f"{h[truth]:.3f}, P {own[truth]:.3g}).")
    if answer in ties:
        _fail(f"{head} Both have the lowest entropy; break the tie by the higher P in {lang}.")
    if own[answer] == max(own.values()):
        _fail(f"{head} You picked the neuron with the highest P in {lang}; the most specific "
              "is the one with the LOWEST entropy (its activity concentrated in one language).")
    if h[answer] == max(h.values()):
        _fail(f"{head} You took the highest entropy; the most specific neuron has the lowest.")
    _fail(head)


@_exercise(
    "most_specific_neuron", "02", "The most language-specific neuron",
    "Find a language's most specific neuron: the lowest LAPE entropy over all languages of "
    "the statistics, ties broken by the higher activation probability in that language.",
    15, 1,
)
def check_most_specific_neuron(most_specific_neuron: Callable[..., tuple[int, int]],
                               stats: Any, selection: NeuronSelection, lang: str) -> Feedback:
    """Checks ``most_specific_neuron(stats, selection, lang) -> (layer, neuron)``.

    Compares with :func:`lape_utils.analysis.probability_profiles` on a small case with a
    tie, then on the notebook's data.

    Args:
        most_specific_neuron: The student's function.
        stats: The notebook's activation statistics.
        selection: The notebook's selection.
        lang: The language to look at.

    Returns:
        The feedback.
    """
    small_stats, small_sel = _specific_case()
    _check_specific(most_specific_neuron, small_stats, small_sel, "fr",
                    "on a small test case (fr has two neurons of entropy 0)")
    if lang not in selection.languages or not bool(selection.mask(lang).any()):
        _fail(f"{lang!r} has no neurons in your selection; pick one of "
              f"{[x for x in selection.languages if bool(selection.mask(x).any())]}.")
    layer, neuron = _check_specific(most_specific_neuron, stats, selection, lang,
                                    "on your statistics")
    p = activation_probability(stats.over_zero, stats.n)[layer, neuron]
    j = list(stats.languages).index(lang)
    rest = torch.cat([p[:j], p[j + 1:]])
    other = f"; at most {float(rest.max()):.3g} elsewhere" if rest.numel() else ""
    return _ok(f"the most specific {lang} neuron is layer {layer}, neuron {neuron}: entropy "
               f"{float(lape_entropy(p.double())) + 0.0:.3f}, P = {float(p[j]):.3g} in "
               f"{lang}{other}.")


# ============================================================================ 03 deactivation


def _shared_case() -> NeuronSelection:
    gen = torch.Generator().manual_seed(5)
    masks = {lang: torch.rand(3, 16, generator=gen) < 0.35 for lang in ("zh", "ru", "ja", "en")}
    masks["ru"][2] &= ~masks["zh"][2]  # layer 2: no neuron shared by zh and ru
    masks["ru"][0, :3] = masks["zh"][0, :3] = True  # layer 0: at least three shared
    return NeuronSelection.from_masks(masks)


def _intervention_mask(iv: Any, selection: NeuronSelection, name: str) -> torch.Tensor:
    if iv is None:
        _fail(f"`{name}` returned None: did you forget `return`?")
    if not isinstance(iv, Intervention):
        _fail(f"return an Intervention (lape_utils.Intervention); got {type(iv).__name__}.")
    if iv.op != "zero":
        _fail(f"your intervention's op is {iv.op!r}; deactivating neurons means op 'zero'.")
    if iv.positions != "all":
        _fail(f"your intervention acts on positions {iv.positions!r}; deactivation acts at "
              "every position: positions='all' (the default).")
    shape = (selection.n_layers, selection.n_neurons)
    if iv.shape is not None and tuple(iv.shape) != shape:
        _fail(f"your intervention says it was made for {iv.shape}, the selection is {shape} "
              "[layer, neuron]; pass shape=(selection.n_layers, selection.n_neurons).")
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, idx in iv.neurons.items():
        if layer >= shape[0] or int(idx.max()) >= shape[1]:
            _fail(f"your intervention touches layer {layer}, neuron {int(idx.max())}, outside "
                  f"the selection's {shape[0]} layers x {shape[1]} neurons.")
        mask[layer, idx] = True
    return mask


def _check_shared(fn: Callable, selection: NeuronSelection, a: str, b: str, where: str) -> int:
    ma, mb = selection.mask(a), selection.mask(b)
    truth = ma & mb
    mine = _intervention_mask(_call(fn, selection, a, b), selection, "shared_zero")
    if torch.equal(mine, truth):
        return int(truth.sum())
    mistakes = [
        (ma | mb, f"you zeroed the union (neurons of {a} OR {b}); zero only the neurons of "
                  f"BOTH: selection.mask({a!r}) & selection.mask({b!r})."),
        (ma, f"you zeroed all of {a}'s neurons; zero only those {b} has too (the "
             "intersection)."),
        (mb, f"you zeroed all of {b}'s neurons; zero only those {a} has too (the "
             "intersection)."),
        (ma & ~mb, f"you zeroed {a}'s neurons that {b} does NOT have; zero those both have."),
        (mb & ~ma, f"you zeroed {b}'s neurons that {a} does NOT have; zero those both have."),
        (ma ^ mb, "you zeroed the neurons of exactly one of the two languages; zero those "
                  "both have (&, not ^)."),
    ]
    why = next((msg for wrong, msg in mistakes if torch.equal(mine, wrong)), "")
    extra = [tuple(x) for x in (mine & ~truth).nonzero().tolist()][:3]
    missing = [tuple(x) for x in (truth & ~mine).nonzero().tolist()][:3]
    detail = (f" (e.g. (layer, neuron) {extra} should not be zeroed)" if extra
              else f" (e.g. {missing} are missing)")
    _fail(_join(f"{where}: you zeroed {int(mine.sum())} neurons, {a} and {b} share "
                f"{int(truth.sum())}{detail}.", why))


@_exercise(
    "shared_zero", "03", "Deactivate the neurons two languages share",
    "Build an Intervention that zeroes only the neurons that belong to both of two "
    "languages (the intersection), e.g. to test whether shared neurons matter for both.",
    15, 2,
)
def check_shared_zero(shared_zero: Callable[..., Intervention], selection: NeuronSelection,
                      a: str = "zh", b: str = "ru") -> Feedback:
    """Checks ``shared_zero(selection, a, b) -> Intervention`` on a small case and yours.

    Args:
        shared_zero: The student's function.
        selection: The notebook's selection.
        a: One language.
        b: The other.

    Returns:
        The feedback.
    """
    _check_shared(shared_zero, _shared_case(), "zh", "ru",
                  "on a small test case (zh and ru share neurons in layers 0 and 1)")
    missing = [x for x in (a, b) if x not in selection.languages]
    if missing:
        _fail(f"{missing} not in your selection; it holds {selection.languages}.")
    n = _check_shared(shared_zero, selection, a, b, "on your selection")
    return _ok(f"shared_zero is right: {a} and {b} share {n} neurons in your selection, and "
               "your intervention zeroes exactly those.")


def _trace_hint(err: Exception) -> str:
    if type(err).__name__ == "OutOfOrderError":
        return ("inside a trace, touch the layers in forward order: layer 0 first, the "
                "logits last.")
    return ""


_TRACE_TEXT = "The cat sleeps on the sofa. Le chat dort sur le canapé. 猫在沙发上睡觉。"


@_exercise(
    "zero_in_trace", "03", "Deactivation written by hand in an nnsight trace",
    "Write one intervention by hand: inside model.nn.trace, set a language's neurons to 0 "
    "at every position, read the logits and return the mean next-token NLL.",
    25, 3,
)
def check_zero_in_trace(zero_in_trace: Callable[..., float], model: Any,
                        selection: NeuronSelection, lang: str) -> Feedback:
    """Checks ``zero_in_trace(model, input_ids, selection, lang) -> float`` against ``nll``.

    The reference is :func:`lape_utils.evaluate.nll` with ``Intervention.zero(selection,
    lang)`` on a short multilingual sentence (tolerance 1e-5).

    Args:
        zero_in_trace: The student's function.
        model: The loaded model.
        selection: The selection (of this model).
        lang: Whose neurons to zero.

    Returns:
        The feedback.
    """
    ids = model.tokenizer(_TRACE_TEXT, return_tensors="pt").input_ids
    try:
        iv = Intervention.zero(selection, lang)
        base = nll(model, ids, progress=False)[0]
        truth, count = nll(model, ids, [iv], progress=False)
    except InterventionError as err:
        _fail(f"cannot run the check: {err}")
    if iv.n_neurons == 0:
        _fail(f"{lang!r} has no neurons in this selection, so zeroing them changes nothing; "
              "pick a language that has some.")
    answer = _number(_call(zero_in_trace, model, ids.clone(), selection, lang,
                           hint=_trace_hint), "zero_in_trace")
    after = nll(model, ids, progress=False)[0]
    if not _close(after, base, 1e-5):
        _fail(f"your function left an edit on the model: the unmodified model's NLL is now "
              f"{_fmt(after)} instead of {_fmt(base)}. Edit inside the trace only (no "
              "model.nn.edit or hooks left behind); reload the model to undo it.")
    if _close(answer, truth, 1e-5):
        return _ok(f"zero_in_trace matches lape_utils.evaluate.nll: zeroing {lang}'s "
                   f"{iv.n_neurons} neurons moves the NLL of the test sentence from "
                   f"{base:.4f} to {truth:.4f} nats.")
    logits = forward_logits(model, ids, None, [iv])
    unshifted = float(torch.nn.functional.cross_entropy(logits[0].float(), ids[0].to(
        logits.device)))
    head = (f"you returned {_fmt(answer)}; with {lang}'s {iv.n_neurons} neurons zeroed the mean "
            f"NLL is {_fmt(truth)} (unmodified model: {_fmt(base)}).")
    mistakes = [
        (truth / math.log(2), "You used log base 2; NLL is in nats (natural log, as "
                              "F.cross_entropy and log_softmax give it)."),
        (truth * count, f"You summed the NLL over the {count} predicted tokens; return the mean."),
        (math.exp(truth), "You returned the perplexity exp(NLL); return the mean NLL itself."),
        (unshifted, "Position t predicts token t + 1: compare logits[0, :-1] with "
                    "input_ids[0, 1:]."),
        (base, "That is the unmodified model's NLL: the zeroing did not take effect. Did you "
               "write the edit back into the model inside the trace "
               "(model.site(layer).output[..., idx] = 0) before reading the logits? Changing "
               "a saved copy changes nothing."),
    ]
    _fail(_join(head, _diagnose(answer, mistakes, 1e-5)))


# ============================================================================ 04 steering


def _mass_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(11)
    return [
        (torch.randn(4, 40, generator=gen) * 3, torch.tensor([3, 7, 11, 19, 25, 31])),
        (torch.randn(1, 40, generator=gen) * 3, torch.tensor([0, 39])),
    ]


@_exercise(
    "target_mass", "04", "Probability mass on the target language's tokens",
    "Turn next-token logits into the probability mass on a set of target-language tokens, "
    "the measure that moves under steering even when the top token does not.",
    10, 1,
)
def check_target_mass(target_mass: Callable[..., float]) -> Feedback:
    """Checks ``target_mass(logits [n, vocab], target_ids) -> float`` on random logits.

    Args:
        target_mass: The student's function.

    Returns:
        The feedback.
    """
    for logits, ids in _mass_cases():
        truth = float(logits.softmax(-1)[:, ids].sum(-1).mean())
        raw = _call(target_mass, logits.clone(), ids.clone())
        if torch.is_tensor(raw) and raw.numel() == logits.shape[0] > 1:
            _fail(f"you returned one value per row ({raw.numel()}); return one number: the "
                  "mean over the rows.")
        answer = _number(raw, "target_mass")
        if _close(answer, truth, 1e-5):
            continue
        probs = logits.softmax(-1)
        mistakes = [
            (float(logits[:, ids].sum(-1).mean()), "You summed logits; turn logits into "
             "probabilities first (softmax over the vocabulary), then sum."),
            (float(logits.log_softmax(-1)[:, ids].sum(-1).mean()), "You summed "
             "log-probabilities; sum probabilities (softmax), not log_softmax."),
            (float(logits.softmax(0)[:, ids].sum(-1).mean()), "You took softmax over the rows "
             "(dim=0); the vocabulary is the last axis: softmax(dim=-1)."),
            (float(probs[:, ids].max(-1).values.mean()), "You took the largest target-token "
             "probability; the mass is the SUM over all target tokens."),
            (float(probs[:, ids].mean(-1).mean()), "You averaged over the target tokens; sum "
             "over them (the mass), then average over the rows."),
            (float(probs[:, ids].sum()), "You summed over the rows too; take the mean over "
                                         "the rows."),
            (float(logits.exp()[:, ids].sum(-1).mean()), "exp(logits) is not a probability "
             "until divided by its sum over the vocabulary: use softmax."),
        ]
        _fail(_join(f"on logits of shape {tuple(logits.shape)} you returned {_fmt(answer)}; "
                    f"the mean target mass is {_fmt(truth)}.", _diagnose(answer, mistakes, 1e-5)))
    return _ok("target_mass is right: softmax over the vocabulary, sum over the target "
               "tokens, mean over the rows.")


_STEER_X = torch.tensor([[0.5, -0.1, 2.0, 0.0], [-0.2, 0.3, 0.1, 1.2], [1.5, 0.0, -0.3, 0.4]])
_STEER_MEAN = torch.tensor([0.5, -0.25, 1.5, 0.75])


@_exercise(
    "steered_activation", "04", "What set, add and scale steering write",
    "State exactly what each steering mode writes into a neuron: set → strength × mean, "
    "add → x + strength × mean, scale → x × strength.",
    10, 1,
)
def check_steered_activation(steered_activation: Callable[..., torch.Tensor]) -> Feedback:
    """Checks ``steered_activation(x, mean, mode, strength)`` against :func:`apply_op`.

    The modes are those of :class:`~lape_utils.steering.SteerSpec`, as
    :func:`~lape_utils.steering.steering_interventions` builds them.

    Args:
        steered_activation: The student's function.

    Returns:
        The feedback.
    """
    x, mean = _STEER_X, _STEER_MEAN
    neurons = torch.arange(x.shape[1])
    for strength in (2.0, 0.5):
        for mode in ("set", "add", "scale"):
            value = strength if mode == "scale" else strength * mean
            truth = apply_op(x, neurons, mode, value)
            x_in = x.clone()
            answer = _tensor(_call(steered_activation, x_in, mean.clone(), mode, strength),
                             "steered_activation")
            head = f"mode {mode!r}, strength {strength}:"
            if answer.shape != x.shape:
                _fail(f"{head} your answer has shape {tuple(answer.shape)}; return a tensor "
                      f"shaped like x {tuple(x.shape)} (broadcast the mean over the tokens).")
            if torch.allclose(answer.to(x.dtype), truth, atol=1e-6):
                if not torch.equal(x_in, x):
                    _fail(f"{head} right values, but your function changed x in place; "
                          "return a new tensor and leave x unchanged (as apply_op does).")
                continue
            mistakes = {
                "set": [(mean.expand_as(x), "set writes strength × mean; you ignored strength."),
                        (x + strength * mean, "that is add; set REPLACES the activation by "
                                              "strength × mean.")],
                "add": [(x + strength, "add adds strength × the neuron's mean activation on "
                                       "the target, not strength itself."),
                        (x + mean, "add adds strength × mean; you ignored strength."),
                        ((strength * mean).expand_as(x), "that is set; add keeps x and adds "
                                                         "strength × mean to it.")],
                "scale": [((strength * mean).expand_as(x), "scale multiplies the neuron's own "
                           "activation x by strength; the mean is not used."),
                          (x * strength * mean, "scale multiplies the neuron's own activation "
                                                "x by strength; the mean is not used."),
                          (x + strength, "scale multiplies x by strength; it does not add.")],
            }[mode]
            why = next((msg for wrong, msg in mistakes
                        if torch.allclose(answer.to(x.dtype), wrong, atol=1e-6)), "")
            _fail(_join(f"{head} for x = {_row(x[0])} and mean = {_row(mean)} you returned "
                        f"{_row(answer[0])}, expected {_row(truth[0])}.", why))
    return _ok("steered_activation is right for set, add and scale: set and add use the "
               "target's mean activation, scale only the neuron's own activation.")


_WILSON_CASES = ((3, 8, 0.95), (0, 8, 0.95), (8, 8, 0.95), (45, 70, 0.95), (3, 8, 0.90))


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@_exercise(
    "wilson_interval", "04", "A confidence interval for a steering rate",
    "Put a Wilson score interval on a steering rate of k target-language answers out of n, "
    "and see why the normal (Wald) interval fails for small n and rates near 0 or 1.",
    15, 2,
)
def check_wilson_interval(wilson_interval: Callable[..., tuple[float, float]]) -> Feedback:
    """Checks ``wilson_interval(k, n, confidence) -> (lo, hi)`` against scipy.

    The reference is ``scipy.stats.binomtest(k, n).proportion_ci(confidence,
    method="wilson")``.

    Args:
        wilson_interval: The student's function.

    Returns:
        The feedback.
    """
    for k, n, confidence in _WILSON_CASES:
        ci = binomtest(k, n).proportion_ci(confidence, method="wilson")
        truth = (float(ci.low), float(ci.high))
        raw = _call(wilson_interval, k, n, confidence)
        if raw is None:
            _fail("`wilson_interval` returned None: did you forget `return`?")
        if hasattr(raw, "low") and hasattr(raw, "high"):  # scipy's ConfidenceInterval
            raw = (raw.low, raw.high)
        try:
            lo, hi = (float(v) for v in raw)
        except (TypeError, ValueError):
            _fail(f"`wilson_interval` returned {_short(raw)}; return two numbers (low, high).")
        if _close(lo, truth[0], 1e-4) and _close(hi, truth[1], 1e-4):  # z = 1.96 is fine
            continue
        z = norm.ppf(1 - (1 - confidence) / 2)
        p = k / n
        wald = z * math.sqrt(p * (1 - p) / n)
        exact = binomtest(k, n).proportion_ci(confidence, method="exact")
        cc = binomtest(k, n).proportion_ci(confidence, method="wilsoncc")
        mistakes = [
            ((truth[1], truth[0]), "Your bounds are swapped; return (low, high)."),
            ((p - wald, p + wald), "That is the normal (Wald) interval p ± z·sqrt(p(1-p)/n); "
             "Wilson's centre is pulled towards 1/2: (p + z²/2n) / (1 + z²/n). Wald collapses "
             "to a point at k = 0 or k = n."),
            ((max(p - wald, 0.0), min(p + wald, 1.0)), "That is the normal (Wald) interval, "
             "clipped to [0, 1]; use Wilson's: centre (p + z²/2n) / (1 + z²/n)."),
            (_wilson(k, n, norm.ppf(confidence)), f"You used the z of a one-sided interval "
             f"({norm.ppf(confidence):.3f}); a two-sided interval uses "
             f"z = norm.ppf(1 - (1 - confidence) / 2) = {z:.3f}."),
            (_wilson(k, n, 1.959963984540054), "You used z = 1.96 whatever the confidence; "
             f"compute z from it: norm.ppf(1 - (1 - confidence) / 2) = {z:.3f} here."),
            ((float(exact.low), float(exact.high)), "That is the exact (Clopper-Pearson) "
             "interval; this exercise asks for Wilson's score interval."),
            ((float(cc.low), float(cc.high)), "That is Wilson's interval with continuity "
             "correction; drop the correction."),
            ((100 * truth[0], 100 * truth[1]), "Rates are fractions in [0, 1], not percent."),
        ]
        why = next((msg for (a, b), msg in mistakes
                    if _close(lo, a, 1e-4) and _close(hi, b, 1e-4)), "")
        _fail(_join(f"for k = {k}, n = {n}, confidence {confidence} you returned ({_fmt(lo)}, "
                    f"{_fmt(hi)}); Wilson's interval is ({_fmt(truth[0])}, {_fmt(truth[1])}).",
                    why))
    return _ok("wilson_interval matches scipy's binomtest(k, n).proportion_ci(method='wilson'),"
               " including k = 0 and k = n where the Wald interval collapses to a point.")


# ============================================================================ browsing


class Solution(str):
    """A solution's source code: a Markdown code block in Jupyter, plain text elsewhere."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        return f"```python\n{self}```"


def show_solution(name: str) -> Solution:
    """The source code of an exercise's solution (from :mod:`lape_utils.solutions`).

    Args:
        name: The exercise's name (see :data:`EXERCISES`).

    Returns:
        The source, which renders as a Markdown code block in Jupyter.

    Raises:
        KeyError: no exercise of that name (the message lists them).
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are {list(EXERCISES)}.")
    return Solution(inspect.getsource(getattr(solutions, name)))


def overview(notebook: str | None = None) -> pd.DataFrame:
    """The exercises as a table, all of them or those of one notebook.

    Args:
        notebook: ``"01"`` .. ``"04"``, or ``None`` for all.

    Returns:
        DataFrame indexed by ``name``: ``notebook``, ``title``, ``objective``, ``minutes``,
        ``difficulty`` (as stars).
    """
    rows = [
        {"name": e.name, "notebook": e.notebook, "title": e.title, "objective": e.objective,
         "minutes": e.minutes, "difficulty": e.stars}
        for e in EXERCISES.values() if notebook is None or e.notebook == str(notebook)
    ]
    columns = ["name", "notebook", "title", "objective", "minutes", "difficulty"]
    return pd.DataFrame(rows, columns=columns).set_index("name")
