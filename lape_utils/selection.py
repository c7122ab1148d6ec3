"""The result type of neuron identification: which neurons belong to which language.

What :func:`lape_utils.lape.identify` returns and the intervention code consumes; saved with
a JSON sidecar. The paper's ``*.neuron.pth`` format is :mod:`lape_utils.published`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ._files import refuse_overwrite

logger = logging.getLogger(__name__)

__all__ = ["NeuronSelection"]

_FORMAT = "lape_utils.NeuronSelection"
_FORMAT_VERSION = 1
_TABLES = ("selected", "selected_prob", "selected_entropy", "selected_score")


def _as_index_tensor(x: Any, where: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{where}: neuron indices must be integers, got dtype {t.dtype}.")
    if t.dim() != 1:
        raise ValueError(f"{where}: expected a 1-D index tensor, got shape {tuple(t.shape)}.")
    return t.to(torch.long)


def _increasing(t: torch.Tensor) -> bool:
    """Whether a 1-D tensor is strictly increasing (sorted, no duplicates)."""
    return t.numel() < 2 or bool((t[1:] > t[:-1]).all())


@dataclass(eq=False)
class NeuronSelection:
    """Language-specific neurons: for each language, the sorted neuron indices of each layer.

    Compare with :meth:`equals` (``==`` is identity).

    Attributes:
        languages: Language codes, in the column order of every table.
        indices: ``indices[lang][layer]``: sorted, duplicate-free ``LongTensor`` of neuron
            indices; ``n_layers`` tensors per language, empty ones (and languages) kept.
        n_layers: Number of layers ``L``.
        n_neurons: FFN neurons per layer ``D``.
        method: How the selection was made (``"lape"``, ``"random_matched"``, ...).
        config: The thresholds used (``LapeConfig.to_dict()``).
        provenance: JSON-serialisable facts (model id, corpus, thresholds reached, ...).
        selected: Optional ``[n_selected, 2]`` ``(layer, neuron)`` of every neuron the ranking
            selected, sorted layer-major, including any that passed no language's bar.
        selected_prob: Optional ``[n_selected, lang]`` activation probability.
        selected_entropy: Optional ``[n_selected]`` LAPE entropy.
        selected_score: Optional ``[n_selected]`` score the method ranked by (smaller = more
            language-specific); ``None`` when it is the LAPE entropy.
    """

    languages: list[str]
    indices: dict[str, list[torch.Tensor]]
    n_layers: int
    n_neurons: int
    method: str = "lape"
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    selected: torch.Tensor | None = None
    selected_prob: torch.Tensor | None = None
    selected_entropy: torch.Tensor | None = None
    selected_score: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.languages = [str(lang) for lang in self.languages]
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages must be unique, got {self.languages}.")
        for name in ("n_layers", "n_neurons"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        missing = [lang for lang in self.languages if lang not in self.indices]
        extra = [lang for lang in self.indices if lang not in self.languages]
        if missing or extra:
            raise ValueError(
                f"indices must have exactly one entry per language; missing {missing}, "
                f"unexpected {extra} (languages={self.languages})."
            )
        self.indices = {lang: self._checked_layers(lang) for lang in self.languages}
        self._check_tables()
        self.config = dict(self.config)
        self.provenance = dict(self.provenance)

    def _checked_layers(self, lang: str) -> list[torch.Tensor]:
        """``indices[lang]`` validated, as sorted duplicate-free LongTensors."""
        layers = list(self.indices[lang])
        if len(layers) != self.n_layers:
            raise ValueError(
                f"indices[{lang!r}] has {len(layers)} layers, expected n_layers={self.n_layers}."
            )
        out = []
        for li, t in enumerate(layers):
            t = _as_index_tensor(t, f"indices[{lang!r}][{li}]")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.n_neurons):
                raise ValueError(
                    f"indices[{lang!r}][{li}]: indices must lie in [0, {self.n_neurons}), got "
                    f"min {int(t.min())}, max {int(t.max())}."
                )
            out.append(t if _increasing(t) else torch.unique(t))  # unique sorts, too
        return out

    def _check_tables(self) -> None:
        tables = {name: getattr(self, name) for name in _TABLES[1:]}
        sel = self.selected
        if sel is None:
            given = [k for k, v in tables.items() if v is not None]
            if given:
                raise ValueError(f"{given} given without `selected` (the rows they describe).")
            return
        if sel.dim() != 2 or sel.shape[1] != 2 or sel.dtype != torch.long:
            raise ValueError(
                f"selected must be a LongTensor [n_selected, 2], got {sel.dtype} "
                f"{tuple(sel.shape)}."
            )
        if not _increasing(sel[:, 0] * self.n_neurons + sel[:, 1]):
            raise ValueError("selected must be sorted layer-major without duplicates.")
        for name, t in tables.items():
            if t is not None and t.shape[0] != sel.shape[0]:
                raise ValueError(f"{name} has {t.shape[0]} rows but selected has {sel.shape[0]}.")
        prob = self.selected_prob
        if prob is not None and tuple(prob.shape[1:]) != (len(self.languages),):
            raise ValueError(
                f"selected_prob must be [n_selected, {len(self.languages)}], got "
                f"{tuple(prob.shape)}."
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_flat(
        cls, flat: Mapping[str, torch.Tensor], n_layers: int, n_neurons: int, **kwargs: Any
    ) -> NeuronSelection:
        """Build from flat indices ``layer * n_neurons + neuron`` per language.

        Args:
            flat: ``{lang: LongTensor [n]}`` flat indices (any order; duplicates removed).
            n_layers: Number of layers ``L``.
            n_neurons: Neurons per layer ``D``.
            **kwargs: Other :class:`NeuronSelection` fields (``method``, ``config``, ...).

        Returns:
            The selection, languages in the mapping's order.
        """
        indices = {}
        for lang, f in flat.items():
            f = torch.as_tensor(f, dtype=torch.long).reshape(-1)
            if not _increasing(f):
                f = torch.unique(f)
            if f.numel() and (int(f[0]) < 0 or int(f[-1]) >= n_layers * n_neurons):
                raise ValueError(
                    f"flat indices must lie in [0, {n_layers * n_neurons}), got "
                    f"[{int(f[0])}, {int(f[-1])}]."
                )
            layer = torch.div(f, n_neurons, rounding_mode="floor")
            sizes = torch.bincount(layer, minlength=n_layers).tolist()  # neurons per layer
            indices[lang] = [t.clone() for t in (f - layer * n_neurons).split(sizes)]
        return cls(list(flat), indices, n_layers, n_neurons, **kwargs)

    @classmethod
    def from_masks(cls, masks: Mapping[str, torch.Tensor], **kwargs: Any) -> NeuronSelection:
        """Build from boolean masks.

        Args:
            masks: ``{lang: bool [layer, neuron]}``, all of one shape.
            **kwargs: Other :class:`NeuronSelection` fields.

        Returns:
            The selection, languages in the mapping's order.
        """
        shapes = {tuple(m.shape) for m in masks.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"masks must all be [layer, neuron] of one shape, got {shapes}.")
        n_layers, n_neurons = next(iter(shapes))
        flat = {lang: m.reshape(-1).nonzero().squeeze(1) for lang, m in masks.items()}
        return cls.from_flat(flat, n_layers, n_neurons, **kwargs)

    # ------------------------------------------------------------------ views
    def flat(self, lang: str) -> torch.Tensor:
        """Sorted flat indices ``layer * n_neurons + neuron`` of one language.

        Raises:
            KeyError: ``lang`` is not one of :attr:`languages`.
        """
        if lang not in self.indices:
            raise KeyError(f"language {lang!r} not in this selection; it has {self.languages}.")
        return torch.cat([t + li * self.n_neurons for li, t in enumerate(self.indices[lang])])

    def _mask(self, languages: list[str]) -> torch.Tensor:
        m = torch.zeros(self.n_layers * self.n_neurons, dtype=torch.bool)
        for lang in languages:
            m[self.flat(lang)] = True
        return m.view(self.n_layers, self.n_neurons)

    def mask(self, lang: str) -> torch.Tensor:
        """``bool [layer, neuron]`` membership mask of one language."""
        return self._mask([lang])

    def union(self) -> torch.Tensor:
        """``bool [layer, neuron]``: the neurons that belong to at least one language."""
        return self._mask(self.languages)

    def total_distinct(self) -> int:
        """Number of distinct neurons over all languages (a neuron in 2 languages counts once)."""
        return int(self.union().sum())

    def _totals(self) -> dict[str, int]:
        return {lang: sum(int(t.numel()) for t in self.indices[lang]) for lang in self.languages}

    def counts(self) -> pd.DataFrame:
        """Neurons per layer and language.

        Returns:
            DataFrame, index ``layer`` (0..L-1), one int column per language.
        """
        data = {lang: [int(t.numel()) for t in self.indices[lang]] for lang in self.languages}
        df = pd.DataFrame(data, index=pd.RangeIndex(self.n_layers, name="layer"))
        df.columns.name = "language"
        return df

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (language, neuron) membership, in that order.

        Returns:
            Columns ``language, layer, neuron``, then, with the per-neuron tables,
            ``prob_<lang>`` per language, ``entropy`` and (non-LAPE rankings) ``score``.
        """
        flats = [self.flat(lang) for lang in self.languages]
        flat = torch.cat(flats) if flats else torch.zeros(0, dtype=torch.long)
        layer = torch.div(flat, self.n_neurons, rounding_mode="floor")
        df = pd.DataFrame({
            "language": pd.Categorical(
                [lang for lang, f in zip(self.languages, flats) for _ in range(f.numel())],
                categories=self.languages,
            ),
            "layer": layer.numpy(), "neuron": (flat - layer * self.n_neurons).numpy(),
        })
        if self.selected is None or self.selected_prob is None:
            return df
        sel_flat = self.selected[:, 0] * self.n_neurons + self.selected[:, 1]
        pos = torch.searchsorted(sel_flat, flat)
        if flat.numel() and (
            sel_flat.numel() == 0
            or not bool((sel_flat[pos.clamp_max(sel_flat.numel() - 1)] == flat).all())
        ):
            raise ValueError("selected table does not cover every member neuron.")
        for k, lang in enumerate(self.languages):
            df[f"prob_{lang}"] = self.selected_prob[pos, k].double().numpy()
        # + 0.0 turns the reference's -0.0 into 0.0
        for column, table in (("entropy", self.selected_entropy), ("score", self.selected_score)):
            if table is not None:
                df[column] = (table[pos].double() + 0.0).numpy()
        return df

    def equals(self, other: NeuronSelection) -> bool:
        """Whether two selections hold the same sets (not comparing method, config, tables)."""
        return (self.languages, self.n_layers, self.n_neurons) == (
            other.languages, other.n_layers, other.n_neurons
        ) and all(torch.equal(self.flat(lang), other.flat(lang)) for lang in self.languages)

    def __repr__(self) -> str:
        per_lang = ", ".join(f"{lang} {c}" for lang, c in self._totals().items())
        cfg = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return (
            f"NeuronSelection(method={self.method!r}, {self.n_layers} layers x "
            f"{self.n_neurons} neurons, {self.total_distinct()} distinct; {per_lang}"
            + (f"; {cfg}" if cfg else "")
            + ")"
        )

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        """What the sidecar says about the selection (for people and tools)."""
        return {
            "format": _FORMAT, "format_version": _FORMAT_VERSION, "method": self.method,
            "languages": list(self.languages),
            "shape": {"n_layers": self.n_layers, "n_neurons": self.n_neurons},
            "counts": self._totals(), "total_distinct": self.total_distinct(),
            "config": self.config, "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save to a torch file (everything) plus a ``<path>.json`` sidecar (for people).

        Args:
            path: Target file, e.g. ``results/llama2-7b.lape.pt``.
            overwrite: Replace an existing file or sidecar.

        Returns:
            The path written.

        Raises:
            FileExistsError: ``path`` or its sidecar exists and ``overwrite`` is False.
            TypeError: Config or provenance is not JSON-serialisable.
        """
        path = Path(path)
        sidecar = _sidecar(path)
        refuse_overwrite([path, sidecar], overwrite)
        meta = self._meta()
        payload = {
            "format": _FORMAT, "format_version": _FORMAT_VERSION, "method": self.method,
            "languages": list(self.languages),
            "indices": [list(self.indices[lang]) for lang in self.languages],
            "n_layers": self.n_layers, "n_neurons": self.n_neurons,
            "config_json": _to_json(self.config, "config"),
            "provenance_json": _to_json(self.provenance, "provenance"),
            "tables": {name: getattr(self, name) for name in _TABLES},
        }
        meta["saved_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta["torch_version"] = torch.__version__
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, path)
        sidecar.write_text(json.dumps(meta, indent=2) + "\n")
        logger.info("saved %r to %s (+ %s)", self, path, sidecar.name)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuronSelection:
        """Load a selection written by :meth:`save`.

        Args:
            path: The torch file (its ``.json`` sidecar is checked when present).

        Returns:
            The selection, tables included.

        Raises:
            ValueError: Not a saved NeuronSelection, or the sidecar disagrees with it.
        """
        path = Path(path)
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(
                f"{path} is not a saved NeuronSelection (no '{_FORMAT}' header). For the "
                "paper's List[List[LongTensor]] files use lape_utils.published.from_official()."
            )
        if payload.get("format_version", 0) > _FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {payload['format_version']}, newer than this "
                f"code ({_FORMAT_VERSION}); update lape_utils."
            )
        langs = list(payload["languages"])
        tables = payload.get("tables") or {}
        sel = cls(
            languages=langs, indices=dict(zip(langs, payload["indices"], strict=True)),
            n_layers=int(payload["n_layers"]), n_neurons=int(payload["n_neurons"]),
            method=payload["method"], config=json.loads(payload["config_json"]),
            provenance=json.loads(payload["provenance_json"]),
            **{k: tables.get(k) for k in _TABLES},
        )
        sidecar = _sidecar(path)
        if sidecar.exists():
            meta, ours = json.loads(sidecar.read_text()), sel._meta()
            keys = ("method", "languages", "shape", "config")
            bad = {k: (meta.get(k), ours[k]) for k in keys if meta.get(k) != ours[k]}
            if bad:
                raise ValueError(
                    f"sidecar {sidecar} disagrees with {path} on {sorted(bad)}: "
                    + "; ".join(f"{k}: sidecar {a!r} vs file {b!r}" for k, (a, b) in bad.items())
                    + ". One of the two was replaced or edited; re-save the selection."
                )
        else:
            logger.warning("no sidecar %s next to %s; loading without the check", sidecar, path)
        return sel


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _to_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=False, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must be JSON-serialisable to be saved ({err}); convert tensors and "
            "paths to lists/str first."
        ) from err
