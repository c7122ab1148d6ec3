"""Remote perplexity and steering: the dry run equals a local run, the request is small and
what comes back is per-sequence NLL sums, never logits; no key, nothing sent.

Nothing here reaches NDIF: traces are dry-run (``remote="local"``), measured
(:func:`~lape_utils.models.measure_remote_request`) or replayed on a stand-in server process
that cannot import ``lape_utils`` (``test_remote._serve``).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_remote import _serve, llama7b_dir, ndif_key, no_network  # noqa: F401 (fixtures)

from lape_utils import load_model
from lape_utils.corpus import load_corpus
from lape_utils.evaluate import _chunk_nll, nll, perplexity_matrix, score_continuations
from lape_utils.generation import GenerationConfig, generate
from lape_utils.intervene import Intervention, InterventionError, forward_logits
from lape_utils.packing import pack
from lape_utils.remote import MissingNDIFKeyError, measure_remote_request
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats
from lape_utils.steering import SteerSpec, steer

LANGS = ["en", "fr", "zh"]


def _selection(n_layers=2, n_neurons=128, p=0.1):
    g = torch.Generator().manual_seed(0)
    return NeuronSelection.from_masks(
        {lang: torch.rand(n_layers, n_neurons, generator=g) < p for lang in LANGS}
    )


def _stats(n_layers=2, n_neurons=128):
    g = torch.Generator().manual_seed(0)
    return ActivationStats(
        LANGS, torch.full((3,), 1000), torch.randint(0, 1000, (n_layers, n_neurons, 3), generator=g),
        activation_sum=torch.rand(n_layers, n_neurons, 3, generator=g, dtype=torch.float64) * 3000,
    )


@pytest.fixture(scope="module")
def dry():
    """tiny-llama marked for nnsight's dry run: its traces are serialised as for NDIF."""
    return load_model("tiny-llama", remote="local")


