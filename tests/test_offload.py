"""A model split over devices by accelerate (model parallel with offload) counts the same.

On a CPU-only machine the devices are the CPU and the disk: accelerate keeps offloaded
layers' weights on the meta device and loads them from the offload folder at each forward,
exactly as it does for the layers that do not fit on the GPUs of a large model.
"""

from __future__ import annotations

import pytest
import torch

from lape_utils import load_model
from lape_utils.capture import bootstrap_weights, capture, count_batch
from lape_utils.corpus import load_corpus
from lape_utils.models import ModelLoadError, check_device_map
from lape_utils.packing import pack

SEED = 4
LAYER_1_ON_DISK = {
    "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
    "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def plain():
    return load_model("tiny-llama", seed=SEED)


@pytest.fixture(scope="module")
def model_dir(plain, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    plain.hf.save_pretrained(path)
    plain.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def packed(plain):
    corpus = load_corpus("builtin", ["en", "fr", "zh"], split="heldout")
    return pack(corpus, plain.tokenizer, seq_len=48, tokens_per_language=47 * 4)


@pytest.mark.parametrize(
    "placement",
    [
        pytest.param({"device_map": LAYER_1_ON_DISK}, id="explicit-map"),
        # accelerate decides: only the embeddings fit in 250 kB of CPU memory
        pytest.param({"device_map": "auto", "max_memory": {"cpu": "250KB"}}, id="auto-max-memory"),
    ],
)
def test_a_model_split_over_cpu_and_disk_captures_exactly_the_same(
    plain, model_dir, packed, tmp_path, placement
):
    split = load_model(str(model_dir), offload_folder=str(tmp_path / "offload"), **placement)
    devices = set(split.hf.hf_device_map.values())
    assert devices == {"cpu", "disk"}, split.hf.hf_device_map
    offloaded = [n for n, p in split.hf.named_parameters() if p.is_meta]
    assert any(".layers.1." in n for n in offloaded)  # really not in memory
    assert split.check["max_logit_change"] > 0  # the self-check ran through the disk layers
    a = capture(plain, packed, replicates=3, progress=False)
    b = capture(split, packed, replicates=3, progress=False)
    assert torch.equal(a.n, b.n)
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.boot_over_zero, b.boot_over_zero)
    assert torch.equal(a.activation_sum, b.activation_sum)
    ids = packed.chunks["fr"][:3]
    hooks = count_batch(split, ids, backend="hooks")
    assert torch.equal(hooks.over_zero, count_batch(plain, ids).over_zero)


def test_offloaded_embeddings_are_refused_at_load_with_what_to_do(model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="input embeddings .* are offloaded.*device_map"):
        load_model(str(model_dir), device_map="auto", max_memory={"cpu": "1KB"},
                   offload_folder=str(tmp_path / "offload"))


@pytest.fixture
def cpu_offloaded():
    from accelerate import cpu_offload

    model = load_model("tiny-llama", seed=SEED)
    cpu_offload(model.hf, execution_device=torch.device("cpu"))
    assert all(p.is_meta for p in model.hf.parameters())
    return model


def test_a_cpu_offloaded_model_counts_the_same_through_hooks(plain, cpu_offloaded):
    """Every weight streamed in by accelerate at forward time; inputs go to its execution
    device (``LapeModel.device`` reads it from the hook, not from the meta weights)."""
    ids = torch.randint(4, 250, (3, 24), generator=torch.Generator().manual_seed(1))
    w = bootstrap_weights(0, "xx", [0, 1, 2], 4)
    assert cpu_offloaded.device == torch.device("cpu")
    a = count_batch(plain, ids, weights=w)
    b = count_batch(cpu_offloaded, ids, weights=w, backend="hooks")
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.boot_over_zero, b.boot_over_zero)


@pytest.mark.xfail(
    raises=NotImplementedError, strict=True,
    reason="nnsight 0.8.1 moves a trace's inputs to the device of the first parameter, "
    "which is meta when accelerate offloads every weight; use the hooks backend or keep the "
    "embeddings on a device",
)
def test_a_cpu_offloaded_model_through_nnsight(plain, cpu_offloaded):
    ids = torch.randint(4, 250, (2, 8), generator=torch.Generator().manual_seed(1))
    count_batch(cpu_offloaded, ids)


def _missing_cuda_index() -> int:
    return torch.cuda.device_count() + 2


@pytest.mark.parametrize(
    ("device_map", "says"),
    [
        ({"": f"cuda:{_missing_cuda_index()}"}, "CUDA"),
        (f"cuda:{_missing_cuda_index()}", "CUDA"),
        ({"model.embed_tokens": "cpu", "model.layers": _missing_cuda_index()}, "CUDA"),
        ({"": "gpu"}, "not a device name"),
        pytest.param(
            "cuda", "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
        pytest.param(
            {"": "mps"}, "no MPS device",
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has MPS"),
        ),
    ],
)
def test_a_device_map_naming_a_missing_device_fails_before_loading(
    model_dir, monkeypatch, device_map, says
):
    from transformers import AutoConfig, AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("weights or config read before the device map was checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(AutoConfig, "from_pretrained", refuse)
    with pytest.raises(ModelLoadError, match=f"device_map names device .*{says}.*nothing was loaded"):
        load_model(str(model_dir), device_map=device_map)
    with pytest.raises(ModelLoadError, match="device_map names device"):
        load_model("tiny-llama", device_map=device_map)


@pytest.mark.parametrize(
    "device_map",
    [None, "auto", "balanced", "sequential", "cpu", {"": "cpu"}, {"a": "cpu", "b": "disk"}],
)
def test_device_maps_that_exist_pass(device_map):
    check_device_map(device_map)
