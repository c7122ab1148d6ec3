"""Tables that describe a neuron selection: where the neurons sit, how languages overlap,
how the thresholds cut the entropy distribution, how stable the selection is, and how it
compares with the paper's published sets.

Pure pandas/torch: no plotting and no model. Every table puts languages in the one
module-level order of :data:`lape_utils.languages.LANGUAGE_ORDER` (via
:func:`~lape_utils.languages.sort_languages`); :mod:`lape_utils.plots` draws these tables.

Layer regions (:func:`region_layers`): with ``L`` layers, the *bottom* region is the first
``round(bottom·L)`` layers and the *top* region the last ``round(top·L)`` layers (halves
round up), the *middle* region the rest. With the defaults (bottom 10%, top 25%):

=====  ===========  ==========
L      bottom       top
=====  ===========  ==========
30     0-2          22-29
32     0-2          24-31
40     0-3          30-39
80     0-7          60-79
=====  ===========  ==========

The paper (``lape-method.md`` §5) says the LLaMA-2 sets sit mostly in the bottom
(layers 0-1) and top layers and the BLOOM, Mistral, OPT and Phi-2 sets mostly in the top
quarter; :func:`compare_with_published` measures this on the files themselves (what they
really show is written down in its docstring).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lape_utils.languages import sort_languages
from lape_utils.lape import LapeConfig, activation_probability, identify, lape_entropy
from lape_utils.selection import (
    OFFICIAL_MODELS,
    NeuronSelection,
    download_official,
    official_path,
)

logger = logging.getLogger(__name__)

__all__ = [
    "REGIONS",
    "EntropyTable",
    "compare_with_published",
    "depth_profile",
    "entropy_table",
    "layer_distribution",
    "layer_region_shares",
    "layer_share",
    "overlap",
    "probability_profiles",
    "published_sets",
    "region_layers",
    "relative_depth",
    "selection_frequencies",
    "stability_table",
]

#: Names of the three layer regions, bottom to top.
REGIONS: tuple[str, ...] = ("bottom", "middle", "top")

#: Column name of the "any language" (distinct neurons) column or row.
ALL = "all"


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _ordered(languages: Iterable[str]) -> list[str]:
    return sort_languages(languages)


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
    counts = selection.counts()[_ordered(selection.languages)]
    if union:
        counts[ALL] = selection.union().sum(dim=1).numpy().astype(int)
    counts.columns.name = "language"
    return counts


def layer_share(selection: NeuronSelection, *, union: bool = False) -> pd.DataFrame:
    """Share of each layer's FFN neurons that belong to each language.

    Args:
        selection: The selection.
        union: Add the column ``"all"`` (distinct neurons in any language).

    Returns:
        :func:`layer_distribution` divided by ``n_neurons``: floats in [0, 1]
        (e.g. 0.07 = 7% of the layer's neurons).
    """
    return layer_distribution(selection, union=union) / float(selection.n_neurons)


def relative_depth(n_layers: int) -> np.ndarray:
    """Relative position of each layer in the network, for comparing models of any depth.

    Args:
        n_layers: Number of layers ``L``.

    Returns:
        ``float [L]``: ``l / (L - 1)``, 0 for the first layer and 1 for the last (0 when
        ``L == 1``).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
    if n_layers == 1:
        return np.zeros(1)
    return np.arange(n_layers) / (n_layers - 1)


def depth_profile(selection: NeuronSelection, language: str | None = None) -> pd.DataFrame:
    """How a selection's neurons are spread over the depth of the network.

    Comparable across models of different depth: ``density`` is the fraction of the
    selection in the layer times ``L`` (a uniform spread gives 1 everywhere, whatever ``L``),
    drawn against ``relative_depth``.

    Args:
        selection: The selection.
        language: One language, or ``None`` for the distinct neurons of all languages.

    Returns:
        DataFrame indexed by ``layer``: ``relative_depth``, ``count``, ``fraction`` (of the
        selection's neurons; sums to 1, or NaN when the selection is empty), ``density``
        (``fraction · L``) and ``cumulative`` (running sum of ``fraction``).
    """
    if language is None:
        count = selection.union().sum(dim=1).numpy().astype(int)
    else:
        count = selection.counts()[language].to_numpy()
    total = count.sum()
    fraction = count / total if total else np.full(len(count), np.nan)
    df = pd.DataFrame(
        {
            "relative_depth": relative_depth(selection.n_layers),
            "count": count,
            "fraction": fraction,
            "density": fraction * selection.n_layers,
            "cumulative": np.cumsum(fraction),
        },
        index=pd.RangeIndex(selection.n_layers, name="layer"),
    )
    return df


def region_layers(n_layers: int, bottom: float = 0.1, top: float = 0.25) -> dict[str, range]:
    """The layers of the bottom, middle and top regions of a network.

    ``bottom`` region = the first ``round(bottom·L)`` layers, ``top`` = the last
    ``round(top·L)`` layers (halves round up), ``middle`` = the rest. A region can be
    empty on a very shallow network (e.g. ``L = 4``: no bottom layer at 10%).

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
    n_bottom = _round_half_up(bottom * n_layers)
    n_top = min(_round_half_up(top * n_layers), n_layers - n_bottom)
    return {
        "bottom": range(0, n_bottom),
        "middle": range(n_bottom, n_layers - n_top),
        "top": range(n_layers - n_top, n_layers),
    }


def layer_region_shares(
    selection: NeuronSelection, bottom: float = 0.1, top: float = 0.25
) -> pd.DataFrame:
    """Share of each language's neurons in the bottom, middle and top layers.

    Regions as in :func:`region_layers` (defaults: bottom = first 10% of layers, top = last
    25%; for 32 layers, layers 0-2 and 24-31). The paper's claim (§5 of ``lape-method.md``):
    LLaMA-2's sets sit mostly in bottom + top, the other models' in the top quarter.

    Args:
        selection: The selection.
        bottom: Fraction of layers counted as bottom.
        top: Fraction of layers counted as top.

    Returns:
        DataFrame indexed by ``language`` (module order, then ``"all"`` = distinct neurons
        of any language): ``count`` and the shares ``bottom``, ``middle``, ``top`` (each row
        sums to 1; NaN for a language with no neurons).
    """
    regions = region_layers(selection.n_layers, bottom, top)
    counts = layer_distribution(selection, union=True)
    rows = {}
    for lang in counts.columns:
        col = counts[lang].to_numpy()
        total = int(col.sum())
        rows[lang] = {"count": total} | {
            name: (col[list(r)].sum() / total if total else math.nan)
            for name, r in regions.items()
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "language"
    return df.astype({"count": int, "bottom": float, "middle": float, "top": float})


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
    langs = _ordered(selection.languages)
    flats = {lang: selection.flat(lang) for lang in langs}
    k = len(langs)
    inter = np.zeros((k, k), dtype=np.int64)
    for i, a in enumerate(langs):
        for j in range(i, k):
            b = langs[j]
            n = int(torch.isin(flats[a], flats[b]).sum()) if i != j else flats[a].numel()
            inter[i, j] = inter[j, i] = n
    sizes = np.diag(inter)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    index = pd.Index(langs, name="language")
    columns = pd.Index(langs, name="language")
    return (
        pd.DataFrame(inter, index=index, columns=columns),
        pd.DataFrame(jac, index=index.copy(), columns=columns.copy()),
    )


# ============================================================================ published


def published_sets(
    names: Sequence[str] | None = None,
    directory: str | os.PathLike | None = None,
    *,
    download: bool = True,
) -> dict[str, NeuronSelection]:
    """Load the paper's published neuron sets.

    Where each file is found:

    * ``directory`` given: ``<directory>/<name>.neuron.pth`` (nothing else is tried);
    * else :func:`~lape_utils.selection.official_path`: ``$LAPE_OFFICIAL_DIR``, then the
      cache ``~/.cache/lape_utils/official``;
    * else, with ``download=True``, :func:`~lape_utils.selection.download_official` fetches
      it from the authors' repository into the cache (needs the internet).

    Args:
        names: Published set names (see :data:`~lape_utils.selection.OFFICIAL_MODELS`:
            ``"LLaMA-2-7B"``, ``"LLaMA-2-13B"``, ``"LLaMA-2-70B"``, ``"BLOOM-7B"``,
            ``"Mistral-7B"``, ``"OPT-6.7B"``, ``"Phi-2-2.7B"``); ``None`` for all seven.
        directory: A folder holding the files.
        download: Download missing files (ignored when ``directory`` is given).

    Returns:
        ``{name: NeuronSelection}`` in the order of ``names``.

    Raises:
        ValueError: An unknown name.
        FileNotFoundError: A file is in none of the places looked at (and ``download`` is
            off or ``directory`` was given).
        ConnectionError: A download failed.
    """
    names = list(OFFICIAL_MODELS) if names is None else list(names)
    unknown = [n for n in names if n not in OFFICIAL_MODELS]
    if unknown:
        raise ValueError(
            f"unknown published set(s) {unknown}; known: {', '.join(OFFICIAL_MODELS)}."
        )
    out: dict[str, NeuronSelection] = {}
    for name in names:
        info = OFFICIAL_MODELS[name]
        if directory is not None:
            path = Path(directory) / f"{name}.neuron.pth"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found; the folder should hold the published "
                    f"<name>.neuron.pth files (or pass directory=None to use the cache)."
                )
        elif download:
            path = download_official(name)
        else:
            path = official_path(name)
        out[name] = NeuronSelection.from_official(path, n_neurons=info.n_neurons)
        logger.debug("loaded published set %s from %s", name, path)
    return out


def compare_with_published(
    ours: NeuronSelection | None,
    published: Mapping[str, NeuronSelection],
    *,
    ours_name: str = "ours",
    bottom: float = 0.1,
    top: float = 0.25,
) -> pd.DataFrame:
    """One line per model: size of the selection and where in the network it sits.

    What the seven published files really show (defaults bottom 10%, top 25%; shares of the
    distinct selected neurons; checked in ``tests/test_analysis.py``)::

        model        layers  % selected  % per language  bottom  middle  top   peak layer
        LLaMA-2-7B     32       1.00      0.027-0.303     0.26    0.32   0.42      0
        LLaMA-2-13B    40       1.00      0.029-0.286     0.26    0.40   0.34      0
        LLaMA-2-70B    80       1.00      0.032-0.284     0.21    0.32   0.47      1
        BLOOM-7B       30       1.00      0.091-0.574     0.00    0.02   0.98     29
        Mistral-7B     32       1.00      0.017-0.339     0.03    0.21   0.75     28
        OPT-6.7B       32       1.00      0.066-0.300     0.03    0.25   0.73     29
        Phi-2-2.7B     32       1.00      0.016-0.341     0.01    0.14   0.86     29

    So: every set is exactly 1% of the FFN neurons. The LLaMA-2 sets have a real bottom
    cluster, nearly all of it in layers 0-1 (19-26% of each set; 7B: 768 neurons in layer
    0, its largest layer, and 125 in layer 1), on top of the top-layer mass.
    "Mostly bottom and top" holds for 7B and 70B (68% and 68% in bottom + top) but only
    narrowly for 13B (60%), where the middle region (0.40) holds more than the top quarter
    (0.34). BLOOM, Mistral, OPT and Phi-2 sit mostly in the top quarter (73-98%), BLOOM
    almost entirely. Details the paper's summary hides: OPT has a second, smaller bump in
    layers 5-10 (16% of its set); Mistral's mass peaks before the last layers (layers 27-29
    hold 54%, the last two only 6%). Per language the sets hold 0.016-0.574% of the
    neurons: wider than the paper's 0.02-0.34% (BLOOM's Indonesian set: 0.57%).

    Args:
        ours: Our selection (first line), or ``None`` for the published sets only.
        published: ``{model name: selection}``, e.g. from :func:`published_sets`.
        ours_name: Label of our line.
        bottom: Fraction of layers counted as bottom (see :func:`region_layers`).
        top: Fraction of layers counted as top.

    Returns:
        DataFrame indexed by ``model``: ``layers``, ``neurons_per_layer``,
        ``total_neurons`` (``L·D``), ``languages``, ``selected`` (distinct neurons in any
        language), ``pct_selected`` (percent of ``L·D``), ``pct_language_min`` /
        ``pct_language_max`` (percent of ``L·D`` of the smallest / largest language set),
        and the region shares ``bottom``, ``middle``, ``top`` of the distinct neurons.
    """
    sets: dict[str, NeuronSelection] = {}
    if ours is not None:
        sets[ours_name] = ours
    for name, sel in published.items():
        if name in sets:
            raise ValueError(f"model name {name!r} used twice; pass another ours_name.")
        sets[name] = sel
    rows = {}
    for name, sel in sets.items():
        total = sel.n_layers * sel.n_neurons
        per_lang = sel.counts().sum(axis=0)
        shares = layer_region_shares(sel, bottom, top).loc[ALL]
        selected = sel.total_distinct()
        rows[name] = {
            "layers": sel.n_layers,
            "neurons_per_layer": sel.n_neurons,
            "total_neurons": total,
            "languages": len(sel.languages),
            "selected": selected,
            "pct_selected": 100.0 * selected / total,
            "pct_language_min": 100.0 * per_lang.min() / total if len(per_lang) else math.nan,
            "pct_language_max": 100.0 * per_lang.max() / total if len(per_lang) else math.nan,
            "bottom": shares["bottom"],
            "middle": shares["middle"],
            "top": shares["top"],
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    return df


# ============================================================================ entropy


@dataclass
class EntropyTable:
    """Per-neuron LAPE entropy and activation probability, with the thresholds as numbers.

    Made by :func:`entropy_table`; drawn by :func:`lape_utils.plots.plot_entropy_distribution`.

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
        """Every ``P`` value pooled over layers, neurons and languages (the values the two
        quantiles are taken of): ``float [L·D·K]``."""
        return self.frame[[f"prob_{lang}" for lang in self.languages]].to_numpy().ravel()

    def passing(self) -> pd.DataFrame:
        """Rows of the neurons that pass the filter (the ones ranked by entropy)."""
        return self.frame[self.frame["passes_filter"]]


