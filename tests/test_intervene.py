"""Interventions: the op on known answers, validation, nnsight == hand-written hooks, generation."""

from __future__ import annotations

import math

import pytest
import torch

from lape_utils.generation import GenerationConfig, generate
from lape_utils.intervene import (
    Intervention,
    InterventionError,
    apply_op,
    check_interventions,
    check_selection,
    forward_logits,
    hooked,
)
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats

FAMILIES = ["llama", "gpt2", "opt", "bloom", "gemma3"]
PROMPTS = ["Hello world, how are", "Bonjour", "你好"]


def _selection(n_layers=2, n_neurons=128, seed=0, langs=("en", "fr", "zh"), p=0.1):
    g = torch.Generator().manual_seed(seed)
    return NeuronSelection.from_masks(
        {lang: torch.rand(n_layers, n_neurons, generator=g) < p for lang in langs}
    )


def _stats(n_layers=2, n_neurons=128, seed=0, langs=("en", "fr", "zh")):
    g = torch.Generator().manual_seed(seed)
    k = len(langs)
    return ActivationStats(
        list(langs),
        torch.full((k,), 100),
        torch.randint(0, 100, (n_layers, n_neurons, k), generator=g),
        activation_sum=torch.randn(n_layers, n_neurons, k, generator=g, dtype=torch.float64) * 50,
    )


def _batch(model):
    enc = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _hand_hook(neurons: torch.Tensor, op: str, value, batch: int, last_only: bool = False):
    """A forward hook written out by hand, independent of apply_op."""

    def hook(_module, _inputs, output):
        out = output.clone()
        x = out.view(batch, -1, out.shape[-1]) if out.ndim == 2 else out
        pos = slice(-1, None) if last_only else slice(None)
        v = value.to(x.dtype) if torch.is_tensor(value) else value
        if op == "zero":
            x[:, pos, neurons] = 0
        elif op == "set":
            x[:, pos, neurons] = v
        elif op == "add":
            x[:, pos, neurons] += v
        elif op == "scale":
            x[:, pos, neurons] *= v
        return out

    return hook


# --------------------------------------------------------------------------- the op


def test_apply_op_known_answers():
    act = torch.arange(12, dtype=torch.float32).view(1, 3, 4)  # [batch, pos, neuron]
    idx = torch.tensor([1, 3])
    before = act.clone()
    assert apply_op(act, idx, "zero")[0, 0].tolist() == [0, 0, 2, 0]
    assert apply_op(act, idx, "set", 7.0)[0, 2].tolist() == [8, 7, 10, 7]
    assert apply_op(act, idx, "add", torch.tensor([1.0, -1.0]))[0, 1].tolist() == [4, 6, 6, 6]
    assert apply_op(act, idx, "scale", 2.0)[0, 1].tolist() == [4, 10, 6, 14]
    mask = torch.tensor([[False, False, True]])
    out = apply_op(act, idx, "zero", position_mask=mask)
    assert torch.equal(out[0, :2], act[0, :2])
    assert out[0, 2].tolist() == [8, 0, 10, 0]
    assert torch.equal(act, before), "apply_op must not modify its input"


def test_intervention_validation():
    n = {0: torch.tensor([3, 1, 3])}
    iv = Intervention(n, "zero")
    assert iv.neurons[0].tolist() == [1, 3]  # sorted, de-duplicated
    assert Intervention({0: torch.tensor([], dtype=torch.long)}, "zero").neurons == {}
    with pytest.raises(InterventionError, match="unknown op 'mute'"):
        Intervention(n, "mute")
    with pytest.raises(InterventionError, match="unknown positions 'middle'"):
        Intervention(n, "zero", positions="middle")
    with pytest.raises(InterventionError, match="must be finite"):
        Intervention(n, "set", float("nan"))
    with pytest.raises(InterventionError, match="must be finite"):
        Intervention(n, "add", math.inf)
    with pytest.raises(InterventionError, match="not finite for neuron 3"):
        Intervention(n, "set", {0: torch.tensor([1.0, math.inf])})
    with pytest.raises(InterventionError, match="2 neurons"):
        Intervention(n, "set", {0: torch.tensor([1.0, 2.0, 3.0])})
    with pytest.raises(InterventionError, match="no entry for layer 0"):
        Intervention(n, "set", {1: torch.tensor([1.0, 2.0])})
    with pytest.raises(InterventionError, match="integers"):
        Intervention({0: torch.tensor([1.5])}, "zero")
    with pytest.raises(InterventionError, match="negative"):
        Intervention({0: torch.tensor([-1])}, "zero")


