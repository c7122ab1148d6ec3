"""Solutions of the workbook's exercises, one function per exercise, named like it.

Teaching code, written as a student would: short, one step per line, a comment on the key
step. :func:`lape_utils.exercises.show_solution` reveals one (``ex.show_solution(name)``);
the checks in :mod:`lape_utils.exercises` compare a student's answer with the package, not
with these functions, and the tests check that every solution passes its check.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from scipy.stats import norm

from lape_utils.intervene import Intervention
from lape_utils.lape import activation_probability, kth_quantile, lape_entropy
from lape_utils.selection import NeuronSelection

__all__ = [
    "assign_languages",
    "most_specific_neuron",
    "overlap_prediction",
    "pooled_threshold",
    "shared_zero",
    "specificity_table",
    "steered_activation",
    "target_mass",
    "toy_entropy",
    "wilson_interval",
    "zero_in_trace",
]


# ============================================================================ 01 detection


def toy_entropy(p: list[float]) -> float:
    """LAPE entropy of one neuron from its activation probabilities in each language.

    Args:
        p: Activation probability ``P`` of the neuron in each language.

    Returns:
        ``H = -sum_k Q_k ln Q_k`` with ``Q = P / sum(P)``; 0 for a never-active neuron.
    """
    total = sum(p)
    if total == 0:  # never active: Q = 0 everywhere, and 0·log 0 counts as 0
        return 0.0
    q = [x / total for x in p]  # normalise across languages first
    return -sum(x * math.log(x) for x in q if x > 0)  # natural log; skip the 0·log 0 terms


def pooled_threshold(over_zero: torch.Tensor, n: torch.Tensor, rate: float) -> float:
    """The filter threshold ``tau``, computed as the reference code does.

    Args:
        over_zero: ``[layer, neuron, lang]`` tokens on which each neuron was active.
        n: ``[lang]`` tokens per language.
        rate: The quantile, e.g. 0.95.

    Returns:
        The ``round(N·rate)``-th smallest of all ``N`` values of ``P``.
    """
    p = over_zero / n  # P[l, j, k]: n broadcasts over the last axis (languages)
    flat = p.flatten()  # ONE pool: layers, neurons and languages together
    k = round(flat.numel() * rate)  # Python's round, as the reference
    return flat.kthvalue(k).values.item()  # the k-th smallest value itself, no interpolation


def assign_languages(p_selected: torch.Tensor, bar: float) -> torch.Tensor:
    """Which languages each selected neuron belongs to.

    Args:
        p_selected: ``[n, lang]`` activation probabilities of the selected neurons.
        bar: The activation bar.

    Returns:
        ``bool [n, lang]``: True where the neuron belongs to the language.
    """
    return p_selected > bar  # every language above the bar (strictly), not only the argmax


# ============================================================================ 02 distribution


def overlap_prediction(selection: NeuronSelection) -> tuple[str, str]:
    """How to find, after predicting it, the two languages that share the most neurons.

    Predict first: languages that share a script and vocabulary (Chinese and Japanese
    share Han characters; French and Spanish many Latin word pieces) see the same tokens,
    so the same neurons fire for both. Then count the neurons each pair shares.

    Args:
        selection: The neuron selection.

    Returns:
        The pair of language codes sharing the most neurons.
    """
    best, best_count = None, -1
    langs = selection.languages
    for i, a in enumerate(langs):
        for b in langs[i + 1 :]:
            shared = int((selection.mask(a) & selection.mask(b)).sum())  # both languages
            if shared > best_count:
                best, best_count = (a, b), shared
    return best


def specificity_table(stats, selection: NeuronSelection) -> pd.DataFrame:
    """Per language: neurons active in it, neurons selected for it, and their ratio.

    Args:
        stats: The :class:`~lape_utils.stats.ActivationStats` the selection was made from.
        selection: The selection.

    Returns:
        DataFrame indexed by language: ``active``, ``selected``, ``share``.
    """
    p = activation_probability(stats.over_zero, stats.n)  # [layer, neuron, lang]
    ratio = selection.config.get("activation_bar_ratio", 0.95)
    bar = kth_quantile(p, ratio)  # one bar for all languages, as identify uses
    rows = {}
    for k, lang in enumerate(stats.languages):
        active = int((p[..., k] > bar).sum())  # ALL neurons of the model, not only selected
        selected = int(selection.mask(lang).sum())
        rows[lang] = {"active": active, "selected": selected,
                      "share": selected / active if active else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def most_specific_neuron(stats, selection: NeuronSelection, lang: str) -> tuple[int, int]:
    """The neuron of ``lang`` with the lowest LAPE entropy; ties: higher ``P`` in ``lang``.

    Args:
        stats: Activation statistics of the same model.
        selection: The selection.
        lang: The language.

    Returns:
        ``(layer, neuron)``.
    """
    p = activation_probability(stats.over_zero, stats.n)  # [layer, neuron, lang]
    k = stats.languages.index(lang)
    best, best_key = None, None
    for layer, neurons in enumerate(selection.indices[lang]):
        for j in neurons.tolist():
            h = lape_entropy(p[layer, j]).item()  # entropy over ALL the statistics' languages
            key = (h, -p[layer, j, k].item())  # low entropy first, then high P in lang
            if best_key is None or key < best_key:
                best, best_key = (layer, j), key
    return best


# ============================================================================ 03 deactivation


def shared_zero(selection: NeuronSelection, a: str, b: str) -> Intervention:
    """An intervention that zeroes the neurons both ``a`` and ``b`` have.

    Args:
        selection: The selection.
        a: One language.
        b: The other language.

    Returns:
        A ``"zero"`` :class:`~lape_utils.intervene.Intervention`.
    """
    both = selection.mask(a) & selection.mask(b)  # intersection, not union
    neurons = {layer: row.nonzero().squeeze(1) for layer, row in enumerate(both)}
    return Intervention(neurons, "zero", label=f"zero {a}∩{b}",
                        shape=(selection.n_layers, selection.n_neurons))


def zero_in_trace(model, input_ids: torch.Tensor, selection: NeuronSelection, lang: str) -> float:
    """Mean next-token NLL of ``input_ids`` with ``lang``'s neurons set to 0, by hand.

    Args:
        model: The loaded :class:`~lape_utils.models.LapeModel`.
        input_ids: ``[1, seq]`` token ids.
        selection: The selection.
        lang: Whose neurons to zero.

    Returns:
        The mean NLL in nats over the ``seq - 1`` predicted tokens.
    """
    with torch.inference_mode(), model.nn.trace(input_ids) as tracer:
        for layer, idx in enumerate(selection.indices[lang]):  # layers in forward order
            if len(idx):
                model.site(layer).output[..., idx] = 0  # the edit, written into the model
        logits = tracer.result.logits.save()
    pred = logits[0, :-1]  # position t predicts token t + 1
    target = input_ids[0, 1:]
    return torch.nn.functional.cross_entropy(pred.float(), target).item()  # mean, in nats


# ============================================================================ 04 steering


def target_mass(logits: torch.Tensor, target_ids: torch.Tensor) -> float:
    """Mean over rows of the probability on the target-language tokens.

    Args:
        logits: ``[n, vocab]`` next-token logits.
        target_ids: ``[t]`` the target-language token ids.

    Returns:
        The mean target mass, in [0, 1].
    """
    probs = logits.softmax(dim=-1)  # probabilities over the vocabulary, row by row
    mass = probs[:, target_ids].sum(dim=-1)  # sum over the target tokens: [n]
    return mass.mean().item()


def steered_activation(
    x: torch.Tensor, mean: torch.Tensor, mode: str, strength: float
) -> torch.Tensor:
    """What steering writes into neurons of activation ``x``.

    Args:
        x: ``[..., neuron]`` activations.
        mean: ``[neuron]`` each neuron's mean activation on the target language.
        mode: ``"set"``, ``"add"`` or ``"scale"``.
        strength: The strength.

    Returns:
        A new tensor shaped like ``x``.
    """
    if mode == "set":
        return torch.zeros_like(x) + strength * mean  # same value at every position
    if mode == "add":
        return x + strength * mean  # shift by a multiple of the mean
    if mode == "scale":
        return x * strength  # the neuron's own activation, amplified; no mean
    raise ValueError(f"unknown mode {mode!r}; use set, add or scale")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate of ``k`` successes in ``n`` trials.

    Written out to learn it; in code, use ``scipy.stats.binomtest(k, n)
    .proportion_ci(confidence, method="wilson")``.

    Args:
        k: Successes (e.g. answers in the target language).
        n: Trials.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``.
    """
    z = norm.ppf(1 - (1 - confidence) / 2)  # two-sided: 1.96 for 95%
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)  # pulled towards 1/2, unlike p ± ...
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half