def entropy_table(stats: Any, config: LapeConfig = LapeConfig()) -> EntropyTable:
    """LAPE entropy and maximal activation probability of every neuron, with the thresholds.

    Runs :func:`~lape_utils.lape.identify` (so the thresholds and the selection are exactly
    those of identification) and adds the entropy of every neuron, including those the
    filter excludes.

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
    p = activation_probability(stats.over_zero, stats.n)
    n_layers, n_neurons, n_lang = p.shape
    rows = p.reshape(-1, n_lang)
    h = lape_entropy(rows)
    pmax, arg = rows.max(dim=1)
    tau, bar = float(info["filter_threshold"]), float(info["activation_bar"])
    passes = pmax > tau
    selected = torch.zeros(rows.shape[0], dtype=torch.bool)
    assigned = torch.zeros(rows.shape[0], dtype=torch.int64)
    if sel.selected is not None and sel.selected.numel():
        flat = sel.selected[:, 0] * n_neurons + sel.selected[:, 1]
        selected[flat] = True
        assigned[flat] = (rows[flat] > bar).sum(dim=1)
    layer = torch.arange(n_layers).repeat_interleave(n_neurons)
    neuron = torch.arange(n_neurons).repeat(n_layers)
    ordered = _ordered(languages)
    df = pd.DataFrame(
        {
            "layer": layer.numpy(),
            "neuron": neuron.numpy(),
            "entropy": (h.double() + 0.0).numpy(),
            "max_prob": pmax.double().numpy(),
            "top_language": pd.Categorical.from_codes(arg.numpy(), categories=languages),
            "passes_filter": passes.numpy(),
            "selected": selected.numpy(),
            "n_languages": assigned.numpy(),
        }
    )
    for lang in ordered:
        df[f"prob_{lang}"] = rows[:, languages.index(lang)].double().numpy()
    cutoff = float(h[selected].max()) if bool(selected.any()) else math.nan
    return EntropyTable(
        frame=df,
        languages=ordered,
        config=config,
        tau=tau,
        bar=bar,
        cutoff=cutoff,
        max_entropy=math.log(n_lang),
        n_candidates=int(info["n_candidates"]),
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
    if lang not in selection.languages:
        raise KeyError(f"language {lang!r} not in the selection; it has {selection.languages}.")
    languages = list(stats.languages)
    if (stats.over_zero.shape[0], stats.over_zero.shape[1]) != (
        selection.n_layers,
        selection.n_neurons,
    ):
        raise ValueError(
            f"statistics are {tuple(stats.over_zero.shape[:2])} (layers, neurons) but the "
            f"selection is ({selection.n_layers}, {selection.n_neurons}); use the statistics "
            "of the model the selection was made on."
        )
    if lang not in languages:
        raise KeyError(
            f"language {lang!r} not in the statistics; they hold {languages}."
        )
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0 or None, got {k}.")
    p = activation_probability(stats.over_zero, stats.n).reshape(-1, len(languages))
    flat = selection.flat(lang)
    probs = p[flat].double()
    h = lape_entropy(probs)
    layer = (flat // selection.n_neurons).numpy()
    neuron = (flat % selection.n_neurons).numpy()
    ordered = _ordered(languages)
    df = pd.DataFrame(probs.numpy(), columns=languages)[ordered]
    own = probs[:, languages.index(lang)].numpy()
    order = np.lexsort((np.arange(len(df)), -own, h.numpy()))
    if k is not None:
        order = order[:k]
    df = df.iloc[order]
    df.index = pd.MultiIndex.from_arrays([layer[order], neuron[order]], names=["layer", "neuron"])
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
        ``min_jaccard`` (Jaccard of each replicate's set with the reference),
        ``n_stable`` (neurons selected in at least ``stable_at`` of the replicates),
        ``n_ever`` (selected in at least one replicate) and ``stable_fraction``
        (``n_stable / count_reference``). ``n_stable``, ``n_ever`` and ``stable_fraction``
        are missing for ``"all"``.
    """
    summ = result.summary(stable_at=stable_at)
    ever = {lang: int((f > 0).sum()) for lang, f in result.frequency.items()}
    summ["n_ever"] = pd.Series(ever, dtype="Int64")
    summ["stable_fraction"] = summ["n_stable"].astype("Float64") / summ[
        "count_reference"
    ].replace(0, np.nan).astype("Float64")
    langs = [x for x in summ.index if x != ALL]
    order = _ordered(langs) + ([ALL] if ALL in summ.index else [])
    summ = summ.loc[order]
    summ.index.name = "language"
    return summ


def selection_frequencies(result: Any, *, min_frequency: float = 0.0) -> pd.DataFrame:
    """Selection frequency of every neuron selected in some replicate, tidy.

    Args:
        result: A :class:`~lape_utils.lape.StabilityResult`.
        min_frequency: Keep neurons whose frequency is strictly above this.

    Returns:
        DataFrame with columns ``language`` (module order), ``layer``, ``neuron``,
        ``frequency`` (fraction of replicates in which the neuron was assigned to the
        language).
    """
    frames = []
    for lang in _ordered(result.frequency):
        f = result.frequency[lang]
        idx = (f > min_frequency).nonzero()
        frames.append(
            pd.DataFrame(
                {
                    "language": lang,
                    "layer": idx[:, 0].numpy(),
                    "neuron": idx[:, 1].numpy(),
                    "frequency": f[idx[:, 0], idx[:, 1]].double().numpy(),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["language", "layer", "neuron", "frequency"])
    return pd.concat(frames, ignore_index=True)
