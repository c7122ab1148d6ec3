"""Exercises of notebook 02 distribution: overlaps, why English gets few neurons, one neuron."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from lape_utils.analysis import overlap, probability_profiles
from lape_utils.config import LapeConfig
from lape_utils.lape import activation_probability, identify, kth_quantile, lape_entropy
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats

from ._common import (
    Feedback,
    _call,
    _exercise,
    _fail,
    _fmt,
    _join,
    _lang,
    _ok,
    _short,
)

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
