"""The workbook's heavy stages, cached, shared by the notebooks and the main job.

Each result is stored under a name holding a hash of everything it depends on, so a
notebook run after the main job reuses it, and a changed input never reuses (or
overwrites) an old result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..capture import capture, top_activating_contexts
from ..config import LapeConfig
from ..corpus import load_corpus
from ..evaluate import PplMatrix, perplexity_matrix, threshold_effect
from ..generation import GenerationConfig
from ..lape import control_sets, identify
from ..models import LapeModel
from ..packing import pack
from ..selection import NeuronSelection
from ..steering import PAPER_GENERATION, SteerResult, SteerSpec, steer, strength_sweep
from .config import JobConfig

log = logging.getLogger(__name__)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _key(model: LapeModel, **inputs) -> str:
    """The digest of the model (weights, dtype) and the other inputs of a result."""
    return _digest({"model": model.fingerprint, "dtype": str(model.dtype), **inputs})


def selection_digest(selection) -> str:
    """A short hash of a neuron selection's contents (languages and indices)."""
    indices = selection.indices
    return _digest({lang: [t.tolist() for t in indices[lang]] for lang in selection.languages})


def detection_statistics(model: LapeModel, cfg: JobConfig, cache_dir: str | os.PathLike):
    """Packs the detection text of ``cfg`` and captures (or loads) its statistics.

    Returns:
        ``(packed, stats)``; the statistics live in ``cache_dir/stats``.
    """
    text = load_corpus(cfg.corpus, list(cfg.languages), split="detect",
                       filter_language=cfg.filter_language, tokenizer=model.tokenizer,
                       tokens_per_language=cfg.tokens_per_language, seed=cfg.seed)
    packed = pack(text, model.tokenizer, seq_len=cfg.seq_len,
                  tokens_per_language=cfg.tokens_per_language, seed=cfg.seed)
    stats = capture(model, packed, Path(cache_dir) / "stats", batch_size=cfg.batch_size,
                    replicates=cfg.replicates, seed=cfg.seed)
    return packed, stats


def heldout_text(
    model: LapeModel, cfg: JobConfig, languages: Sequence[str], tokens_per_language: int
):
    """The packed held-out split of ``cfg``'s corpus, in ``cfg.heldout_seq_len`` chunks."""
    text = load_corpus(cfg.corpus, list(languages), split="heldout",
                       filter_language=cfg.filter_language, tokenizer=model.tokenizer,
                       tokens_per_language=tokens_per_language, seed=cfg.seed)
    return pack(text, model.tokenizer, seq_len=cfg.heldout_seq_len,
                tokens_per_language=tokens_per_language, seed=cfg.seed)


def cached_ppl_matrix(
    model: LapeModel,
    selection,
    heldout,
    cache_dir: str | os.PathLike,
    *,
    stats=None,
    seed: int = 0,
    batch_size: int = 4,
    languages: Sequence[str] | None = None,
):
    """:func:`lape_utils.evaluate.perplexity_matrix`, cached under ``cache_dir/ppl``.

    With the random control and, given ``stats``, the activity-matched one.
    """
    controls = control_sets(selection, stats, seed)
    key = _key(
        model, neurons=selection_digest(selection), heldout=heldout.fingerprint,
        rows=list(languages or selection.languages),
        controls={name: selection_digest(sel) for name, sel in controls.items()},
    )
    path = Path(cache_dir) / "ppl" / f"ppl_matrix_{key}.csv"
    if path.exists():
        log.info("perplexity matrix found in %s", path)
        return PplMatrix.from_csv(path)
    matrix = perplexity_matrix(model, selection, heldout, controls=controls,
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
    generation: GenerationConfig = PAPER_GENERATION,
    chat: bool | None = None,
) -> dict:
    """:func:`lape_utils.steering.steer` towards each target, cached under ``cache_dir/steering``.

    The paper's setting (mean activation, strength 1), with the random and matched controls.

    Returns:
        ``{target: SteerResult}``.
    """
    out = {}
    controls = control_sets(selection, stats, generation.seed)
    for target in targets:
        spec = SteerSpec(target, source=source, chat=chat)
        key = _key(
            model, neurons=selection_digest(selection), prompts=list(prompts),
            spec=dataclasses.asdict(spec), generation=dataclasses.asdict(generation),
            controls={name: selection_digest(sel) for name, sel in controls.items()},
        )
        path = Path(cache_dir) / "steering" / f"steer_{target}_{key}.jsonl"
        if path.exists():
            out[target] = SteerResult.from_jsonl(path)
            continue
        result = steer(model, selection, stats, list(prompts), spec, generation=generation,
                       controls=controls)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.to_jsonl(path)
        out[target] = result
    return out