def test_constructors_from_selection_and_stats():
    sel, stats = _selection(), _stats()
    z = Intervention.zero(sel, "fr")
    assert z.n_neurons == int(sel.flat("fr").numel()) and z.shape == (2, 128)
    s = Intervention.set_to(sel, "fr", stats, strength=2.0)
    mean = stats.mean_activation("fr")
    for layer, idx in s.neurons.items():
        assert torch.allclose(s.value[layer], 2.0 * mean[layer, idx])
    s2 = Intervention.set_to(sel, "fr", stats, source_lang="zh")
    layer = next(iter(s2.neurons))
    assert torch.allclose(s2.value[layer], stats.mean_activation("zh")[layer, s2.neurons[layer]])
    a = Intervention.add(sel, "zh", 0.5)
    assert a.op == "add" and a.value == 0.5
    a2 = Intervention.add(sel, "zh", 3.0, stats=stats)
    for li, idx in a2.neurons.items():
        assert torch.allclose(a2.value[li], 3.0 * stats.mean_activation("zh")[li, idx])
    sc = Intervention.scale(sel, "en", 0.0)
    assert sc.op == "scale" and sc.value == 0.0
    f = Intervention.from_selection(sel, "en", "add", 1.0, positions="generated")
    assert f.positions == "generated"


def test_constructor_errors():
    sel, stats = _selection(), _stats()
    with pytest.raises(InterventionError, match="'de' is not in the neuron set"):
        Intervention.zero(sel, "de")
    with pytest.raises(InterventionError, match="'ja' is not in the statistics"):
        Intervention.set_to(sel, "fr", stats, source_lang="ja")
    with pytest.raises(InterventionError, match="strength must be finite"):
        Intervention.set_to(sel, "fr", stats, strength=float("inf"))
    with pytest.raises(InterventionError, match="different models"):
        Intervention.set_to(sel, "fr", _stats(n_neurons=64))
    no_sums = ActivationStats(stats.languages, stats.n, stats.over_zero)
    with pytest.raises(InterventionError, match="no activation sums"):
        Intervention.set_to(sel, "fr", no_sums)
    with pytest.raises(InterventionError, match="scale factor must be finite"):
        Intervention.scale(sel, "fr", float("nan"))


def test_neuron_set_from_another_model_is_refused(tiny):
    model = tiny("llama")  # 2 layers x 128 neurons
    other = _selection(n_layers=18, n_neurons=2048)
    with pytest.raises(InterventionError, match=r"18 layers x 2048 neurons.*2 layers x 128"):
        check_interventions(model, [Intervention.zero(other, "fr")])
    with pytest.raises(InterventionError, match=r"18 layers x 2048 neurons.*2 layers x 128"):
        check_selection(model, other)
    with pytest.raises(InterventionError, match="layer 5"):
        check_interventions(model, [Intervention({5: torch.tensor([0])}, "zero")])
    with pytest.raises(InterventionError, match="neuron 300"):
        check_interventions(model, [Intervention({0: torch.tensor([300])}, "zero")])
    with pytest.raises(InterventionError, match="not an Intervention"):
        check_interventions(model, ["zero fr"])
    ids, mask = _batch(model)
    with pytest.raises(InterventionError, match="another model"):
        forward_logits(model, ids, mask, [Intervention.zero(other, "fr")])


# --------------------------------------------------------------------------- nnsight == hooks


