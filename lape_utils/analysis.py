"""Tables that describe a neuron selection (no plotting, no model; :mod:`.plots` draws them).

Where its neurons sit, how languages overlap, how the thresholds cut the entropy
distribution, how stable the selection is and how it converges with the token budget.
Languages are in the module order (:func:`~lape_utils.languages.sort_languages`), with
``"all"`` (distinct neurons of any language) last.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from lape_utils.config import LapeConfig
from lape_utils.languages import sort_languages
from lape_utils.lape import activation_probability, agreement, identify, lape_entropy
from lape_utils.selection import NeuronSelection

logger = logging.getLogger(__name__)

__all__ = [
    "REGIONS", "EntropyTable", "depth_profile", "entropy_table", "layer_counts",
    "layer_distribution", "layer_region_shares", "layer_share", "overlap", "probability_profiles",
    "region_layers", "relative_depth", "selection_frequencies", "stability_table",
]

#: Names of the three layer regions, bottom to top.
REGIONS: tuple[str, ...] = ("bottom", "middle", "top")

#: Column name of the "any language" (distinct neurons) column or row.
ALL = "all"


# ============================================================================ layers


def layer_distribution(selection: NeuronSelection, *, union: bool = False) -> pd.DataFrame:
    """Neurons per layer and language.

    Args:
        selection: The selection.
        union: Add a column ``"all"``: distinct neurons of the layer in any language (a
            neuron of two languages counts once there, twice in the language columns).

    Returns:
        DataFrame, index ``layer`` (0..L-1), one int column per language in the module
        order (then ``"all"``); ``columns.name == "language"``.
    """
    counts = selection.counts()[sort_languages(selection.languages)]
    if union:
        counts[ALL] = selection.union().sum(dim=1).numpy().astype(int)
    counts.columns.name = "language"
    return counts


def layer_share(selection: NeuronSelection, *, union: bool = False) -> pd.DataFrame:
    """:func:`layer_distribution` as a share of the layer's FFN neurons.

    Returns:
        Floats in [0, 1] (0.07 = 7% of the layer's ``n_neurons``), shaped like
        :func:`layer_distribution` (``union`` adds ``"all"``).
    """
    return layer_distribution(selection, union=union) / float(selection.n_neurons)


def layer_counts(data: NeuronSelection | pd.DataFrame) -> pd.DataFrame:
    """Neurons per layer and language with the ``"all"`` column, from a selection or a table.

    A count table (as :func:`lape_utils.published.published_counts` reads it) must carry
    ``attrs["n_neurons"]`` and an ``"all"`` column; it is returned as it is.

    Returns:
        :func:`layer_distribution` with ``union=True`` and ``attrs["n_neurons"]`` set.
    """
    if isinstance(data, NeuronSelection):
        counts = layer_distribution(data, union=True)
        counts.attrs["n_neurons"] = data.n_neurons
        return counts
    if ALL not in data.columns or "n_neurons" not in data.attrs:
        raise ValueError(
            "a count table needs an 'all' column (distinct neurons per layer) and "
            "attrs['n_neurons']; see lape_utils.published.published_counts()."
        )
    return data


def relative_depth(n_layers: int) -> np.ndarray:
    """Relative position of each layer, for comparing models of any depth.

    Returns:
        ``float [L]``: ``l / (L - 1)``, 0 for the first layer and 1 for the last (0 when
        ``L == 1``).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
    return np.arange(n_layers) / max(n_layers - 1, 1)


def depth_profile(
    selection: NeuronSelection | pd.DataFrame, language: str | None = None
) -> pd.DataFrame:
    """How a selection's neurons are spread over the depth of the network, for any depth.

    Args:
        selection: The selection, or a count table (see :func:`layer_counts`).
        language: One language, or ``None`` for the distinct neurons of all languages.

    Returns:
        DataFrame indexed by ``layer``: ``relative_depth``, ``count``, ``fraction`` (of the
        selection's neurons; NaN when it is empty), ``density`` (``fraction · L``: 1
        everywhere for a uniform spread) and ``cumulative`` (running sum of ``fraction``).
    """
    count = layer_counts(selection)[language or ALL].to_numpy()
    n_layers, total = len(count), count.sum()
    fraction = count / total if total else np.full(n_layers, np.nan)
    return pd.DataFrame(
        {"relative_depth": relative_depth(n_layers), "count": count, "fraction": fraction,
         "density": fraction * n_layers, "cumulative": np.cumsum(fraction)},
        index=pd.RangeIndex(n_layers, name="layer"),
    )


def region_layers(n_layers: int, bottom: float = 0.1, top: float = 0.25) -> dict[str, range]:
    """The layers of the bottom, middle and top regions of a network.

    ``bottom`` = the first ``round(bottom·L)`` layers, ``top`` = the last ``round(top·L)``
    (halves round up), ``middle`` = the rest; e.g. ``L = 32``: 0-2, 3-23, 24-31. A region
    can be empty on a shallow network (``L = 4``: no bottom layer at 10%).

    Args:
        n_layers: Number of layers ``L``.
        bottom: Fraction of layers in the bottom region, in [0, 1).
        top: Fraction of layers in the top region, in [0, 1); ``bottom + top <= 1``.

    Returns:
        ``{"bottom": range, "middle": range, "top": range}``.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
    if not (0 <= bottom < 1 and 0 <= top < 1 and bottom + top <= 1):
        raise ValueError(
            f"bottom={bottom!r} and top={top!r} must be fractions in [0, 1) with "
            "bottom + top <= 1 (e.g. bottom=0.1, top=0.25)."
        )
    n_bottom = math.floor(bottom * n_layers + 0.5)  # round half up, unlike round()
    n_top = min(math.floor(top * n_layers + 0.5), n_layers - n_bottom)
    return {
        "bottom": range(0, n_bottom), "middle": range(n_bottom, n_layers - n_top),
        "top": range(n_layers - n_top, n_layers),
    }


def layer_region_shares(
    selection: NeuronSelection | pd.DataFrame, bottom: float = 0.1, top: float = 0.25
) -> pd.DataFrame:
    """Share of each language's neurons in the bottom, middle and top layers.

    Args:
        selection: The selection, or a count table (see :func:`layer_counts`).
        bottom: Fraction of layers counted as bottom (:func:`region_layers`).
        top: Fraction of layers counted as top.

    Returns:
        DataFrame indexed by ``language`` (module order, then ``"all"``): ``count`` and the
        shares ``bottom``, ``middle``, ``top`` (each row sums to 1; NaN for a language with
        no neurons).
    """
    counts = layer_counts(selection)
    regions = region_layers(len(counts), bottom, top)
    sums = pd.DataFrame({name: counts.iloc[list(r)].sum() for name, r in regions.items()})
    total = sums.sum(axis=1)  # the regions cover every layer once
    shares = sums.div(total.where(total > 0), axis=0).astype(float)
    return shares.assign(count=total.astype(int))[["count", *REGIONS]]


# ============================================================================ overlap


def overlap(selection: NeuronSelection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Neurons shared between every pair of languages.

    Args:
        selection: The selection.

    Returns:
        ``(counts, jaccard)``, both language × language in the module order.
        ``counts[a][b] = |A ∩ B|`` (diagonal = each language's size);
        ``jaccard[a][b] = |A ∩ B| / |A ∪ B|`` (diagonal 1; NaN when both are empty).
    """
    langs = sort_languages(selection.languages)
    flats = [selection.flat(lang) for lang in langs]
    k = len(langs)
    inter = np.array([[int(torch.isin(a, b).sum()) for b in flats] for a in flats],
                     dtype=np.int64).reshape(k, k)
    sizes = np.diag(inter)
    union = sizes[:, None] + sizes[None, :] - inter
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), np.nan)

    def frame(values: np.ndarray) -> pd.DataFrame:
        names = pd.Index(langs, name="language")
        return pd.DataFrame(values, index=names, columns=names.copy())

    return frame(inter), frame(jaccard)


