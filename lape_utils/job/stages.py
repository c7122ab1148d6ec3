"""The workbook's heavy stages, cached, shared by the notebooks and the main job.

Each stage computes with the library (:func:`lape_utils.capture`,
:func:`lape_utils.perplexity_matrix`, :func:`lape_utils.steering`, ...) and stores its result
under a name that contains a hash of everything it depends on, so a notebook executed
after the main job (or a second notebook after the first) reuses what is cached instead of
computing it again, and a changed input never reuses (or overwrites) an old result:

* :func:`detection_statistics`: pack the detection corpus and capture its statistics
  (cached by :func:`lape_utils.capture.capture` with its provenance sidecar);
* :func:`heldout_text`: the packed held-out split;
* :func:`cached_ppl_matrix`: the perplexity-change matrix with its random control;
* :func:`cached_steering`: steering runs towards several target languages;
* :func:`cached_sweep`: a steering strength sweep.
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

from ..capture import capture
from ..corpus import load_corpus, pack
from ..evaluate import PplMatrix, perplexity_matrix
from ..generation import GenerationConfig
from ..lape import control_sets
from ..models import LapeModel
from ..steering import PAPER_GENERATION, SteerResult, SteerSpec, steer, strength_sweep

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
    stats=None,
    seed: int = 0,
    batch_size: int = 4,
    languages: Sequence[str] | None = None,
):
    """:func:`lape_utils.evaluate.perplexity_matrix`, cached under ``cache_dir/ppl``.

    With the random control and, given ``stats``, the activity-matched one.
    """
    controls = control_sets(selection, stats, seed)
    key = _digest({
        "model": model.fingerprint, "dtype": str(model.dtype), "neurons": selection_digest(selection),
        "heldout": heldout.fingerprint, "rows": list(languages or selection.languages),
        "controls": {name: selection_digest(sel) for name, sel in controls.items()},
    })
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
) -> dict:
    """:func:`lape_utils.steering.steer` towards each target, cached as JSONL per target.

    The paper's setting (mean activation, strength 1) with the random and the
    activity-matched controls, stored under ``cache_dir/steering``.

    Returns:
        ``{target: SteerResult}``.
    """
    out = {}
    controls = control_sets(selection, stats, generation.seed)
    for target in targets:
        spec = SteerSpec(target, source=source)
        key = _digest({
            "model": model.fingerprint, "dtype": str(model.dtype),
            "neurons": selection_digest(selection), "prompts": list(prompts),
            "spec": dataclasses.asdict(spec), "generation": dataclasses.asdict(generation),
            "controls": {name: selection_digest(sel) for name, sel in controls.items()},
        })
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
    key = _digest({
        "model": model.fingerprint, "dtype": str(model.dtype),
        "neurons": selection_digest(selection), "prompts": list(prompts),
        "spec": dataclasses.asdict(spec), "strengths": [float(x) for x in strengths],
        "generation": dataclasses.asdict(generation),
    })
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
