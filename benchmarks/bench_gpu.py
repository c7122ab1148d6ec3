r"""Capture and scoring speed and GPU memory on random-weight models of real shapes.

No download: each model is built from its config directly on the device, in bf16, with
random weights (speed and memory do not depend on the values), and wrapped as a
``LapeModel`` by :func:`lape_utils.models.wrap_model` (self-check included). Inputs are
random token ids; the wrapper's tokenizer is the byte tokenizer of :mod:`lape_utils.tiny`.

Shapes: ``7b`` (LLaMA-2-7B: 32 layers, hidden 4096, 11008 MLP neurons, vocabulary 32000),
``1b`` (TinyLlama-1.1B: 22 layers, hidden 2048, 5632 neurons, 4 KV heads) and ``tiny`` (the
test model: 2 layers, hidden 64, 128 neurons), for a CPU smoke run.

On the same batches, alternating within each round, it times:

* ``body``: the bare transformer body (``model.model``: no ``lm_head``, no KV cache), the
  floor any capture has to pay;
* ``body+cache``: the same with the KV cache transformers builds by default, which the
  forward of capture also builds (it passes no ``use_cache``);
* ``capture``: :func:`lape_utils.capture.count_batch` through nnsight (counts reduced in the
  trace, stop after the last layer), with 16 bootstrap replicates as ``capture`` defaults;
* ``capture-hooks``: the same through plain forward hooks;
* ``score``: :func:`lape_utils.evaluate.nll`, the scoring forward of the perplexity matrix
  (full model with logits, next-token NLL row by row), for its ``none`` row;
* ``score-zero``: the same with 1% of every layer's neurons zeroed through nnsight, as in a
  deactivation row of the matrix.

It prints tokens/s and the peak GPU memory above the weights (``max_memory_allocated``
after a reset) of each, and their ratios to ``body``. With the defaults (4 x 2048 tokens
per batch, 2 batches, 3 rounds, shapes 1b and 7b) it takes about a minute or two on one
large GPU, most of it building the models (an estimate from the FLOPs involved: this script
has only been run on the CPU so far).

Usage::

    python benchmarks/bench_gpu.py                      # CUDA: shapes 1b and 7b
    python benchmarks/bench_gpu.py --shape 7b --batch-size 8 --json bench_gpu.json
    python benchmarks/bench_gpu.py --device cpu --shape tiny --seq-len 64 --batches 1 \\
        --rounds 1                                      # CPU smoke run (seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import torch

SHAPES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 260},
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
           "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000},
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
}
REPLICATES = 16
ZERO_FRACTION = 0.01


def build(shape: str, device: torch.device, dtype: torch.dtype, seed: int):
    """A random-weight LLaMA of ``shape`` built on ``device`` (no CPU copy), as a LapeModel."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lape_utils.models import wrap_model
    from lape_utils.tiny import byte_tokenizer

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return wrap_model(hf, byte_tokenizer(), name=f"random-llama-{shape}",
                      fingerprint=f"random:{shape}:seed={seed}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_shape(shape: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    from lape_utils.capture import bootstrap_weights, count_batch
    from lape_utils.evaluate import nll
    from lape_utils.intervene import Intervention

    started = time.perf_counter()
    model = build(shape, device, dtype, args.seed)
    _sync(device)
    build_s = time.perf_counter() - started
    weights_gib = (torch.cuda.memory_allocated(device) / 2**30) if device.type == "cuda" else None
    bs, seq, n_batches = args.batch_size, args.seq_len, args.batches
    g = torch.Generator().manual_seed(args.seed)
    vocab = model.hf.config.vocab_size
    chunks = torch.randint(4, vocab, (n_batches * bs, seq), generator=g)
    chunks[:, 0] = 1  # BOS, as packed chunks start
    batches = [chunks[i * bs : (i + 1) * bs] for i in range(n_batches)]
    count_mask = torch.ones(bs, seq, dtype=torch.bool)
    count_mask[:, 0] = False
    weights = bootstrap_weights(0, "bench", list(range(bs)), REPLICATES)
    k = max(1, int(model.n_neurons * ZERO_FRACTION))
    zero = Intervention(
        {layer: torch.randperm(model.n_neurons, generator=g)[:k] for layer in range(model.n_layers)},
        op="zero", label=f"zero {ZERO_FRACTION:.0%} per layer",
    )
    body = model.hf.model

    def run_body(cache: bool):
        def run():
            for ids in batches:
                ids = ids.to(device)
                body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=cache)
        return run

    def run_capture(backend: str):
        def run():
            for ids in batches:
                count_batch(model, ids, None, count_mask, weights, backend=backend)
        return run

    def run_score(interventions):
        def run():
            nll(model, chunks, interventions, batch_size=bs, progress=False)
        return run

    runs = {
        "body": run_body(False),
        "body+cache": run_body(True),
        "capture": run_capture("nnsight"),
        "capture-hooks": run_capture("hooks"),
        "score": run_score(()),
        "score-zero": run_score([zero]),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = {}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up: kernels, allocator, nnsight's compiled blocks
            fn()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                _sync(device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t)
                if device.type == "cuda":
                    extra = (torch.cuda.max_memory_allocated(device) - base) / 2**30
                    peaks[name] = max(peaks.get(name, 0.0), extra)
    tokens = n_batches * bs * seq
    result = {
        "shape": shape,
        "config": SHAPES[shape],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "batch_size": bs,
        "seq_len": seq,
        "batches": n_batches,
        "rounds": args.rounds,
        "build_seconds": round(build_s, 2),
        "weights_gib": weights_gib,
        "runs": {
            name: {
                "tokens_per_s": tokens / statistics.median(ts),
                "seconds": ts,
                "peak_gib_above_weights": peaks.get(name),
            }
            for name, ts in times.items()
        },
    }
    return result


def report(r: dict) -> None:
    runs = r["runs"]
    floor = runs["body"]
    weights = f", weights {r['weights_gib']:.1f} GiB" if r["weights_gib"] is not None else ""
    print(f"\nshape {r['shape']} ({r['config']['num_hidden_layers']} layers x "
          f"{r['config']['intermediate_size']} neurons) on {r['device_name']}, {r['dtype']}; "
          f"{r['batches']} batches x {r['batch_size']} x {r['seq_len']} tokens per run; "
          f"{r['rounds']} alternating rounds; built in {r['build_seconds']:.1f} s{weights}")
    print(f"  {'run':14s} {'tokens/s':>10s} {'/ body':>7s} {'peak GiB':>9s} {'/ body':>7s}")
    for name, v in runs.items():
        speed = v["tokens_per_s"] / floor["tokens_per_s"]
        if v["peak_gib_above_weights"] is None:
            mem = f"{'-':>9s} {'-':>7s}"
        else:
            ratio = v["peak_gib_above_weights"] / max(floor["peak_gib_above_weights"], 1e-9)
            mem = f"{v['peak_gib_above_weights']:9.2f} {ratio:7.2f}"
        print(f"  {name:14s} {v['tokens_per_s']:10.0f} {speed:7.3f} {mem}")
    print(f"  capture / body = {runs['capture']['tokens_per_s'] / floor['tokens_per_s']:.3f} "
          f"(target >= 0.95); score / body = "
          f"{runs['score']['tokens_per_s'] / floor['tokens_per_s']:.3f} (logits and NLL cost)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cuda', 'cpu'...")
    p.add_argument("--shape", default=None,
                   help="comma-separated shapes among tiny, 1b, 7b (default: 1b,7b on CUDA, "
                        "tiny on CPU)")
    p.add_argument("--dtype", default=None, help="bf16 on CUDA, fp32 on CPU by default")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batches", type=int, default=2, help="batches per timed run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)

    from lape_utils.models import parse_dtype

    if args.device == "auto":
        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device here; nothing measured. For a CPU smoke run: "
                  "python benchmarks/bench_gpu.py --device cpu --shape tiny --seq-len 64 "
                  "--batches 1 --rounds 1")
            return 0
        args.device = "cuda"
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = (args.shape or ("tiny" if device.type == "cpu" else "1b,7b")).split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; use {', '.join(SHAPES)}")
    dtype = parse_dtype(args.dtype or ("bf16" if device.type == "cuda" else "fp32"))
    results = []
    for shape in shapes:
        results.append(bench_shape(shape, args, device, dtype))
        report(results[-1])
        gc.collect()  # the model of this shape is gone with bench_shape's frame
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "torch": torch.__version__, "results": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