# ============================================================================ entropy


@dataclass
class EntropyTable:
    """Per-neuron LAPE entropy and activation probability, with the thresholds as numbers.

    Attributes:
        frame: One row per neuron (``L·D`` rows): ``layer``, ``neuron``, ``entropy`` (LAPE
            ``H`` over the languages, nats), ``max_prob`` (largest ``P``), ``top_language``
            (language of ``max_prob``), ``passes_filter`` (``P > tau`` in some language),
            ``selected`` (among the ``round(top_rate·L·D)`` lowest-entropy neurons passing the
            filter), ``n_languages`` (languages the neuron was assigned to, ``P > bar``; 0 if
            not selected), then ``prob_<lang>`` per language (module order).
        languages: Languages of the ``prob_<lang>`` columns.
        config: The thresholds.
        tau: Filter threshold (the ``filter_rate`` quantile of all ``P``).
        bar: Assignment threshold (the ``activation_bar_ratio`` quantile of all ``P``).
        cutoff: Entropy of the last selected neuron (the largest selected ``H``); NaN if none.
        max_entropy: ``log K``, the entropy of a neuron equally active in all languages.
        n_candidates: Neurons passing the filter.
        n_selected: Neurons selected.
    """

    frame: pd.DataFrame
    languages: list[str]
    config: LapeConfig
    tau: float
    bar: float
    cutoff: float
    max_entropy: float
    n_candidates: int
    n_selected: int

    def probabilities(self) -> np.ndarray:
        """``float [L·D·K]``: every ``P`` value, pooled (what the two quantiles are of)."""
        return self.frame[[f"prob_{lang}" for lang in self.languages]].to_numpy().ravel()

    def passing(self) -> pd.DataFrame:
        """Rows of the neurons that pass the filter (the ones ranked by entropy)."""
        return self.frame[self.frame["passes_filter"]]


