"""Capture: nnsight equals hooks, padding is never counted, resume is bit-identical."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lape_utils.capture import (
    bootstrap_weights,
    capture,
    count_batch,
    reduce_site,
    top_activating_contexts,
)
from lape_utils.corpus import load_corpus
from lape_utils.packing import pack
from lape_utils.stats import ActivationStats, ProvenanceMismatchError
from lape_utils.tiny import TINY_FAMILIES

LANGS = ["en", "fr", "zh"]


@pytest.fixture
def packed(tiny):
    model = tiny("llama")
    corpus = load_corpus("builtin", LANGS, split="heldout")
    return pack(corpus, model.tokenizer, seq_len=64, tokens_per_language=63 * 6)


def _same(a: ActivationStats, b: ActivationStats) -> None:
    assert a.languages == b.languages
    assert torch.equal(a.n, b.n)
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.activation_sum, b.activation_sum)
    assert (a.boot_n is None) == (b.boot_n is None)
    if a.boot_n is not None:
        assert torch.equal(a.boot_n, b.boot_n)
        assert torch.equal(a.boot_over_zero, b.boot_over_zero)
    for name in ("budget_n", "budget_over_zero"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_reduce_site_known_answer():
    act = torch.tensor(
        [[[1.0, -1.0, 0.0], [2.0, 0.5, -3.0]], [[-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]]]
    )  # [batch=2, pos=2, neuron=3]
    mask = torch.tensor([[True, True], [False, True]])  # second sequence: first position padded
    w = torch.tensor([[1, 2], [0, 3]])  # [rep=2, batch=2]
    over_zero, act_sum, boot = reduce_site(act, mask, w)
    # counted positions: (0,0) [1,-1,0], (0,1) [2,.5,-3], (1,1) [0,0,4]
    assert over_zero.tolist() == [2, 1, 1]
    assert act_sum.tolist() == [3.0, -0.5, 1.0]
    # per sequence active counts: seq0 [2,1,0], seq1 [0,0,1]
    assert boot.tolist() == [[2, 1, 2], [0, 0, 3]]
    # a flattened [batch*pos, neuron] output (OPT) gives the same
    flat = reduce_site(act.reshape(4, 3), mask, w)
    assert all(torch.equal(x, y) for x, y in zip(flat, (over_zero, act_sum, boot)))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_nnsight_and_hooks_count_the_same_on_every_family(tiny, family):
    model = tiny(family)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 250, (3, 24), generator=g)
    w = bootstrap_weights(0, "xx", [0, 1, 2], 5)
    a = count_batch(model, ids, weights=w)
    b = count_batch(model, ids, weights=w, backend="hooks")
    assert a.n == b.n == 72
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.allclose(a.activation_sum, b.activation_sum, rtol=0, atol=1e-9)
    assert torch.equal(a.boot_over_zero, b.boot_over_zero)
    assert a.over_zero.shape == (2, 128)
    assert 0 < int(a.over_zero.sum()) < 72 * 256


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "bloom", "gemma3", "phi3"])
@pytest.mark.parametrize("backend", ["nnsight", "hooks"])
def test_left_padding_counts_equal_unpadded_runs(tiny, family, backend):
    model = tiny(family)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(4, 250, (n,), generator=g) for n in (20, 13, 7)]
    expected = [count_batch(model, s[None], backend=backend) for s in seqs]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    padded = count_batch(model, ids, mask, backend=backend)
    assert padded.n == sum(e.n for e in expected) == 40
    assert torch.equal(padded.over_zero, sum(e.over_zero for e in expected))
    assert torch.allclose(
        padded.activation_sum, sum(e.activation_sum for e in expected), atol=1e-4
    )


def test_remote_serialisation_dry_run_gives_the_same_counts(tiny):
    """``remote="local"`` sends the trace through nnsight's remote serialisation locally."""
    model = tiny("llama")
    ids = torch.randint(4, 250, (2, 16), generator=torch.Generator().manual_seed(3))
    w = bootstrap_weights(0, "en", [0, 1], 3)
    a = count_batch(model, ids, weights=w)
    b = count_batch(model, ids, weights=w, remote="local")
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.boot_over_zero, b.boot_over_zero)


def test_bootstrap_weights_depend_only_on_the_chunk():
    a = bootstrap_weights(7, "fr", [0, 1, 2, 3], 16)
    b = torch.cat([bootstrap_weights(7, "fr", [0, 1], 16), bootstrap_weights(7, "fr", [2, 3], 16)], 1)
    assert torch.equal(a, b)
    assert a.shape == (16, 4) and a.dtype == torch.int64 and (a >= 0).all()
    assert not torch.equal(a, bootstrap_weights(7, "en", [0, 1, 2, 3], 16))
    big = bootstrap_weights(0, "en", list(range(400)), 16).double()
    assert abs(big.mean().item() - 1.0) < 0.05  # Poisson(1)


