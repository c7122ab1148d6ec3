"""Exercises of notebook 04 steering: target mass, what the modes write, Wilson intervals."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy.stats import binomtest, norm

from lape_utils.intervene import apply_op

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
    _row,
    _short,
    _tensor,
)


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