def entropy_table(stats: Any, config: LapeConfig = LapeConfig()) -> EntropyTable:
    """LAPE entropy and maximal activation probability of every neuron, with the thresholds.

    The thresholds and the selection are those of :func:`~lape_utils.lape.identify`; the
    entropy is given for every neuron, also those the filter excludes.

    Args:
        stats: An :class:`~lape_utils.stats.ActivationStats` (anything with ``languages``,
            ``n: [lang]`` and ``over_zero: [layer, neuron, lang]``).
        config: Thresholds.

    Returns:
        An :class:`EntropyTable`.
    """
    languages = list(stats.languages)
    sel = identify(stats.over_zero, stats.n, languages, config)
    info = sel.provenance["identification"]
    tau, bar = float(info["filter_threshold"]), float(info["activation_bar"])
    p = activation_probability(stats.over_zero, stats.n)
    n_layers, n_neurons, n_lang = p.shape
    rows = p.reshape(-1, n_lang)  # [layer·neuron, lang]
    h = lape_entropy(rows)
    pmax, arg = rows.max(dim=1)
    selected = torch.zeros(rows.shape[0], dtype=torch.bool)
    assigned = torch.zeros(rows.shape[0], dtype=torch.int64)
    if sel.selected is not None and sel.selected.numel():
        flat = sel.selected[:, 0] * n_neurons + sel.selected[:, 1]
        selected[flat] = True
        assigned[flat] = (rows[flat] > bar).sum(dim=1)
    df = pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers), n_neurons),
        "neuron": np.tile(np.arange(n_neurons), n_layers),
        "entropy": (h.double() + 0.0).numpy(),  # + 0.0 turns -0.0 into 0.0
        "max_prob": pmax.double().numpy(),
        "top_language": pd.Categorical.from_codes(arg.numpy(), categories=languages),
        "passes_filter": (pmax > tau).numpy(),
        "selected": selected.numpy(),
        "n_languages": assigned.numpy(),
    })
    ordered = sort_languages(languages)
    for lang in ordered:
        df[f"prob_{lang}"] = rows[:, languages.index(lang)].double().numpy()
    return EntropyTable(
        frame=df, languages=ordered, config=config, tau=tau, bar=bar,
        cutoff=float(h[selected].max()) if bool(selected.any()) else math.nan,
        max_entropy=math.log(n_lang), n_candidates=int(info["n_candidates"]),
        n_selected=int(info["n_selected"]),
    )


