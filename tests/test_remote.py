"""Remote execution without local weights: meta loading, the NDIF key, the request's size.

Nothing here reaches NDIF or the hub: ``remote=True`` models are built from a local
directory of config and tokenizer files, their traces are serialised and measured
(:func:`~lape_utils.models.measure_remote_request`) or replayed against a stand-in server
process that cannot import ``lape_utils``, never sent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lape_utils import load_model
from lape_utils.capture import bootstrap_weights, capture, count_batch
from lape_utils.corpus import load_corpus
from lape_utils.packing import pack
from lape_utils.remote import (
    MissingNDIFKeyError,
    ModelLoadError,
    RemoteModelError,
    measure_remote_request,
)
from lape_utils.tiny import TINY_FAMILIES, build_tiny, byte_tokenizer

REPO = Path(__file__).resolve().parents[1]

LLAMA_7B = {
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096,
}


def _config_dir(path: Path, config) -> Path:
    """A model directory holding only a config and a (byte) tokenizer: no weights."""
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama7b_dir(tmp_path_factory) -> Path:
    from transformers import LlamaConfig

    return _config_dir(tmp_path_factory.mktemp("llama7b"), LlamaConfig(**LLAMA_7B))


@pytest.fixture
def ndif_key(monkeypatch):
    """A (fake) NDIF key for the test; nnsight's config is restored afterwards."""
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.setenv("NDIF_API_KEY", "test-key-never-sent")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                         "TOKENIZERS_PARALLELISM": "false"}


_RSS_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import torch, transformers, nnsight
    # import what any load needs first, so that the growth below is the model's own
    import transformers.models.llama.modeling_llama, transformers.pipelines
    import torch._subclasses.fake_tensor, torch.fx.experimental.symbolic_shapes
    import nnsight.modeling.transformers
    import lape_utils.models as M

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    before = status("VmRSS")
    started = time.perf_counter()
    model = M.load_model(sys.argv[1], remote=True, dtype="bf16")
    seconds = time.perf_counter() - started
    tensors = list(model.hf.parameters()) + list(model.hf.buffers())
    print(json.dumps({
        "rss_growth_mib": status("VmRSS") - before,
        "peak_growth_mib": status("VmHWM") - before,
        "seconds": seconds,
        "all_meta": all(t.device.type == "meta" for t in tensors),
        "n_params": sum(p.numel() for p in model.hf.parameters()),
        "describe": model.describe(),
        "check": model.check,
        "dtype": str(model.dtype),
    }))
