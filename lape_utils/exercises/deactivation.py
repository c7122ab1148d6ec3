"""Exercises of notebook 03 deactivation: shared neurons, zeroing by hand in a trace."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from lape_utils.evaluate import nll
from lape_utils.intervene import Intervention, InterventionError, forward_logits
from lape_utils.selection import NeuronSelection

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
)


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
