"""Exercises of notebook 01 detection: the LAPE entropy, the pooled threshold, the assignment."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lape_utils.lape import activation_probability, kth_quantile, lape_entropy

from ._common import (
    Feedback,
    _call,
    _close,
    _diagnose,
    _exercise,
    _fail,
    _fmt,
    _join,
    _number,
    _ok,
    _tensor,
)

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