''')


def test_a_7b_model_loads_for_ndif_without_reading_weights(llama7b_dir):
    """(a) LLaMA-2-7B shape from config + tokenizer only: every tensor on meta, < 200 MB."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(llama7b_dir)], cwd=REPO,
        env=_env() | {"NDIF_API_KEY": "test-key-never-sent"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n7B meta load: RSS +{r['rss_growth_mib']:.0f} MiB (peak +{r['peak_growth_mib']:.0f} "
          f"MiB) in {r['seconds']:.1f} s, {r['n_params'] / 1e9:.2f} B parameters on meta")
    assert r["all_meta"]
    assert 6.6e9 < r["n_params"] < 6.8e9  # LLaMA-2-7B: 6.74 B
    assert r["peak_growth_mib"] < 200, r
    d = r["describe"]
    assert (d["n_layers"], d["n_neurons"], d["family"]) == (32, 11008, "llama")
    assert d["remote"] is True and d["dtype"] == "bfloat16" and d["device"] == "cpu"
    assert d["fingerprint"].startswith("ndif:config-dir:")
    # the structural checks ran on fake tensors; the logit check needs weights and did not
    assert r["check"] == {"n_layers": 32, "n_neurons": 11008, "weights": False}


def test_remote_true_without_a_key_fails_before_anything_is_loaded_or_sent(
    llama7b_dir, monkeypatch, no_network
):
    """(b) No key: one clear error, raised before the config is read and before any socket."""
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingNDIFKeyError, match="NDIF_API_KEY.*Nothing was loaded or sent"):
        load_model(str(llama7b_dir), remote=True)
    # a hub id that could not be resolved offline: the key error still comes first
    with pytest.raises(MissingNDIFKeyError, match="remote='local'"):
        load_model("meta-llama/Llama-2-7b-hf", remote=True)
    # the offline dry run needs no key
    assert load_model("tiny-llama", remote="local").remote == "local"


def test_bad_remote_settings_are_refused(llama7b_dir, ndif_key):
    with pytest.raises(ValueError, match="remote must be False, True .* or 'local'"):
        load_model("tiny-llama", remote="ndif")
    with pytest.raises(ModelLoadError, match="exists only on this machine"):
        load_model("tiny-llama", remote=True)
    with pytest.raises(ModelLoadError, match="google/gemma-3-270m"):
        load_model("gemma-3-270m", remote=True)
    with pytest.raises(ValueError, match="device_map would have no effect"):
        load_model(str(llama7b_dir), remote=True, device_map="auto")


@pytest.fixture(scope="module")
def packed():
    corpus = load_corpus("builtin", ["en", "fr", "zh"], split="heldout")
    return pack(corpus, byte_tokenizer(), seq_len=48, tokens_per_language=47 * 4)


def test_remote_local_keeps_the_weights_and_counts_like_a_local_run(tiny, packed):
    """(c) ``remote="local"`` is nnsight's dry run: it executes here, so it keeps real weights
    (same seed, same weights); its traces give the counts of a plain run."""
    plain = tiny("llama")
    dry = load_model("tiny-llama", remote="local")
    assert dry.remote == "local" and plain.remote is False
    for (name, a), b in zip(plain.hf.named_parameters(), dry.hf.parameters()):
        assert torch.equal(a, b), name
    assert dry.check["max_logit_change"] > 0  # the full self-check ran
    a = capture(plain, packed, replicates=3, progress=False)
    b = capture(dry, packed, replicates=3, progress=False, remote="local")
    assert torch.equal(a.n, b.n)
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.boot_over_zero, b.boot_over_zero)
    assert torch.allclose(a.activation_sum, b.activation_sum, rtol=0, atol=1e-9)


def test_a_model_without_weights_refuses_to_run_locally(llama7b_dir, ndif_key):
    model = load_model(str(llama7b_dir), remote=True)
    ids = torch.randint(4, 250, (1, 8))
    with pytest.raises(RemoteModelError, match="loaded with remote=True.*remote=True"):
        count_batch(model, ids)
    with pytest.raises(RemoteModelError):
        count_batch(model, ids, backend="hooks")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_meta_loading_and_structural_check_work_for_every_family(tmp_path, ndif_key, family):
    """The structural self-check runs on fake tensors for each registered family."""
    config = build_tiny(family)[0].config
    model = load_model(str(_config_dir(tmp_path, config)), remote=True)
    assert all(p.is_meta for p in model.hf.parameters())
    assert model.check == {"n_layers": 2, "n_neurons": 128, "weights": False}
    assert model.n_layers == 2 and model.n_neurons == 128


def test_the_capture_request_of_a_7b_model_is_small_and_brings_back_only_counts(
    llama7b_dir, ndif_key, no_network
):
    """(d) The trace capture sends for one batch of 4 x 2048 tokens, serialised as nnsight
    sends it to NDIF: well under 1 MB, and what comes back is per-layer count vectors,
    nothing of size [batch, pos, neuron]."""
    model = load_model(str(llama7b_dir), remote=True, dtype="bf16")
    b, s, rep = 4, 2048, 16
    ids = torch.randint(4, 32000, (b, s), generator=torch.Generator().manual_seed(0))
    count_mask = torch.ones(b, s, dtype=torch.bool)
    count_mask[:, 0] = False
    w = bootstrap_weights(0, "en", list(range(b)), rep)
    sizes = {}
    for replicates, weights in ((rep, w), (0, None)):
        req = measure_remote_request(
            model, lambda m, weights=weights: count_batch(m, ids, None, count_mask, weights,
                                                          remote=True)
        )
        sizes[replicates] = req
        assert req.request_bytes < 1_000_000, req
        assert set(req.saved) == {"results"}
        tensors = req.saved["results"]
        per_layer = [((11008,), "int64"), ((11008,), "float64")]
        if replicates:
            per_layer.append(((rep, 11008), "int64"))
        assert tensors == per_layer * 32
        payload = sum(torch.Size(shape).numel() * 8 for shape, _ in tensors)
        assert payload <= req.response_bytes <= 1.05 * payload + 65536
    activations = b * s * 11008 * 32 * 2  # what saving the bf16 site outputs would return
    print("\nLLaMA-2-7B shape, one capture batch of 4 x 2048 tokens:")
    for replicates, req in sizes.items():
        print(f"  replicates={replicates:2d}: request {req.request_bytes / 1e3:.0f} kB "
              f"({req.request_bytes_zstd / 1e3:.0f} kB zstd), response "
              f"{req.response_bytes / 1e6:.1f} MB (full activations: {activations / 1e9:.1f} GB)")


_SERVER = textwrap.dedent('''
    """A stand-in NDIF worker: lape_utils is not importable; the model is its own copy."""
    import importlib.abc, sys

    class NoLapeUtils(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "lape_utils":
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoLapeUtils())
    import torch, transformers
    from nnsight.modeling.transformers import TransformersModel
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import _saves, dec, inc

    model_dir, request, result = sys.argv[1:4]
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    nn = TransformersModel(hf, tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir))
    with open(request, "rb") as f:
        tracer = RequestModel.deserialize(f.read(), nn._remoteable_persistent_objects())
    inc()
    try:
        with torch.inference_mode():
            tracer.execute(tracer.info.code)
        saved = {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in _saves()}
    finally:
        dec()
    assert not any(m.split(".")[0] == "lape_utils" for m in sys.modules)
    torch.save(saved, result)
