"""LAPE identification of language-specific neurons: pure math on count tensors.

Implements §2 of ``shared/docs/lape-method.md`` (Tang et al., ACL 2024) on the statistics
that capture records, never a model: ``over_zero: [layer, neuron, lang]`` (tokens on which
each FFN neuron was > 0), ``n: [lang]`` (tokens per language) and optionally
``activation_sum: [layer, neuron, lang]``. ``identify(method="lape")`` reproduces the
authors' ``identify.py`` exactly, with the deliberate differences listed on :func:`identify`.
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


# ---------------------------------------------------------------------------- formulas
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

    In float32 (the default) bit-identical to the reference's ``over_zero / n``.

    Args:
        over_zero: ``[layer, neuron, lang]`` counts of tokens with activation > 0.
        n: ``[lang]`` tokens per language.
        dtype: Floating dtype of the result.

    Returns:
        ``P: [layer, neuron, lang]`` in ``dtype``.

    Raises:
        ValueError: Shapes disagree, some ``n <= 0``, or a count is < 0 or > its ``n``.
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
    activation_sum: torch.Tensor, n: torch.Tensor | Sequence[int], *, clip_negative: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Mean activation ``activation_sum[l, j, k] / n[k]`` (computed in float64).

    Args:
        activation_sum: ``[layer, neuron, lang]`` sum of activation values over tokens.
        n: ``[lang]`` tokens per language.
        clip_negative: Clip negative means to 0 (SiLU/GELU are slightly negative when
            "inactive"; the entropy needs non-negative weights).
        dtype: Floating dtype of the result.

    Returns:
        ``[layer, neuron, lang]`` in ``dtype``.
    """
    activation_sum, n = _check_counts(activation_sum, "activation_sum", n)
    m = activation_sum.to(torch.float64) / n.to(torch.float64)
    return (m.clamp_min(0.0) if clip_negative else m).to(dtype)


