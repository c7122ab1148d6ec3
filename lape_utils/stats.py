"""Activation statistics: the counts LAPE is computed from, saved with their provenance.

A directory of ``stats.pt`` plus ``provenance.json``; loading refuses a provenance other than
the one expected, saying what differs. Shards of one corpus can be merged, and the reference
implementation's per-language count files imported and exported.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._files import refuse_overwrite
from .languages import sort_languages
from .lape import activation_probability

log = logging.getLogger(__name__)

STATS_FILE = "stats.pt"
PROVENANCE_FILE = "provenance.json"

# provenance keys that must agree for two statistics to be the same experiment
IDENTITY_KEYS = ("model", "model_fingerprint", "dtype", "corpus_fingerprint", "seq_len")
# ... and for statistics of parts of one experiment to be added up (merge)
MERGE_KEYS = (
    "model", "model_fingerprint", "family", "site", "dtype", "tokenizer", "corpus_fingerprint",
    "seq_len", "bos_prepended_not_counted", "bootstrap_replicates", "bootstrap_seed",
)
# provenance of one run, which a merge keeps per part under "merged_from"
RUN_KEYS = (
    "chunks", "shard", "world_size", "batch_size", "backend", "packages", "started", "finished",
    "date", "capture_seconds_this_session",
)


#: Fractions of each language's chunks at which capture records the counts so far.
BUDGET_FRACTIONS: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 1 / 2)

# the tensors of a statistics object, each with the language on its last axis
_TENSORS = (
    "n", "over_zero", "activation_sum", "boot_n", "boot_over_zero", "budget_n", "budget_over_zero"
)


class ProvenanceMismatchError(ValueError):
    """Cached statistics were computed for something other than what was asked."""


@dataclass
class ActivationStats:
    """Per-language activation counts of every MLP neuron.

    Attributes:
        languages: Language codes, in the order of the last axis.
        n: ``[lang]`` int64, tokens counted per language.
        over_zero: ``[layer, neuron, lang]`` int64, tokens on which the activation was > 0.
        activation_sum: ``[layer, neuron, lang]`` float64, sum of the activations, or ``None``.
        boot_n: ``[rep, lang]`` int64, Poisson(1)-weighted token counts per bootstrap
            replicate, or ``None``.
        boot_over_zero: ``[rep, layer, neuron, lang]`` int64, the replicates' weighted active
            counts, or ``None``.
        budget_n: ``[snapshot, lang]`` int64, tokens in the first
            ``provenance["budget_chunks"][lang][s]`` chunks (:data:`BUDGET_FRACTIONS`), or
            ``None``.
        budget_over_zero: ``[snapshot, layer, neuron, lang]`` int64, their active counts.
        provenance: JSON-able description of how the counts were made (model, corpus, ...).
    """

    languages: list[str]
    n: torch.Tensor
    over_zero: torch.Tensor
    activation_sum: torch.Tensor | None = None
    boot_n: torch.Tensor | None = None
    boot_over_zero: torch.Tensor | None = None
    budget_n: torch.Tensor | None = None
    budget_over_zero: torch.Tensor | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = list(self.languages)
        self.n = torch.as_tensor(self.n, dtype=torch.int64)
        self.over_zero = torch.as_tensor(self.over_zero).to(torch.int64)
        k = len(self.languages)
        if len(set(self.languages)) != k:
            raise ValueError(f"duplicate language codes in {self.languages}")
        if self.over_zero.ndim != 3 or self.over_zero.shape[-1] != k or self.n.shape != (k,):
            raise ValueError(
                f"shapes disagree: over_zero {tuple(self.over_zero.shape)} should be "
                f"[layer, neuron, {k}] and n {tuple(self.n.shape)} should be [{k}]"
            )
        if self.activation_sum is not None:
            self.activation_sum = torch.as_tensor(self.activation_sum).to(torch.float64)
            if self.activation_sum.shape != self.over_zero.shape:
                raise ValueError("activation_sum must have the shape of over_zero")
        for kind in ("boot", "budget"):
            n, over_zero = getattr(self, f"{kind}_n"), getattr(self, f"{kind}_over_zero")
            if (n is None) != (over_zero is None):
                raise ValueError(f"{kind}_n and {kind}_over_zero come together")
            if n is None:
                continue
            n = torch.as_tensor(n, dtype=torch.int64)
            over_zero = torch.as_tensor(over_zero).to(torch.int64)
            if n.shape != (n.shape[0], k) or over_zero.shape != (n.shape[0], *self.over_zero.shape):
                raise ValueError(
                    f"{kind}_n must be [rows, lang] and {kind}_over_zero [rows, layer, neuron, "
                    f"lang]; got {tuple(n.shape)} and {tuple(over_zero.shape)}"
                )
            setattr(self, f"{kind}_n", n)
            setattr(self, f"{kind}_over_zero", over_zero)

    # ------------------------------------------------------------------ views
    @property
    def n_layers(self) -> int:
        """Layers."""
        return int(self.over_zero.shape[0])

    @property
    def n_neurons(self) -> int:
        """Neurons per layer."""
        return int(self.over_zero.shape[1])

    @property
    def n_replicates(self) -> int:
        """Bootstrap replicates recorded (0 if none)."""
        return 0 if self.boot_n is None else int(self.boot_n.shape[0])

    def index(self, lang: str) -> int:
        """Position of ``lang`` on the language axis."""
        if lang not in self.languages:
            raise KeyError(f"language {lang!r} is not in these statistics: {self.languages}")
        return self.languages.index(lang)

    def probability(self) -> torch.Tensor:
        """``[layer, neuron, lang]`` activation probability ``over_zero / n`` (float32)."""
        return activation_probability(self.over_zero, self.n)

    def mean_activation(self, lang: str | None = None) -> torch.Tensor:
        """Mean activation per neuron: ``[layer, neuron, lang]``, or ``[layer, neuron]``.

        Raises:
            ValueError: if the statistics were recorded without activation sums.
        """
        if self.activation_sum is None:
            raise ValueError("these statistics hold no activation_sum; capture them again")
        mean = self.activation_sum / self.n.clamp(min=1).to(torch.float64)
        return mean if lang is None else mean[..., self.index(lang)]

    def subset(self, languages: Sequence[str]) -> ActivationStats:
        """The same statistics restricted to (and ordered as) ``languages``."""
        idx = [self.index(lang) for lang in languages]
        picked = {name: getattr(self, name) for name in _TENSORS}
        picked = {name: None if t is None else t[..., idx] for name, t in picked.items()}
        return ActivationStats(list(languages), **picked, provenance=dict(self.provenance))

    @property
    def n_budgets(self) -> int:
        """Budget snapshots recorded (0 if none)."""
        return 0 if self.budget_n is None else int(self.budget_n.shape[0])

    def at_budget(self, snapshot: int) -> ActivationStats:
        """The counts of budget snapshot ``snapshot`` (the first chunks of every language).

        Returns:
            Statistics with ``n`` and ``over_zero`` only; ``provenance["budget"]`` names the
            snapshot and its chunks.

        Raises:
            ValueError: ``snapshot`` is not among those recorded.
        """
        if not 0 <= snapshot < self.n_budgets:
            raise ValueError(
                f"snapshot {snapshot} is not among the {self.n_budgets} budget snapshots of "
                "these statistics (capture records them; imported counts have none)"
            )
        chunks = self.provenance.get("budget_chunks", {})
        budget = {
            "snapshot": snapshot,
            "fraction": BUDGET_FRACTIONS[snapshot] if snapshot < len(BUDGET_FRACTIONS) else None,
            "chunks": {lang: c[snapshot] for lang, c in chunks.items()},
        }
        return ActivationStats(
            self.languages, self.budget_n[snapshot], self.budget_over_zero[snapshot],
            provenance={**self.provenance, "budget": budget},
        )

    @classmethod
    def merge(cls, *parts: ActivationStats) -> ActivationStats:
        """Adds up statistics counted on disjoint chunks of one corpus (``capture(shard=)``).

        Integer counts come out exactly as in a one-process capture; ``activation_sum`` up
        to float64 rounding (another order of addition).

        Args:
            *parts: The statistics; languages are aligned to the first part's order.

        Returns:
            The summed statistics; provenance ``"chunks"`` holds the union of the counted
            chunks (a warning if it misses some), ``"merged_from"`` each part's run.

        Raises:
            ProvenanceMismatchError: Parts differ in a :data:`MERGE_KEYS` field, languages or
                shape, or count some chunk twice.
            ValueError: No parts, or a part that does not record which chunks it counted.
        """
        if not parts:
            raise ValueError("merge needs at least one ActivationStats")
        first = parts[0]
        diffs = []
        for i, part in enumerate(parts[1:], start=2):
            diffs += [
                f"{key}: part 1 has {a!r}, part {i} has {b!r}"
                for key, a, b in _differing(MERGE_KEYS, first.provenance, part.provenance)
            ]
            if sorted(part.languages) != sorted(first.languages):
                diffs.append(
                    f"languages: part 1 has {first.languages}, part {i} has {part.languages}"
                )
            if part.over_zero.shape[:2] != first.over_zero.shape[:2]:
                diffs.append(
                    f"shape: part 1 is {tuple(first.over_zero.shape[:2])} [layer, neuron], "
                    f"part {i} is {tuple(part.over_zero.shape[:2])}"
                )
        if diffs:
            raise ProvenanceMismatchError(
                "cannot merge statistics of different experiments:\n  " + "\n  ".join(diffs)
            )
        langs = first.languages
        chunks = _union_chunks([counted_chunks(p.provenance) for p in parts], langs)
        aligned = [p.subset(langs) for p in parts]
        summed = {}
        for name in _TENSORS:  # a tensor that some part lacks is left out
            values = [getattr(p, name) for p in aligned]
            missing = any(v is None for v in values)
            summed[name] = None if missing else sum(values[1:], values[0].clone())
        prov = {k: v for k, v in first.provenance.items()
                if k not in (*RUN_KEYS, "merged_from", "tokens_counted", "shape")}
        prov["chunks"] = chunks
        prov["merged_from"] = []
        for p in parts:  # a part that is itself a merge contributes the runs it came from
            run = {k: p.provenance[k] for k in RUN_KEYS if k in p.provenance}
            prov["merged_from"] += p.provenance.get("merged_from") or [run]
        prov["date"] = now_utc()
        corpus = _corpus_chunks(first.provenance)
        counted = {lang: sum(b - a for a, b in chunks[lang]) for lang in langs}
        short = {lang: f"{c}/{corpus.get(lang)}" for lang, c in counted.items()
                 if c != corpus.get(lang)}
        if short:
            log.warning("the merged statistics do not cover every chunk: %s", short)
        return cls(langs, **summed, provenance=prov)

    def __repr__(self) -> str:
        tokens = ", ".join(f"{lang}={int(c):,}" for lang, c in zip(self.languages, self.n))
        return (
            f"ActivationStats({self.n_layers} layers x {self.n_neurons} neurons, tokens: "
            f"{tokens}; {self.n_replicates} bootstrap replicates; "
            f"model={self.provenance.get('model')!r})"
        )

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes ``stats.pt`` and ``provenance.json`` into ``directory``.

        Raises:
            FileExistsError: Statistics are already there and ``overwrite`` is false.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / STATS_FILE
        refuse_overwrite([target], overwrite)
        payload = {"languages": self.languages, **{name: getattr(self, name) for name in _TENSORS}}
        tmp = target.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, target)
        prov = dict(self.provenance)
        prov["tokens_counted"] = {lang: int(c) for lang, c in zip(self.languages, self.n)}
        prov["shape"] = [self.n_layers, self.n_neurons, len(self.languages)]
        prov["bootstrap_replicates"] = self.n_replicates
        (directory / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike, expect: Mapping[str, object] | None = None
    ) -> ActivationStats:
        """Reads statistics saved by :meth:`save`.

        Args:
            directory: The directory holding ``stats.pt`` and ``provenance.json``.
            expect: Provenance entries the statistics must match.

        Raises:
            FileNotFoundError: no statistics in ``directory``.
            ProvenanceMismatchError: A value in ``expect`` differs.
        """
        directory = Path(directory)
        target = directory / STATS_FILE
        if not target.is_file():
            raise FileNotFoundError(f"no activation statistics ({STATS_FILE}) in {directory}")
        prov_path = directory / PROVENANCE_FILE
        prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
        if expect:
            check_provenance(prov, expect, where=str(directory))
        data = torch.load(target, weights_only=True)
        tensors = {name: data.get(name) for name in _TENSORS}
        return cls(data["languages"], **tensors, provenance=prov)

    # ------------------------------------------------- the reference's count files
    def export_reference(self, directory: str | os.PathLike, tag: str, overwrite: bool = False):
        """Writes the reference's count files, ``activation.<lang>.train.<tag>``, one per language.

        Each holds ``dict(n=int, over_zero=IntTensor[layer, neuron])``.

        Returns:
            The list of written paths.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, lang in enumerate(self.languages):
            path = directory / f"activation.{lang}.train.{tag}"
            refuse_overwrite([path], overwrite)
            over_zero = self.over_zero[..., i]
            if over_zero.numel() == 0 or int(over_zero.max()) < 2**31:
                over_zero = over_zero.to(torch.int32)
            torch.save({"n": int(self.n[i]), "over_zero": over_zero}, path)
            paths.append(path)
        return paths

    @classmethod
    def from_reference(
        cls, files: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
        languages: Sequence[str] | None = None,
    ) -> ActivationStats:
        """Imports the reference code's per-language count files.

        Args:
            files: ``{lang: path}``, or paths named ``activation.<lang>.train.*``, or a
                directory holding them.
            languages: Order of the languages (default: a mapping's order, else the
                package's language order, en, zh, fr, ..., as in the paper's neuron files).

        Raises:
            ValueError: A file without ``n``/``over_zero``, or shapes that disagree.
        """
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        if not isinstance(files, Mapping):
            found: dict[str, Path] = {}
            for f in map(Path, files):
                candidates = sorted(f.glob("activation.*")) if f.is_dir() else [f]
                for c in candidates:
                    parts = c.name.split(".")
                    if len(parts) < 3 or parts[0] != "activation":
                        raise ValueError(
                            f"cannot tell the language of {c}: expected activation.<lang>.*"
                        )
                    found[parts[1]] = c
            if not found:
                raise FileNotFoundError(f"no activation.<lang>.* count files in {files}")
            files = {lang: found[lang] for lang in sort_languages(found)}
        order = list(languages) if languages is not None else list(files)
        missing = [lang for lang in order if lang not in files]
        if missing:
            raise ValueError(f"no count file for languages {missing}; have {list(files)}")
        ns, counts = [], []
        for lang in order:
            data = torch.load(files[lang], weights_only=True)
            if not isinstance(data, Mapping) or "n" not in data or "over_zero" not in data:
                raise ValueError(f"{files[lang]} is not a count file (dict with n, over_zero)")
            ns.append(int(data["n"]))
            counts.append(torch.as_tensor(data["over_zero"]).to(torch.int64))
        shapes = {tuple(c.shape) for c in counts}
        if len(shapes) != 1:
            raise ValueError(f"count files disagree on [layer, neuron] shape: {shapes}")
        return cls(
            languages=order,
            n=torch.tensor(ns),
            over_zero=torch.stack(counts, dim=-1),
            provenance={
                "source": "reference count files",
                "files": {lang: str(files[lang]) for lang in order}, "imported": now_utc(),
            },
        )