def _ops(n_neurons: int):
    g = torch.Generator().manual_seed(3)
    per = torch.randn(3, generator=g)
    return [("zero", 0.0), ("set", 2.5), ("set", per), ("add", per), ("add", -1.0), ("scale", 3.0)]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_op_matches_a_hand_written_hook(tiny, family):
    model = tiny(family)
    ids, mask = _batch(model)
    layer = model.n_layers - 1
    neurons = torch.tensor([0, 7, model.n_neurons - 1])
    base = forward_logits(model, ids, mask)
    for op, value in _ops(model.n_neurons):
        for positions in ("all", "last_prompt"):
            v = {layer: value} if torch.is_tensor(value) else value
            iv = Intervention({layer: neurons}, op, v, positions)
            via_nnsight = forward_logits(model, ids, mask, [iv])
            via_hooks = forward_logits(model, ids, mask, [iv], backend="hooks")
            handle = model.hf_site(layer).register_forward_hook(
                _hand_hook(neurons, op, value, ids.shape[0], positions == "last_prompt")
            )
            try:
                inputs = {"input_ids": ids, "attention_mask": mask}
                if family != "bloom":
                    inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
                with torch.inference_mode():
                    by_hand = model.hf(**inputs).logits
            finally:
                handle.remove()
            assert torch.equal(via_nnsight, by_hand), (family, op, positions)
            assert torch.equal(via_hooks, by_hand), (family, op, positions)
            if op != "scale" or value != 1.0:
                assert not torch.equal(via_nnsight, base), f"{family} {op} changed nothing"
            if positions == "last_prompt":  # causal: earlier positions are untouched
                assert torch.equal(via_nnsight[:, :-1], base[:, :-1])


def test_prompt_scope_is_all_positions_and_generated_is_none_in_a_forward(tiny):
    model = tiny("llama")
    ids, mask = _batch(model)
    n = {0: torch.arange(40)}
    a = forward_logits(model, ids, mask, [Intervention(n, "set", 3.0, "all")])
    p = forward_logits(model, ids, mask, [Intervention(n, "set", 3.0, "prompt")])
    g = forward_logits(model, ids, mask, [Intervention(n, "set", 3.0, "generated")])
    assert torch.equal(a, p)
    assert torch.equal(g, forward_logits(model, ids, mask))


def test_composition_in_list_order(tiny):
    model = tiny("gemma3")
    ids, mask = _batch(model)
    n = {0: torch.tensor([1, 2, 3]), 1: torch.tensor([5])}
    set_then_scale = [Intervention(n, "set", 1.5), Intervention(n, "scale", 2.0)]
    scale_then_set = [Intervention(n, "scale", 2.0), Intervention(n, "set", 1.5)]
    a = forward_logits(model, ids, mask, set_then_scale)
    b = forward_logits(model, ids, mask, scale_then_set)
    assert torch.equal(a, forward_logits(model, ids, mask, [Intervention(n, "set", 3.0)]))
    assert torch.equal(b, forward_logits(model, ids, mask, [Intervention(n, "set", 1.5)]))
    assert not torch.equal(a, b)
    assert torch.equal(a, forward_logits(model, ids, mask, set_then_scale, backend="hooks"))
    # a later layer listed first is still applied in forward order
    mixed = [Intervention({1: torch.tensor([5])}, "zero"), Intervention({0: torch.tensor([1])}, "zero")]
    assert torch.equal(
        forward_logits(model, ids, mask, mixed),
        forward_logits(model, ids, mask, mixed, backend="hooks"),
    )


def test_hooked_context_applies_and_removes(tiny):
    model = tiny("llama")
    ids, mask = _batch(model)
    iv = Intervention({1: torch.arange(64)}, "zero")
    with hooked(model, [iv]) as state:
        with torch.inference_mode():
            inside = model.hf(input_ids=ids).logits
        assert state.step == 0
    with torch.inference_mode():
        after = model.hf(input_ids=ids).logits
    assert torch.equal(inside, forward_logits(model, ids, None, [iv]))
    assert torch.equal(after, forward_logits(model, ids, None))


# --------------------------------------------------------------------------- generation


def _ids(gen):
    return [t.tolist() for t in gen.new_ids]


@pytest.mark.parametrize("family", ["llama", "opt", "gemma3", "gpt2"])
@pytest.mark.parametrize("positions", ["all", "generated", "prompt", "last_prompt"])
def test_greedy_generation_nnsight_equals_hooks(tiny, family, positions):
    model = tiny(family)
    ivs = [
        Intervention({0: torch.arange(0, 64)}, "set", 4.0, positions),
        Intervention({model.n_layers - 1: torch.arange(10, 50)}, "scale", -3.0, positions),
    ]
    cfg = GenerationConfig(max_new_tokens=6, batch_size=2)
    a = generate(model, PROMPTS, ivs, cfg)
    b = generate(model, PROMPTS, ivs, cfg, backend="hooks")
    assert _ids(a) == _ids(b)
    assert a.texts == b.texts