def normalized_probability(p: torch.Tensor) -> torch.Tensor:
    """Normalise across languages: ``Q = P / sum_k P``; a never-active neuron gets ``Q = 0``.

    Bit-identical to the reference's ``P / P.sum(-1)`` with NaN set to 0.

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

    From 0 (active in one language only) to ``log K`` (equally active in all). A
    never-active neuron gets ``H = 0``; the filter of :func:`identify` keeps it out.

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


# ---------------------------------------------------------------------------- quantile
_FAST_KTH_MIN = 1 << 20  # below this size plain kthvalue is fast enough
_KTH_SAMPLE = 1 << 16


def _kth_smallest(flat: torch.Tensor, k: int) -> float:
    """Exactly ``flat.kthvalue(k).values.item()``, faster on large inputs.

    A fixed-seed sample brackets the answer, ``lo <= x_k <= hi``; if counting confirms the
    bracket, the answer is the ``(k - #{x < lo})``-th smallest inside it, else the full
    ``kthvalue`` is taken.
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

    ``flat.kthvalue(round(len(flat) * rate))`` exactly (1-indexed, Python's ``round``, halves
    to even), not the interpolating ``torch.quantile``: values ``[1, 2, 3, 4]`` at rate 0.5
    give 2, not 2.5. ``round(N·rate) = 0`` (where the reference raises) is taken as ``k = 1``,
    the minimum, so that ``P > tau`` still excludes never-active neurons.

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
    """Sorted flat indices of the ``k`` smallest finite scores, ties to the lower index."""
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


# ---------------------------------------------------------------------------- identify
def _check_languages(languages: Sequence[str], n_lang: int) -> list[str]:
    if isinstance(languages, str):
        raise TypeError(f"languages must be a list of codes, got the string {languages!r}.")
    langs = [str(x) for x in languages]
    if len(langs) != n_lang:
        raise ValueError(
            f"{len(langs)} languages given ({langs}) but the counts have {n_lang} language columns."
        )
    if len(set(langs)) != len(langs):
        raise ValueError(f"languages must be unique, got {langs}.")
    return langs


def identify(
    over_zero: torch.Tensor, n: torch.Tensor | Sequence[int], languages: Sequence[str],
    config: LapeConfig = LapeConfig(), *, method: Method = "lape",
    activation_sum: torch.Tensor | None = None, provenance: Mapping[str, Any] | None = None,
) -> NeuronSelection:
    """Identify language-specific neurons.

    ``method="lape"`` (default) reproduces the reference ``identify.py``:

    1. ``P = over_zero / n`` (float32), ``H`` = entropy of ``P`` normalised over languages.
    2. ``tau = kth_quantile(all P, filter_rate)``; a neuron with ``P <= tau`` in every
       language is excluded.
    3. The ``round(L·D·top_rate)`` neurons with the smallest ``H`` are selected, globally.
    4. ``bar = kth_quantile(all P, activation_bar_ratio)``; each selected neuron goes to
       every language with ``P > bar`` (several, or none: then it is dropped, as in the
       reference; possible only when ``bar > tau``).

    Deliberate differences from the reference (same result on data without ties when
    enough neurons pass the filter):

    * Ties in ``H`` at the boundary go to the lower flat index (layer-major): deterministic,
      unlike the reference's ``topk``.
    * Excluded neurons are never selected: if fewer than ``round(L·D·top_rate)`` pass the
      filter, fewer are selected (with a warning); the reference's ``topk`` fills up with
      ``+inf`` neurons.
    * Every language is kept, with empty tensors if it got no neuron (the reference's
      ``bincount`` drops trailing empty languages).

    Alternatives keep the filter, count and assignment and change only the ranking:
    ``"probability"`` ranks by the margin ``P_max - P_second`` (largest first; in probability
    units, unlike the scale-free entropy; stored as ``selected_score = -margin``);
    ``"mean_activation"`` uses ``M = activation_sum / n`` (see :func:`mean_activation`) in
    place of ``P`` everywhere.

    Args:
        over_zero: ``[layer, neuron, lang]`` counts of tokens with activation > 0.
        n: ``[lang]`` tokens per language.
        languages: One code per language column, in column order.
        config: Thresholds.
        method: ``"lape"``, ``"probability"`` or ``"mean_activation"``.
        activation_sum: ``[layer, neuron, lang]`` activation sums (``"mean_activation"``).
        provenance: Facts to carry; the identification's own numbers are added under
            ``"identification"``.

    Returns:
        A :class:`~lape_utils.selection.NeuronSelection` with per-neuron tables.
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

    # filter first, so that only candidates are scored (row-wise: same bits on a subset)
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
        "method": method, "value": value_name, "shape": [n_layers, n_neurons, n_lang],
        "tokens": dict(zip(langs, torch.as_tensor(n).tolist(), strict=True)),
        "filter_threshold": tau, "activation_bar": bar,
        "n_candidates": int(cand_flat.numel()), "n_requested": n_requested,
        "n_selected": int(sel_flat.numel()), "n_unassigned": n_unassigned,
    }
    return NeuronSelection.from_flat(
        {lang: sel_flat[assign[:, k]] for k, lang in enumerate(langs)}, n_layers, n_neurons,
        method=method, config=config.to_dict(), provenance=prov,
        selected=torch.stack([layer, sel_flat - layer * n_neurons], dim=1),
        selected_prob=sel_prob, selected_entropy=sel_entropy,
        selected_score=None if method == "lape" else sel_score,
    )


# ---------------------------------------------------------------------------- controls
def random_matched(
    selection: NeuronSelection, seed: int, exclude_selected: bool = True
) -> NeuronSelection:
    """Random control: for each language and layer, as many neurons drawn uniformly.

    Languages are drawn independently (their sets may overlap), each without replacement.

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
    selection: NeuronSelection, probability: torch.Tensor, languages: Sequence[str], seed: int
) -> NeuronSelection:
    """Activity-matched random control: as many neurons per layer, equally often active.

    Each LAPE neuron is matched with the not-selected neuron of its layer whose activation
    probability on its language is nearest (without replacement, in a seeded random order,
    ties at random): this separates zeroing *specific* neurons from zeroing *active* ones.

    Args:
        selection: The selection to match.
        probability: ``[layer, neuron, lang]`` activation probability of the same model.
        languages: Language codes of ``probability``'s last axis (a superset of the
            selection's).
        seed: Seed of a private ``torch.Generator`` (the global RNG is untouched).

    Returns:
        A selection with ``method="activity_matched"`` and the same per-layer counts.

    Raises:
        ValueError: Shapes or languages that do not fit, or too few eligible neurons.
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
        list(selection.languages), indices, selection.n_layers, selection.n_neurons,
        method=method, config=dict(selection.config),
        provenance={"matched_to": selection.method, "seed": int(seed), **facts,
                    "matched_provenance": selection.provenance},
    )


def control_sets(
    selection: NeuronSelection, stats: Any = None, seed: int = 0, *, random: bool = True
) -> dict[str, NeuronSelection]:
    """The workbook's controls for a selection, by name.

    Args:
        selection: The LAPE selection.
        stats: :class:`~lape_utils.stats.ActivationStats` of the same model, for the
            activity-matched control; ``None`` to skip it.
        seed: Seed of both draws.
        random: Include the uniform random control.

    Returns:
        ``{"random": ..., "matched": ...}`` (each when asked for), the ``controls`` argument
        of :func:`lape_utils.evaluate.perplexity_matrix` and :func:`lape_utils.steering.steer`.
    """
    out = {"random": random_matched(selection, seed)} if random else {}
    if stats is not None:
        out["matched"] = activity_matched(selection, stats.probability(), stats.languages, seed)
    return out


# ---------------------------------------------------------------------------- comparison
def agreement(a: NeuronSelection, b: NeuronSelection) -> pd.DataFrame:
    """Overlap of two selections of the same model, per language.

    A language missing from one selection is an empty set there; Jaccard of two empty
    sets is NaN.

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
            "count_a": int(ma.sum()), "count_b": int(mb.sum()), "intersection": inter, "union": uni,
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
    boot_over_zero: torch.Tensor, boot_n: torch.Tensor, languages: Sequence[str],
    config: LapeConfig, reference: NeuronSelection, *, method: Method = "lape",
    boot_activation_sum: torch.Tensor | None = None,
) -> StabilityResult:
    """Re-identify on each bootstrap replicate and compare with a reference selection.

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
        ValueError: Languages unlike the reference's, no replicates, or shapes that differ.
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
        languages=langs, n_replicates=n_rep,
        frequency={lang: h.float() / n_rep for lang, h in hits.items()}, per_replicate=per,
    )
