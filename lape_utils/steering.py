"""Steering generation towards a target language with its neurons, and measuring the result.

The paper's setting (``lape-method.md`` §4): while generating, set the target language's
neurons to their mean activation on it (``mode="set"``) at every position, optionally zeroing
the source language's first; ``"add"`` and ``"scale"``, found to steer better later, are here
too. Controls steered the same way (:func:`~lape_utils.lape.random_matched`,
:func:`~lape_utils.lape.activity_matched`) tell how specific the effect is.

Outputs' languages come from fastText lid.176 (:mod:`lape_utils.langid`). The metrics of
:meth:`SteerResult.summary`:

* ``target_rate`` / ``source_rate``: share of outputs labelled the target / source language
  (``"mixed"`` and ``"unknown"`` are neither), with 95% Wilson intervals;
* ``output_ppl``: token-weighted perplexity of the continuations under the *unmodified* model;
* ``chrf``: chrF of the steered answer against the unsteered one (sacrebleu: character
  n-grams 1-6, β = 2, 0-100; works across scripts), and ``drift = 100 - chrf``;
* ``target_mass``: first-step probability of *target-language tokens*: in the target's text
  of the built-in ``detect`` corpus, never in the source's (English's without a source). It
  often rises without changing the top token (``top1_changed``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from sacrebleu.metrics import CHRF

from ._files import refuse_overwrite
from .corpus import load_corpus, tokenizer_identity
from .evaluate import score_continuations
from .generation import GenerationConfig, check_prompts, generate
from .intervene import (
    POSITIONS,
    Intervention,
    InterventionError,
    _check_finite,
    _check_shape,
    _require_language,
    _resolve_remote,
    check_interventions,
    check_selection,
)
from .langid import detect_batch
from .packing import chat_turn

if TYPE_CHECKING:
    from .models import LapeModel
    from .selection import NeuronSelection
    from .stats import ActivationStats

log = logging.getLogger(__name__)

__all__ = [
    "MODES", "PAPER_GENERATION", "PAPER_TEMPLATE", "SteerResult", "SteerSpec", "chrf",
    "format_prompts", "language_token_ids", "output_ppl", "steer", "steering_interventions",
    "strength_sweep", "target_mass", "top1_changed", "wilson_interval",
]

MODES: tuple[str, ...] = ("set", "add", "scale")

PAPER_TEMPLATE = "Q: {prompt}\nA:"
"""The paper's prompt format for open questions."""

PAPER_GENERATION = GenerationConfig(max_new_tokens=64, repetition_penalty=1.1)
"""The paper's decoding: greedy, repetition penalty 1.1, 64 tokens."""


# ============================================================================ the setting


@dataclass(frozen=True)
class SteerSpec:
    """One steering setting. Frozen and validated; variants with ``dataclasses.replace``.

    Example::

        spec = SteerSpec("fr", source="en", mode="set", strength=1.0)   # the paper's
        stronger = dataclasses.replace(spec, strength=2.0)

    Attributes:
        target: Language to steer to.
        source: The prompts' language (for ``source_rate``, ``zero_source`` and the contrast
            of the target-language tokens), or ``None``.
        zero_source: Also zero the source language's neurons, before the target's edit.
        mode: ``"set"`` (:= strength x mean activation on the target; the paper), ``"add"``
            (+= strength x that mean) or ``"scale"`` (*= strength).
        strength: Multiplier of the mode (finite).
        positions: Where to intervene (:data:`~lape_utils.intervene.POSITIONS`).
        template: Prompt format with a ``{prompt}`` field (``"{prompt}"``: raw). In a chat
            turn the paper's ``Q: ... A:`` is left out; another template formats the message.
        chat: Format prompts as user turns of the chat template (for instruction-tuned
            models): ``None`` if the tokenizer has one, ``True`` (requires one), ``False`` never.
    """

    target: str
    source: str | None = None
    zero_source: bool = False
    mode: str = "set"
    strength: float = 1.0
    positions: str = "all"
    template: str = PAPER_TEMPLATE
    chat: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise InterventionError(f"target must be a language code, got {self.target!r}")
        if self.mode not in MODES:
            raise InterventionError(f"unknown steering mode {self.mode!r}; use one of {MODES}")
        if self.positions not in POSITIONS:
            raise InterventionError(f"unknown positions {self.positions!r}; use one of {POSITIONS}")
        object.__setattr__(self, "strength", _check_finite(self.strength, "strength"))
        object.__setattr__(self, "zero_source", bool(self.zero_source))
        if self.source is not None and self.source == self.target:
            raise InterventionError(
                f"source and target are both {self.target!r}; steer to another language"
            )
        if self.zero_source and self.source is None:
            raise InterventionError("zero_source needs the source language (source=...)")
        if "{prompt}" not in self.template:
            raise InterventionError(f"template {self.template!r} has no '{{prompt}}' field")
        if self.chat is not None and not isinstance(self.chat, bool):
            raise InterventionError(
                f"chat must be None (use the tokenizer's chat template when it has one), True "
                f"or False, got {self.chat!r}"
            )

    def describe(self) -> str:
        """Short text, e.g. ``"set fr x1 (en zeroed)"``."""
        zero = f" ({self.source} zeroed)" if self.zero_source else ""
        return f"{self.mode} {self.target} x{self.strength:g}{zero}"


