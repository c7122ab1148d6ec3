"""Threshold explorer: wall time of one slider change (re-identification + redraw).

Run:  python benchmarks/bench_widgets.py [--threads 2] [--omp-wait-policy inherit passive]
      [--repeats 9]

For each size (synthetic counts, as in ``bench_identify.py``) it builds the explorer of
``lape_utils.widgets``, then times ``slider.value = x`` (the whole synchronous callback: the
identification, the counts table and the redraw of the live figure into PNG bytes),
alternating each slider between two values, median of ``--repeats`` changes per slider
after one warm-up. Side by side, in the same run, the naive way a notebook would redraw:
identification plus a fresh figure of the same three panels made by ``lape_utils.plots``
(with colour bars and numbers in the cells) rendered to PNG (what ``clear_output`` +
``display(fig)`` costs in the kernel).

Budgets of the issue, per slider change: 0.2 s at the embedded model's size
(18 x 2048 x 10), 0.5 s at LLaMA-2-7B's (32 x 11008 x 7), on 2 torch threads.

Each (threads, OpenMP wait policy) setting runs in a fresh process. The wait policy matters
on a busy machine: with the default (active spinning) and another process holding a core,
torch's 2 OpenMP threads wait for each other and identification takes several times
longer; ``OMP_WAIT_POLICY=PASSIVE`` avoids that. The 1-minute load average is printed.
The time the browser needs to receive and paint the PNG (~20-60 KB over the local
websocket) is not included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

log = logging.getLogger("bench_widgets")

LANGUAGES = ["en", "zh", "fr", "es", "vi", "id", "ja", "de", "ru", "ko"]
SIZES = [
    ("embedded (18x2048x10)", (18, 2048, 10), 0.2),
    ("LLaMA-2-7B (32x11008x7)", (32, 11008, 7), 0.5),
]
# each slider alternates between two values (the paper's default and a step away)
MOVES = {
    "top_rate": (0.01, 0.0105),
    "filter_rate": (0.95, 0.945),
    "activation_bar_ratio": (0.95, 0.945),
}


def synthetic_stats(shape: tuple[int, int, int], seed: int = 0):
    """Per-neuron base rate times a skewed per-language profile, ~10^6 tokens per language."""
    import torch

    from lape_utils.stats import ActivationStats

    n_layers, n_neurons, n_lang = shape
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(900_000, 1_100_000, (n_lang,), generator=g)
    base = torch.rand(n_layers, n_neurons, 1, generator=g)
    profile = torch.rand(n_layers, n_neurons, n_lang, generator=g) ** 4
    return ActivationStats(LANGUAGES[:n_lang], n, (base * profile * n).long())


def time_panel(stats, repeats: int) -> dict:
    """Seconds per slider change of the explorer, per slider (first change = warm-up)."""
    from lape_utils.widgets import threshold_explorer

    panel = threshold_explorer(stats)
    out: dict = {}
    for name, (a, b) in MOVES.items():
        slider = panel.sliders[name]
        times = []
        for i in range(repeats + 1):
            t = time.perf_counter()
            slider.value = b if i % 2 == 0 else a
            times.append(time.perf_counter() - t)
            msg = panel.message.value
            assert "lape-ok" in msg or "lape-warning" in msg, msg
        slider.value = a
        out[name] = times[1:]
    out["split"] = panel.timings
    return out


def naive_redraw(stats, top_rate: float) -> float:
    """Identification plus a new three-panel figure from lape_utils.plots, rendered to PNG."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lape_utils import analysis, plots
    from lape_utils.lape import LapeConfig, identify

    t = time.perf_counter()
    sel = identify(stats.over_zero, stats.n, stats.languages, LapeConfig(top_rate=top_rate))
    fig = Figure(figsize=(12, 4.5), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 3)
    plots.plot_layer_distribution(sel, ax=ax[0], vmin=0, vmax=50)
    plots.plot_overlap(analysis.overlap(sel)[0], ax=ax[1], vmin=0, vmax=20)
    plots.plot_language_counts(sel, ax=ax[2])
    fig.savefig(io.BytesIO(), format="png")
    return time.perf_counter() - t