def probability_profiles(
    stats: Any, selection: NeuronSelection, lang: str, k: int | None = 20
) -> pd.DataFrame:
    """Activation probability in every language of a language's selected neurons.

    Neurons are ranked by their LAPE entropy over the statistics' languages (most specific
    first), ties by higher ``P`` in ``lang``, then by position; the first ``k`` are kept.

    Args:
        stats: An :class:`~lape_utils.stats.ActivationStats` of the same model (same layers
            and neurons as ``selection``).
        selection: The selection.
        lang: The language whose neurons to profile.
        k: How many neurons (``None`` for all).

    Returns:
        DataFrame, index ``(layer, neuron)``, one column of ``P`` per language of ``stats``
        (module order); ``columns.name == "language"``. Empty (with the columns) when the
        language has no neurons.
    """
    languages = list(stats.languages)
    for name, have in (("selection", selection.languages), ("statistics", languages)):
        if lang not in have:
            raise KeyError(f"language {lang!r} not in the {name}; it has {list(have)}.")
    shape = tuple(stats.over_zero.shape[:2])
    if shape != (selection.n_layers, selection.n_neurons):
        raise ValueError(
            f"statistics are {shape} (layers, neurons) but the selection is "
            f"({selection.n_layers}, {selection.n_neurons}); use the statistics of the model "
            "the selection was made on."
        )
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0 or None, got {k}.")
    flat = selection.flat(lang)
    probs = activation_probability(stats.over_zero, stats.n).reshape(-1, len(languages))[flat]
    own = probs[:, languages.index(lang)].double().numpy()
    order = np.lexsort((np.arange(len(flat)), -own, lape_entropy(probs.double()).numpy()))[:k]
    df = pd.DataFrame(probs.double().numpy()[order], columns=languages)[sort_languages(languages)]
    flat = flat.numpy()[order]
    df.index = pd.MultiIndex.from_arrays(
        [flat // selection.n_neurons, flat % selection.n_neurons], names=["layer", "neuron"]
    )
    df.columns.name = "language"
    return df


# ============================================================================ stability


def stability_table(result: Any, stable_at: float = 0.9) -> pd.DataFrame:
    """Per-language stability of a selection under bootstrap resampling.

    Args:
        result: A :class:`~lape_utils.lape.StabilityResult`.
        stable_at: Selection frequency from which a neuron counts as stable.

    Returns:
        DataFrame indexed by ``language`` (module order, then ``"all"``):
        ``count_reference``, ``mean_count``, ``mean_jaccard``, ``std_jaccard``,
        ``min_jaccard`` (each replicate's set against the reference), ``n_stable`` (selected
        in at least ``stable_at`` of the replicates), ``n_ever`` (in at least one) and
        ``stable_fraction`` (``n_stable / count_reference``); the last three missing for
        ``"all"``.
    """
    summ = result.summary(stable_at=stable_at)
    ever = {lang: int((f > 0).sum()) for lang, f in result.frequency.items()}
    summ["n_ever"] = pd.Series(ever, dtype="Int64")
    reference = summ["count_reference"].replace(0, np.nan).astype("Float64")
    summ["stable_fraction"] = summ["n_stable"].astype("Float64") / reference
    order = sort_languages(x for x in summ.index if x != ALL) + [ALL] * (ALL in summ.index)
    return summ.loc[order].rename_axis("language")


def selection_frequencies(result: Any) -> pd.DataFrame:
    """Selection frequency of every neuron selected in some replicate, tidy.

    Args:
        result: A :class:`~lape_utils.lape.StabilityResult`.

    Returns:
        DataFrame with columns ``language`` (module order), ``layer``, ``neuron``,
        ``frequency`` (share of replicates that assign the neuron to the language).
    """
    frames = []
    for lang in sort_languages(result.frequency):
        f = result.frequency[lang]
        layer, neuron = (f > 0).nonzero(as_tuple=True)
        frames.append(pd.DataFrame({
            "language": lang, "layer": layer.numpy(), "neuron": neuron.numpy(),
            "frequency": f[layer, neuron].double().numpy(),
        }))
    if not frames:
        return pd.DataFrame(columns=["language", "layer", "neuron", "frequency"])
    return pd.concat(frames, ignore_index=True)


# ============================================================================ convergence

#: Jaccard at half the budget from which a selection counts as converged.
CONVERGED_AT = 0.9


def convergence(stats: Any, config: LapeConfig = LapeConfig()) -> pd.DataFrame:
    """How the selection changes as the token budget grows, from the budget snapshots.

    Re-identifies on the counts of the first 1/16, 1/8, 1/4, 1/2 of each language's chunks
    (recorded by capture) and compares each selection with the full-budget one.

    Args:
        stats: :class:`~lape_utils.stats.ActivationStats` with budget snapshots.
        config: Thresholds (the same for every budget).

    Returns:
        Tidy DataFrame, one row per (budget, language incl. ``"all"``): ``snapshot``
        (0.. then ``"full"``), ``fraction`` (of the chunks; 1 for full), ``tokens`` (mean
        tokens per language counted), ``language``, ``count`` (neurons selected for the
        language), ``jaccard`` (to the full-budget set of that language; NaN when both are
        empty). Budgets holding the same chunks (few chunks) appear once.

    Raises:
        ValueError: the statistics hold no budget snapshots.
    """
    if getattr(stats, "n_budgets", 0) == 0:
        raise ValueError(
            "these statistics hold no budget snapshots (captured before they were recorded, "
            "or imported); capture them again with lape_utils.capture"
        )
    full = identify(stats.over_zero, stats.n, stats.languages, config)
    fractions = list(stats.provenance.get("budget_fractions", []))
    frames, seen = [], {tuple(stats.n.tolist())}
    for s in range(stats.n_budgets):
        sub = stats.at_budget(s)
        if tuple(sub.n.tolist()) in seen:  # few chunks: this budget holds the same ones
            continue
        seen.add(tuple(sub.n.tolist()))
        sel = identify(sub.over_zero, sub.n, sub.languages, config)
        fraction = fractions[s] if s < len(fractions) else math.nan
        frames.append(agreement(sel, full).assign(snapshot=s, fraction=fraction,
                                                  tokens=float(sub.n.double().mean())))
    frames.append(agreement(full, full).assign(snapshot="full", fraction=1.0,
                                               tokens=float(stats.n.double().mean())))
    table = pd.concat(frames).reset_index().rename(columns={"count_a": "count"})
    return table[["snapshot", "fraction", "tokens", "language", "count", "jaccard"]]


def convergence_verdict(table: pd.DataFrame) -> pd.Series:
    """Per language: has the selection converged at the budget used?

    True when the set at the largest budget below the full one (half the chunks) has a
    Jaccard of at least :data:`CONVERGED_AT` to the full set.

    Returns:
        Series indexed by language (and ``"all"``), ``True``/``False``.
    """
    partial = table[table["snapshot"] != "full"]
    if partial.empty:
        return pd.Series(dtype=bool)
    last = partial[partial["tokens"] == partial["tokens"].max()]
    return (last.set_index("language")["jaccard"] >= CONVERGED_AT).rename("converged")