def test_matrix_and_steering_in_the_dry_run_equal_a_local_run(tiny, dry):
    plain = tiny("llama")
    sel = _selection()
    heldout = pack(load_corpus("builtin", LANGS, split="heldout"), plain.tokenizer, seq_len=32,
                   tokens_per_language=31 * 2)
    a = perplexity_matrix(plain, sel, heldout, batch_size=2, progress=False)
    b = perplexity_matrix(dry, sel, heldout, batch_size=2, progress=False)
    pd.testing.assert_frame_equal(a.chunks, b.chunks, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(a.records, b.records, check_exact=False, rtol=1e-9)
    assert b.meta["model"]["remote"] == "local"

    spec = SteerSpec("zh", source="en", zero_source=True, mode="add", strength=3.0)
    gen = GenerationConfig(max_new_tokens=5, batch_size=2)
    prompts = ["What is a cat?", "How do bees make honey?"]
    ra = steer(plain, sel, _stats(), prompts, spec, generation=gen)
    rb = steer(dry, sel, _stats(), prompts, spec, generation=gen)
    pd.testing.assert_frame_equal(ra.rows, rb.rows, check_exact=False, rtol=1e-6)
    assert (rb.rows["steered_tokens"] > 0).all()


def test_the_dry_run_goes_through_nnsight_even_without_intervention(tiny, dry):
    """A remote setting always opens an nnsight trace with ``remote=`` (a meta model could not
    run the transformers model here); the hooks backend is refused with it."""
    ids = torch.randint(4, 250, (2, 9), generator=torch.Generator().manual_seed(1))
    want = forward_logits(tiny("llama"), ids)
    backend = dry.nn._remote_backend
    calls = []

    def spy(remote, *args, **kwargs):
        calls.append(remote)
        return backend(remote, *args, **kwargs)

    object.__setattr__(dry.nn, "_remote_backend", spy)
    try:
        assert torch.equal(forward_logits(dry, ids), want)
        out = generate(dry, ["abc", "de"], [], GenerationConfig(max_new_tokens=3),
                       first_step_probs=True)
    finally:
        dry.nn.__dict__.pop("_remote_backend", None)
    assert calls == ["local"] * 3  # the forward, then the generation and its first step
    assert all(len(n) > 0 for n in out.new_ids)
    with pytest.raises(InterventionError, match="backend='hooks'.*remote='local'"):
        forward_logits(dry, ids, backend="hooks")
    with pytest.raises(InterventionError, match="backend='hooks'"):
        generate(dry, ["abc"], backend="hooks")


def test_the_scoring_request_runs_on_a_server_without_lape_utils(tmp_path, tiny, dry):
    """The reduction travels by value: a server that cannot import lape_utils returns the
    per-chunk sums of a local run (with an intervention in the request)."""
    plain = tiny("llama")
    model_dir = tmp_path / "model"
    plain.hf.save_pretrained(model_dir)
    plain.tokenizer.save_pretrained(model_dir)
    ids = torch.randint(4, 250, (3, 20), generator=torch.Generator().manual_seed(2))
    ivs = [Intervention({1: torch.arange(40)}, "set", 2.0)]
    want = _chunk_nll(plain, ids, ivs, batch_size=3)
    req = measure_remote_request(dry, lambda m: nll(m, ids, ivs, batch_size=3, progress=False))
    assert req.saved == {"out": [((3,), "float64"), ((3,), "int64")]}
    served = _serve(tmp_path, model_dir, req.payload)
    assert served.returncode == 0, served.stderr[-3000:]
    sums, counts = torch.load(tmp_path / "result.pt", weights_only=False)["out"]
    assert torch.allclose(sums, want[0], rtol=1e-6, atol=0)
    assert torch.equal(counts, want[1])


def test_scoring_requests_of_a_7b_model_are_small_and_bring_back_batch_vectors(
    llama7b_dir, ndif_key, no_network  # noqa: F811
):
    """What the matrix and steering's output perplexity send to NDIF for a LLaMA-2-7B-shaped
    model, per forward: a small request, and [batch] sums back instead of
    [batch, pos, vocab] logits."""
    model = load_model(str(llama7b_dir), remote=True, dtype="bf16")
    b, s, vocab = 4, 2048, 32000
    g = torch.Generator().manual_seed(0)
    chunks = torch.randint(4, vocab, (b, s), generator=g)
    chunks[:, 0] = 1
    sel = _selection(32, 11008, p=0.01)
    rows = {
        "matrix, none row": [],
        "matrix, one LAPE row": [Intervention.zero(sel, "fr")],
    }
    sizes = {}
    for name, ivs in rows.items():
        req = measure_remote_request(
            model, lambda m, ivs=ivs: _chunk_nll(m, chunks, ivs, batch_size=b)
        )
        assert req.saved == {"out": [((b,), "float64"), ((b,), "int64")]}, req.saved
        assert req.request_bytes < 1_000_000 and req.response_bytes < 4096, req
        sizes[name] = req
    n = 8  # steering: 8 prompts of ~20 tokens and 64-token answers
    prompts = [torch.randint(4, vocab, (20,), generator=g) for _ in range(n)]
    answers = [torch.randint(4, vocab, (64,), generator=g) for _ in range(n)]
    req = measure_remote_request(model, lambda m: score_continuations(m, prompts, answers))
    assert req.saved == {"out": [((n,), "float64"), ((n,), "int64")]}, req.saved
    assert req.request_bytes < 1_000_000 and req.response_bytes < 4096, req
    sizes["steering output ppl (8 answers)"] = req
    logits = b * s * vocab * 2  # what saving the bf16 logits of one matrix batch would return
    print(f"\nLLaMA-2-7B shape, scoring traces (a matrix batch is {b} x {s} tokens):")
    for name, req in sizes.items():
        print(f"  {name}: request {req.request_bytes / 1e3:.0f} kB "
              f"({req.request_bytes_zstd / 1e3:.0f} kB zstd), response {req.response_bytes} B "
              f"{req.saved['out']}")
    print(f"  (the logits of one matrix batch would be {logits / 1e6:.0f} MB)")


def test_remote_scoring_and_steering_without_a_key_send_nothing(
    llama7b_dir, ndif_key, monkeypatch, no_network  # noqa: F811
):
    from nnsight import CONFIG

    model = load_model(str(llama7b_dir), remote=True)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY")
    chunks = torch.randint(4, 250, (2, 16))
    sel = _selection(32, 11008, p=0.001)
    heldout = pack(load_corpus("builtin", ["en"], split="heldout"), model.tokenizer, seq_len=16,
                   tokens_per_language=15 * 2)
    with pytest.raises(MissingNDIFKeyError, match="NDIF_API_KEY"):
        nll(model, chunks, progress=False)
    with pytest.raises(MissingNDIFKeyError):
        perplexity_matrix(model, sel, heldout, progress=False)
    with pytest.raises(MissingNDIFKeyError):
        steer(model, sel, None, ["What is a cat?"], SteerSpec("fr", mode="scale", strength=2))
