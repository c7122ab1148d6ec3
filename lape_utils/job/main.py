"""The main job (``lape run``): the whole pipeline, figures, executed notebooks, summary.

Orchestration only: every number comes from the library through the cached stages of
:mod:`lape_utils.job.stages`; this module sequences them with one :class:`JobConfig`,
times them, draws the figures and writes ``summary.md`` / ``summary.json`` (which record
every setting).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .. import analysis, plots, published
from ..corpus import load_corpus, load_prompts
from ..evaluate import nll
from ..intervene import Intervention
from ..lape import stability
from ..models import load_model
from ..steering import PAPER_GENERATION, SteerSpec
from .claims import check_claims
from .config import JobConfig
from .notebooks import execute_notebooks, notebooks_dir, run_seconds
from .report import render_summary
from .stages import (
    cached_ppl_matrix,
    cached_steering,
    cached_sweep,
    cached_threshold_effect,
    detection,
    detection_statistics,
    heldout_text,
    steering_table,
)

log = logging.getLogger(__name__)

__all__ = ["JobConfig", "run_main_job"]


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


def _thresholds(selection) -> dict:
    """The thresholds identification reached, and the entropy of the last neuron selected."""
    ident = selection.provenance["identification"]
    entropy = selection.selected_entropy
    return {
        "tau": float(ident["filter_threshold"]),
        "bar": float(ident["activation_bar"]),
        "n_candidates": int(ident["n_candidates"]),
        "memberships": int(selection.counts().sum().sum()),
        "cutoff": float(entropy.max()) if entropy is not None and entropy.numel() else None,
    }


def _example_zero(model, selection) -> dict | None:
    """Notebook 03's first step: one held-out paragraph's NLL with its language zeroed."""
    lang = "fr" if "fr" in selection.languages else selection.languages[0]
    text = load_corpus("builtin", [lang], split="heldout").documents[lang][0]
    ids = model.tokenizer(text, return_tensors="pt", truncation=True, max_length=64).input_ids
    before = nll(model, ids, [], progress=False)[0]
    after = nll(model, ids, [Intervention.zero(selection, lang)], progress=False)[0]
    return {"language": lang, "before": before, "after": after,
            "neurons": int(selection.flat(lang).numel())}


def _specificity(stats, selection) -> dict:
    """Per language: neurons active above the bar, neurons selected, and the share selected."""
    bar = selection.provenance["identification"]["activation_bar"]
    active = (stats.probability() > bar).sum(dim=(0, 1))
    chosen = selection.counts().sum()
    return {lang: {"active": int(active[k]), "selected": int(chosen[lang]),
                   "share": float(chosen[lang] / active[k]) if active[k] else None}
            for k, lang in enumerate(stats.languages)}


def _overlaps(selection) -> list[dict]:
    """Every pair of languages and the neurons they share, most first."""
    shared = analysis.overlap(selection)[0]
    langs = list(shared.index)
    pairs = [(int(shared.iloc[i, j]), langs[i], langs[j])
             for i in range(len(langs)) for j in range(i + 1, len(langs))]
    pairs.sort(key=lambda t: -t[0])
    return [{"pair": f"{a}-{b}", "shared": c} for c, a, b in pairs]


def notebook_parameters(cfg: JobConfig, cache_dir: Path) -> dict:
    """The ``parameters`` of the numbered notebooks for a job: the same settings, its cache."""
    settings = dataclasses.asdict(cfg)
    named = {"model_name": settings.pop("model"), "languages": list(settings.pop("languages")),
             "tokens_per_language": settings.pop("tokens_per_language")}
    settings.pop("notebooks")
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    return named | {"options": options, "cache_dir": str(cache_dir.resolve()), "smoke": False}


def run_main_job(out_dir: str | os.PathLike = "results", config: JobConfig | None = None) -> dict:
    """Runs the whole pipeline and writes figures, tables, notebooks and ``summary.md``.

    Stages: load, capture (with budget snapshots and bootstrap replicates), identify
    (stability, convergence), the perplexity matrix with the random and activity-matched
    controls and paired-bootstrap intervals, threshold → effect, steering with both
    controls and Wilson intervals, the strength sweep, the notebooks.

    Args:
        out_dir: Results directory (``cache/`` inside it holds the reusable results).
        config: Settings; :class:`JobConfig` defaults otherwise.

    Returns:
        The summary as a dict (also written to ``summary.json``).
    """
    import matplotlib

    matplotlib.use("Agg")
    cfg = config or JobConfig()
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    timer = _Timer()
    summary: dict = {"config": dataclasses.asdict(cfg)}
    lape_cfg = cfg.lape_config()

    def figure(obj, name: str) -> None:
        plots.save_figure(obj, figs / name, close=True)

    with timer.stage("load model"):
        model = load_model(cfg.model, dtype=cfg.dtype, device_map=cfg.device_map,
                           remote=cfg.remote)
    summary["model"] = model.describe()

    with timer.stage("capture"):
        packed, stats = detection_statistics(model, cfg, cache)
    summary["corpus"] = packed.table().reset_index().to_dict(orient="records")

    with timer.stage("identify"):
        _, _, selection = detection(model, cfg, cache)  # identified once, saved in the cache
        selection.save(out / "neurons.pt", overwrite=True)
        published.to_official(selection, out / "neurons.neuron.pth", overwrite=True)
        stab = None
        if stats.n_replicates:
            stab = stability(stats.boot_over_zero, stats.boot_n, stats.languages, lape_cfg,
                             selection)
        convergence = analysis.convergence(stats, lape_cfg) if stats.n_budgets else None
    counts = selection.counts()
    summary["neurons"] = {
        "total_distinct": selection.total_distinct(),
        "share_of_all": selection.total_distinct() / (model.n_layers * model.n_neurons),
        "per_language": {k: int(v) for k, v in counts.sum().items()},
        "regions": analysis.layer_region_shares(selection).to_dict(orient="index"),
    }
    summary["thresholds"] = _thresholds(selection)
    lang = "zh" if "zh" in selection.languages and selection.flat("zh").numel() else None
    if lang:  # the neuron notebook 02 looks at
        layer, neuron = analysis.probability_profiles(stats, selection, lang, k=1).index[0]
        summary["most_specific"] = {"language": lang, "layer": int(layer), "neuron": int(neuron)}
    summary["specificity"] = _specificity(stats, selection)
    summary["overlaps"] = _overlaps(selection)
    if stab is not None:
        summary["stability_mean_jaccard"] = {k: float(v) for k, v in stab.mean_jaccard.items()}
        summary["stable_fraction"] = {
            k: float(v) for k, v in
            analysis.stability_table(stab)["stable_fraction"].dropna().items()
        }
    if convergence is not None:
        convergence.to_csv(out / "convergence.csv", index=False)
        summary["convergence"] = convergence.round(4).to_dict(orient="records")
        summary["converged"] = {
            k: bool(v) for k, v in analysis.convergence_verdict(convergence).items()
        }

    with timer.stage("figures (selection)"):
        figure(plots.plot_layer_distribution(selection, config=lape_cfg), "layer_distribution.png")
        figure(plots.plot_language_counts(selection, config=lape_cfg), "language_counts.png")
        figure(plots.plot_overlap(selection, metric="jaccard", config=lape_cfg),
               "overlap_jaccard.png")
        figure(plots.plot_entropy_distribution(analysis.entropy_table(stats, lape_cfg),
                                               which="both"), "entropy_distribution.png")
        if stab is not None:
            figure(plots.plot_stability(stab, kind="jaccard", config=lape_cfg), "stability.png")
        if convergence is not None:
            figure(plots.plot_convergence(convergence, config=lape_cfg), "convergence.png")
        sets = published.published_counts()  # shipped: works offline
        figure(published.plot_published_comparison(sets, selection, ours_name=cfg.model),
               "published_comparison.png")
        summary["published_comparison"] = published.compare_with_published(
            selection, sets, ours_name=cfg.model
        ).reset_index().to_dict(orient="records")

    matrix = None
    score_batch = cfg.score_batch_size()
    ppl_langs = [lang for lang in cfg.ppl_languages if lang in selection.languages]
    if ppl_langs:
        with timer.stage("perplexity matrix"):
            heldout = heldout_text(model, cfg, ppl_langs, cfg.heldout_tokens)
            matrix = cached_ppl_matrix(model, selection, heldout, cache, stats=stats,
                                       seed=cfg.seed, batch_size=score_batch,
                                       languages=ppl_langs)
            matrix.to_csv(out / "ppl_matrix.csv", overwrite=True)
            figure(plots.plot_ppl_comparison(matrix.tidy(), config=lape_cfg), "ppl_delta.png")
        summary["heldout"] = heldout.table().reset_index().to_dict(orient="records")
        summary["ppl_delta"] = matrix.delta_table().round(4).to_dict(orient="index")
        summary["ppl_summary"] = matrix.summary().round(4).reset_index().to_dict(
            orient="records")

        summary["example_zero"] = _example_zero(model, selection)

    if cfg.threshold_rates and cfg.threshold_languages:
        with timer.stage("threshold effect"):
            small = heldout_text(model, cfg, cfg.threshold_languages, cfg.threshold_tokens)
            effect = cached_threshold_effect(model, stats, small, cfg.threshold_rates, cache,
                                             config=lape_cfg, batch_size=score_batch)
            effect.to_csv(out / "threshold_effect.csv", index=False)
            figure(plots.plot_threshold_effect(effect), "threshold_effect.png")
        summary["threshold_effect"] = effect.round(4).to_dict(orient="records")

    table = pd.DataFrame()
    if cfg.steer_targets:
        with timer.stage("steering"):
            prompts = load_prompts("builtin", language=cfg.steer_source)[: cfg.steer_prompts]
            generation = dataclasses.replace(
                PAPER_GENERATION, max_new_tokens=cfg.steer_max_new_tokens, seed=cfg.seed
            )
            results = cached_steering(model, selection, stats, prompts, cfg.steer_targets,
                                      cache, source=cfg.steer_source, generation=generation,
                                      chat=cfg.chat)
            table = steering_table(results)
            table.to_csv(out / "steering_summary.csv", index=False)
            for target, result in results.items():
                result.to_jsonl(out / f"steering_{target}.jsonl", overwrite=True)
            if cfg.sweep_strengths:
                sweep = cached_sweep(model, selection, stats, prompts,
                                     SteerSpec(cfg.steer_targets[0], source=cfg.steer_source,
                                               chat=cfg.chat),
                                     cfg.sweep_strengths, cache, generation=generation)
                sweep.to_csv(out / "steering_sweep.csv", index=False)
                figure(plots.plot_steering_sweep(sweep), "steering_sweep.png")
                summary["sweep"] = sweep.round(4).to_dict(orient="records")
        summary["steering"] = table.round(4).to_dict(orient="records")
        first = results[cfg.steer_targets[0]].rows.iloc[0]  # the prompt notebook 04 starts with
        summary["example_steer"] = {
            "target": cfg.steer_targets[0], "mass_before": float(first["target_mass_unsteered"]),
            "mass_after": float(first["target_mass_steered"]),
            "top1_changed": bool(first["top1_changed"]),
        }

    if cfg.notebooks:
        with timer.stage("notebooks"):
            html = execute_notebooks(out / "notebooks", parameters=notebook_parameters(cfg, cache))
        summary["notebooks"] = {  # relative paths: a summary can be copied with its folder
            name: {"html": str(Path(path).relative_to(out)),
                   "seconds": run_seconds(Path(path).with_suffix(".ipynb"))}
            for name, path in html.items()
        }

    if cfg == JobConfig(notebooks=cfg.notebooks):  # the run the notebooks' text describes
        summary["claims"] = check_claims(summary, notebooks_dir())
    summary["timings_s"] = timer.seconds
    summary["total_s"] = round(sum(timer.seconds.values()), 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.md").write_text(render_summary(summary, matrix, table))
    return summary
