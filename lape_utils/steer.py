"""Steering generation towards a target language with its neurons, and measuring the result.

The paper's setting (``lape-method.md`` §4): while generating, set the target language's
neurons to their mean activation on that language (``mode="set"``), at every position
(``positions="all"``: the prompt and every generated token, so the first generated token is
steered too); optionally deactivate (zero) the source language's neurons first. Later work
found adding to (``mode="add"``: ``activation += strength x mean activation on the target``)
or scaling (``mode="scale"``: ``activation *= strength``) the activation steers better;
both are here.

Every output is identified offline by fastText lid.176 (:mod:`lape_utils.langid`). The
metrics of a batch (:meth:`SteerResult.summary`):

* ``target_rate`` / ``source_rate``: share of outputs whose language label is the target /
  source language (``"mixed"`` and ``"unknown"`` count as neither), with and without
  steering;
* ``output_ppl``: perplexity of the generated continuations given their prompts under the
  *unmodified* model (token-weighted over all outputs): what steering costs in fluency;
* ``chrf``: similarity of the steered answer to the unsteered one, chrF (character n-gram
  F-score, orders 1-6, β = 2, whitespace removed, 0-100; Popović 2015), and
  ``drift = 100 - chrf``. Character n-grams work across scripts and tokenizers;
* ``target_mass``: probability the model puts, at the first generated step, on
  *target-language tokens*: token ids that occur when the target language's text of the
  built-in ``detect`` corpus is tokenized, and never in the contrast language's text (the
  source language, English by default). Shared tokens (punctuation, digits, names) are
  thus excluded. Steering often raises this mass without changing the top token, which
  ``top1_changed`` reports.

A random control of the same size per layer (:func:`~lape_utils.lape.random_matched`, with
the same values: the random neurons' own mean activation on the target) tells how much of
the effect is specific to the language neurons.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ._files import refuse_overwrite
from .evaluate import score_continuations
from .intervene import (
    Generation,
    Intervention,
    InterventionError,
    _check_finite,
    _check_prompts,
    check_interventions,
    check_selection,
    generate_detailed,
)

if TYPE_CHECKING:
    from .models import LapeModel
    from .selection import NeuronSelection
    from .stats import ActivationStats

log = logging.getLogger(__name__)

__all__ = [
    "MODES",
    "PAPER_TEMPLATE",
    "SteerResult",
    "chrf",
    "language_token_ids",
    "steer",
    "steering_interventions",
    "strength_sweep",
]

MODES: tuple[str, ...] = ("set", "add", "scale")

PAPER_TEMPLATE = "Q: {prompt}\nA:"
"""The paper's prompt format for open questions."""


# ============================================================================ metrics


def _ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, *, order: int = 6, beta: float = 2.0) -> float:
    """chrF: character n-gram F-score of ``hypothesis`` against ``reference``, 0-100.

    Whitespace is removed; precision and recall are averaged over the n-gram orders
    ``1..order`` that both texts are long enough for, then combined as
    ``(1 + β²) P R / (β² P + R)`` (Popović 2015, as in sacrebleu's default).

    Returns:
        100 for identical texts (two empty texts included), 0 when nothing is shared.
    """
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    if hyp == ref:
        return 100.0
    if not hyp or not ref:
        return 0.0
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        if not h or not r:
            break
        match = sum((h & r).values())
        precisions.append(match / sum(h.values()))
        recalls.append(match / sum(r.values()))
    p = sum(precisions) / len(precisions)
    r = sum(recalls) / len(recalls)
    if p == 0 and r == 0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * p * r / (b2 * p + r)


_TOKEN_SETS: dict[tuple, torch.Tensor] = {}


