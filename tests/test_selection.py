"""Tests of lape_utils.selection: the NeuronSelection type, persistence, and the published
neuron files of Tang et al. (copies in shared/data/official-lape-neurons; skipped if absent).
"""

from __future__ import annotations

import io
import json
import logging
import os
import urllib.error
from pathlib import Path

import pandas as pd
import pytest
import torch

import lape_utils.published as selection_mod
from lape_utils.lape import LapeConfig, identify
from lape_utils.published import (
    OFFICIAL_LANGUAGES,
    OFFICIAL_MODELS,
    download_official,
    from_official,
    official_path,
    official_url,
    to_official,
)
from lape_utils.selection import NeuronSelection


def _official_dir() -> Path:
    """Folder with the published *.neuron.pth copies, or skip.

    ``$LAPE_SHARED_DIR`` may name the shared folder (``<it>/data/official-lape-neurons``) or
    the neuron folder itself; otherwise ``<repo>/../shared/data/official-lape-neurons``.
    """
    candidates = []
    env = os.environ.get("LAPE_SHARED_DIR")
    if env:
        candidates += [Path(env) / "data" / "official-lape-neurons", Path(env)]
    repo = Path(__file__).resolve().parents[1]
    candidates.append(repo.parent / "shared" / "data" / "official-lape-neurons")
    for c in candidates:
        if c.is_dir() and any(c.glob("*.neuron.pth")):
            return c
    pytest.skip(f"published neuron files not found (looked in {[str(c) for c in candidates]})")


def small() -> NeuronSelection:
    # L=3, D=6; en: {(0,1), (0,4), (2,0)}, zh: {(0,4), (1,5)}, ja: nothing.
    return NeuronSelection(
        languages=["en", "zh", "ja"],
        indices={"en": [[1, 4], [], [0]], "zh": [[4], [5], []], "ja": [[], [], []]},
        n_layers=3,
        n_neurons=6,
        method="lape",
        config=LapeConfig().to_dict(),
        provenance={"model": "toy"},
    )


# --------------------------------------------------------------------------- the type


def test_views():
    sel = small()
    counts = sel.counts().to_dict(orient="list")
    assert counts == {"en": [2, 0, 1], "zh": [1, 1, 0], "ja": [0, 0, 0]}
    assert sel.counts().index.name == "layer"
    assert sel.mask("en").nonzero().tolist() == [[0, 1], [0, 4], [2, 0]]
    assert sel.union().nonzero().tolist() == [[0, 1], [0, 4], [1, 5], [2, 0]]
    assert sel.total_distinct() == 4  # (0,4) is shared by en and zh
    assert sel.flat("zh").tolist() == [4, 11]
    r = repr(sel)
    assert "3 layers x 6 neurons, 4 distinct; en 3, zh 2, ja 0" in r and "top_rate=0.01" in r
    with pytest.raises(KeyError, match="'fr' not in this selection"):
        sel.mask("fr")


def test_to_frame_without_tables():
    df = small().to_frame()
    assert list(df.columns) == ["language", "layer", "neuron"]
    rows = [["en", 0, 1], ["en", 0, 4], ["en", 2, 0], ["zh", 0, 4], ["zh", 1, 5]]
    assert df.values.tolist() == rows
    assert list(df.language.cat.categories) == ["en", "zh", "ja"]


def test_indices_are_normalised_and_validated():
    sel = NeuronSelection(["a"], {"a": [torch.tensor([5, 1, 1], dtype=torch.int32), []]}, 2, 6)
    assert sel.indices["a"][0].tolist() == [1, 5] and sel.indices["a"][0].dtype == torch.long
    assert sel.indices["a"][1].dtype == torch.long and sel.indices["a"][1].numel() == 0
    with pytest.raises(ValueError, match=r"indices\['a'\] has 1 layers, expected n_layers=2"):
        NeuronSelection(["a"], {"a": [[1]]}, 2, 6)
    with pytest.raises(ValueError, match=r"must lie in \[0, 6\), got min 1, max 6"):
        NeuronSelection(["a"], {"a": [[1, 6]]}, 1, 6)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        NeuronSelection(["a", "b"], {"a": [[1]]}, 1, 6)
    with pytest.raises(TypeError, match="must be integers"):
        NeuronSelection(["a"], {"a": [torch.tensor([1.0])]}, 1, 6)
    with pytest.raises(ValueError, match="unique"):
        NeuronSelection(["a", "a"], {"a": [[1]]}, 1, 6)


