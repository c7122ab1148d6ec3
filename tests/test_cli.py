"""The command line, end to end on a tiny model: capture, then identify."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lape_utils.cli import main
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ActivationStats


def _lape(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lape_utils", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    code = main([
        "capture", "--model", "tiny-llama", "--languages", "en,fr,zh", "--split", "heldout",
        "--tokens-per-language", "630", "--seq-len", "64", "--replicates", "2",
        "--batch-size", "5", "--out", str(out),
    ])
    assert code == 0
    return out


def test_capture_writes_statistics_with_provenance(stats_dir):
    stats = ActivationStats.load(stats_dir)
    assert stats.languages == ["en", "fr", "zh"]
    assert stats.n.tolist() == [630, 630, 630]
    assert stats.n_replicates == 2
    assert stats.provenance["model"] == "tiny-llama"
    # a second run with the same arguments reuses the cache and says so by not failing
    res = _lape("capture", "--model", "tiny-gpt2", "--languages", "en,fr,zh", "--split",
                "heldout", "--tokens-per-language", "630", "--seq-len", "64",
                "--replicates", "2", "--batch-size", "5", "--out", str(stats_dir))
    assert res.returncode == 2 and "made for something else" in res.stderr
    assert "model: cached 'tiny-llama', asked 'tiny-gpt2'" in res.stderr


def test_identify_writes_both_formats(stats_dir, tmp_path):
    ours, official = tmp_path / "neurons.pt", tmp_path / "tiny.neuron.pth"
    assert main(["identify", "--stats", str(stats_dir), "--out", str(ours)]) == 0
    assert main(["identify", "--stats", str(stats_dir), "--format", "official",
                 "--out", str(official)]) == 0
    sel = NeuronSelection.load(ours)
    assert sel.languages == ["en", "fr", "zh"]
    assert sel.config == {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95}
    raw = torch.load(official, weights_only=True)
    assert len(raw) == 3 and all(len(layers) == 2 for layers in raw)
    assert [[t.tolist() for t in layers] for layers in raw] == [
        [t.tolist() for t in sel.indices[lang]] for lang in sel.languages
    ]
    # never overwritten silently
    res = _lape("identify", "--stats", str(stats_dir), "--out", str(ours))
    assert res.returncode == 2 and "refusing to overwrite" in res.stderr


def test_identify_accepts_the_reference_count_files(stats_dir, tmp_path):
    stats = ActivationStats.load(stats_dir)
    stats.export_reference(tmp_path / "counts", "tiny")
    out = tmp_path / "from_counts.pt"
    assert main(["identify", "--stats", str(tmp_path / "counts"), "--top-rate", "0.05",
                 "--out", str(out)]) == 0
    sel = NeuronSelection.load(out)
    assert sorted(sel.languages) == ["en", "fr", "zh"]
    assert sel.config["top_rate"] == 0.05


def test_bad_thresholds_and_languages_are_one_line_errors(stats_dir, tmp_path):
    res = _lape("identify", "--stats", str(stats_dir), "--top-rate", "1.5",
                "--out", str(tmp_path / "x.pt"))
    assert res.returncode == 2 and "top_rate" in res.stderr and "Traceback" not in res.stderr
    res = _lape("capture", "--model", "tiny-llama", "--languages", "en,xx",
                "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "xx" in res.stderr and "Traceback" not in res.stderr


def test_count_files_are_read_in_the_papers_order_and_the_order_is_printed(
    stats_dir, tmp_path, capsys
):
    stats = ActivationStats.load(stats_dir)
    stats.export_reference(tmp_path / "counts", "tiny")
    # alphabetically: en, fr, zh; the package's (paper's) order: en, zh, fr
    assert ActivationStats.from_reference(tmp_path / "counts").languages == ["en", "zh", "fr"]
    out = tmp_path / "mine.neuron.pth"
    assert main(["identify", "--stats", str(tmp_path / "counts"), "--format", "official",
                 "--out", str(out)]) == 0
    assert "language order of the lists: en, zh, fr" in capsys.readouterr().out
    assert main(["identify", "--stats", str(tmp_path / "counts"), "--languages", "fr,en,zh",
                 "--format", "official", "--out", str(tmp_path / "b.neuron.pth")]) == 0
    assert "language order of the lists: fr, en, zh" in capsys.readouterr().out