def test_capture_counts_every_position_but_the_bos(tiny, packed):
    model = tiny("llama")
    stats = capture(model, packed, batch_size=4, replicates=0, progress=False)
    assert stats.languages == LANGS
    assert stats.n.tolist() == [6 * 63] * 3
    assert stats.boot_n is None
    assert (stats.over_zero <= stats.n).all()
    # hooks backend: identical statistics
    hooks = capture(model, packed, batch_size=4, replicates=0, backend="hooks", progress=False)
    assert torch.equal(stats.over_zero, hooks.over_zero)


def test_bootstrap_replicates_are_weighted_recounts(tiny, packed):
    model = tiny("llama")
    stats = capture(model, packed, batch_size=3, replicates=8, seed=5, progress=False)
    assert stats.boot_over_zero.shape == (8, 2, 128, 3)
    # replicate weights are per chunk, so n of a replicate is 63 x the sum of the weights
    for j, lang in enumerate(LANGS):
        w = bootstrap_weights(5, lang, list(range(6)), 8)
        assert stats.boot_n[:, j].tolist() == (w.sum(1) * 63).tolist()
    # and the same capture with another batch size gives identical replicates
    again = capture(model, packed, batch_size=2, replicates=8, seed=5, progress=False)
    assert torch.equal(stats.boot_over_zero, again.boot_over_zero)


def test_budget_snapshots_are_the_counts_of_the_first_chunks(tiny, packed):
    model = tiny("llama")
    stats = capture(model, packed, batch_size=4, replicates=2, progress=False)
    # 6 chunks per language: the first 1, 1, 2 and 3 chunks (1/16, 1/8, 1/4, 1/2)
    assert stats.provenance["budget_chunks"] == {lang: [1, 1, 2, 3] for lang in LANGS}
    assert stats.budget_over_zero.shape == (4, 2, 128, 3)
    mask = torch.ones(6, 64, dtype=torch.bool)
    mask[:, 0] = False
    for s, c in enumerate([1, 1, 2, 3]):
        assert stats.budget_n[s].tolist() == [63 * c] * 3
        for j, lang in enumerate(LANGS):
            want = count_batch(model, packed.chunks[lang][:c], None, mask[:c])
            assert torch.equal(stats.budget_over_zero[s, ..., j], want.over_zero)
    sub = stats.at_budget(3)
    assert sub.n.tolist() == [189] * 3 and sub.provenance["budget"]["fraction"] == 0.5
    # the snapshots do not depend on the batch size (they follow the chunk index)
    again = capture(model, packed, batch_size=5, replicates=2, progress=False)
    assert torch.equal(stats.budget_over_zero, again.budget_over_zero)
    with pytest.raises(ValueError, match="snapshot 4"):
        stats.at_budget(4)


def test_interrupted_capture_resumes_bit_identical(tiny, packed, tmp_path):
    model = tiny("gpt2")
    full = capture(model, packed, tmp_path / "full", batch_size=2, replicates=4,
                   checkpoint_every=1, progress=False)

    class Interrupt(Exception):
        pass

    def stop_in_the_middle_of_fr(lang, next_chunk):
        if lang == "fr" and next_chunk == 4:
            raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        capture(model, packed, out, batch_size=2, replicates=4, checkpoint_every=1,
                progress=False, on_batch=stop_in_the_middle_of_fr)
    assert (out / "checkpoint.pt").exists() and not (out / "stats.pt").exists()
    seen = []
    resumed = capture(model, packed, out, batch_size=2, replicates=4, checkpoint_every=1,
                      progress=False, on_batch=lambda lang, c: seen.append((lang, c)))
    # only the rest was computed: fr from chunk 4 on, then zh
    assert seen == [("fr", 6), ("zh", 2), ("zh", 4), ("zh", 6)]
    _same(full, resumed)
    assert not (out / "checkpoint.pt").exists()
    _same(full, ActivationStats.load(out))


def test_cached_statistics_are_reused_and_a_mismatch_is_refused(tiny, packed, tmp_path):
    model = tiny("llama")
    first = capture(model, packed, tmp_path, batch_size=4, replicates=2, progress=False)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    for key in ("model", "model_fingerprint", "dtype", "tokenizer", "corpus_source",
                "corpus_fingerprint", "tokens_per_language", "seq_len", "packages", "date"):
        assert key in prov, key
    calls = []
    again = capture(model, packed, tmp_path, batch_size=4, replicates=2, progress=False,
                    on_batch=lambda *a: calls.append(a))
    assert calls == []  # nothing recomputed
    _same(first, again)
    other = tiny("gpt2")
    with pytest.raises(ProvenanceMismatchError, match="model"):
        capture(other, packed, tmp_path, batch_size=4, replicates=2, progress=False)
    with pytest.raises(ProvenanceMismatchError, match="corpus_fingerprint"):
        ActivationStats.load(tmp_path, expect={"corpus_fingerprint": "something else"})


