"""LAPE identification of language-specific neurons: pure math on count tensors.

Implements §2 of ``shared/docs/lape-method.md`` (Tang et al., ACL 2024). Its inputs are the
statistics recorded by the capture code, never a model:

* ``over_zero: [layer, neuron, lang]`` — tokens on which each FFN neuron was active (> 0),
* ``n: [lang]`` — tokens fed per language,
* optionally ``activation_sum: [layer, neuron, lang]`` — sum of the activation values.

``identify(..., method="lape")`` reproduces the authors' ``identify.py`` exactly (same
float32 arithmetic, same ``kthvalue`` quantiles, same ``round``), with three deliberate
differences, all documented on :func:`identify`: ties are broken deterministically, neurons
excluded by the filter are never selected, and languages with no neurons are kept.

Nothing here imports nnsight/transformers; every function runs in milliseconds on
synthetic counts and is unit-tested in ``tests/test_lape.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pandas as pd
import torch

from lape_utils.config import LapeConfig
from lape_utils.selection import NeuronSelection

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS", "StabilityResult", "activation_probability", "activity_matched", "agreement",
    "control_sets", "identify", "kth_quantile", "lape_entropy", "mean_activation",
    "normalized_probability", "probability_margin", "random_matched", "stability",
]

Method = Literal["lape", "probability", "mean_activation"]
#: Identification methods accepted by :func:`identify`.
METHODS: tuple[str, ...] = get_args(Method)


# ============================================================================ formulas


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}.")
    if t.dtype.is_floating_point and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf.")
    return t


def _check_counts(x: Any, name: str, n: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: [layer, neuron, lang]`` and ``n: [lang]`` as tensors, checked; ``n > 0``."""
    x = _as_tensor(x, name)
    if x.dim() != 3:
        raise ValueError(f"{name} must be [layer, neuron, lang], got shape {tuple(x.shape)}.")
    n = _as_tensor(n, "n")
    if n.dim() != 1 or n.numel() != x.shape[-1]:
        raise ValueError(
            f"n must be [lang] with one token count per language ({x.shape[-1]}), got shape "
            f"{tuple(n.shape)}."
        )
    if bool((n <= 0).any()):
        k = int((n <= 0).nonzero()[0, 0])
        raise ValueError(
            f"n[{k}] = {n[k].item()}: language index {k} has no tokens; every language needs "
            "n > 0 (drop it or feed it text)."
        )
    return x, n