def language_token_ids(
    tokenizer, target: str, contrast: str, *, source: str = "builtin", split: str = "detect"
) -> torch.Tensor:
    """Token ids of the target language: in its corpus text, never in the contrast's.

    Both languages' documents of the corpus are tokenized (no special tokens); the result
    is the set difference. Cached per tokenizer, language pair and corpus.

    Args:
        tokenizer: The model's tokenizer.
        target: Target language code.
        contrast: Contrast language code (usually the prompts' language).
        source: Corpus source for :func:`~lape_utils.corpus.load_corpus`.
        split: Corpus split.

    Returns:
        Sorted ``LongTensor [n]`` of token ids (special tokens excluded).
    """
    from .corpus import load_corpus, tokenizer_identity

    ident = tokenizer_identity(tokenizer)
    key = (
        ident["name"], ident["vocab_size"], ident["probe_sha256"], target, contrast, source, split
    )
    if key in _TOKEN_SETS:
        return _TOKEN_SETS[key]
    if target == contrast:
        raise InterventionError(
            f"target and contrast language are both {target!r}; target-language tokens are "
            "defined against another language"
        )
    corpus = load_corpus(source, [target, contrast], split=split)
    seen: dict[str, set[int]] = {}
    for lang in (target, contrast):
        enc = tokenizer(corpus.documents[lang], add_special_tokens=False, verbose=False)
        ids = enc["input_ids"]
        seen[lang] = {int(t) for row in ids for t in row}
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    only = sorted(seen[target] - seen[contrast] - special)
    out = torch.tensor(only, dtype=torch.long)
    log.info(
        "%d target-language tokens for %s vs %s (%d in %s, %d in %s)",
        len(only), target, contrast, len(seen[target]), target, len(seen[contrast]), contrast,
    )
    _TOKEN_SETS[key] = out
    return out


# ============================================================================ interventions


def steering_interventions(
    selection: NeuronSelection,
    stats: ActivationStats | None,
    target: str,
    *,
    source: str | None = None,
    zero_source: bool = False,
    mode: str = "set",
    strength: float = 1.0,
    positions: str = "all",
) -> list[Intervention]:
    """The interventions of one steering setting, in the order they are applied.

    ``[zero(source)]`` (if ``zero_source``), then the target's: ``set`` to ``strength`` x
    mean activation on the target, ``add`` ``strength`` x that mean, or ``scale`` by
    ``strength``. A neuron in both sets ends with the target's operation.

    Raises:
        InterventionError: unknown mode, non-finite strength, a language missing from the
            selection or statistics, statistics of another shape.
    """
    if mode not in MODES:
        raise InterventionError(f"unknown steering mode {mode!r}; use one of {MODES}")
    strength = _check_finite(strength, "strength")
    out: list[Intervention] = []
    if zero_source:
        if source is None:
            raise InterventionError("zero_source needs the source language (source=...)")
        out.append(Intervention.zero(selection, source, positions=positions))
    if mode in ("set", "add") and stats is None:
        raise InterventionError(f"mode {mode!r} needs activation statistics (stats=...)")
    if mode == "set":
        out.append(
            Intervention.set_to(selection, target, stats, strength=strength, positions=positions)
        )
    elif mode == "add":
        out.append(Intervention.add(selection, target, strength, stats=stats, positions=positions))
    else:
        out.append(Intervention.scale(selection, target, strength, positions=positions))
    return out


# ============================================================================ results


ROW_COLUMNS = [
    "neurons", "prompt", "unsteered", "steered",
    "unsteered_lang", "unsteered_score", "unsteered_label",
    "steered_lang", "steered_score", "steered_label",
    "chrf", "unsteered_nll", "unsteered_tokens", "steered_nll", "steered_tokens",
    "target_mass_unsteered", "target_mass_steered", "top1_changed",
]


