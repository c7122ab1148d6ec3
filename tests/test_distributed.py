"""Data-parallel capture under torchrun (2 ranks, gloo on CPU) and merging of statistics.

The torchrun runs are subprocesses (~10 s each on 2 cores, mostly start-up); everything
else runs in-process on the tiny LLaMA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from lape_utils.capture import capture
from lape_utils.cli import _packed, build_parser, main
from lape_utils.distributed import shard_range
from lape_utils.stats import ActivationStats, ProvenanceMismatchError, counted_chunks

REPO = Path(__file__).resolve().parents[1]
# 9 chunks of 64 tokens per language = 3 batches of the default batch_size 4
ARGS = ["--model", "tiny-llama", "--corpus", "builtin", "--languages", "en,fr",
        "--tokens-per-language", "600", "--seq-len", "64"]

# capture() with an on_batch hook under torchrun: rank 1 stops after its first fr batch
# when INTERRUPT is set; every rank logs the batches it ran to seen.<run>.rank<k>.json
SCRIPT = """
import json, os, sys
from lape_utils import capture, load_model
from lape_utils.cli import _packed, build_parser

out, run = sys.argv[1], sys.argv[2]
args = build_parser().parse_args(["capture", *sys.argv[3:], "--out", out])
model = load_model(args.model)
packed = _packed(args, model.tokenizer)
rank, seen = int(os.environ["RANK"]), []

def on_batch(lang, next_chunk):
    seen.append([lang, next_chunk])
    with open(f"{out}/seen.{run}.rank{rank}.json", "w") as f:
        json.dump(seen, f)
    if os.environ.get("INTERRUPT") and rank == 1 and lang == "fr":
        raise RuntimeError("rank 1 interrupted")

