"""Wall time of ``identify`` at three model sizes, next to its budget and the reference.

Run:  python benchmarks/bench_identify.py [--threads 2] [--repeats 5]

For each size it times (median and minimum of ``--repeats`` runs after one warm-up; the
minimum is the better estimate on a machine shared with other work):
* ``identify`` with the paper's config (one quantile, since filter_rate == bar ratio),
* ``identify`` with filter_rate != activation_bar_ratio (two quantiles: the slider case),
* ``identify(method="probability")``,
* a transcription of the reference identify.py (full-tensor entropy, ``kthvalue`` on all
  values, ``topk``, Python loop over the selected neurons) as the side-by-side baseline.

Budgets (threshold sliders must feel live): 0.1 s up to LLaMA-2-7B size, 1 s at
LLaMA-2-70B size, on 2 threads. Counts are synthetic (a per-neuron base rate times a skewed
per-language profile, 10^6 tokens per language).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lape_utils.lape import LapeConfig, identify
from lape_utils.reference import reference_identify

SIZES = [
    ("embedded (18x2048x10)", (18, 2048, 10), 0.1),
    ("LLaMA-2-7B (32x11008x7)", (32, 11008, 7), 0.1),
    ("LLaMA-2-70B (80x28672x7)", (80, 28672, 7), 1.0),
]


def synthetic_counts(
    shape: tuple[int, int, int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    n_layers, n_neurons, n_lang = shape
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(900_000, 1_100_000, (n_lang,), generator=g)
    base = torch.rand(n_layers, n_neurons, 1, generator=g)
    profile = torch.rand(n_layers, n_neurons, n_lang, generator=g) ** 4
    return (base * profile * n).long(), n


def timings(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, min) wall time over ``repeats`` runs after one warm-up run."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}, "
        f"median and min of {args.repeats} runs after warm-up; ok = median within budget"
    )
    header = (
        f"{'size':26s} {'case':34s} {'median':>9s} {'min':>9s} {'budget':>8s} {'ok':>3s} "
        f"{'ref/this':>8s}"
    )
    print(header)
    print("-" * len(header))
    paper = LapeConfig()
    slider = LapeConfig(activation_bar_ratio=0.9)
    for label, shape, budget in SIZES:
        over_zero, n = synthetic_counts(shape)
        langs = [f"l{k}" for k in range(shape[2])]
        t_ref, m_ref = timings(lambda: reference_identify(over_zero, n, 0.01, 0.95, 0.95), max(1, args.repeats // 2))
        cases = [
            ("identify (paper config)", lambda: identify(over_zero, n, langs, paper)),
            ("identify (bar 0.9 != filter 0.95)", lambda: identify(over_zero, n, langs, slider)),
            (
                "identify method=probability",
                lambda: identify(over_zero, n, langs, paper, method="probability"),
            ),
        ]
        for case, fn in cases:
            t, m = timings(fn, args.repeats)
            ok = "yes" if t <= budget else "NO"
            print(
                f"{label:26s} {case:34s} {t * 1000:7.1f}ms {m * 1000:7.1f}ms "
                f"{budget * 1000:6.0f}ms {ok:>3s} {t_ref / t:7.1f}x"
            )
        ref_case = "reference transcription"
        print(
            f"{label:26s} {ref_case:34s} {t_ref * 1000:7.1f}ms {m_ref * 1000:7.1f}ms "
            f"{'':>8s} {'':>3s} {1.0:7.1f}x"
        )


if __name__ == "__main__":
    main()
