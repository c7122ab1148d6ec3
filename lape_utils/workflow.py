"""The workbook's stages, cached, and the main job that runs them all.

Notebooks and the ``lape run`` command call the same functions, so a notebook executed
after the main job (or a second notebook after the first) reuses what is cached instead of
computing it again:

* :func:`detection_statistics`: pack the corpus and capture statistics (cached by
  :func:`lape_utils.capture.capture` with its provenance sidecar);
* :func:`cached_ppl_matrix`: the perplexity-change matrix with its random control;
* :func:`cached_steering`: steering runs towards several target languages;
* :func:`run_main_job`: everything above plus figures, executed notebooks and ``summary.md``.

Derived results are stored under a name that contains a hash of everything they depend
on, so a changed input never reuses (or overwrites) an old result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .languages import LANGUAGE_ORDER, PAPER_LANGUAGES
from .models import DEFAULT_MODEL, LapeModel

log = logging.getLogger(__name__)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def selection_digest(selection) -> str:
    """A short hash of a neuron selection's contents (languages and indices)."""
    return _digest({lang: [t.tolist() for t in selection.indices[lang]] for lang in selection.languages})


# ----------------------------------------------------------------------------- stages
def detection_statistics(
    model: LapeModel,
    cache_dir: str | os.PathLike,
    *,
    corpus: str = "builtin",
    languages: Sequence[str] | str | None = None,
    tokens_per_language: int | None = None,
    seq_len: int = 512,
    batch_size: int = 4,
    replicates: int = 16,
    seed: int = 0,
    take_all: bool = False,
):
    """Packs the detection corpus and captures (or loads) its activation statistics.

    Returns:
        ``(packed, stats)``; the statistics live in ``cache_dir/stats``.
    """
    from .capture import capture
    from .corpus import load_corpus, pack

    text = load_corpus(corpus, languages, split="detect", tokenizer=model.tokenizer,
                       tokens_per_language=tokens_per_language, seed=seed, take_all=take_all)
    packed = pack(text, model.tokenizer, seq_len=seq_len, tokens_per_language=tokens_per_language,
                  seed=seed, take_all=take_all)
    stats = capture(model, packed, Path(cache_dir) / "stats", batch_size=batch_size,
                    replicates=replicates, seed=seed)
    return packed, stats


def heldout_text(
    model: LapeModel,
    *,
    corpus: str = "builtin",
    languages: Sequence[str] | str | None = None,
    tokens_per_language: int | None = None,
    seq_len: int = 256,
    seed: int = 0,
):
    """The packed held-out split used for perplexity."""
    from .corpus import load_corpus, pack

    text = load_corpus(corpus, languages, split="heldout", tokenizer=model.tokenizer,
                       tokens_per_language=tokens_per_language, seed=seed)
    return pack(text, model.tokenizer, seq_len=seq_len, tokens_per_language=tokens_per_language,
                seed=seed)


def cached_ppl_matrix(
    model: LapeModel,
    selection,
    heldout,
    cache_dir: str | os.PathLike,
    *,
    random_control: bool = True,
    seed: int = 0,
    batch_size: int = 4,
    languages: Sequence[str] | None = None,
):
    """:func:`lape_utils.evaluate.perplexity_matrix`, cached under ``cache_dir/ppl``."""
    from .evaluate import PplMatrix, perplexity_matrix

    key = _digest({
        "model": model.fingerprint, "dtype": str(model.dtype), "neurons": selection_digest(selection),
        "heldout": heldout.fingerprint, "random": random_control, "seed": seed,
        "rows": list(languages or selection.languages),
    })
    path = Path(cache_dir) / "ppl" / f"ppl_matrix_{key}.csv"
    if path.exists():
        log.info("perplexity matrix found in %s", path)
        return PplMatrix.from_csv(path)
    matrix = perplexity_matrix(model, selection, heldout, random_control=random_control, seed=seed,
                               batch_size=batch_size, languages=languages)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix.to_csv(path)
    return matrix