''')


def _serve(tmp_path: Path, model_dir: Path, payload: bytes) -> subprocess.CompletedProcess:
    (tmp_path / "request.bin").write_bytes(payload)
    (tmp_path / "server.py").write_text(_SERVER)
    return subprocess.run(
        [sys.executable, str(tmp_path / "server.py"), str(model_dir),
         str(tmp_path / "request.bin"), str(tmp_path / "result.pt")],
        cwd=tmp_path, env=_env() | {"PYTHONPATH": ""}, capture_output=True, text=True,
        timeout=300, check=False,
    )


def test_the_capture_request_runs_on_a_server_without_lape_utils(tmp_path, tiny, monkeypatch):
    """NDIF does not have lape_utils installed. The request must carry the code it calls
    (the count reduction) by value, and give there the counts of a local run.

    nnsight ships only *non-installed* modules by value; lape_utils is pip-installed
    (editable or not), so without ``prepare_remote`` the request names
    ``lape_utils.capture.reduce_site`` by reference and fails on the server, even though
    nnsight's own ``remote="local"`` dry run passes (it can still import lape_utils).
    """
    import cloudpickle

    import lape_utils
    from lape_utils import remote as models

    model = tiny("llama")
    model_dir = tmp_path / "model"
    model.hf.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(model_dir)
    ids = torch.randint(4, 250, (3, 24), generator=torch.Generator().manual_seed(5))
    w = bootstrap_weights(0, "fr", [0, 1, 2], 4)
    expected = count_batch(model, ids, weights=w)

    def run(m):
        return count_batch(m, ids, weights=w, remote="local")

    req = measure_remote_request(model, run)
    served = _serve(tmp_path, model_dir, req.payload)
    assert served.returncode == 0, served.stderr[-3000:]
    results = torch.load(tmp_path / "result.pt", weights_only=False)["results"]
    assert torch.equal(torch.stack([r[0] for r in results]), expected.over_zero)
    assert torch.equal(torch.stack([r[2] for r in results], dim=1), expected.boot_over_zero)

    # the same request without shipping lape_utils by value does not load there
    registered = "lape_utils" in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
    monkeypatch.setattr(models, "prepare_remote", lambda remote, name=None: remote)
    cloudpickle.unregister_pickle_by_value(lape_utils)
    try:
        by_reference = measure_remote_request(model, run)
    finally:
        if registered:
            cloudpickle.register_pickle_by_value(lape_utils)
    failed = _serve(tmp_path, model_dir, by_reference.payload)
    assert failed.returncode != 0
    assert "No module named 'lape_utils" in failed.stderr