def test_from_flat_and_masks():
    sel = small()
    again = NeuronSelection.from_flat({lang: sel.flat(lang) for lang in sel.languages}, 3, 6)
    assert again.equals(sel)
    shuffled = NeuronSelection.from_flat({"en": torch.tensor([12, 1, 4, 4])}, 3, 6)
    assert [t.tolist() for t in shuffled.indices["en"]] == [[1, 4], [], [0]]
    assert NeuronSelection.from_masks({lang: sel.mask(lang) for lang in sel.languages}).equals(sel)
    with pytest.raises(ValueError, match="flat indices must lie"):
        NeuronSelection.from_flat({"en": torch.tensor([18])}, 3, 6)


def test_equals():
    a, b = small(), small()
    assert a.equals(b)
    b.indices["ja"][2] = torch.tensor([3])
    assert not a.equals(b)


# --------------------------------------------------------------------------- persistence


def identified() -> NeuronSelection:
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([1000, 2000, 1500])
    over_zero = ((torch.rand(4, 50, 3, generator=g) ** 4) * n).long()
    config = LapeConfig(top_rate=0.05, filter_rate=0.8, activation_bar_ratio=0.8)
    return identify(over_zero, n, ["en", "zh", "ja"], config, provenance={"model": "toy"})


def test_save_load_roundtrip(tmp_path):
    sel = identified()
    path = sel.save(tmp_path / "sub" / "toy.lape.pt")
    sidecar = tmp_path / "sub" / "toy.lape.pt.json"
    meta = json.loads(sidecar.read_text())
    assert meta["method"] == "lape" and meta["languages"] == ["en", "zh", "ja"]
    assert meta["shape"] == {"n_layers": 4, "n_neurons": 50}
    assert meta["config"] == sel.config and meta["provenance"]["model"] == "toy"
    assert meta["total_distinct"] == sel.total_distinct()
    back = NeuronSelection.load(path)
    assert back.equals(sel)
    assert back.config == sel.config and back.provenance == sel.provenance
    assert torch.equal(back.selected_prob, sel.selected_prob)
    pd.testing.assert_frame_equal(back.to_frame(), sel.to_frame())


def test_save_refuses_overwrite(tmp_path):
    sel = small()
    path = tmp_path / "s.pt"
    sel.save(path)
    with pytest.raises(FileExistsError, match="refusing to overwrite .*s.pt.*overwrite=True"):
        sel.save(path)
    path.unlink()  # the sidecar alone also blocks
    with pytest.raises(FileExistsError, match=r"s\.pt\.json"):
        sel.save(path)
    sel.save(path, overwrite=True)
    assert NeuronSelection.load(path).equals(sel)


def test_load_checks_sidecar_and_format(tmp_path, caplog):
    sel = small()
    path = sel.save(tmp_path / "s.pt")
    side = tmp_path / "s.pt.json"
    meta = json.loads(side.read_text())
    meta["languages"] = ["en", "zh", "fr"]
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sidecar .* disagrees .* on \\['languages'\\]"):
        NeuronSelection.load(path)
    side.unlink()
    with caplog.at_level(logging.WARNING):
        assert NeuronSelection.load(path).equals(sel)
    assert "no sidecar" in caplog.text
    to_official(sel, tmp_path / "x.neuron.pth")
    with pytest.raises(ValueError, match="from_official"):
        NeuronSelection.load(tmp_path / "x.neuron.pth")