def cached_steering(
    model: LapeModel,
    selection,
    stats,
    prompts: Sequence[str],
    targets: Sequence[str],
    cache_dir: str | os.PathLike,
    *,
    source: str | None = "en",
    mode: str = "set",
    strength: float = 1.0,
    max_new_tokens: int = 32,
    random_control: bool = True,
    seed: int = 0,
    batch_size: int = 8,
) -> dict:
    """:func:`lape_utils.steer.steer` towards each target, cached as JSONL per target.

    Returns:
        ``{target: SteerResult}``.
    """
    from .steer import SteerResult, steer

    out = {}
    for target in targets:
        key = _digest({
            "model": model.fingerprint, "dtype": str(model.dtype),
            "neurons": selection_digest(selection), "prompts": list(prompts), "target": target,
            "source": source, "mode": mode, "strength": strength, "max_new_tokens": max_new_tokens,
            "random": random_control, "seed": seed,
        })
        path = Path(cache_dir) / "steering" / f"steer_{target}_{key}.jsonl"
        if path.exists():
            out[target] = SteerResult.from_jsonl(path)
            continue
        result = steer(model, selection, stats, list(prompts), target, source=source, mode=mode,
                       strength=strength, max_new_tokens=max_new_tokens,
                       random_control=random_control, seed=seed, batch_size=batch_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.to_jsonl(path)
        out[target] = result
    return out


def cached_sweep(
    model: LapeModel,
    selection,
    stats,
    prompts: Sequence[str],
    target: str,
    cache_dir: str | os.PathLike,
    *,
    source: str | None = "en",
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    mode: str = "set",
    max_new_tokens: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`lape_utils.steer.strength_sweep`, cached as CSV under ``cache_dir/steering``."""
    from .steer import strength_sweep

    key = _digest({
        "model": model.fingerprint, "dtype": str(model.dtype), "neurons": selection_digest(selection),
        "prompts": list(prompts), "target": target, "source": source, "mode": mode,
        "strengths": [float(x) for x in strengths], "max_new_tokens": max_new_tokens, "seed": seed,
    })
    path = Path(cache_dir) / "steering" / f"sweep_{target}_{key}.csv"
    if path.exists():
        return pd.read_csv(path)
    sweep = strength_sweep(model, selection, stats, list(prompts), target, source, list(strengths),
                           mode, max_new_tokens=max_new_tokens, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep.to_csv(path, index=False)
    return sweep


def steering_table(results: dict) -> pd.DataFrame:
    """One row per (target, neuron set): target and source rates and costs."""
    frames = []
    for target, result in results.items():
        s = result.summary().reset_index()
        s.insert(0, "target", target)
        frames.append(s)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- main job
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
    from . import analysis, plots
    from .corpus import load_prompts
    from .lape import LapeConfig, identify, stability
    from .models import load_model

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
        selection.to_official(out / "neurons.neuron.pth", overwrite=True)
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
        try:
            published = analysis.published_sets(download=True)
        except Exception as err:  # offline and not cached: say so in the summary
            published = {}
            summary["published_sets"] = f"not available: {err}"
        if published:
            plots.save_figure(plots.plot_published_comparison(published, selection,
                                                              ours_name=cfg.model),
                              figs / "published_comparison.png", close=True)
            summary["published_comparison"] = analysis.compare_with_published(
                selection, published, ours_name=cfg.model
            ).reset_index().to_dict(orient="records")

    with timer.stage("perplexity matrix"):
        ppl_langs = [lang for lang in cfg.ppl_languages if lang in selection.languages]
        heldout = heldout_text(model, corpus=cfg.corpus, languages=ppl_langs,
                               tokens_per_language=cfg.heldout_tokens,
                               seq_len=cfg.heldout_seq_len, seed=cfg.seed)
        matrix = cached_ppl_matrix(model, selection, heldout, cache, seed=cfg.seed,
                                   batch_size=cfg.batch_size, languages=ppl_langs)
        matrix.to_csv(out / "ppl_matrix.csv", overwrite=True)
        plots.save_figure(plots.plot_ppl_comparison(matrix.tidy(), config=lape_cfg),
                          figs / "ppl_delta.png", close=True)
    summary["ppl_delta"] = matrix.delta_table().round(4).to_dict(orient="index")
    summary["ppl_summary"] = matrix.summary().round(4).reset_index().to_dict(orient="records")

    with timer.stage("steering"):
        prompts = load_prompts("builtin", language=cfg.steer_source)[: cfg.steer_prompts]
        results = cached_steering(model, selection, stats, prompts, cfg.steer_targets, cache,
                                  source=cfg.steer_source, max_new_tokens=cfg.steer_max_new_tokens,
                                  seed=cfg.seed)
        table = steering_table(results)
        table.to_csv(out / "steering_summary.csv", index=False)
        for target, result in results.items():
            result.to_jsonl(out / f"steering_{target}.jsonl", overwrite=True)
        sweep = cached_sweep(model, selection, stats, prompts, cfg.steer_targets[0], cache,
                             source=cfg.steer_source, strengths=cfg.sweep_strengths,
                             max_new_tokens=cfg.steer_max_new_tokens, seed=cfg.seed)
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


# ---------------------------------------------------------------------------- notebooks
NOTEBOOKS = ("01_detection", "02_distribution", "03_deactivation", "04_steering")


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` directory."""
    from .corpus import data_dir

    return data_dir().parent / "notebooks"


def execute_notebooks(
    out_dir: str | os.PathLike,
    parameters: dict,
    names: Sequence[str] = NOTEBOOKS,
    *,
    html: bool = True,
    timeout: int = 1800,
) -> dict[str, str]:
    """Executes the numbered notebooks with papermill and exports them to HTML.

    Returns:
        ``{name: path of the executed notebook (or HTML)}``.
    """
    import papermill

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for name in names:
        src = notebooks_dir() / f"{name}.ipynb"
        dst = out / f"{name}.ipynb"
        papermill.execute_notebook(
            str(src), str(dst), parameters=parameters, cwd=str(notebooks_dir()),
            kernel_name="python3", progress_bar=False, execution_timeout=timeout,
        )
        done[name] = str(dst)
        if html:
            done[name] = str(export_html(dst))
    return done


def export_html(notebook: str | os.PathLike) -> Path:
    """Exports an executed notebook to HTML next to it (widget state included)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    path = Path(notebook).with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


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