@dataclass
class SteerResult:
    """Steered and unsteered outputs of a batch of prompts, with their language and costs.

    Attributes:
        rows: One row per (neuron set, prompt): ``neurons`` (``"lape"`` or ``"random"``),
            ``prompt``, ``unsteered``, ``steered``, detected ``*_lang``/``*_score``/
            ``*_label`` of both, ``chrf`` (steered vs unsteered), ``*_nll``/``*_tokens``
            (summed NLL and token count of each continuation under the unmodified model),
            ``target_mass_*`` (first-step probability of target-language tokens),
            ``top1_changed`` (steering changed the first step's most likely token).
        config: The setting (model, target, source, mode, strength, positions, sizes...).
    """

    rows: pd.DataFrame
    config: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Aggregates per neuron set (index ``neurons``).

        Columns: ``n``, ``target_rate``, ``target_rate_unsteered``, ``source_rate``,
        ``source_rate_unsteered`` (NaN without a source language), ``mixed_rate``,
        ``unknown_rate``, ``output_ppl``, ``output_ppl_unsteered``, ``chrf``, ``drift``,
        ``target_mass``, ``target_mass_unsteered``, ``top1_changed_rate``.
        """
        target = self.config.get("target")
        source = self.config.get("source")
        out = {}
        for name, part in self.rows.groupby("neurons", sort=False):
            def ppl(kind: str) -> float:
                tokens = part[f"{kind}_tokens"].sum()
                return math.exp(part[f"{kind}_nll"].sum() / tokens) if tokens else math.nan

            out[name] = {
                "n": len(part),
                "target_rate": float((part["steered_label"] == target).mean()),
                "target_rate_unsteered": float((part["unsteered_label"] == target).mean()),
                "source_rate": (
                    float((part["steered_label"] == source).mean()) if source else math.nan
                ),
                "source_rate_unsteered": (
                    float((part["unsteered_label"] == source).mean()) if source else math.nan
                ),
                "mixed_rate": float((part["steered_label"] == "mixed").mean()),
                "unknown_rate": float((part["steered_label"] == "unknown").mean()),
                "output_ppl": ppl("steered"),
                "output_ppl_unsteered": ppl("unsteered"),
                "chrf": float(part["chrf"].mean()),
                "drift": 100.0 - float(part["chrf"].mean()),
                "target_mass": float(part["target_mass_steered"].mean()),
                "target_mass_unsteered": float(part["target_mass_unsteered"].mean()),
                "top1_changed_rate": float(part["top1_changed"].mean()),
            }
        df = pd.DataFrame.from_dict(out, orient="index")
        df.index.name = "neurons"
        return df

    def to_jsonl(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes one JSON object per row to ``path``, and config + summary to ``path + ".json"``.

        Each line: ``neurons``, ``target``, ``mode``, ``strength``, ``prompt``,
        ``unsteered``, ``steered``, the detected languages, labels and scores of both, and
        the per-prompt metrics.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        refuse_overwrite([path], overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = {k: self.config.get(k) for k in ("target", "source", "mode", "strength")}
        with open(path, "w", encoding="utf-8") as fh:
            for rec in self.rows.to_dict(orient="records"):
                line = {"neurons": rec.pop("neurons"), **head, **rec}
                fh.write(json.dumps(_jsonable(line), ensure_ascii=False) + "\n")
        side = {"config": self.config, "summary": self.summary().to_dict(orient="index")}
        Path(str(path) + ".json").write_text(
            json.dumps(_jsonable(side), indent=2, ensure_ascii=False, default=str)
        )
        return path

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> SteerResult:
        """Reads a result written by :meth:`to_jsonl`."""
        path = Path(path)
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        side = Path(str(path) + ".json")
        config = json.loads(side.read_text())["config"] if side.exists() else {}
        rows = pd.DataFrame(lines)
        return cls(rows[[c for c in ROW_COLUMNS if c in rows.columns]], config)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _jsonable(obj.item())
        except (ValueError, AttributeError):
            pass
    return obj


# ============================================================================ running


def _check_setup(model, selection, stats, target, source, zero_source, mode, strength, prompts):
    """Every check that can fail, before any generation."""
    prompts = _check_prompts(prompts)
    check_selection(model, selection)
    if stats is not None and (stats.n_layers, stats.n_neurons) != (model.n_layers, model.n_neurons):
        raise InterventionError(
            f"the statistics are for {stats.n_layers} layers x {stats.n_neurons} neurons, but "
            f"{model.name} has {model.n_layers} x {model.n_neurons}: they come from another "
            "model; capture statistics on this one"
        )
    if mode not in MODES:
        raise InterventionError(f"unknown steering mode {mode!r}; use one of {MODES}")
    _check_finite(strength, "strength")
    if target not in selection.languages:
        raise InterventionError(
            f"target language {target!r} is not in the neuron set; it holds {selection.languages}"
        )
    if stats is not None and target not in stats.languages:
        raise InterventionError(
            f"target language {target!r} is not in the statistics; they hold {stats.languages}"
        )
    if zero_source and source not in selection.languages:
        raise InterventionError(
            f"source language {source!r} is not in the neuron set; it holds {selection.languages}"
        )
    if source is not None and source == target:
        raise InterventionError(f"source and target are both {target!r}; steer to another language")
    ivs = steering_interventions(
        selection, stats, target, source=source, zero_source=zero_source, mode=mode,
        strength=strength,
    )
    check_interventions(model, ivs)
    return prompts


@dataclass
class _Baseline:
    generation: Generation
    langs: list
    scores: pd.DataFrame


def _baseline(model, formatted, gen_kwargs, backend) -> _Baseline:
    from .langid import detect_batch

    gen = generate_detailed(
        model, formatted, [], return_first_step_probs=True, backend=backend, **gen_kwargs
    )
    langs = detect_batch(gen.texts)
    scores = score_continuations(
        model, gen.prompt_ids, gen.new_ids, batch_size=gen_kwargs["batch_size"]
    )
    return _Baseline(gen, langs, scores)


def _run_set(
    model, selection, stats, prompts, formatted, target, source, zero_source, mode, strength,
    positions, gen_kwargs, backend, base: _Baseline, target_ids: torch.Tensor | None, name: str,
) -> pd.DataFrame:
    from .langid import detect_batch

    ivs = steering_interventions(
        selection, stats, target, source=source, zero_source=zero_source, mode=mode,
        strength=strength, positions=positions,
    )
    gen = generate_detailed(
        model, formatted, ivs, return_first_step_probs=True, backend=backend, **gen_kwargs
    )
    langs = detect_batch(gen.texts)
    scores = score_continuations(
        model, gen.prompt_ids, gen.new_ids, batch_size=gen_kwargs["batch_size"]
    )
    p0, p1 = base.generation.first_step_probs, gen.first_step_probs
    if target_ids is not None and target_ids.numel():
        m0 = p0[:, target_ids].sum(-1).tolist()
        m1 = p1[:, target_ids].sum(-1).tolist()
    else:
        m0 = m1 = [math.nan] * len(prompts)
    changed = (p0.argmax(-1) != p1.argmax(-1)).tolist()
    rows = []
    for i, prompt in enumerate(prompts):
        u, s = base.generation.texts[i], gen.texts[i]
        lu, ls = base.langs[i], langs[i]
        rows.append(
            {
                "neurons": name,
                "prompt": prompt,
                "unsteered": u,
                "steered": s,
                "unsteered_lang": lu.lang,
                "unsteered_score": lu.score,
                "unsteered_label": lu.label,
                "steered_lang": ls.lang,
                "steered_score": ls.score,
                "steered_label": ls.label,
                "chrf": chrf(s, u),
                "unsteered_nll": float(base.scores["nll_sum"].iloc[i]),
                "unsteered_tokens": int(base.scores["tokens"].iloc[i]),
                "steered_nll": float(scores["nll_sum"].iloc[i]),
                "steered_tokens": int(scores["tokens"].iloc[i]),
                "target_mass_unsteered": m0[i],
                "target_mass_steered": m1[i],
                "top1_changed": bool(changed[i]),
            }
        )
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _target_ids(model, target, contrast, token_corpus) -> torch.Tensor | None:
    try:
        return language_token_ids(model.tokenizer, target, contrast, source=token_corpus)
    except (ValueError, FileNotFoundError) as err:
        log.warning("no target-language token set for %s vs %s (%s); target_mass is NaN",
                    target, contrast, err)
        return None


@dataclass
class _Runner:
    """What :func:`steer` and :func:`strength_sweep` share: the prompts formatted, the
    unsteered baseline generated once, the target-token ids, and the neuron sets to run."""

    model: LapeModel
    stats: ActivationStats | None
    prompts: list[str]
    formatted: list[str]
    sets: list[tuple[str, NeuronSelection]]
    target: str
    source: str | None
    zero_source: bool
    mode: str
    positions: str
    gen_kwargs: dict
    backend: str
    base: _Baseline
    target_ids: torch.Tensor | None

    @classmethod
    def prepare(cls, model, selection, stats, prompts, target, source, zero_source, mode,
                positions, random_control, seed, template, gen_kwargs, contrast, token_corpus,
                backend) -> _Runner:
        if "{prompt}" not in template:
            raise InterventionError(f"template {template!r} has no '{{prompt}}' field")
        sets = [("lape", selection)]
        if random_control:
            from .lape import random_matched

            sets.append(("random", random_matched(selection, seed)))
        formatted = [template.format(prompt=p) for p in prompts]
        target_ids = _target_ids(model, target, contrast, token_corpus)
        base = _baseline(model, formatted, gen_kwargs, backend)
        return cls(model, stats, list(prompts), formatted, sets, target, source, zero_source,
                   mode, positions, gen_kwargs, backend, base, target_ids)

    def at(self, strength: float) -> list[pd.DataFrame]:
        """One result table per neuron set, steered at ``strength``."""
        return [
            _run_set(
                self.model, sel, self.stats, self.prompts, self.formatted, self.target,
                self.source, self.zero_source, self.mode, strength, self.positions,
                self.gen_kwargs, self.backend, self.base, self.target_ids, name,
            )
            for name, sel in self.sets
        ]


def steer(
    model: LapeModel,
    selection: NeuronSelection,
    stats: ActivationStats | None,
    prompts: Sequence[str],
    target: str,
    *,
    source: str | None = None,
    zero_source: bool = False,
    mode: str = "set",
    strength: float = 1.0,
    positions: str = "all",
    random_control: bool = False,
    seed: int = 0,
    template: str = PAPER_TEMPLATE,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float | None = 1.1,
    batch_size: int = 8,
    contrast: str | None = None,
    token_corpus: str = "builtin",
    backend: str = "nnsight",
) -> SteerResult:
    """Generates with and without steering towards ``target`` and measures the outputs.

    Args:
        model: The loaded model.
        selection: Language-specific neurons of this model.
        stats: Activation statistics of this model (mean activations; needed for ``set``
            and ``add``).
        prompts: Questions (non-empty strings), formatted with ``template``.
        target: Language to steer to.
        source: The prompts' language (for ``source_rate``, ``zero_source`` and as the
            contrast of the target-language tokens).
        zero_source: Also deactivate the source language's neurons.
        mode: ``"set"`` (paper), ``"add"`` or ``"scale"``.
        strength: Multiplier (see the module docstring).
        positions: Position scope of the interventions (default every position).
        random_control: Also steer with a random set of the same size per layer.
        seed: Seed of the random set and of sampling.
        template: Prompt format with a ``{prompt}`` field (default the paper's
            ``"Q: {prompt}\\nA:"``); ``"{prompt}"`` for raw prompts.
        max_new_tokens: Tokens to generate.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus threshold.
        repetition_penalty: HF repetition penalty (paper: 1.1), or ``None``.
        batch_size: Prompts per forward pass.
        contrast: Language against which target-language tokens are defined (default
            ``source``, else ``"en"``).
        token_corpus: Corpus source of the target-language token set.
        backend: ``"nnsight"`` or ``"hooks"``.

    Returns:
        A :class:`SteerResult` (rows for ``"lape"``, and ``"random"`` with the control).

    Raises:
        InterventionError: bad input, all checked before generation: empty prompts, a
            language absent from the neuron set or statistics, non-finite strength, a neuron
            set or statistics of another model, an unknown mode.
    """
    prompts = _check_setup(
        model, selection, stats, target, source, zero_source, mode, strength, prompts
    )
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_p=top_p, repetition_penalty=repetition_penalty, batch_size=batch_size, seed=seed,
    )
    run = _Runner.prepare(model, selection, stats, prompts, target, source, zero_source, mode,
                          positions, random_control, seed, template, gen_kwargs,
                          contrast or source or "en", token_corpus, backend)
    parts = run.at(strength)
    target_ids = run.target_ids
    config = _config(model, selection, target, source, zero_source, mode, strength, positions,
                     random_control, seed, template, gen_kwargs, contrast or source or "en",
                     target_ids)
    return SteerResult(pd.concat(parts, ignore_index=True), config)


def _config(model, selection, target, source, zero_source, mode, strength, positions,
            random_control, seed, template, gen_kwargs, contrast, target_ids) -> dict:
    return {
        "model": model.name,
        "model_fingerprint": model.fingerprint,
        "target": target,
        "source": source,
        "zero_source": zero_source,
        "mode": mode,
        "strength": float(strength),
        "positions": positions,
        "random_control": random_control,
        "seed": seed,
        "template": template,
        "generation": {k: v for k, v in gen_kwargs.items()},
        "n_target_neurons": int(selection.flat(target).numel()),
        "n_source_neurons": int(selection.flat(source).numel()) if zero_source else 0,
        "selection_method": selection.method,
        "target_tokens": {
            "contrast": contrast,
            "n": None if target_ids is None else int(target_ids.numel()),
        },
    }


def strength_sweep(
    model: LapeModel,
    selection: NeuronSelection,
    stats: ActivationStats | None,
    prompts: Sequence[str],
    target: str,
    source: str | None = None,
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    mode: str = "set",
    *,
    zero_source: bool = False,
    random_control: bool = False,
    seed: int = 0,
    template: str = PAPER_TEMPLATE,
    max_new_tokens: int = 32,
    repetition_penalty: float | None = 1.1,
    batch_size: int = 8,
    positions: str = "all",
    backend: str = "nnsight",
) -> pd.DataFrame:
    """Target rate and cost as a function of the steering strength, for one target.

    The unsteered outputs are generated once and shared by every strength.

    Returns:
        DataFrame, one row per (strength, neuron set): ``strength``, ``neurons`` (``"lape"``
        / ``"random"``), and the columns of :meth:`SteerResult.summary`.
    """
    strengths = [_check_finite(s, "strength") for s in strengths]
    if not strengths:
        raise InterventionError("no strengths given")
    for s in strengths:
        prompts = _check_setup(
            model, selection, stats, target, source, zero_source, mode, s, prompts
        )
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens, do_sample=False, temperature=1.0, top_p=1.0,
        repetition_penalty=repetition_penalty, batch_size=batch_size, seed=seed,
    )
    run = _Runner.prepare(model, selection, stats, prompts, target, source, zero_source, mode,
                          positions, random_control, seed, template, gen_kwargs,
                          source or "en", "builtin", backend)
    frames = []
    for s in strengths:
        parts = run.at(s)
        result = SteerResult(
            pd.concat(parts, ignore_index=True), {"target": target, "source": source}
        )
        summ = result.summary().reset_index()
        summ.insert(0, "strength", s)
        frames.append(summ)
        rates = summ.set_index("neurons")["target_rate"].to_dict()
        log.info("strength %g: target rate %s", s, rates)
    return pd.concat(frames, ignore_index=True)
