"""The main job (``lape run``): the whole pipeline, figures, executed notebooks, summary.

Orchestration only: every number comes from the library through the cached stages of
:mod:`lape_utils.job.stages`; this module sequences them, times them, draws the figures
and writes ``summary.md`` / ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from ..languages import LANGUAGE_ORDER, PAPER_LANGUAGES
from ..models import DEFAULT_MODEL
from ..steering import PAPER_GENERATION, SteerSpec
from .notebooks import execute_notebooks
from .stages import (
    cached_ppl_matrix,
    cached_steering,
    cached_sweep,
    detection_statistics,
    heldout_text,
    steering_table,
)

log = logging.getLogger(__name__)


@dataclass
class JobConfig:
    """Settings of the main job (``lape run``); defaults fit 2 CPU cores in minutes.

    Attributes:
        model: Model to analyse.
        dtype: Parameter dtype.
        corpus: Corpus source.
        languages: Languages to capture and identify.
        tokens_per_language: Detection tokens per language.
        seq_len: Tokens per detection chunk.
        replicates: Bootstrap replicates for stability.
        ppl_languages: Languages of the perplexity matrix (rows and columns).
        heldout_tokens: Held-out tokens per language for perplexity.
        heldout_seq_len: Tokens per held-out chunk.
        steer_source: Language of the steering prompts.
        steer_targets: Target languages of the steering summary.
        steer_prompts: Number of prompts per steering run.
        steer_max_new_tokens: Tokens generated per answer.
        sweep_strengths: Strengths of the sweep (first target only).
        notebooks: Execute the numbered notebooks and export them to HTML.
        batch_size: Chunks per forward pass.
        seed: Seed of sampling, bootstrap and random controls.
    """

    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    corpus: str = "builtin"
    languages: list[str] = field(default_factory=lambda: list(LANGUAGE_ORDER))
    tokens_per_language: int = 4088
    seq_len: int = 512
    replicates: int = 16
    ppl_languages: list[str] = field(default_factory=lambda: list(PAPER_LANGUAGES))
    heldout_tokens: int = 255
    heldout_seq_len: int = 256
    steer_source: str = "en"
    steer_targets: list[str] = field(default_factory=lambda: ["fr", "zh", "ru"])
    steer_prompts: int = 8
    steer_max_new_tokens: int = 24
    sweep_strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    notebooks: bool = True
    batch_size: int = 4
    seed: int = 0


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("stage %s ...", name)
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 1)
        log.info("stage %s done in %.1f s", name, self.seconds[name])


def run_main_job(out_dir: str | os.PathLike = "results", config: JobConfig | None = None) -> dict:
    """Runs the whole pipeline and writes figures, tables, notebooks and ``summary.md``.

    Args:
        out_dir: Results directory (``cache/`` inside it holds the reusable results).
        config: Settings; :class:`JobConfig` defaults otherwise.

    Returns:
        The summary as a dict (also written to ``summary.json``).
    """
    import matplotlib

    matplotlib.use("Agg")
    from .. import analysis, plots, published
    from ..config import LapeConfig
    from ..corpus import load_prompts
    from ..lape import identify, stability
    from ..models import load_model

    cfg = config or JobConfig()
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    timer = _Timer()
    summary: dict = {"config": asdict(cfg)}

    with timer.stage("load model"):
        model = load_model(cfg.model, dtype=cfg.dtype)
    summary["model"] = model.describe()

    with timer.stage("capture"):
        packed, stats = detection_statistics(
            model, cache, corpus=cfg.corpus, languages=cfg.languages,
            tokens_per_language=cfg.tokens_per_language, seq_len=cfg.seq_len,
            batch_size=cfg.batch_size, replicates=cfg.replicates, seed=cfg.seed,
        )
    summary["corpus"] = packed.table().reset_index().to_dict(orient="records")

    with timer.stage("identify"):
        lape_cfg = LapeConfig()
        selection = identify(stats.over_zero, stats.n, stats.languages, lape_cfg,
                             activation_sum=stats.activation_sum, provenance=stats.provenance)
        selection.save(out / "neurons.pt", overwrite=True)
        published.to_official(selection, out / "neurons.neuron.pth", overwrite=True)
        stab = None
        if stats.n_replicates:
            stab = stability(stats.boot_over_zero, stats.boot_n, stats.languages, lape_cfg, selection)
    counts = selection.counts()
    summary["neurons"] = {
        "total_distinct": selection.total_distinct(),
        "share_of_all": selection.total_distinct() / (model.n_layers * model.n_neurons),
        "per_language": {k: int(v) for k, v in counts.sum().items()},
        "regions": analysis.layer_region_shares(selection).to_dict(orient="index"),
    }
    if stab is not None:
        summary["stability_mean_jaccard"] = {k: float(v) for k, v in stab.mean_jaccard.items()}

    with timer.stage("figures (selection)"):
        plots.save_figure(plots.plot_layer_distribution(selection, config=lape_cfg),
                          figs / "layer_distribution.png", close=True)
        plots.save_figure(plots.plot_language_counts(selection, config=lape_cfg),
                          figs / "language_counts.png", close=True)
        plots.save_figure(plots.plot_overlap(selection, metric="jaccard", config=lape_cfg),
                          figs / "overlap_jaccard.png", close=True)
        plots.save_figure(plots.plot_entropy_distribution(analysis.entropy_table(stats, lape_cfg),
                                                          which="both"),
                          figs / "entropy_distribution.png", close=True)
        if stab is not None:
            plots.save_figure(plots.plot_stability(stab, kind="jaccard", config=lape_cfg),
                              figs / "stability.png", close=True)
        sets = published.published_counts()  # shipped: works offline
        plots.save_figure(published.plot_published_comparison(sets, selection,
                                                               ours_name=cfg.model),
                          figs / "published_comparison.png", close=True)
        summary["published_comparison"] = published.compare_with_published(
            selection, sets, ours_name=cfg.model
        ).reset_index().to_dict(orient="records")

    with timer.stage("perplexity matrix"):
        ppl_langs = [lang for lang in cfg.ppl_languages if lang in selection.languages]
        heldout = heldout_text(model, corpus=cfg.corpus, languages=ppl_langs,
                               tokens_per_language=cfg.heldout_tokens,
                               seq_len=cfg.heldout_seq_len, seed=cfg.seed)
        matrix = cached_ppl_matrix(model, selection, heldout, cache, stats=stats, seed=cfg.seed,
                                   batch_size=cfg.batch_size, languages=ppl_langs)
        matrix.to_csv(out / "ppl_matrix.csv", overwrite=True)
        plots.save_figure(plots.plot_ppl_comparison(matrix.tidy(), config=lape_cfg),
                          figs / "ppl_delta.png", close=True)
    summary["ppl_delta"] = matrix.delta_table().round(4).to_dict(orient="index")
    summary["ppl_summary"] = matrix.summary().round(4).reset_index().to_dict(orient="records")

    with timer.stage("steering"):
        prompts = load_prompts("builtin", language=cfg.steer_source)[: cfg.steer_prompts]
        generation = replace(PAPER_GENERATION, max_new_tokens=cfg.steer_max_new_tokens,
                             seed=cfg.seed)
        results = cached_steering(model, selection, stats, prompts, cfg.steer_targets, cache,
                                  source=cfg.steer_source, generation=generation)
        table = steering_table(results)
        table.to_csv(out / "steering_summary.csv", index=False)
        for target, result in results.items():
            result.to_jsonl(out / f"steering_{target}.jsonl", overwrite=True)
        sweep = cached_sweep(model, selection, stats, prompts,
                             SteerSpec(cfg.steer_targets[0], source=cfg.steer_source),
                             cfg.sweep_strengths, cache, generation=generation)
        sweep.to_csv(out / "steering_sweep.csv", index=False)
        plots.save_figure(plots.plot_steering_sweep(sweep), figs / "steering_sweep.png", close=True)
    summary["steering"] = table.round(4).to_dict(orient="records")
    summary["sweep"] = sweep.round(4).to_dict(orient="records")

    if cfg.notebooks:
        with timer.stage("notebooks"):
            summary["notebooks"] = execute_notebooks(
                out / "notebooks",
                parameters={
                    "model_name": cfg.model, "dtype": cfg.dtype, "languages": list(cfg.languages),
                    "tokens_per_language": cfg.tokens_per_language, "cache_dir": str(cache.resolve()),
                    "smoke": False,
                },
            )

    summary["timings_s"] = timer.seconds
    summary["total_s"] = round(sum(timer.seconds.values()), 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.md").write_text(render_summary(summary, matrix, table, counts))
    return summary


# ----------------------------------------------------------------------------- summary
def _md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([str(df.index.name or "")] + cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for idx, *row in df.itertuples(name=None):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def render_summary(summary: dict, matrix, steering: pd.DataFrame, counts: pd.DataFrame) -> str:
    """The ``summary.md`` of a main-job run."""
    m = summary["model"]
    n = summary["neurons"]
    parts = [
        f"# LAPE main job: {m['model']}",
        "",
        f"{m['n_layers']} layers x {m['n_neurons']} neurons ({m['family']}, {m['dtype']}); "
        f"weights {m['fingerprint']}.",
        "",
        "## Stage timings (seconds)",
        "",
        _md_table(pd.DataFrame({"seconds": summary["timings_s"]}).rename_axis("stage"), ".1f"),
        f"\nTotal: {summary['total_s']:.1f} s.",
        "",
        "## Corpus (detection split)",
        "",
        _md_table(pd.DataFrame(summary["corpus"]).set_index("language"), ".2f"),
        "",
        "## Language-specific neurons (LAPE, top_rate=0.01, filter_rate=0.95, bar=0.95)",
        "",
        f"{n['total_distinct']} distinct neurons = {100 * n['share_of_all']:.2f}% of all FFN "
        "neurons (the paper: about 1%).",
        "",
        _md_table(pd.DataFrame({"neurons": n["per_language"]}).rename_axis("language"), ".0f"),
        "",
        "Share of each language's neurons in the bottom 10% / middle / top 25% of layers:",
        "",
        _md_table(pd.DataFrame(n["regions"]).T.rename_axis("language"), ".2f"),
    ]
    if "stability_mean_jaccard" in summary:
        parts += ["", "Bootstrap stability (mean Jaccard of replicate selections to the full one):",
                  "", _md_table(pd.DataFrame({"mean_jaccard": summary["stability_mean_jaccard"]})
                                .rename_axis("language"), ".2f")]
    parts += [
        "",
        "## Perplexity change when a language's neurons are zeroed (ΔNLL, nats)",
        "",
        "Rows: neurons deactivated (LAPE set, or a random set of the same size per layer); "
        "columns: held-out language evaluated.",
        "",
        _md_table(matrix.delta_table(), ".3f"),
        "",
        _md_table(matrix.summary(), ".3f"),
        "",
        "## Steering (English questions, target neurons set to their mean activation)",
        "",
        _md_table(steering.set_index("target"), ".3f") if len(steering) else "(none)",
        "",
        "Figures are in `figures/`, executed notebooks in `notebooks/`.",
    ]
    return "\n".join(parts) + "\n"