def worker(threads: int, repeats: int) -> list[dict]:
    """All sizes for one setting, in this process."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    torch.set_num_threads(threads)
    rows = []
    for label, shape, budget in SIZES:
        stats = synthetic_stats(shape)
        times = time_panel(stats, repeats)
        split = times.pop("split")
        naive = [naive_redraw(stats, MOVES["top_rate"][i % 2]) for i in range(4)][1:]
        rows.append({
            "size": label,
            "budget": budget,
            "per_slider": {k: statistics.median(v) for k, v in times.items()},
            "all": statistics.median([x for v in times.values() for x in v]),
            "identify": split["identify"],
            "redraw": split["redraw"],
            "naive": statistics.median(naive),
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="torch threads")
    parser.add_argument(
        "--omp-wait-policy", nargs="+", default=["inherit", "passive"],
        choices=["inherit", "passive", "active"],
        help="OMP_WAIT_POLICY of each run ('inherit': as in this environment)",
    )
    parser.add_argument("--repeats", type=int, default=9, help="slider changes per slider")
    parser.add_argument("--worker", nargs=2, metavar=("THREADS", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        threads, repeats = (int(x) for x in args.worker)
        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(worker(threads, repeats)))  # the parent reads this line
        return

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    inherited = os.environ.get("OMP_WAIT_POLICY", "unset")
    log.info(
        "%d cores, 1-min load average %.2f%s; OMP_WAIT_POLICY here: %s; median of %d "
        "changes per slider after one warm-up, each setting in a fresh process",
        os.cpu_count() or 0, load, " (busy machine)" if load > 1.0 else "", inherited,
        args.repeats,
    )
    results = []
    for policy in args.omp_wait_policy:
        env = dict(os.environ)
        if policy != "inherit":
            env["OMP_WAIT_POLICY"] = policy.upper()
        name = inherited if policy == "inherit" else policy.upper()
        for threads in args.threads:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(threads), str(args.repeats)],
                env=env, capture_output=True, text=True, check=False,
            )
            if out.returncode:
                raise SystemExit(f"worker failed ({threads} threads, {name}):\n{out.stderr}")
            for row in json.loads(out.stdout.strip().splitlines()[-1]):
                results.append({"threads": threads, "policy": name, **row})

    header = (
        f"{'size':24} {'thr':>3} {'omp wait':>8} {'top_rate':>8} {'filter':>7} {'bar':>7} "
        f"{'all':>7} {'ident.':>7} {'redraw':>7} {'budget':>7} {'ok':>3} {'naive':>7} "
        f"{'naive/all':>9}"
    )
    log.info(header)
    log.info("-" * len(header))
    ms = lambda s: f"{1000 * s:.0f}ms"  # noqa: E731
    for label, _, _ in SIZES:
        for r in (r for r in results if r["size"] == label):
            p = r["per_slider"]
            log.info(
                f"{label:24} {r['threads']:>3} {r['policy']:>8} {ms(p['top_rate']):>8} "
                f"{ms(p['filter_rate']):>7} {ms(p['activation_bar_ratio']):>7} "
                f"{ms(r['all']):>7} {ms(r['identify']):>7} {ms(r['redraw']):>7} "
                f"{ms(r['budget']):>7} {'yes' if r['all'] <= r['budget'] else 'NO':>3} "
                f"{ms(r['naive']):>7} {r['naive'] / r['all']:>8.1f}x"
            )
    log.info(
        "all = median over every slider change (the budgeted number); ident./redraw = split "
        "of the last change; naive = identify + a new lape_utils.plots figure + PNG"
    )


if __name__ == "__main__":
    main()