def check_provenance(found: Mapping, expect: Mapping, where: str = "cache") -> None:
    """Raises :class:`ProvenanceMismatchError` listing every expected field that differs."""
    diffs = [f"{key}: cached {have!r}, asked {want!r}"
             for key, have, want in _differing(expect, found, expect)]
    if diffs:
        raise ProvenanceMismatchError(
            f"the statistics in {where} were made for something else:\n  " + "\n  ".join(diffs)
            + "\nUse another output directory, or pass overwrite=True to recompute."
        )


def counted_chunks(provenance: Mapping) -> dict[str, list[list[int]]]:
    """Chunk intervals ``[start, stop)`` per language that statistics counted.

    Older captures, which counted every chunk, do not record ``"chunks"``.

    Raises:
        ValueError: The provenance does not say (e.g. imported reference count files).
    """
    if "chunks" in provenance:
        chunks = provenance["chunks"]
        return {lang: [[int(a), int(b)] for a, b in spans] for lang, spans in chunks.items()}
    return {lang: [[0, n]] for lang, n in _corpus_chunks(provenance).items()}


def _corpus_chunks(provenance: Mapping) -> dict[str, int]:
    """Chunks per language of the packed corpus the statistics were captured from."""
    if "corpus_chunks" in provenance:
        return {lang: int(n) for lang, n in provenance["corpus_chunks"].items()}
    try:
        per_chunk = int(provenance["seq_len"]) - bool(provenance["bos_prepended_not_counted"])
        return {lang: int(t) // per_chunk for lang, t in provenance["tokens_per_language"].items()}
    except (KeyError, TypeError, AttributeError):
        raise ValueError(
            "these statistics do not record which chunks of which corpus they counted "
            f"(provenance source: {provenance.get('source', 'unknown')!r}), so they cannot be "
            "merged safely; capture them with lape_utils.capture"
        ) from None


def _union_chunks(records: Sequence[Mapping[str, list]], languages: Sequence[str]) -> dict:
    """Union of the parts' chunk intervals per language; refuses overlaps and gaps in records."""
    union = {}
    for lang in languages:
        spans = []
        for i, rec in enumerate(records, start=1):
            if lang not in rec:
                raise ValueError(f"part {i} does not record which chunks of {lang!r} it counted")
            spans += [(a, b, i) for a, b in rec[lang] if b > a]
        spans.sort()
        merged: list[list[int]] = []
        prev = None
        for a, b, i in spans:
            if prev is not None and a < prev[1]:
                raise ProvenanceMismatchError(
                    f"overlapping chunks: language {lang!r} chunks [{prev[0]}, {prev[1]}) of "
                    f"part {prev[2]} and [{a}, {b}) of part {i} overlap; merge only statistics "
                    "of disjoint shards (each chunk must be counted once)"
                )
            if merged and merged[-1][1] == a:
                merged[-1][1] = b
            else:
                merged.append([a, b])
            prev = (a, b, i)
        union[lang] = merged
    return union


def _differing(keys, a: Mapping, b: Mapping) -> list[tuple[str, object, object]]:
    """``(key, a[key], b[key])`` for each key whose values differ once written as JSON."""

    def norm(value):
        return json.loads(json.dumps(value, sort_keys=True, default=str))

    return [(k, a.get(k), b.get(k)) for k in keys if norm(a.get(k)) != norm(b.get(k))]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lape-workbook", "torch", "transformers", "nnsight", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def now_utc() -> str:
    """The current time, ISO 8601, UTC."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