# ============================================================================ metrics

_CHRF = CHRF()


def chrf(hypothesis: str, reference: str) -> float:
    """ChrF of ``hypothesis`` against ``reference`` (sacrebleu's ``CHRF``), 0-100.

    Texts equal but for whitespace score 100, two empty ones too (sacrebleu says 0).
    """
    if "".join(hypothesis.split()) == "".join(reference.split()):
        return 100.0
    return float(_CHRF.sentence_score(hypothesis, [reference]).score)


def target_mass(probs: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Probability each distribution puts on the target-language tokens.

    Args:
        probs: ``[n, vocab]`` next-token distributions (rows sum to 1).
        target_ids: ``[k]`` token ids of the target language.

    Returns:
        ``[n]`` the summed probability of those tokens (NaN without target tokens).
    """
    if target_ids is None or target_ids.numel() == 0:
        return torch.full((probs.shape[0],), math.nan)
    return probs[:, target_ids].sum(-1)


def top1_changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Whether the most likely next token differs: ``[n, vocab]`` x2 -> bool ``[n]``."""
    return before.argmax(-1) != after.argmax(-1)


def output_ppl(nll_sums: Sequence[float], tokens: Sequence[int]) -> float:
    """Perplexity of several texts together: ``exp(sum NLL / sum tokens)``; NaN without token."""
    total = float(pd.Series(tokens, dtype=float).sum())
    return math.exp(float(pd.Series(nll_sums, dtype=float).sum()) / total) if total else math.nan


def wilson_interval(hits: int, n: int) -> tuple[float, float, float]:
    """A rate with its 95% Wilson score interval (``scipy.stats.binomtest``).

    Returns:
        ``(hits / n, lo, hi)``; all NaN for ``n == 0``.
    """
    if n == 0:
        return (math.nan,) * 3
    from scipy.stats import binomtest

    ci = binomtest(int(hits), int(n)).proportion_ci(0.95, method="wilson")
    return hits / n, float(ci.low), float(ci.high)


_TOKEN_SETS: dict[tuple, torch.Tensor] = {}


def language_token_ids(tokenizer, target: str, contrast: str) -> torch.Tensor:
    """Token ids in the target's ``detect`` corpus text, never in the contrast's (cached).

    Args:
        tokenizer: The model's tokenizer.
        target: Target language code.
        contrast: Contrast language code (usually the prompts' language).

    Returns:
        Sorted ``LongTensor [n]`` of token ids (special tokens excluded).
    """
    ident = tokenizer_identity(tokenizer)
    key = (ident["name"], ident["vocab_size"], ident["probe_sha256"], target, contrast)
    if key in _TOKEN_SETS:
        return _TOKEN_SETS[key]
    if target == contrast:
        raise InterventionError(
            f"target and contrast language are both {target!r}; target-language tokens are "
            "defined against another language"
        )
    corpus = load_corpus("builtin", [target, contrast], split="detect")
    seen: dict[str, set[int]] = {}
    for lang in (target, contrast):
        ids = tokenizer(corpus.documents[lang], add_special_tokens=False, verbose=False)
        seen[lang] = {int(t) for row in ids["input_ids"] for t in row}
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = torch.tensor(sorted(seen[target] - seen[contrast] - special), dtype=torch.long)
    log.info(
        "%d target-language tokens for %s vs %s (%d in %s, %d in %s)",
        out.numel(), target, contrast, len(seen[target]), target, len(seen[contrast]), contrast,
    )
    _TOKEN_SETS[key] = out
    return out


# ============================================================================ interventions


def steering_interventions(
    selection: NeuronSelection, stats: ActivationStats | None, spec: SteerSpec
) -> list[Intervention]:
    """The interventions of one steering setting, in the order they are applied.

    ``zero(source)`` if ``spec.zero_source``, then the target's ``spec.mode``; a neuron in
    both sets ends with the target's operation.

    Raises:
        InterventionError: a missing language, ``set``/``add`` without (fitting) statistics.
    """
    out: list[Intervention] = []
    if spec.zero_source:
        out.append(Intervention.zero(selection, spec.source, positions=spec.positions))
    if spec.mode in ("set", "add") and stats is None:
        raise InterventionError(f"mode {spec.mode!r} needs activation statistics (stats=...)")
    target, strength, positions = spec.target, spec.strength, spec.positions
    if spec.mode == "set":
        out.append(Intervention.set_to(selection, target, stats, strength=strength,
                                       positions=positions))
    elif spec.mode == "add":
        out.append(Intervention.add(selection, target, strength, stats=stats, positions=positions))
    else:
        out.append(Intervention.scale(selection, target, strength, positions=positions))
    return out


def format_prompts(tokenizer, prompts: Sequence[str], spec: SteerSpec) -> list[str]:
    """The prompts as the model sees them: chat turns (see ``spec.chat``), or template text.

    A chat turn ends with the assistant header; its leading BOS text is not doubled by
    :func:`~lape_utils.generation.generate`.

    Raises:
        ChatTemplateError: a chat template asked for and missing, or failing to render.
    """
    text = [spec.template.format(prompt=p) for p in prompts]
    if not _uses_chat(tokenizer, spec):
        return text
    log.info("prompts formatted as user turns of the tokenizer's chat template")
    messages = list(prompts) if spec.template == PAPER_TEMPLATE else text
    return [chat_turn(tokenizer, m, generation_prompt=True)[0] for m in messages]


def _uses_chat(tokenizer, spec: SteerSpec) -> bool:
    """Whether ``spec`` formats prompts with the chat template of this tokenizer."""
    has = bool(getattr(tokenizer, "chat_template", None))
    return has if spec.chat is None else spec.chat


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
        rows: A row per (neuron set, prompt), :data:`ROW_COLUMNS`: ``neurons``, ``prompt``,
            both answers and their ``*_lang``/``*_score``/``*_label``, ``chrf``, ``*_nll``/
            ``*_tokens`` (unmodified model), ``target_mass_*``, ``top1_changed``.
        config: The setting (model, target, source, mode, strength, positions, sizes...).
    """

    rows: pd.DataFrame
    config: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Aggregates per neuron set (index ``neurons``, LAPE first, then the controls).

        Columns (the module docstring defines them): ``n``, ``target_rate`` with ``_lo``,
        ``_hi`` and ``_unsteered``, the same for ``source_rate`` (NaN without a source),
        ``mixed_rate``, ``unknown_rate``, ``output_ppl`` (and ``_unsteered``), ``chrf``,
        ``drift``, ``target_mass`` (and ``_unsteered``), ``top1_changed_rate``; for LAPE,
        per control ``c``, ``beats_c`` (target rate above the control's, intervals apart).
        """
        target = self.config.get("target")
        source = self.config.get("source")
        out = {}
        for name, part in self.rows.groupby("neurons", sort=False):
            row = {"n": len(part)}
            for kind, lang in (("target", target), ("source", source)):
                hits = int((part["steered_label"] == lang).sum()) if lang else None
                rate, lo, hi = wilson_interval(hits, len(part)) if lang else (math.nan,) * 3
                row |= {f"{kind}_rate": rate, f"{kind}_rate_lo": lo, f"{kind}_rate_hi": hi,
                        f"{kind}_rate_unsteered": (
                            float((part["unsteered_label"] == lang).mean()) if lang else math.nan
                        )}
            chrf_mean = float(part["chrf"].mean())
            out[name] = row | {
                "mixed_rate": float((part["steered_label"] == "mixed").mean()),
                "unknown_rate": float((part["steered_label"] == "unknown").mean()),
                "output_ppl": output_ppl(part["steered_nll"], part["steered_tokens"]),
                "output_ppl_unsteered": output_ppl(part["unsteered_nll"],
                                                   part["unsteered_tokens"]),
                "chrf": chrf_mean,
                "drift": 100.0 - chrf_mean,
                "target_mass": float(part["target_mass_steered"].mean()),
                "target_mass_unsteered": float(part["target_mass_unsteered"].mean()),
                "top1_changed_rate": float(part["top1_changed"].mean()),
            }
        df = pd.DataFrame.from_dict(out, orient="index")
        df.index.name = "neurons"
        if "lape" in df.index:
            for c in [x for x in df.index if x != "lape"]:
                df[f"beats_{c}"] = None
                df.loc["lape", f"beats_{c}"] = bool(
                    df.loc["lape", "target_rate_lo"] > df.loc[c, "target_rate_hi"]
                )
        return df

    def to_jsonl(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes a JSON line per row to ``path``, and config + summary to ``path + ".json"``.

        Each line is a row with the setting's ``target``, ``source``, ``mode`` and ``strength``.

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


def _check_setup(model, selection, stats, spec: SteerSpec, prompts, controls) -> list[str]:
    """Every check that can fail, before any generation; returns the prompts as a list."""
    prompts = check_prompts(prompts)
    if not isinstance(spec, SteerSpec):
        raise InterventionError(f"spec must be a SteerSpec, got {type(spec).__name__}")
    check_selection(model, selection)
    if stats is not None:
        _check_shape("the statistics are", (stats.n_layers, stats.n_neurons), model.name,
                     (model.n_layers, model.n_neurons),
                     "they come from another model; capture statistics on this one")
    _require_language(spec.target, selection.languages, "neuron set", "target language")
    if stats is not None:
        _require_language(spec.target, stats.languages, "statistics", "target language")
    if spec.zero_source:
        _require_language(spec.source, selection.languages, "neuron set", "source language")
    check_interventions(model, steering_interventions(selection, stats, spec))
    for sel in (controls or {}).values():
        check_selection(model, sel)
    _resolve_remote(model, None)  # remote=True needs an NDIF key: refuse before any trace
    return prompts


def _outputs(model, formatted, ivs, generation: GenerationConfig) -> tuple:
    """Answers of one neuron set (or none): ``(Generation, their languages, their NLL)``."""
    gen = generate(model, formatted, ivs, generation, first_step_probs=True)
    scores = score_continuations(
        model, gen.prompt_ids, gen.new_ids, batch_size=generation.batch_size
    )
    return gen, detect_batch(gen.texts), scores


def _rows(name: str, prompts, base: tuple, out: tuple, target_ids) -> pd.DataFrame:
    """The rows of one neuron set (:data:`ROW_COLUMNS`): ``base`` unsteered, ``out`` steered."""
    cols = {"neurons": name, "prompt": list(prompts)}
    for which, (gen, langs, scores) in (("unsteered", base), ("steered", out)):
        cols[which] = gen.texts
        for key in ("lang", "score", "label"):
            cols[f"{which}_{key}"] = [getattr(x, key) for x in langs]
        cols[f"{which}_nll"] = scores["nll_sum"].tolist()
        cols[f"{which}_tokens"] = scores["tokens"].tolist()
        cols[f"target_mass_{which}"] = target_mass(gen.first_step_probs, target_ids).tolist()
    unsteered, steered = base[0], out[0]  # the two Generations
    cols["chrf"] = [chrf(s, u) for s, u in zip(steered.texts, unsteered.texts)]
    cols["top1_changed"] = top1_changed(
        unsteered.first_step_probs, steered.first_step_probs
    ).tolist()
    return pd.DataFrame(cols, columns=ROW_COLUMNS)


def _runner(model, neurons, stats, prompts, spec: SteerSpec, generation, controls):
    """Formats the prompts, generates the unsteered answers and finds the target tokens once.

    Returns:
        ``(run, target_ids)``: ``run(spec)`` steers with each neuron set and gives the rows;
        ``target_ids`` is ``None`` when no target-token set could be built.
    """
    formatted = format_prompts(model.tokenizer, prompts, spec)
    contrast = spec.source or "en"
    try:
        target_ids = language_token_ids(model.tokenizer, spec.target, contrast)
    except (ValueError, FileNotFoundError) as err:
        log.warning("no target-language token set for %s vs %s (%s); target_mass is NaN",
                    spec.target, contrast, err)
        target_ids = None
    base = _outputs(model, formatted, [], generation)

    def run(spec: SteerSpec) -> pd.DataFrame:
        parts = []
        for name, sel in [("lape", neurons), *(controls or {}).items()]:
            out = _outputs(model, formatted, steering_interventions(sel, stats, spec), generation)
            parts.append(_rows(name, prompts, base, out, target_ids))
        return pd.concat(parts, ignore_index=True)

    return run, target_ids


def steer(
    model: LapeModel, neurons: NeuronSelection, stats: ActivationStats | None,
    prompts: Sequence[str], spec: SteerSpec, *, generation: GenerationConfig = PAPER_GENERATION,
    controls: Mapping[str, NeuronSelection] | None = None,
) -> SteerResult:
    """Generates with and without steering and measures the outputs.

    Every check runs before any generation.

    Args:
        model: The loaded model.
        neurons: Language-specific neurons of this model.
        stats: Its activation statistics (mean activations, for ``set`` and ``add``).
        prompts: Questions (non-empty), formatted by :func:`format_prompts`.
        spec: The steering setting.
        generation: Decoding (default :data:`PAPER_GENERATION`).
        controls: ``{name: selection}`` steered the same way, e.g. ``{"random":
            random_matched(neurons, 0), "matched": activity_matched(...)}``.

    Returns:
        A :class:`SteerResult` (rows for ``"lape"``, then per control).

    Raises:
        InterventionError: bad prompts, a missing language, sets or stats of another model.
        ChatTemplateError: a chat template asked for and missing, or failing to render.
        MissingNDIFKeyError: a model loaded with ``remote=True`` and no NDIF key.
    """
    prompts = _check_setup(model, neurons, stats, spec, prompts, controls)
    run, target_ids = _runner(model, neurons, stats, prompts, spec, generation, controls)
    config = {
        "model": model.name, "model_fingerprint": model.fingerprint, **dataclasses.asdict(spec),
        "chat_template_used": _uses_chat(model.tokenizer, spec), "remote": model.remote,
        "controls": {name: {"method": sel.method, "seed": sel.provenance.get("seed")}
                     for name, sel in (controls or {}).items()},
        "seed": generation.seed, "generation": dataclasses.asdict(generation),
        "n_target_neurons": int(neurons.flat(spec.target).numel()),
        "n_source_neurons": int(neurons.flat(spec.source).numel()) if spec.zero_source else 0,
        "selection_method": neurons.method,
        "target_tokens": {"contrast": spec.source or "en",
                          "n": None if target_ids is None else int(target_ids.numel())},
    }
    return SteerResult(run(spec), config)


def strength_sweep(
    model: LapeModel, neurons: NeuronSelection, stats: ActivationStats | None,
    prompts: Sequence[str], spec: SteerSpec, strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0), *,
    generation: GenerationConfig = PAPER_GENERATION,
    controls: Mapping[str, NeuronSelection] | None = None,
) -> pd.DataFrame:
    """Target rate and cost as a function of the steering strength, for one setting.

    Each of ``strengths`` replaces ``spec.strength``; the unsteered outputs are generated
    once. Other arguments as :func:`steer`.

    Returns:
        A row per (strength, neuron set): ``target``, ``source``, ``strength``, ``neurons``
        and the columns of :meth:`SteerResult.summary`.
    """
    specs = [dataclasses.replace(spec, strength=s) for s in strengths]
    if not specs:
        raise InterventionError("no strengths given")
    for s in specs:
        prompts = _check_setup(model, neurons, stats, s, prompts, controls)
    run, _ = _runner(model, neurons, stats, prompts, spec, generation, controls)
    frames = []
    for s in specs:
        result = SteerResult(run(s), {"target": s.target, "source": s.source})
        summ = result.summary().reset_index()
        for col in ("strength", "source", "target"):
            summ.insert(0, col, getattr(s, col))
        frames.append(summ)
        log.info("strength %g: target rate %s", s.strength,
                 summ.set_index("neurons")["target_rate"].to_dict())
    return pd.concat(frames, ignore_index=True)