def activation_probability(
    over_zero: torch.Tensor, n: torch.Tensor | Sequence[int], *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Activation probability ``P[l, j, k] = over_zero[l, j, k] / n[k]``.

    With the default float32 this is bit-identical to the reference's ``over_zero / n`` on
    integer tensors (true division computes in the default float dtype).

    Args:
        over_zero: ``[layer, neuron, lang]`` counts of tokens with activation > 0.
        n: ``[lang]`` tokens per language.
        dtype: Floating dtype of the result.

    Returns:
        ``P: [layer, neuron, lang]`` in ``dtype``.

    Raises:
        ValueError: shapes disagree, some ``n <= 0`` (names the language index), a count is
            negative, or a count exceeds its language's ``n``.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}.")
    over_zero, n = _check_counts(over_zero, "over_zero", n)
    if over_zero.numel():
        lo, hi = torch.aminmax(over_zero.reshape(-1, over_zero.shape[-1]), dim=0)  # per language
        if bool((lo < 0).any()):
            li, j, k = (int(i) for i in (over_zero < 0).nonzero()[0])
            raise ValueError(f"over_zero[{li}, {j}, {k}] = {over_zero[li, j, k]} is negative.")
        if bool((hi > n).any()):
            li, j, k = (int(i) for i in (over_zero > n).nonzero()[0])
            raise ValueError(
                f"over_zero[{li}, {j}, {k}] = {over_zero[li, j, k].item()} exceeds n[{k}] = "
                f"{n[k].item()}: a neuron cannot be active on more tokens than were fed. Are "
                "over_zero and n from the same run, and in the same language order?"
            )
    over_zero = over_zero.contiguous()
    if dtype == torch.get_default_dtype() and not (
        over_zero.dtype.is_floating_point or n.dtype.is_floating_point
    ):
        return over_zero / n  # the reference's own operation
    return over_zero.to(dtype) / n.to(dtype)


def mean_activation(
    activation_sum: torch.Tensor,
    n: torch.Tensor | Sequence[int],
    *,
    clip_negative: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Mean activation ``activation_sum[l, j, k] / n[k]`` (computed in float64).

    Args:
        activation_sum: ``[layer, neuron, lang]`` sum of activation values over tokens.
        n: ``[lang]`` tokens per language.
        clip_negative: Clip negative means to 0. SiLU/GELU outputs are mostly slightly
            negative when "inactive", so a mean can be < 0; entropy needs non-negative
            weights, and a neuron whose mean is negative carries no "positive firing" mass.
        dtype: Floating dtype of the result.

    Returns:
        ``[layer, neuron, lang]`` in ``dtype``.
    """
    activation_sum, n = _check_counts(activation_sum, "activation_sum", n)
    m = activation_sum.to(torch.float64) / n.to(torch.float64)
    return (m.clamp_min(0.0) if clip_negative else m).to(dtype)


def normalized_probability(p: torch.Tensor) -> torch.Tensor:
    """Normalise across languages: ``Q = P / sum_k P``; a never-active neuron gets ``Q = 0``.

    Bit-identical to the reference (``P / P.sum(-1)``, then NaN from 0/0 set to 0): rows
    that sum to 0 are divided by 1 instead, which gives the same zeros in one pass less.

    Args:
        p: ``[..., lang]`` non-negative values.

    Returns:
        ``Q: [..., lang]``, rows summing to 1 (or all 0).
    """
    total = p.sum(dim=-1, keepdim=True)
    total.masked_fill_(total == 0, 1)
    return p / total


def lape_entropy(p: torch.Tensor) -> torch.Tensor:
    """LAPE score ``H = -sum_k Q log Q`` (natural log, ``0·log 0 = 0``).

    ``H`` ranges from 0 (active in one language only) to ``log K`` (equally active in all).
    A never-active neuron gets ``H = 0`` without NaN; it is the filter of :func:`identify`,
    not the entropy, that keeps such neurons out.

    Args:
        p: ``[..., lang]`` activation probabilities (or other non-negative values).

    Returns:
        ``H: [...]``.
    """
    q = normalized_probability(p)
    log_q = q.log()  # same bits as the reference's torch.where(q > 0, q.log(), 0)
    log_q.masked_fill_(q == 0, 0)
    return -torch.sum(q.mul_(log_q), dim=-1)


def probability_margin(p: torch.Tensor) -> torch.Tensor:
    """Gap between a neuron's highest and second-highest activation probability.

    Args:
        p: ``[..., lang]``.

    Returns:
        ``[...]``; with a single language the probability itself.
    """
    if p.shape[-1] == 1:
        return p[..., 0].clone()
    top2 = p.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


# ============================================================================ quantile


_FAST_KTH_MIN = 1 << 20  # below this size plain kthvalue is fast enough
_KTH_SAMPLE = 1 << 16


def _kth_smallest(flat: torch.Tensor, k: int) -> float:
    """Exactly ``flat.kthvalue(k).values.item()``, faster on large inputs.

    For large tensors a fixed-seed random sample brackets the answer between two sample
    order statistics ``lo <= x_k <= hi``; if the bracket holds (checked by counting), the
    answer is the ``(k - #{x < lo})``-th smallest inside ``[lo, hi]`` (a few % of the data).
    Otherwise it falls back to the full ``kthvalue``. The result is identical either way.
    """
    n = flat.numel()
    if n < _FAST_KTH_MIN:
        return flat.kthvalue(k).values.item()
    gen = torch.Generator().manual_seed(0)
    sample = flat[torch.randint(n, (_KTH_SAMPLE,), generator=gen)].sort().values
    m = sample.numel()
    q = k / n
    half = 4.0 / math.sqrt(m)  # the sample quantile's s.d. is <= 0.5/sqrt(m): ~8 s.d.
    lo = sample[max(math.floor((q - half) * m), 1) - 1]
    hi = sample[min(math.ceil((q + half) * m), m) - 1]
    below = int(torch.count_nonzero(flat < lo))
    up_to_hi = flat <= hi
    if below < k <= int(torch.count_nonzero(up_to_hi)):  # the bracket holds: lo <= x_k <= hi
        if bool(lo == hi):
            return lo.item()
        return flat[up_to_hi & (flat >= lo)].kthvalue(k - below).values.item()
    logger.debug("kth bracket missed (k=%d of %d); full kthvalue", k, n)
    return flat.kthvalue(k).values.item()


def kth_quantile(values: torch.Tensor, rate: float) -> float:
    """The reference's quantile: the ``round(N·rate)``-th smallest of all values.

    ``flat.kthvalue(round(len(flat) * rate)).values`` exactly (1-indexed, Python's
    ``round``, which rounds halves to even), NOT ``torch.quantile`` (which interpolates).
    Example: values ``[1, 2, 3, 4]``, rate 0.5 -> 2nd smallest = 2 (``torch.quantile`` gives
    2.5); rate 0.625 -> ``round(2.5) = 2`` -> 2.

    ``rate = 0`` (or any rate with ``round(N·rate) = 0``, where the reference's ``kthvalue``
    raises) is taken as ``k = 1``: the minimum. A ``P > tau`` test then means "above the
    smallest value", which keeps the filter excluding never-active neurons (P = 0) rather
    than letting every neuron through.

    Args:
        values: Any shape; flattened.
        rate: In [0, 1].

    Returns:
        The threshold as a Python float (exactly a value present in ``values``).
    """
    flat = values.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("kth_quantile of an empty tensor.")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}.")
    k = min(max(round(flat.numel() * rate), 1), flat.numel())
    return _kth_smallest(flat.contiguous(), k)


def _smallest_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` smallest finite scores, ties broken by lower index; sorted.

    O(N): one ``kthvalue`` plus two comparisons. ``+inf`` entries are never returned, so
    fewer than ``k`` come back when fewer are finite.
    """
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    finite = torch.isfinite(score)
    n_finite = int(finite.sum())
    if k >= n_finite:
        return finite.nonzero().squeeze(1)
    v = score.kthvalue(k).values  # +inf sort last, and k < n_finite: v is finite
    lt = (score < v).nonzero().squeeze(1)
    eq = (score == v).nonzero().squeeze(1)[: k - lt.numel()]
    return torch.cat([lt, eq]).sort().values


# ============================================================================ identify


def _check_languages(languages: Sequence[str], n_lang: int) -> list[str]:
    if isinstance(languages, str):
        raise TypeError(f"languages must be a list of codes, got the string {languages!r}.")
    langs = [str(x) for x in languages]
    if len(langs) != n_lang:
        raise ValueError(
            f"{len(langs)} languages given ({langs}) but the counts have {n_lang} language "
            "columns."
        )
    if len(set(langs)) != len(langs):
        raise ValueError(f"languages must be unique, got {langs}.")
    return langs


def identify(
    over_zero: torch.Tensor,
    n: torch.Tensor | Sequence[int],
    languages: Sequence[str],
    config: LapeConfig = LapeConfig(),
    *,
    method: Method = "lape",
    activation_sum: torch.Tensor | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> NeuronSelection:
    """Identify language-specific neurons.

    ``method="lape"`` (default) is the paper's method, reproducing the reference
    ``identify.py``:

    1. ``P = over_zero / n`` (float32), ``H`` = entropy of ``P`` normalised over languages.
    2. ``tau = kth_quantile(all P, filter_rate)``; a neuron with ``P <= tau`` in every
       language is excluded (``H = +inf``).
    3. The ``round(L·D·top_rate)`` neurons with the smallest ``H`` are selected, globally.
    4. ``bar = kth_quantile(all P, activation_bar_ratio)``; each selected neuron is assigned
       to every language with ``P > bar`` (possibly several; possibly none, in which case it
       is dropped from all languages, as in the reference — this can only happen when
       ``bar > tau``).

    Deliberate differences from the reference, none of which changes its result on data
    without ties when enough neurons pass the filter:

    * Ties in ``H`` at the selection boundary are broken by the lower flat index
      (layer-major), so the result is deterministic; the reference's ``topk`` is not.
    * Excluded neurons are never selected, even when fewer than ``round(L·D·top_rate)``
      pass the filter (then fewer are selected and a warning is logged). The reference's
      ``topk`` would fill up with ``+inf`` neurons, which it then assigns only if some
      ``P > bar``, possible only when ``bar < tau``.
    * Every language is kept, with empty per-layer tensors if it got no neuron (the
      reference's ``bincount`` silently drops trailing empty languages).

    Named alternatives, same filter, count and assignment rule, only the ranking changes
    (so they isolate the effect of the specificity score):

    * ``"probability"``: rank by the *margin* ``P_max - P_second`` (largest first), i.e.
      activation probability alone, no entropy. A neuron counts as specific to the degree
      that one language makes it fire far more often than any other (preferred minus best
      non-preferred response, an unnormalised selectivity index). Unlike the scale-free
      entropy it is in probability units: a neuron firing on 2% of ``zh`` tokens and never
      elsewhere has ``H = 0`` but a margin of only 0.02, while one firing on 90% of ``zh``
      and 50% of ``ja`` tokens has ``H = 0.65`` and a margin of 0.4; this variant favours
      the second, LAPE the first. Stored as ``selected_score = -margin``.
    * ``"mean_activation"``: like LAPE but over mean activation values
      ``M = activation_sum / n`` instead of probabilities (negative means clipped at 0, see
      :func:`mean_activation`); ``M`` replaces ``P`` everywhere — in the entropy, in the
      filter and bar quantiles and in the assignment. ``activation_sum`` is required.

    Args:
        over_zero: ``[layer, neuron, lang]`` counts of tokens with activation > 0.
        n: ``[lang]`` tokens per language.
        languages: One code per language column, in column order.
        config: Thresholds.
        method: ``"lape"``, ``"probability"`` or ``"mean_activation"``.
        activation_sum: ``[layer, neuron, lang]`` activation sums (``"mean_activation"``).
        provenance: Facts to carry (model id, corpus, ...); the identification's own numbers
            are added under the key ``"identification"``.

    Returns:
        A :class:`~lape_utils.selection.NeuronSelection` with per-neuron tables (``P`` per
        language, LAPE entropy, and the ranking score for non-LAPE methods).
    """
    if not isinstance(config, LapeConfig):
        raise TypeError(
            f"config must be a LapeConfig, got {type(config).__name__}; use "
            "LapeConfig.from_dict(...) for a dict."
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    p = activation_probability(over_zero, n)
    n_layers, n_neurons, n_lang = p.shape
    langs = _check_languages(languages, n_lang)
    values, value_name = p, "activation probability"
    if method == "mean_activation":
        if activation_sum is None:
            raise ValueError('method="mean_activation" needs activation_sum=[layer, neuron, lang].')
        values = mean_activation(activation_sum, n)
        if values.shape != p.shape:
            raise ValueError(f"activation_sum is {tuple(values.shape)}, over_zero {tuple(p.shape)}")
        value_name = "mean activation (negatives clipped at 0)"

    # Thresholds and filter first, so that the score is only computed for candidates (the
    # score of an excluded neuron is +inf whatever it is). Row-wise formulas give the same
    # bits on a subset of rows as on the full tensor (tested).
    tau = kth_quantile(values, config.filter_rate)
    one_threshold = config.activation_bar_ratio == config.filter_rate
    bar = tau if one_threshold else kth_quantile(values, config.activation_bar_ratio)
    rows = values.reshape(-1, n_lang)
    cand_flat = (rows.amax(dim=1) > tau).nonzero().squeeze(1)  # == (P > tau).any(-1)
    score_fn = (lambda v: -probability_margin(v)) if method == "probability" else lape_entropy
    if 2 * cand_flat.numel() > rows.shape[0]:  # most rows: score all, skip copying the values
        cand_score = score_fn(rows)[cand_flat]
    else:
        cand_score = score_fn(rows[cand_flat])

    n_requested = round(n_layers * n_neurons * config.top_rate)
    pick = _smallest_k(cand_score, n_requested)  # ties -> lower position = lower flat index
    sel_flat = cand_flat[pick]
    if sel_flat.numel() < n_requested:
        logger.warning(
            "only %d neurons pass the filter (tau=%.6g); selecting %d instead of %d. Lower "
            "filter_rate to admit more.", cand_flat.numel(), tau, sel_flat.numel(), n_requested
        )
    assign = rows[sel_flat] > bar  # [n_selected, lang]
    n_unassigned = int((~assign.any(dim=1)).sum())
    if n_unassigned:
        logger.info("%d selected neurons exceed no bar (%.6g); dropped", n_unassigned, bar)

    sel_prob = p.reshape(-1, n_lang)[sel_flat]
    sel_score = cand_score[pick]
    sel_entropy = sel_score if method == "lape" else lape_entropy(sel_prob)
    layer = torch.div(sel_flat, n_neurons, rounding_mode="floor")
    prov = dict(provenance or {})
    prov["identification"] = {
        "method": method,
        "value": value_name,
        "shape": [n_layers, n_neurons, n_lang],
        "tokens": dict(zip(langs, torch.as_tensor(n).tolist(), strict=True)),
        "filter_threshold": tau,
        "activation_bar": bar,
        "n_candidates": int(cand_flat.numel()),
        "n_requested": n_requested,
        "n_selected": int(sel_flat.numel()),
        "n_unassigned": n_unassigned,
    }
    return NeuronSelection.from_flat(
        {lang: sel_flat[assign[:, k]] for k, lang in enumerate(langs)},
        n_layers,
        n_neurons,
        method=method,
        config=config.to_dict(),
        provenance=prov,
        selected=torch.stack([layer, sel_flat - layer * n_neurons], dim=1),
        selected_prob=sel_prob,
        selected_entropy=sel_entropy,
        selected_score=None if method == "lape" else sel_score,
    )


# ============================================================================ controls


def random_matched(
    selection: NeuronSelection, seed: int, exclude_selected: bool = True
) -> NeuronSelection:
    """Random control: for each language and layer, as many neurons drawn uniformly.

    Each language's draw is independent (random sets of two languages may overlap, as real
    ones may); within a language and layer it is without replacement. The same ``seed``
    gives the same sets.

    Args:
        selection: The selection to match.
        seed: Seed of a private ``torch.Generator`` (the global RNG is untouched).
        exclude_selected: Draw only among neurons in no language of ``selection``.

    Returns:
        A selection with ``method="random_matched"`` and the same per-layer counts.

    Raises:
        ValueError: A layer has fewer eligible neurons than must be drawn.
    """
    gen = torch.Generator().manual_seed(int(seed))
    union = selection.union() if exclude_selected else None
    hint = " (try exclude_selected=False)" if exclude_selected else ""
    out: dict[str, list[torch.Tensor]] = {lang: [] for lang in selection.languages}
    for li in range(selection.n_layers):
        pool = torch.arange(selection.n_neurons) if union is None else (~union[li]).nonzero()[:, 0]
        for lang in selection.languages:
            k = _to_draw(selection, li, lang, pool, hint)
            pick = torch.randperm(pool.numel(), generator=gen)[:k] if k else []  # 0: no draw
            out[lang].append(pool[pick].sort().values)
    return _control(selection, out, "random_matched", seed, exclude_selected=exclude_selected)


def activity_matched(
    selection: NeuronSelection,
    probability: torch.Tensor,
    languages: Sequence[str],
    seed: int,
) -> NeuronSelection:
    """Activity-matched random control: as many neurons per layer, equally often active.

    LAPE's neurons are by construction among the most active in their language, so a
    uniform draw (:func:`random_matched`) mixes two effects: zeroing *specific* neurons and
    zeroing *active* ones at all. This control keeps the second and removes the first: for
    each language and layer, every LAPE neuron of that language is matched with the
    not-selected neuron of the same layer whose activation probability *on that language*
    is nearest to its own (nearest neighbour without replacement, in a seeded random order
    of the LAPE neurons, ties broken at random). High-probability LAPE neurons thus get
    neurons that fire as often on the language but also on the others.

    Args:
        selection: The selection to match.
        probability: ``[layer, neuron, lang]`` activation probability (e.g.
            ``stats.probability()``) of the same model.
        languages: Language codes of ``probability``'s last axis (must include every
            language of the selection).
        seed: Seed of a private ``torch.Generator`` (the global RNG is untouched).

    Returns:
        A selection with ``method="activity_matched"`` and the same per-layer counts;
        within a language no neuron is drawn twice, and none of the selection's neurons.

    Raises:
        ValueError: shapes or languages that do not fit, or a layer with fewer eligible
            neurons than must be drawn.
    """
    p = torch.as_tensor(probability, dtype=torch.float64)
    langs = list(languages)
    if tuple(p.shape) != (selection.n_layers, selection.n_neurons, len(langs)):
        raise ValueError(
            f"probability must be [{selection.n_layers}, {selection.n_neurons}, {len(langs)}] "
            f"(layer, neuron, lang) for this selection, got {tuple(p.shape)}."
        )
    missing = [x for x in selection.languages if x not in langs]
    if missing:
        raise ValueError(f"no activation probability for {missing}; it holds {langs}.")
    gen = torch.Generator().manual_seed(int(seed))
    union = selection.union()
    out: dict[str, list[torch.Tensor]] = {lang: [] for lang in selection.languages}
    for li in range(selection.n_layers):
        pool = (~union[li]).nonzero()[:, 0]
        pool = pool[torch.randperm(pool.numel(), generator=gen)]  # random tie-breaking
        for lang in selection.languages:
            _to_draw(selection, li, lang, pool, " outside the selection")
            k, targets = langs.index(lang), selection.indices[lang][li]
            values = p[li, pool, k].clone()
            picked = []
            for t in targets[torch.randperm(targets.numel(), generator=gen)].tolist():
                j = int(torch.argmin((values - p[li, t, k]).abs()))
                picked.append(int(pool[j]))
                values[j] = math.inf  # without replacement
            out[lang].append(torch.tensor(sorted(picked), dtype=torch.long))
    on = "activation probability on the set's own language, per layer"
    return _control(selection, out, "activity_matched", seed, matched_on=on)


def _to_draw(selection: NeuronSelection, li: int, lang: str, pool: torch.Tensor, hint: str) -> int:
    """How many neurons a control draws for ``lang`` in layer ``li``; refuses too small a pool."""
    k = int(selection.indices[lang][li].numel())
    if k > pool.numel():
        raise ValueError(
            f"layer {li}: {k} {lang} neurons to draw but only {pool.numel()} eligible{hint}."
        )
    return k


def _control(
    selection: NeuronSelection, indices: dict, method: str, seed: int, **facts: Any
) -> NeuronSelection:
    """A control selection: drawn ``indices``, the matched selection's shape and config."""
    return NeuronSelection(
        list(selection.languages),
        indices,
        selection.n_layers,
        selection.n_neurons,
        method=method,
        config=dict(selection.config),
        provenance={
            "matched_to": selection.method,
            "seed": int(seed),
            **facts,
            "matched_provenance": selection.provenance,
        },
    )


def control_sets(
    selection: NeuronSelection, stats: Any = None, seed: int = 0, *, random: bool = True
) -> dict[str, NeuronSelection]:
    """The workbook's controls for a selection, by name.

    Args:
        selection: The LAPE selection.
        stats: Activation statistics of the same model (anything with ``probability()``
            and ``languages``), for the activity-matched control; ``None`` to skip it.
        seed: Seed of both draws.
        random: Include the uniform random control.

    Returns:
        ``{"random": random_matched(...), "matched": activity_matched(...)}`` (each when
        asked for), the ``controls`` argument of
        :func:`lape_utils.evaluate.perplexity_matrix` and :func:`lape_utils.steering.steer`.
    """
    out = {"random": random_matched(selection, seed)} if random else {}
    if stats is not None:
        out["matched"] = activity_matched(selection, stats.probability(), stats.languages, seed)
    return out


# ============================================================================ comparison


def agreement(a: NeuronSelection, b: NeuronSelection) -> pd.DataFrame:
    """Overlap of two selections of the same model, per language.

    A language present in only one selection counts as an empty set in the other.
    Jaccard = |A ∩ B| / |A ∪ B|; NaN when both sets are empty (no evidence either way).

    Args:
        a: First selection.
        b: Second selection (same ``n_layers`` and ``n_neurons``).

    Returns:
        DataFrame indexed by ``language`` (a's order, then b's extra languages, then
        ``"all"`` = the union over languages of each selection), columns ``count_a,
        count_b, intersection, union, jaccard``.
    """
    if (a.n_layers, a.n_neurons) != (b.n_layers, b.n_neurons):
        raise ValueError(
            f"selections of different shapes: {a.n_layers}x{a.n_neurons} vs "
            f"{b.n_layers}x{b.n_neurons}."
        )

    def row(ma: torch.Tensor, mb: torch.Tensor) -> dict[str, float]:
        inter, uni = int((ma & mb).sum()), int((ma | mb).sum())
        return {
            "count_a": int(ma.sum()),
            "count_b": int(mb.sum()),
            "intersection": inter,
            "union": uni,
            "jaccard": inter / uni if uni else math.nan,
        }

    def mask(s: NeuronSelection, lang: str) -> torch.Tensor:  # an absent language: empty
        return s.mask(lang) if lang in s.languages else torch.zeros(shape, dtype=torch.bool)

    shape = (a.n_layers, a.n_neurons)
    langs = list(a.languages) + [x for x in b.languages if x not in a.languages]
    rows = {lang: row(mask(a, lang), mask(b, lang)) for lang in langs}
    rows["all"] = row(a.union(), b.union())
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")


@dataclass
class StabilityResult:
    """How stable an identification is under resampling (see :func:`stability`).

    Attributes:
        languages: Language order.
        n_replicates: Number of replicates.
        frequency: ``{lang: float32 [layer, neuron]}`` fraction of replicates in which the
            neuron was assigned to the language.
        per_replicate: Tidy DataFrame, one row per (replicate, language incl. ``"all"``):
            ``count`` (replicate), ``count_reference``, ``intersection``, ``union``,
            ``jaccard``.
    """

    languages: list[str]
    n_replicates: int
    frequency: dict[str, torch.Tensor]
    per_replicate: pd.DataFrame

    @property
    def jaccard(self) -> pd.DataFrame:
        """Jaccard to the reference, index ``replicate``, columns languages + ``"all"``."""
        wide = self.per_replicate.pivot(index="replicate", columns="language", values="jaccard")
        return wide[[*self.languages, "all"]]

    @property
    def mean_jaccard(self) -> pd.Series:
        """Mean Jaccard to the reference per language (and ``"all"``)."""
        return self.jaccard.mean(axis=0).rename("mean_jaccard")

    def to_frame(self) -> pd.DataFrame:
        """The tidy per-replicate table (a copy)."""
        return self.per_replicate.copy()

    def summary(self, stable_at: float = 0.9) -> pd.DataFrame:
        """Per-language summary.

        Args:
            stable_at: Frequency from which a neuron counts as stably selected.

        Returns:
            DataFrame indexed by language: ``count_reference``, ``mean_count``,
            ``mean_jaccard``, ``std_jaccard``, ``min_jaccard``, ``n_stable`` (neurons with
            frequency >= ``stable_at``).
        """
        df = self.per_replicate.groupby("language", sort=False).agg(
            count_reference=("count_reference", "first"),
            mean_count=("count", "mean"),
            mean_jaccard=("jaccard", "mean"),
            std_jaccard=("jaccard", "std"),  # ddof=1
            min_jaccard=("jaccard", "min"),
        )
        stable = {lang: int((f >= stable_at).sum()) for lang, f in self.frequency.items()}
        df["n_stable"] = pd.Series(stable, dtype="Int64")
        return df


def stability(
    boot_over_zero: torch.Tensor,
    boot_n: torch.Tensor,
    languages: Sequence[str],
    config: LapeConfig,
    reference: NeuronSelection,
    *,
    method: Method = "lape",
    boot_activation_sum: torch.Tensor | None = None,
) -> StabilityResult:
    """Re-identify on resampled statistics and compare with a reference selection.

    Typical use: the capture code records counts per corpus chunk; bootstrap replicates
    are sums over chunks drawn with replacement. Replicates are processed one at a time.

    Args:
        boot_over_zero: ``[rep, layer, neuron, lang]`` counts per replicate.
        boot_n: ``[rep, lang]`` tokens per replicate.
        languages: Language codes (must equal ``reference.languages``).
        config: Thresholds for every replicate.
        reference: The selection to compare with (usually from the full data).
        method: Identification method of every replicate.
        boot_activation_sum: ``[rep, layer, neuron, lang]`` (``"mean_activation"`` only).

    Returns:
        A :class:`StabilityResult`.

    Raises:
        ValueError: languages that differ from the reference's, no replicates, or shapes that
            do not fit each other or the reference.
    """
    langs = list(languages)
    if langs != list(reference.languages):
        raise ValueError(f"languages {langs} differ from the reference's {reference.languages}.")
    if boot_over_zero.dim() != 4 or boot_over_zero.shape[0] == 0:
        raise ValueError(
            "boot_over_zero must be [rep, layer, neuron, lang] with at least one replicate, "
            f"got {tuple(boot_over_zero.shape)}."
        )
    n_rep, n_layers, n_neurons, n_lang = boot_over_zero.shape
    boot_n = torch.as_tensor(boot_n)
    if tuple(boot_n.shape) != (n_rep, n_lang):
        raise ValueError(f"boot_n must be [{n_rep}, {n_lang}], got {tuple(boot_n.shape)}.")
    hits = {lang: torch.zeros(n_layers, n_neurons, dtype=torch.int32) for lang in langs}
    frames = []
    for r in range(n_rep):
        act_sum = None if boot_activation_sum is None else boot_activation_sum[r]
        sel = identify(
            boot_over_zero[r], boot_n[r], langs, config, method=method, activation_sum=act_sum
        )
        for lang in langs:
            hits[lang] += sel.mask(lang)
        ag = agreement(sel, reference).reset_index()
        ag.insert(0, "replicate", r)
        frames.append(ag)
    per = pd.concat(frames, ignore_index=True).rename(
        columns={"count_a": "count", "count_b": "count_reference"}
    )
    return StabilityResult(
        languages=langs,
        n_replicates=n_rep,
        frequency={lang: h.float() / n_rep for lang, h in hits.items()},
        per_replicate=per,
    )