def test_save_rejects_unserialisable_provenance(tmp_path):
    sel = small()
    sel.provenance["tensor"] = torch.zeros(1)
    with pytest.raises(TypeError, match="provenance must be JSON-serialisable"):
        sel.save(tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()


def test_official_format_roundtrip_keeps_empty_language(tmp_path):
    sel = small()
    path = to_official(sel, tmp_path / "toy.neuron.pth")
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, list) and len(raw) == 3 and all(len(x) == 3 for x in raw)
    assert raw[2][0].dtype == torch.long and raw[2][0].numel() == 0
    back = from_official(path, languages=["en", "zh", "ja"], n_neurons=6)
    assert back.equals(sel)
    with pytest.raises(FileExistsError):
        to_official(sel, path)


def test_from_official_defaults_and_width_inference(tmp_path, caplog):
    sel = small()
    path = to_official(sel, tmp_path / "mine.neuron.pth")
    (tmp_path / "mine.neuron.pth.json").unlink()  # as the reference scripts write it: no sidecar
    with caplog.at_level(logging.WARNING):
        back = from_official(path)
    assert back.languages == list(OFFICIAL_LANGUAGES[:3])
    assert back.n_neurons == 6  # max index 5 + 1: only a lower bound, warned about
    assert "max index + 1" in caplog.text
    assert back.provenance["n_neurons_from"].startswith("max index")
    assert from_official(path, n_neurons=100).n_neurons == 100
    with pytest.raises(ValueError, match="does not fit n_neurons=4"):
        from_official(path, n_neurons=4)
    with pytest.raises(ValueError, match="3 language lists but 2 languages"):
        from_official(path, languages=["a", "b"])
    torch.save({"not": "a list"}, tmp_path / "bad.neuron.pth")
    with pytest.raises(ValueError, match=r"expected List\[List\[LongTensor\]\]"):
        from_official(tmp_path / "bad.neuron.pth")


def test_the_language_order_travels_with_the_file(tmp_path, caplog):
    # an order that is not the paper's: without the sidecar it would be misread
    sel = NeuronSelection(["ja", "en", "zh"], {"ja": [[1], []], "en": [[2], [0]], "zh": [[], [3]]},
                          2, 4, provenance={"model": "tiny"})
    path = to_official(sel, tmp_path / "x.neuron.pth")
    meta = json.loads((tmp_path / "x.neuron.pth.json").read_text())
    assert meta["languages"] == ["ja", "en", "zh"] and meta["n_neurons"] == 4
    back = from_official(path)
    assert back.equals(sel) and back.provenance["languages_from"].startswith("sidecar")
    assert back.provenance["sidecar"]["model"] == "tiny"
    with pytest.raises(ValueError, match="contradict its sidecar"):
        from_official(path, languages=["en", "zh", "ja"])
    (tmp_path / "x.neuron.pth.json").unlink()
    with caplog.at_level(logging.WARNING):
        guessed = from_official(path, n_neurons=4)
    assert guessed.languages == ["en", "zh", "fr"]  # the paper's order, assumed and said so
    assert "assuming the paper's order en, zh, fr" in caplog.text
    assert guessed.provenance["languages_from"].startswith("assumed")


# --------------------------------------------------------------------------- published files


def test_llama2_7b_known_facts():
    sel = from_official(_official_dir() / "LLaMA-2-7B.neuron.pth")
    assert sel.languages == list(OFFICIAL_LANGUAGES)
    assert (sel.n_layers, sel.n_neurons) == (32, 11008)
    assert sel.total_distinct() == 3523 == round(32 * 11008 * 0.01)
    per_lang = sel.counts().sum().to_dict()
    expected = {"en": 95, "zh": 583, "fr": 1022, "es": 838, "vi": 836, "id": 1068, "ja": 582}
    assert per_lang == expected
    assert sel.indices["zh"][4].tolist() == [6147, 9114, 9292]
    assert sel.provenance["sha256"] == OFFICIAL_MODELS["LLaMA-2-7B"].sha256