def test_bad_input_fails_before_any_work(tiny, packed, tmp_path):
    model = tiny("llama")
    with pytest.raises(ValueError, match="batch_size"):
        capture(model, packed, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="replicates"):
        capture(model, packed, replicates=-1, progress=False)
    with pytest.raises(ValueError, match="backend"):
        capture(model, packed, backend="vllm", progress=False)
    corpus = load_corpus("builtin", ["en"], split="heldout")
    tok = copy.deepcopy(model.tokenizer)
    tok.model_max_length = 10**5  # the tokenizer allows it, the model (512 positions) does not
    long = pack(corpus, tok, seq_len=1024, take_all=True)
    with pytest.raises(ValueError, match="context"):
        capture(model, long, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write"):
        capture(model, packed, blocker / "out", progress=False)


def test_reference_count_files_round_trip(tiny, packed, tmp_path):
    stats = capture(tiny("llama"), packed, replicates=0, progress=False)
    paths = stats.export_reference(tmp_path, "tiny")
    assert [p.name for p in paths] == [f"activation.{lang}.train.tiny" for lang in LANGS]
    raw = torch.load(paths[0], weights_only=True)
    assert set(raw) == {"n", "over_zero"} and raw["over_zero"].dtype == torch.int32
    back = ActivationStats.from_reference(tmp_path, languages=LANGS)
    assert torch.equal(back.n, stats.n) and torch.equal(back.over_zero, stats.over_zero)
    with pytest.raises(ValueError, match="no count file"):
        ActivationStats.from_reference(tmp_path, languages=["en", "ja"])


def test_top_activating_contexts_are_the_largest_activations(tiny, packed):
    model = tiny("llama")
    df = top_activating_contexts(model, packed, layer=1, neuron=7, k=3, max_chunks=3)
    assert list(df.language.unique()) == LANGS
    assert (df.groupby("language").size() == 3).all()
    # recompute the neuron's activations with a plain hook and compare the best value
    seen = []
    handle = model.hf_site(1).register_forward_hook(lambda m, i, o: seen.append(o[..., 7]))
    with torch.inference_mode():
        model.hf(input_ids=packed.chunks["fr"][:3])
    handle.remove()
    act = seen[0].clone()
    act[:, 0] = float("-inf")  # the BOS position is never reported
    fr = df[df.language == "fr"]
    assert fr.activation.iloc[0] == pytest.approx(float(act.max()), abs=1e-5)
    assert fr.activation.is_monotonic_decreasing
    assert (df.position > 0).all()
    with pytest.raises(ValueError, match="outside"):
        top_activating_contexts(model, packed, layer=5, neuron=0)


def test_a_model_dispatched_by_accelerate_captures_the_same(packed):
    """A sharded model carries accelerate's device-alignment hooks on every module (what
    ``device_map="auto"`` installs over several GPUs); capture must not notice them."""
    from accelerate import dispatch_model

    from lape_utils import load_model

    plain = load_model("tiny-llama", seed=4)
    sharded = load_model("tiny-llama", seed=4)
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    dispatch_model(sharded.hf, device_map=device_map, main_device="cpu", force_hooks=True)
    assert hasattr(sharded.hf.model.layers[1], "_hf_hook")
    a = capture(plain, packed, replicates=2, progress=False)
    b = capture(sharded, packed, replicates=2, progress=False)
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.boot_over_zero, b.boot_over_zero)


@pytest.mark.gpu
def test_capture_on_a_gpu_agrees_with_the_cpu(packed):
    """Same model on CUDA: counts agree up to sign flips of near-zero activations."""
    from lape_utils import load_model

    cpu = load_model("tiny-llama", seed=5)
    gpu = load_model("tiny-llama", seed=5)
    gpu.hf.to("cuda")
    a = capture(cpu, packed, replicates=0, progress=False)
    b = capture(gpu, packed, replicates=0, progress=False)
    assert torch.equal(a.n, b.n)
    assert (a.over_zero - b.over_zero).abs().sum() <= 1e-3 * a.over_zero.sum()
    assert torch.allclose(a.activation_sum, b.activation_sum, rtol=1e-3, atol=1e-2)