def test_sampled_generation_nnsight_equals_hooks(tiny):
    model = tiny("llama")
    ivs = [Intervention({1: torch.arange(0, 30)}, "add", 2.0)]
    cfg = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.3, top_p=0.95, seed=7)
    a = generate(model, PROMPTS, ivs, cfg)
    b = generate(model, PROMPTS, ivs, cfg, backend="hooks")
    assert _ids(a) == _ids(b)


def test_generated_scope_changes_tokens_after_the_first(tiny):
    """Every generated step is edited: the first token (predicted at the prompt step) is
    untouched by positions='generated', later tokens change; 'all' edits the first step."""
    model = tiny("llama")
    cfg = GenerationConfig(max_new_tokens=8, batch_size=3)
    base = generate(model, PROMPTS, [], cfg)
    n = {0: torch.arange(0, 128), 1: torch.arange(0, 128)}
    gen_only = generate(model, PROMPTS, [Intervention(n, "set", 5.0, "generated")], cfg)
    for b, s in zip(base.new_ids, gen_only.new_ids):
        assert b[0] == s[0]
    assert any(b[1:].tolist() != s[1:].tolist() for b, s in zip(base.new_ids, gen_only.new_ids))
    # count edited steps: a generation of N tokens runs N forwards, all edited
    calls = []
    probe = model.hf_site(0).register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
    try:
        generate(model, PROMPTS[:1], [Intervention(n, "set", 5.0, "generated")],
                 GenerationConfig(max_new_tokens=5))
    finally:
        probe.remove()
    assert len(calls) == 5 and calls[1:] == [1, 1, 1, 1]
    # with 'all' the first step is edited too
    first = generate(model, PROMPTS, [Intervention(n, "set", 5.0, "all")], cfg,
                     first_step_probs=True)
    assert not torch.equal(first.first_step_probs,
                           generate(model, PROMPTS, [], cfg,
                                    first_step_probs=True).first_step_probs)


def test_generate_api(tiny):
    model = tiny("gemma3")
    texts = generate(model, PROMPTS, [], GenerationConfig(max_new_tokens=4)).texts
    assert isinstance(texts, list) and len(texts) == 3 and all(isinstance(t, str) for t in texts)
    ivs = [Intervention({0: torch.arange(20)}, "zero")]
    out = generate(model, PROMPTS, ivs,
                   GenerationConfig(max_new_tokens=4, batch_size=2, repetition_penalty=1.1),
                   first_step_probs=True)
    probs = out.first_step_probs
    assert probs.shape == (3, model.hf.config.vocab_size)
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-4)
    ids, mask = _batch(model)
    last = forward_logits(model, ids, mask, ivs)[:, -1].float().softmax(-1)
    assert torch.allclose(probs, last, atol=1e-5)
    det = generate(model, PROMPTS, [], GenerationConfig(max_new_tokens=4))
    assert all(len(p) > 0 for p in det.prompt_ids)
    assert all(0 < len(n) <= 4 for n in det.new_ids)


def test_generate_refuses_bad_input_before_generating(tiny):
    model = tiny("llama")
    with pytest.raises(InterventionError, match="no prompts"):
        generate(model, [])
    with pytest.raises(InterventionError, match=r"prompts\[1\] is empty"):
        generate(model, ["fine", "  "])
    with pytest.raises(InterventionError, match="single str"):
        generate(model, "a prompt")
    with pytest.raises(InterventionError, match="another model"):
        generate(model, ["x"], [Intervention.zero(_selection(n_layers=3), "fr")])
    with pytest.raises(InterventionError, match="unknown backend"):
        generate(model, ["x"], backend="vllm")


def test_apply_in_trace_for_hand_written_traces(tiny):
    from lape_utils.intervene import apply_in_trace

    model = tiny("opt")
    ids, mask = _batch(model)
    ivs = [Intervention({1: torch.arange(30)}, "set", 2.0)]
    with torch.inference_mode():
        with model.nn.trace({"input_ids": ids}) as tracer:
            apply_in_trace(model, ivs, batch_size=ids.shape[0])
            logits = tracer.result.logits.save()
    assert torch.equal(logits, forward_logits(model, ids, None, ivs, backend="hooks"))