@pytest.mark.parametrize("name", list(OFFICIAL_MODELS))
def test_every_published_file_imports_and_roundtrips(name, tmp_path):
    path = _official_dir() / f"{name}.neuron.pth"
    if not path.exists():
        pytest.skip(f"{path} absent")
    info = OFFICIAL_MODELS[name]
    sel = from_official(path)
    assert (sel.n_layers, sel.n_neurons) == (info.n_layers, info.n_neurons)
    assert len(sel.languages) == info.n_languages
    # Every published set is exactly 1% of the FFN neurons, each in >= 1 language.
    assert sel.total_distinct() == round(info.n_layers * info.n_neurons * 0.01)
    out = to_official(sel, tmp_path / path.name)
    original = torch.load(path, weights_only=True)
    written = torch.load(out, weights_only=True)
    assert len(written) == len(original)
    for a, b in zip(original, written, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype == torch.long and torch.equal(x, y)
    assert from_official(out).equals(sel)


# --------------------------------------------------------------------------- finding files


def test_official_url_and_unknown_name():
    url = official_url("LLaMA-2-7B")
    assert url.startswith("https://raw.githubusercontent.com/RUCAIBox/Language-Specific-Neurons/")
    assert url.endswith("/LLaMA-2-7B.neuron.pth")
    with pytest.raises(ValueError, match="unknown published neuron set 'GPT-9'"):
        official_url("GPT-9")


def test_official_path_env_then_cache(tmp_path, monkeypatch):
    env_dir, cache = tmp_path / "env", tmp_path / "cache"
    env_dir.mkdir(), cache.mkdir()
    monkeypatch.delenv("LAPE_OFFICIAL_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="LAPE_OFFICIAL_DIR"):
        official_path("Phi-2-2.7B", cache_dir=cache)
    (cache / "Phi-2-2.7B.neuron.pth").write_bytes(b"x")
    assert official_path("Phi-2-2.7B", cache_dir=cache) == cache / "Phi-2-2.7B.neuron.pth"
    monkeypatch.setenv("LAPE_OFFICIAL_DIR", str(env_dir))
    (env_dir / "Phi-2-2.7B.neuron.pth").write_bytes(b"y")
    assert official_path("Phi-2-2.7B", cache_dir=cache) == env_dir / "Phi-2-2.7B.neuron.pth"


def test_download_offline_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("LAPE_OFFICIAL_DIR", raising=False)

    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(selection_mod.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="could not download OPT-6.7B .* offline"):
        download_official("OPT-6.7B", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_uses_local_copy_and_fetches_into_cache(tmp_path, monkeypatch):
    src = _official_dir() / "LLaMA-2-7B.neuron.pth"
    monkeypatch.delenv("LAPE_OFFICIAL_DIR", raising=False)
    calls = []

    class FakeResponse(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    def fake_urlopen(url, timeout):
        calls.append(url)
        return FakeResponse(src.read_bytes())

    monkeypatch.setattr(selection_mod.urllib.request, "urlopen", fake_urlopen)
    got = download_official("LLaMA-2-7B", cache_dir=tmp_path)
    assert got == tmp_path / "LLaMA-2-7B.neuron.pth" and calls == [official_url("LLaMA-2-7B")]
    assert from_official(got).total_distinct() == 3523
    assert download_official("LLaMA-2-7B", cache_dir=tmp_path) == got and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LLaMA-2-7B.neuron.pth"]


def test_tables_are_checked():
    with pytest.raises(ValueError, match="without `selected`"):
        NeuronSelection(["a"], {"a": [[1]]}, 1, 6, selected_prob=torch.zeros(1, 1))
    with pytest.raises(ValueError, match="selected_prob has 2 rows but selected has 1"):
        NeuronSelection(
            ["a"], {"a": [[1]]}, 1, 6,
            selected=torch.tensor([[0, 1]]), selected_prob=torch.zeros(2, 1),
        )
    with pytest.raises(ValueError, match="sorted layer-major"):
        NeuronSelection(["a"], {"a": [[1]]}, 1, 6, selected=torch.tensor([[0, 3], [0, 1]]))
