"""Exercises: each check passes its solution, rejects the unfilled stub, explains a wrong answer.

Hand-built selections and statistics throughout; the tiny random LLaMA only for the one
exercise that needs a model (``zero_in_trace``).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from scipy.stats import norm

from lape_utils import exercises as ex
from lape_utils import solutions
from lape_utils.config import LapeConfig
from lape_utils.intervene import Intervention
from lape_utils.languages import language_name
from lape_utils.lape import identify, kth_quantile
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats

REPO = Path(__file__).resolve().parents[1]
LANGS = ["en", "zh", "fr", "es", "ja"]


# --------------------------------------------------------------------------- data


def _overlap_selection(tie: bool = False) -> NeuronSelection:
    """2 layers x 12 neurons; fr–es share 5 neurons, zh–ja 3 (5 with ``tie``), en–fr 1."""
    zh1, ja1 = [5, 6, 7], [6, 7, 8]
    if tie:
        zh1, ja1 = zh1 + [9, 10], ja1 + [9, 10]
    layers = {
        "en": ([0], [11]),
        "zh": ([8, 9], zh1),
        "fr": ([0, 1, 2, 3, 4, 5], [0, 1]),
        "es": ([1, 2, 3, 4, 5], [2]),
        "ja": ([9], ja1),
    }
    indices = {lang: [torch.tensor(a), torch.tensor(b)] for lang, (a, b) in layers.items()}
    return NeuronSelection(LANGS, indices, 2, 12)


def _stats(seed: int = 1) -> ActivationStats:
    """4 layers x 30 neurons; a fifth specific to one of zh, fr, es, ja, the rest alike in all.

    The neurons active in English are thus active in every language: English gets the
    fewest neurons, as in real models.
    """
    gen = torch.Generator().manual_seed(seed)
    n = torch.tensor([900, 1100, 1000, 1200, 800])
    shared = torch.rand(4, 30, 1, generator=gen) ** 2 * 0.5
    p = shared * (0.8 + 0.4 * torch.rand(4, 30, 5, generator=gen))
    specific = torch.rand(4, 30, generator=gen) < 0.2
    who = torch.randint(1, 5, (4, 30), generator=gen)
    p[specific] = 0.02
    p[specific, who[specific]] = 0.4 + 0.4 * torch.rand(int(specific.sum()), generator=gen)
    return ActivationStats(LANGS, n, (p.clamp(max=1) * n).round().long())


CONFIG = LapeConfig(top_rate=0.1, filter_rate=0.7, activation_bar_ratio=0.7)
STATS = _stats()
SEL = identify(STATS.over_zero, STATS.n, LANGS, CONFIG)
LANG = max(LANGS, key=lambda lang: int(SEL.mask(lang).sum()))  # the language with most neurons
OVERLAP = _overlap_selection()


@pytest.fixture(scope="module")
def trace_data():
    from lape_utils import load_model

    model = load_model("tiny-llama")
    gen = torch.Generator().manual_seed(0)
    masks = {lang: torch.rand(model.n_layers, model.n_neurons, generator=gen) < 0.2
             for lang in ("en", "fr")}
    return model, NeuronSelection.from_masks(masks)


# the data each check takes after the student's answer
ARGS = {
    "toy_entropy": lambda: (),
    "pooled_threshold": lambda: (),
    "assign_languages": lambda: (),
    "overlap_prediction": lambda: (OVERLAP,),
    "specificity_table": lambda: (STATS, SEL),
    "most_specific_neuron": lambda: (STATS, SEL, LANG),
    "shared_zero": lambda: (OVERLAP, "zh", "ja"),
    "zero_in_trace": None,  # needs the tiny model: see _args
    "target_mass": lambda: (),
    "steered_activation": lambda: (),
    "wilson_interval": lambda: (),
}


def _args(name: str, request) -> tuple:
    if name == "zero_in_trace":
        model, sel = request.getfixturevalue("trace_data")
        return model, sel, "fr"
    return ARGS[name]()


def _answer(name: str):
    """The solution in the form the check takes (a function, or the predicted pair)."""
    if name == "overlap_prediction":
        return lambda: solutions.overlap_prediction(OVERLAP)
    return getattr(solutions, name)


# --------------------------------------------------------------------------- wrong answers


def _wrong_entropy_nan_on_never_active(p):
    t = torch.tensor(p, dtype=torch.float64)
    q = t / t.sum()  # 0/0 = NaN for [0, 0, 0]
    return float(-(q * torch.where(q > 0, q.log(), 0)).sum())


def _wrong_entropy_nan_on_zero(p):
    t = torch.tensor(p, dtype=torch.float64)
    q = t / t.sum()
    return float(-(q * q.log()).sum())  # 0 * -inf = NaN


def _kth(over_zero, n, rate, k_of=round):
    flat = (over_zero / n).flatten()
    return flat.kthvalue(k_of(flat.numel() * rate)).values.item()


def _nnsight_nll(model, ids, selection, lang, *, write_back=True, reduction="mean"):
    with torch.inference_mode(), model.nn.trace(ids) as tracer:
        for layer, idx in enumerate(selection.indices[lang]):
            if len(idx):
                if write_back:
                    model.site(layer).output[..., idx] = 0
                else:
                    act = model.site(layer).output.clone()
                    act[..., idx] = 0  # a copy: the model never sees it
        logits = tracer.result.logits.save()
    return torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction=reduction).item()


def _specificity_ge(stats, selection):
    df = solutions.specificity_table(stats, selection)
    p = stats.probability()
    bar = kth_quantile(p, selection.config["activation_bar_ratio"])
    df["active"] = [int((p[..., k] >= bar).sum()) for k in range(len(stats.languages))]
    df["share"] = df["selected"] / df["active"]
    return df


def _specificity_inverted(stats, selection):
    df = solutions.specificity_table(stats, selection)
    df["share"] = df["active"] / df["selected"]
    return df


def _specificity_among_selected(stats, selection):
    df = solutions.specificity_table(stats, selection)
    p = stats.probability()
    bar = kth_quantile(p, selection.config["activation_bar_ratio"])
    df["active"] = [int((p[..., k][selection.mask(lang)] > bar).sum())
                    for k, lang in enumerate(stats.languages)]
    df["share"] = df["selected"] / df["active"]
    return df


def _members(selection, lang):
    return [tuple(x) for x in selection.mask(lang).nonzero().tolist()]


def _highest_p(stats, selection, lang):
    p, k = stats.probability(), stats.languages.index(lang)
    return max(_members(selection, lang), key=lambda m: float(p[m][k]))


def _lowest_entropy_first_tie(stats, selection, lang):
    frame = selection.to_frame()
    top = frame[frame.language == lang].sort_values("entropy", kind="stable").iloc[0]
    return int(top.layer), int(top.neuron)


def _union(selection, a, b):
    both = selection.mask(a) | selection.mask(b)
    return Intervention({layer: row.nonzero().squeeze(1) for layer, row in enumerate(both)})


def _wilson_z(k, n, z):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _wald(k, n, confidence=0.95):
    z = norm.ppf(1 - (1 - confidence) / 2)
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def _inplace_steer(x, mean, mode, strength):
    x[:] = solutions.steered_activation(x.clone(), mean, mode, strength)
    return x


WRONG = {
    "toy_entropy": [
        (lambda p: -sum(x / sum(p) * math.log2(x / sum(p)) for x in p if x > 0), "log base 2"),
        (lambda p: -sum(x * math.log(x) for x in p if x > 0), "did not normalise P"),
        (_wrong_entropy_nan_on_zero, "0·log 0 must count as 0"),
        (_wrong_entropy_nan_on_never_active, "never active"),
        (lambda p: -sum(x / sum(p) * math.log(x / sum(p)) for x in p), "math.log(0)"),
    ],
    "pooled_threshold": [
        (lambda oz, n, rate: torch.quantile((oz / n).flatten(), rate), "interpolates"),
        (lambda oz, n, rate: torch.stack([kth_quantile(oz[..., k] / n[k], rate) * torch.ones(())
                                          for k in range(oz.shape[-1])]),
         "one threshold per language"),
        (lambda oz, n, rate: _kth(oz.float(), torch.ones(()), rate), "divide by n first"),
        (lambda oz, n, rate: _kth(oz, n, rate, int), "round(N · rate)"),
        (lambda oz, n, rate: (oz / n).flatten().sort().values[round(oz.numel() * rate)],
         "off by one"),
    ],
    "assign_languages": [
        (lambda p, bar: p >= bar, "not >= bar"),
        (lambda p, bar: torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).bool(),
         "EVERY language"),
        (lambda p, bar: (p > bar).T, "[n, lang]"),
    ],
    "overlap_prediction": [
        (("en", "zh"), "fr–es share the most: 5"),
        (lambda: ("zh", "ja"), "French and Spanish are both written in the Latin script"),
        (("fr", "xx"), "not in the selection"),
        (("fr", "fr"), "two different languages"),
        ("fr-es", "two language codes"),
    ],
    "specificity_table": [
        (_specificity_ge, "not P >= bar"),
        (_specificity_inverted, "share = selected / active"),
        (_specificity_among_selected, "not only the selected ones"),
        (lambda stats, sel: solutions.specificity_table(stats, sel).reset_index(names="language"),
         "set_index('language')"),
        (lambda stats, sel: solutions.specificity_table(stats, sel)[["active", "selected"]],
         "no column(s) ['share']"),
    ],
    "most_specific_neuron": [
        (_highest_p, "LOWEST entropy"),
        (_lowest_entropy_first_tie, "break the tie by the higher P"),
        (lambda stats, sel, lang: solutions.most_specific_neuron(stats, sel, lang)[::-1],
         "(neuron, layer)"),
        (lambda stats, sel, lang: 7, "not a flat index"),
    ],
    "shared_zero": [
        (_union, "you zeroed the union"),
        (lambda sel, a, b: Intervention.zero(sel, a), "all of zh's neurons"),
        (lambda sel, a, b: Intervention.scale(sel, a, 0.0), "op 'zero'"),
        (lambda sel, a, b: sel, "return an Intervention"),
    ],
    "zero_in_trace": [
        (lambda *a: _nnsight_nll(*a, write_back=False), "did not take effect"),
        (lambda *a: _nnsight_nll(*a, reduction="sum"), "summed the NLL"),
        (lambda *a: _nnsight_nll(*a) / math.log(2), "log base 2"),
        (lambda *a: math.exp(_nnsight_nll(*a)), "perplexity"),
    ],
    "target_mass": [
        (lambda logits, ids: logits[:, ids].sum(-1).mean(), "summed logits"),
        (lambda logits, ids: logits.softmax(-1)[:, ids].max(-1).values.mean(), "SUM over all"),
        (lambda logits, ids: logits.log_softmax(-1)[:, ids].sum(-1).mean(), "log-probabilities"),
        (lambda logits, ids: logits.softmax(-1)[:, ids].sum(-1), "one value per row"),
    ],
    "steered_activation": [
        (lambda x, m, mode, s: {"set": 0 * x + s * m, "add": x + s, "scale": x * s}[mode],
         "not strength itself"),
        (lambda x, m, mode, s: {"set": 0 * x + s * m, "add": x + s * m, "scale": 0 * x + s * m}[
            mode], "the mean is not used"),
        (lambda x, m, mode, s: s * m, "shaped like x"),
        (_inplace_steer, "in place"),
    ],
    "wilson_interval": [
        (_wald, "Wald"),
        (lambda k, n, c=0.95: _wilson_z(k, n, norm.ppf(c)), "one-sided"),
        (lambda k, n, c=0.95: _wilson_z(k, n, 1.96), "whatever the confidence"),
        (lambda k, n, c=0.95: solutions.wilson_interval(k, n, c)[::-1], "swapped"),
    ],
}


# --------------------------------------------------------------------------- every exercise


def test_every_exercise_has_wrong_answers_here():
    assert set(WRONG) == set(ex.EXERCISES) == set(ARGS)


@pytest.mark.parametrize("name", list(ex.EXERCISES))
def test_the_solution_passes(name, request):
    feedback = ex.EXERCISES[name].check(_answer(name), *_args(name, request))
    assert feedback.passed, feedback.message


@pytest.mark.parametrize("name", list(ex.EXERCISES))
def test_the_unfilled_stub_is_not_done_yet(name, request):
    def stub(*args):
        raise NotImplementedError

    stub.__name__ = name
    feedback = ex.EXERCISES[name].check(stub, *_args(name, request))
    assert not feedback.passed
    assert "not done yet" in feedback.message
    assert f"`{name}`" in feedback.message


@pytest.mark.parametrize(
    "name, wrong, expected",
    [(name, wrong, expected) for name, cases in WRONG.items() for wrong, expected in cases],
    ids=[f"{name}-{i}" for name, cases in WRONG.items() for i in range(len(cases))],
)
def test_a_wrong_answer_is_explained(name, wrong, expected, request):
    feedback = ex.EXERCISES[name].check(wrong, *_args(name, request))
    assert not feedback.passed
    assert expected.lower() in feedback.message.lower(), feedback.message


# --------------------------------------------------------------------------- specific checks


def test_a_tie_with_the_largest_overlap_passes_and_says_why():
    tied = _overlap_selection(tie=True)
    for pair in [("es", "fr"), ("ja", "zh")]:
        feedback = ex.check_overlap_prediction(pair, tied)
        assert feedback.passed, feedback.message
    assert "Han characters" in ex.check_overlap_prediction(("zh", "ja"), tied).message
    assert not ex.check_overlap_prediction(("en", "fr"), tied).passed


def test_specificity_states_what_the_numbers_show():
    feedback = ex.check_specificity_table(solutions.specificity_table, STATS, SEL)
    assert feedback.passed, feedback.message
    assert "English has 34 neurons active above the bar (rank 5 of 5) and 0 selected" in (
        feedback.message)
    assert "of the neurons active in English are active in all 5 languages" in feedback.message
    assert "fire whatever the language" in feedback.message
    # without English, the language with the fewest neurons is discussed
    stats = STATS.subset(["zh", "fr", "es"])
    sel = identify(stats.over_zero, stats.n, stats.languages, CONFIG)
    fewest = language_name(min(sel.languages, key=lambda lang: int(sel.mask(lang).sum())))
    feedback = ex.check_specificity_table(solutions.specificity_table, stats, sel)
    assert feedback.passed, feedback.message
    assert f"your table matches. {fewest} has" in feedback.message


def test_most_specific_neuron_refuses_a_language_without_neurons():
    empty = NeuronSelection.from_masks({lang: torch.zeros(4, 30, dtype=torch.bool)
                                        for lang in LANGS})
    feedback = ex.check_most_specific_neuron(solutions.most_specific_neuron, STATS, empty, "en")
    assert not feedback.passed
    assert "no neurons" in feedback.message


def test_an_exception_in_the_students_code_is_one_line_with_its_place():
    def toy_entropy(p):
        table = {}
        return table["missing"]

    feedback = ex.check_toy_entropy(toy_entropy)
    assert not feedback.passed
    assert "raised KeyError: 'missing' (line 3 of `toy_entropy`)" in feedback.message
    assert "\n" not in feedback.message


def test_a_missing_return_and_a_called_function_are_explained():
    assert "forget `return`" in ex.check_toy_entropy(lambda p: None).message
    assert "pass the function itself" in ex.check_toy_entropy(0.5).message


def test_a_missing_edit_left_on_the_model_is_reported(trace_data):
    model, sel = trace_data

    def leaves_hooks(model, ids, selection, lang):
        from lape_utils.intervene import hooked

        ctx = hooked(model, [Intervention.zero(selection, lang)])
        ctx.__enter__()  # never exited: the hooks stay on the model
        leaves_hooks.ctx = ctx
        return solutions.zero_in_trace(model, ids, selection, lang)

    try:
        feedback = ex.check_zero_in_trace(leaves_hooks, model, sel, "fr")
    finally:
        leaves_hooks.ctx.__exit__(None, None, None)
    assert not feedback.passed
    assert "left an edit on the model" in feedback.message


# --------------------------------------------------------------------------- machinery


def test_feedback_renders_as_a_coloured_box_and_as_text():
    good, bad = ex.Feedback(True, "fine"), ex.Feedback(False, "P < bar & more")
    assert repr(good) == "✓ fine" and repr(bad) == "✗ P < bar & more"
    assert "✓" in good._repr_html_() and "#1a7f37" in good._repr_html_()
    assert "✗" in bad._repr_html_() and "P &lt; bar &amp; more" in bad._repr_html_()


def test_every_exercise_is_described():
    assert len(ex.EXERCISES) >= 10
    for name, e in ex.EXERCISES.items():
        assert e.name == name
        assert e.notebook in {"01", "02", "03", "04"}
        assert e.title and len(e.objective) > 40
        assert isinstance(e.minutes, int) and 0 < e.minutes <= 60
        assert e.difficulty in (1, 2, 3)
        assert e.check.__doc__
    per_notebook = {nb: sum(e.notebook == nb for e in ex.EXERCISES.values())
                    for nb in ("01", "02", "03", "04")}
    assert min(per_notebook.values()) >= 2, per_notebook


@pytest.mark.parametrize("name", list(ex.EXERCISES))
def test_show_solution_returns_the_source(name):
    shown = ex.show_solution(name)
    assert shown.startswith(f"def {name}(")
    assert repr(shown) == str(shown)
    assert shown._repr_markdown_().startswith("```python\ndef ")
    assert shown._repr_markdown_().endswith("```")


def test_show_solution_of_an_unknown_exercise_names_them():
    with pytest.raises(KeyError, match="toy_entropy"):
        ex.show_solution("toy_entropi")


def test_overview_lists_every_exercise():
    table = ex.overview()
    assert list(table.index) == list(ex.EXERCISES)
    assert list(table.columns) == ["notebook", "title", "objective", "minutes", "difficulty"]
    assert set(ex.overview("03").index) == {"shared_zero", "zero_in_trace"}
    assert table.loc["zero_in_trace", "difficulty"] == "★★★"


def test_no_package_module_imports_the_exercises():
    for path in (REPO / "lape_utils").rglob("*.py"):
        if path.stem == "solutions" or "exercises" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or "", *(a.name for a in node.names)]
                     if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[-1] in ("exercises", "solutions") for n in names), path
