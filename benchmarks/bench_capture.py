"""Capture speed and memory, measured side by side in one run.

On the embedded default (Gemma 3 270M) and the same batches of the built-in corpus, runs
alternate between:

* ``body``: the bare transformer body's forward (``model.model``: no lm_head, no hooks), the
  floor any capture has to pay;
* ``capture``: :func:`lape_utils.capture.count_batch` through nnsight (reductions in the
  trace, stop after the last layer);
* ``capture-hooks``: the same reduction through plain forward hooks;
* ``naive``: what most peer code does, a full-model forward (logits included) with hooks
  doing the same reduction.

It prints tokens/s of each and the ratios. Peak memory is then measured in two fresh
processes, one capturing N chunks and one 4N chunks, and their peak resident set sizes are
compared (capture keeps only reduced counts, so more tokens must not cost more memory).

Usage::

    python benchmarks/bench_capture.py [--batches 3] [--rounds 3] [--batch-size 4]
        [--seq-len 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def _setup(args):
    from lape_utils import load_model
    from lape_utils.corpus import load_corpus
    from lape_utils.packing import pack

    model = load_model(args.model)
    corpus = load_corpus("builtin", ["en", "fr", "zh", "ru"], split="detect")
    packed = pack(corpus, model.tokenizer, seq_len=args.seq_len, take_all=True)
    chunks = torch.cat([packed.chunks[lang] for lang in packed.languages])
    return model, chunks


def _peak(args) -> None:
    """Child process: capture ``--chunks`` chunks, print peak RSS in MiB as JSON."""
    from lape_utils.capture import bootstrap_weights, count_batch

    torch.set_num_threads(args.threads)
    model, chunks = _setup(args)
    chunks = chunks[: args.chunks]
    count_mask = torch.ones(args.batch_size, chunks.shape[1], dtype=torch.bool)
    count_mask[:, 0] = False
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for start in range(0, len(chunks), args.batch_size):
        ids = chunks[start : start + args.batch_size]
        w = bootstrap_weights(0, "x", list(range(start, start + len(ids))), 16)
        count_batch(model, ids, None, count_mask[: len(ids)], w)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"chunks": len(chunks), "rss_before_mib": base, "peak_rss_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--batches", type=int, default=3, help="batches per timed run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunks", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--skip-memory", action="store_true")
    args = p.parse_args()
    if args.chunks:
        _peak(args)
        return

    from lape_utils.capture import count_batch, reduce_site

    torch.set_num_threads(args.threads)
    model, chunks = _setup(args)
    bs = args.batch_size
    need = args.batches * bs
    if len(chunks) < need:
        raise SystemExit(f"only {len(chunks)} chunks; lower --batches or --seq-len")
    batches = [chunks[i * bs : (i + 1) * bs] for i in range(args.batches)]
    count_mask = torch.ones(bs, chunks.shape[1], dtype=torch.bool)
    count_mask[:, 0] = False
    tokens_per_batch = bs * chunks.shape[1]
    body = model.hf.model

    def run_body():
        for ids in batches:
            body(input_ids=ids)

    def run_capture():
        for ids in batches:
            count_batch(model, ids, None, count_mask)

    def run_capture_hooks():
        for ids in batches:
            count_batch(model, ids, None, count_mask, backend="hooks")

    def run_naive():
        sink = []
        handles = [
            model.hf_site(i).register_forward_hook(
                lambda _m, _i, out: sink.append(reduce_site(out, count_mask, None))
            )
            for i in range(model.n_layers)
        ]
        try:
            for ids in batches:
                model.hf(input_ids=ids)
        finally:
            for h in handles:
                h.remove()

    runs = {
        "body": run_body,
        "capture": run_capture,
        "capture-hooks": run_capture_hooks,
        "naive": run_naive,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        run_body()  # warm-up
        run_capture()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    tokens = tokens_per_batch * args.batches
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}
    print(f"model {args.model}; {args.batches} batches x {bs} x {args.seq_len} tokens per run; "
          f"{args.rounds} alternating rounds; {torch.get_num_threads()} threads")
    for name in runs:
        print(f"  {name:14s} {tps[name]:8.1f} tokens/s  (runs: "
              + ", ".join(f"{t:.2f}s" for t in times[name]) + ")")
    print(f"capture / body          = {tps['capture'] / tps['body']:.3f}   (target >= 0.95)")
    print(f"capture-hooks / body    = {tps['capture-hooks'] / tps['body']:.3f}")
    print(f"capture / naive         = {tps['capture'] / tps['naive']:.3f}   (> 1: no logits)")

    if args.skip_memory:
        return
    small = 2 * bs
    res = []
    for n in (small, 4 * small):
        out = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--chunks", str(n),
             "--batch-size", str(bs), "--seq-len", str(args.seq_len),
             "--threads", str(args.threads)],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        res.append(json.loads(out))
    a, b = res
    print(f"peak RSS: {a['chunks']} chunks {a['peak_rss_mib']:.0f} MiB, "
          f"{b['chunks']} chunks {b['peak_rss_mib']:.0f} MiB; "
          f"ratio {b['peak_rss_mib'] / a['peak_rss_mib']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