def cached_sweep(
    model: LapeModel,
    selection,
    stats,
    prompts: Sequence[str],
    spec: SteerSpec,
    strengths: Sequence[float],
    cache_dir: str | os.PathLike,
    *,
    generation: GenerationConfig = PAPER_GENERATION,
) -> pd.DataFrame:
    """:func:`lape_utils.steering.strength_sweep`, cached as CSV under ``cache_dir/steering``."""
    key = _key(
        model, neurons=selection_digest(selection), prompts=list(prompts),
        spec=dataclasses.asdict(spec), strengths=[float(x) for x in strengths],
        generation=dataclasses.asdict(generation),
    )
    path = Path(cache_dir) / "steering" / f"sweep_{spec.target}_{key}.csv"
    if path.exists():
        return pd.read_csv(path)
    sweep = strength_sweep(model, selection, stats, list(prompts), spec, list(strengths),
                           generation=generation)
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


def cached_threshold_effect(
    model: LapeModel,
    stats,
    heldout,
    top_rates: Sequence[float],
    cache_dir: str | os.PathLike,
    *,
    config: LapeConfig = LapeConfig(),
    batch_size: int = 4,
) -> pd.DataFrame:
    """:func:`lape_utils.evaluate.threshold_effect`, cached as CSV under ``cache_dir/ppl``."""
    key = _key(
        model, stats=stats.provenance.get("corpus_fingerprint"), n=stats.n.tolist(),
        heldout=heldout.fingerprint, rates=[float(r) for r in top_rates],
        config=config.to_dict(),
    )
    path = Path(cache_dir) / "ppl" / f"threshold_effect_{key}.csv"
    if path.exists():
        return pd.read_csv(path)
    table = threshold_effect(model, stats, heldout, list(top_rates), config=config,
                             batch_size=batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def detection(model: LapeModel, cfg: JobConfig, cache_dir: str | os.PathLike):
    """What notebook 01 makes and 02–04 start from: statistics and the LAPE selection.

    The selection is read from ``cache_dir/neurons.pt`` when it was made from these
    statistics with these thresholds, else identified and saved there.

    Returns:
        ``(packed, stats, selection)``.
    """
    packed, stats = detection_statistics(model, cfg, cache_dir)
    path = Path(cache_dir) / "neurons.pt"
    made_from = {"corpus_fingerprint": stats.provenance.get("corpus_fingerprint"),
                 "model_fingerprint": stats.provenance.get("model_fingerprint"),
                 "languages": list(stats.languages)}
    if path.exists():
        saved = NeuronSelection.load(path)
        if saved.config == cfg.lape_config().to_dict() and all(
            saved.provenance.get(k) == v for k, v in made_from.items()
        ):
            return packed, stats, saved
        log.info("%s was made from other statistics or thresholds; identifying again", path)
    selection = identify(stats.over_zero, stats.n, stats.languages, cfg.lape_config(),
                         activation_sum=stats.activation_sum, provenance=stats.provenance)
    selection.save(path, overwrite=True)
    return packed, stats, selection


def cached_top_contexts(
    model: LapeModel, packed, layer: int, neuron: int, cache_dir: str | os.PathLike, *,
    k: int = 3, max_chunks: int | None = None,
) -> pd.DataFrame:
    """:func:`lape_utils.capture.top_activating_contexts`, cached as JSON lines."""
    key = _key(model, corpus=packed.fingerprint, layer=layer, neuron=neuron, k=k,
               max_chunks=max_chunks)
    path = Path(cache_dir) / "contexts" / f"contexts_L{layer}_{neuron}_{key}.jsonl"
    if path.exists():
        df = pd.read_json(path, lines=True)
    else:
        df = top_activating_contexts(model, packed, layer, neuron, k=k, max_chunks=max_chunks)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    df.attrs.update(layer=int(layer), neuron=int(neuron))
    return df