capture(model, packed, out, checkpoint_every=1, progress=False, on_batch=on_batch)
"""


def _torchrun(*args: str, nproc: int = 2, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", *args],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=180,
        env=os.environ | {"PYTHONPATH": str(REPO), **env},
    )


def _same(a: ActivationStats, b: ActivationStats) -> None:
    """Integer counts bit-identical; activation_sum up to float64 summation order."""
    assert a.languages == b.languages
    for name in ("n", "over_zero", "boot_n", "boot_over_zero", "budget_n", "budget_over_zero"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.allclose(a.activation_sum, b.activation_sum, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> ActivationStats:
    """The one-process ``lape capture`` with ARGS (batch_size 4, 16 replicates)."""
    out = tmp_path_factory.mktemp("one")
    assert main(["capture", *ARGS, "--out", str(out)]) == 0
    return ActivationStats.load(out)


@pytest.fixture(scope="module")
def packed():
    from lape_utils import load_model

    args = build_parser().parse_args(["capture", *ARGS, "--out", "unused"])
    return _packed(args, load_model("tiny-llama").tokenizer)


def test_torchrun_capture_equals_one_process(one_process, tmp_path):
    out = tmp_path / "dist"
    res = _torchrun("-m", "lape_utils", "capture", *ARGS, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    stats = ActivationStats.load(out)
    _same(one_process, stats)
    assert stats.provenance["world_size"] == 2
    assert stats.provenance["chunks"] == {"en": [[0, 9]], "fr": [[0, 9]]}
    assert res.stdout.count("saved to") == 1  # only rank 0 prints
    assert sorted(p.name for p in out.iterdir()) == ["provenance.json", "stats.pt"]


def test_an_interrupted_rank_resumes_without_counting_twice(one_process, tmp_path):
    script, out = tmp_path / "run_capture.py", tmp_path / "out"
    script.write_text(SCRIPT)
    out.mkdir()
    first = _torchrun(str(script), str(out), "1", *ARGS, INTERRUPT="1")
    assert first.returncode != 0 and "rank 1 interrupted" in first.stderr
    assert (out / "checkpoint.rank1.pt").exists() and not (out / "stats.pt").exists()
    second = _torchrun(str(script), str(out), "2", *ARGS)
    assert second.returncode == 0, second.stderr[-3000:]
    _same(one_process, ActivationStats.load(out))
    # rank 1 counts en [4, 9) and fr [4, 9); it stopped after fr [4, 8) and redid only [8, 9)
    seen = {(run, rank): json.loads((out / f"seen.{run}.rank{rank}.json").read_text())
            for run in (1, 2) for rank in (0, 1) if (out / f"seen.{run}.rank{rank}.json").exists()}
    assert seen[1, 1] == [["en", 8], ["en", 9], ["fr", 8]]
    assert seen[2, 1] == [["fr", 9]]
    # rank 0 ([0, 4) of each) may or may not have finished before torchrun stopped it;
    # whatever it ran before was not run again
    ran = [tuple(x) for x in seen.get((1, 0), []) + seen.get((2, 0), [])]
    assert len(ran) == len(set(ran)) and set(ran) <= {("en", 4), ("fr", 4)}
    assert not list(out.glob("checkpoint*"))


def test_more_ranks_than_batches_is_refused_before_any_work(tmp_path):
    out = tmp_path / "few"
    res = _torchrun("-m", "lape_utils", "capture", *ARGS[:-4], "--tokens-per-language", "63",
                    "--seq-len", "64", "--out", str(out))
    assert res.returncode != 0
    assert "cannot split language 'en' over 2 parts" in res.stderr
    assert "1 chunks = 1 batches of batch_size 4" in res.stderr
    assert not list(out.glob("*.pt"))


def test_shards_merge_to_the_one_process_statistics(one_process, packed, tmp_path, tiny):
    model = tiny("llama")
    assert [shard_range(9, 4, k, 3) for k in range(3)] == [(0, 4), (4, 8), (8, 9)]
    dirs = [tmp_path / f"shard{k}" for k in range(3)]
    for k in (0, 2):
        capture(model, packed, dirs[k], progress=False, shard=(k, 3))
    assert main(["capture", *ARGS, "--shard", "1/3", "--out", str(dirs[1])]) == 0
    shards = [ActivationStats.load(d) for d in dirs]
    assert shards[1].provenance["chunks"] == {"en": [[4, 8]], "fr": [[4, 8]]}
    assert shards[1].n.tolist() == [4 * 63, 4 * 63]
    # any order of parts and of languages
    merged = ActivationStats.merge(shards[2], shards[0].subset(["fr", "en"]), shards[1])
    _same(one_process, merged)
    assert merged.provenance["chunks"] == {"en": [[0, 9]], "fr": [[0, 9]]}
    assert len(merged.provenance["merged_from"]) == 3
    gap = ActivationStats.merge(shards[0], shards[2])  # allowed, with a warning
    assert gap.provenance["chunks"]["en"] == [[0, 4], [8, 9]] and gap.n.tolist() == [315, 315]
    # the command line gives the same, and the merged directory serves as a capture cache
    assert main(["merge", "--out", str(tmp_path / "merged"), *map(str, dirs)]) == 0
    _same(one_process, ActivationStats.load(tmp_path / "merged"))
    again = capture(model, packed, tmp_path / "merged", progress=False,
                    on_batch=lambda *a: pytest.fail("recomputed"))
    _same(one_process, again)
    # a shard's cache is not taken for the whole corpus
    with pytest.raises(ProvenanceMismatchError, match="chunks"):
        capture(model, packed, dirs[0], progress=False)


def test_merge_refuses_other_experiments_and_overlaps(one_process, packed, tiny, tmp_path):
    a = capture(tiny("llama"), packed, progress=False, shard=(0, 2))
    b = capture(tiny("llama"), packed, progress=False, shard=(1, 2))
    overlap = r"overlapping chunks: language 'en' chunks \[0, 4\)"
    with pytest.raises(ProvenanceMismatchError, match=overlap):
        ActivationStats.merge(a, one_process)
    other_model = capture(tiny("gpt2"), packed, progress=False, shard=(1, 2))
    other = "model: part 1 has 'tiny-llama', part 2 has 'tiny-gpt2'"
    with pytest.raises(ProvenanceMismatchError, match=other):
        ActivationStats.merge(a, other_model)
    with pytest.raises(ProvenanceMismatchError, match="languages"):
        ActivationStats.merge(a, b.subset(["en"]))
    for key, value in [("tokenizer", {"name_or_path": "other"}), ("seq_len", 128),
                       ("corpus_fingerprint", "other corpus"), ("dtype", "bfloat16"),
                       ("bootstrap_seed", 1)]:
        changed = ActivationStats(**{**vars(b), "provenance": b.provenance | {key: value}})
        with pytest.raises(ProvenanceMismatchError, match=f"{key}: part 1 has"):
            ActivationStats.merge(a, changed)
    imported = ActivationStats(["en", "fr"], b.n, b.over_zero,
                               provenance={"source": "reference count files"})
    with pytest.raises(ValueError, match="do not record which chunks"):
        ActivationStats.merge(imported, imported)
    # statistics captured before chunk records counted every chunk
    old = {k: v for k, v in one_process.provenance.items() if k not in ("chunks", "corpus_chunks")}
    assert counted_chunks(old) == {"en": [[0, 9]], "fr": [[0, 9]]}
    # the command line: one-line error, nothing written
    a.save(tmp_path / "a")
    twice = [str(tmp_path / "a")] * 2
    assert main(["merge", "--out", str(tmp_path / "m"), *twice]) == 2
    assert not (tmp_path / "m").exists()


def test_ranks_within_a_shard_count_exactly_that_shard():
    """torchrun with --shard K/M: rank r counts part K*W + r of M*W; together the shard."""
    for n, bs, m, world in [(9, 4, 2, 1), (23, 2, 3, 2), (100, 3, 4, 3), (7, 1, 2, 3)]:
        for k in range(m):
            spans = [shard_range(n, bs, k * world + r, m * world) for r in range(world)]
            assert all(a[1] == b[0] for a, b in pairwise(spans))
            assert (spans[0][0], spans[-1][1]) == shard_range(n, bs, k, m)
        assert shard_range(n, bs, 0, m)[0] == 0 and shard_range(n, bs, m - 1, m)[1] == n


def test_too_many_parts_fail_before_any_forward(tiny, packed, tmp_path):
    with pytest.raises(ValueError, match=r"cannot split language 'en'.*9 chunks = 3 batches"):
        capture(tiny("llama"), packed, progress=False, shard=(0, 4),
                on_batch=lambda *a: pytest.fail("ran a batch"))
    with pytest.raises(ValueError, match="shard"):
        capture(tiny("llama"), packed, progress=False, shard=(2, 2))
    assert main(["capture", *ARGS, "--shard", "2/2", "--out", str(tmp_path)]) == 2


def test_a_checkpoint_from_before_shards_still_resumes(one_process, packed, tiny, tmp_path):
    def stop(lang, next_chunk):
        if lang == "fr":
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        capture(tiny("llama"), packed, tmp_path, progress=False, checkpoint_every=1, on_batch=stop)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key in ("chunks", "corpus_chunks", "shard", "world_size"):
        del ckpt["provenance"][key]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    seen = []
    resumed = capture(tiny("llama"), packed, tmp_path, progress=False,
                      on_batch=lambda *a: seen.append(a))
    assert seen == [("fr", 8), ("fr", 9)]
    _same(one_process, resumed)
