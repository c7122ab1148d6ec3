"""Perplexity with and without interventions, and the perplexity-change matrix of the paper.

NLL is the mean next-token negative log-likelihood in nats (``perplexity = exp(nll)``).
Every scoring pass reduces the logits inside its trace to per-sequence NLL sums and token
counts (``[batch]`` each), so a model loaded with ``remote=True`` is scored on NDIF and only
those numbers come back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._files import refuse_overwrite
from .config import LapeConfig
from .intervene import (
    Intervention,
    InterventionError,
    _left_pad,
    check_interventions,
    check_selection,
    forward_logits,
)

if TYPE_CHECKING:
    from .models import LapeModel
    from .packing import PackedCorpus
    from .selection import NeuronSelection

log = logging.getLogger(__name__)

__all__ = [
    "PplMatrix", "delta_interval", "nll", "perplexity_matrix", "score_continuations",
    "threshold_effect",
]

NONE_ROW = "none"
_IGNORE = -100  # target id that F.cross_entropy leaves out


def _token_nll(
    logits: torch.Tensor, ids: torch.Tensor, predict: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL of each sequence, row by row (bounds the memory), in the trace.

    Unscored positions get the ignored target ``-100``: no shape depends on the data.

    Args:
        logits: ``[batch, pos, vocab]``.
        ids: ``[batch, pos]``.
        predict: ``[batch, pos - 1]`` bool, which predictions count (``None``: all).

    Returns:
        ``(nll_sum [batch] float64, tokens [batch] int64)``: nats, scored predictions.
    """
    targets = ids[:, 1:].to(logits.device)
    if predict is None:
        predict = torch.ones_like(targets, dtype=torch.bool)
    predict = predict.to(logits.device).bool()
    targets = torch.where(predict, targets, _IGNORE)
    sums = torch.stack([
        F.cross_entropy(logits[row, :-1].float(), targets[row], reduction="sum",
                        ignore_index=_IGNORE).double()
        for row in range(ids.shape[0])
    ])
    return sums, predict.sum(-1).long()


def _batch_nll(model, ids, attention_mask, predict, ivs):
    """One scoring pass: ``_token_nll`` of the batch, reduced inside the trace."""
    return forward_logits(
        model, ids, attention_mask, ivs, reduce=partial(_token_nll, ids=ids, predict=predict)
    )


def _chunk_nll(model, chunks, ivs, batch_size, bar=None, attention_mask=None):
    """Summed NLL and predicted-token count of every chunk: ``([n] float64, [n] int64)``."""
    sums, counts = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.int64)]
    for start in range(0, chunks.shape[0], int(batch_size)):
        ids = chunks[start : start + int(batch_size)]
        mask = predict = None
        if attention_mask is not None:
            mask = attention_mask[start : start + int(batch_size)]
            predict = mask[:, 1:].bool() & mask[:, :-1].bool()
        s, c = _batch_nll(model, ids, mask, predict, ivs)
        sums.append(s.cpu())
        counts.append(c.cpu())
        if bar is not None:
            bar.update(int(ids.shape[0]))
    return torch.cat(sums), torch.cat(counts)


def nll(
    model: LapeModel, chunks: torch.Tensor,
    interventions: Sequence[Intervention] | Intervention = (), batch_size: int = 4, *,
    attention_mask: torch.Tensor | None = None, progress: bool = True,
) -> tuple[float, int]:
    """Mean next-token NLL of token chunks, with interventions.

    Position ``t`` predicts token ``t + 1`` when both are real tokens; the mean is over all
    predictions of all chunks (token-weighted).

    Args:
        model: The loaded model.
        chunks: ``[n, seq]`` token ids (e.g. ``PackedCorpus.chunks[lang]``; first token BOS).
        interventions: Applied at every position (``"generated"`` refused: nothing is generated).
        batch_size: Chunks per forward pass.
        attention_mask: ``[n, seq]`` 1 for real tokens (left padding), or ``None``.
        progress: Show a tqdm progress bar.

    Returns:
        ``(mean NLL in nats, number of predicted tokens)``.

    Raises:
        InterventionError: an intervention that does not fit the model, or ``"generated"``.
        ValueError: chunks not ``[n, seq >= 2]``, or nothing to predict.
    """
    ivs = check_interventions(model, interventions)
    for iv in ivs:
        if iv.positions == "generated":
            raise InterventionError(
                f"{iv!r} only acts on generated tokens, and a scoring pass generates none; "
                "use positions='all'"
            )
    chunks = torch.as_tensor(chunks)
    if chunks.ndim != 2 or chunks.shape[1] < 2:
        raise ValueError(f"chunks must be [n, seq] with seq >= 2, got {tuple(chunks.shape)}")
    if attention_mask is not None and attention_mask.shape != chunks.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} differs from chunks "
            f"{tuple(chunks.shape)}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bar = tqdm(total=chunks.shape[0], desc="nll", unit="chunk", disable=not progress, leave=False)
    sums, counts = _chunk_nll(model, chunks, ivs, batch_size, bar, attention_mask)
    bar.close()
    total, count = float(sums.sum()), int(counts.sum())
    if count == 0:
        raise ValueError("no token to predict in these chunks (all padding?)")
    return total / count, count


def score_continuations(
    model: LapeModel, prompt_ids: Sequence[torch.Tensor],
    continuation_ids: Sequence[torch.Tensor], *, batch_size: int = 8,
) -> pd.DataFrame:
    """NLL of each continuation given its prompt, under the unmodified model (steering's cost).

    Args:
        model: The loaded model.
        prompt_ids: Per item, ``[p]`` prompt token ids (BOS included if the tokenizer adds it).
        continuation_ids: Per item, ``[c]`` token ids that follow the prompt.
        batch_size: Items per forward pass (left padded).

    Returns:
        DataFrame, a row per item: ``nll_sum`` (nats), ``tokens``, ``nll`` (NaN if empty).
    """
    if len(prompt_ids) != len(continuation_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(continuation_ids)} continuations")
    ps = [torch.as_tensor(p).long().cpu() for p in prompt_ids]
    cs = [torch.as_tensor(c).long().cpu() for c in continuation_ids]
    sums = torch.zeros(len(cs), dtype=torch.float64)
    counts = torch.zeros(len(cs), dtype=torch.int64)
    for start in range(0, len(cs), int(batch_size)):
        todo = [i for i in range(start, min(start + int(batch_size), len(cs))) if cs[i].numel()]
        if todo:  # an empty continuation has nothing to score: 0 tokens, NaN mean
            ids, mask = _left_pad([torch.cat([ps[i], cs[i]]) for i in todo],
                                  model.tokenizer.pad_token_id or 0)
            first = ids.shape[1] - torch.tensor([len(cs[i]) for i in todo])
            target = torch.arange(ids.shape[1]) >= first[:, None]  # the continuation's tokens
            s, c = _batch_nll(model, ids, mask, target[:, 1:], [])
            sums[todo], counts[todo] = s.cpu(), c.cpu()
    df = pd.DataFrame({"nll_sum": sums.tolist(), "tokens": counts.tolist()})
    df["nll"] = (df["nll_sum"] / df["tokens"]).where(df["tokens"] > 0)
    return df


# ============================================================================ the matrix

#: Confidence level of every interval of the matrix.
CONFIDENCE = 0.95
_RESAMPLES = 9999


def delta_interval(
    nll_sum: np.ndarray, base_sum: np.ndarray, tokens: np.ndarray, seed: int = 0
) -> tuple[float, float, float]:
    """ΔNLL of one cell with a 95% paired-bootstrap interval over held-out chunks.

    ``ΔNLL = sum(nll_sum - base_sum) / sum(tokens)``. ``scipy.stats.bootstrap`` resamples the
    chunks, paired (BCa, 9,999 resamples; percentile where BCa fails, e.g. with 2 chunks).

    Args:
        nll_sum: ``[chunk]`` summed NLL (nats) of each chunk with the intervention.
        base_sum: ``[chunk]`` the same chunks without intervention.
        tokens: ``[chunk]`` predicted tokens per chunk.
        seed: Seed of the resampling.

    Returns:
        ``(delta, lo, hi)``; ``lo``/``hi`` NaN below 2 chunks, ``delta`` if all chunks agree.
    """
    from scipy.stats import bootstrap

    d = np.asarray(nll_sum, float) - np.asarray(base_sum, float)
    n = np.asarray(tokens, float)
    delta = float(d.sum() / n.sum())
    if d.size < 2:
        return delta, math.nan, math.nan
    if np.allclose(d / n, d[0] / n[0], rtol=0, atol=1e-12):
        return delta, delta, delta

    def ratio(d, n, axis=-1):
        return d.sum(axis=axis) / n.sum(axis=axis)

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap((d, n), ratio, paired=True, vectorized=True, method=method,
                           confidence_level=CONFIDENCE, n_resamples=_RESAMPLES,
                           random_state=np.random.default_rng(seed)).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            return delta, float(ci.low), float(ci.high)
    return delta, math.nan, math.nan


@dataclass
class PplMatrix:
    """The perplexity-change matrix: held-out NLL per (deactivated set, evaluated language).

    Attributes:
        records: Tidy, a row per cell: ``row`` (``"none"``, ``"<lang>"``, ``"<lang>
            (<control>)"``), ``kind`` (``"none"``, ``"lape"`` or a control's name),
            ``deactivated`` (``""`` for none), ``n_neurons``, ``evaluated``, ``nll`` (mean
            nats per token), ``tokens``.
        chunks: The cells per held-out chunk (``row``, ``evaluated``, ``chunk``, ``nll_sum``,
            ``tokens``), resampled by the intervals; ``None`` (no intervals) if not kept.
        meta: JSON-able facts: model, selection, corpus, controls.
    """

    records: pd.DataFrame
    chunks: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def rows(self) -> list[str]:
        """Row labels in order (``"none"`` first)."""
        return list(dict.fromkeys(self.records["row"]))

    @property
    def languages(self) -> list[str]:
        """Evaluated languages (columns), in order."""
        return list(dict.fromkeys(self.records["evaluated"]))

    @property
    def controls(self) -> list[str]:
        """Names of the control kinds present (``"random"``, ``"matched"``...)."""
        return [k for k in dict.fromkeys(self.records["kind"]) if k not in ("none", "lape")]

    def _intervals(self) -> pd.DataFrame:
        """``delta_nll_lo``/``delta_nll_hi`` per (row, evaluated), computed once."""
        cached = getattr(self, "_ci", None)
        if cached is not None:
            return cached
        out = []
        if self.chunks is not None and len(self.chunks):
            by_cell = {key: g for key, g in self.chunks.groupby(["row", "evaluated"], sort=False)}
            for (row, col), g in by_cell.items():
                if row == NONE_ROW:
                    continue
                base = by_cell[(NONE_ROW, col)].set_index("chunk").loc[g["chunk"]]
                _, lo, hi = delta_interval(
                    g["nll_sum"].to_numpy(), base["nll_sum"].to_numpy(), g["tokens"].to_numpy()
                )
                out.append((row, col, lo, hi))
        ci = pd.DataFrame(out, columns=["row", "evaluated", "delta_nll_lo", "delta_nll_hi"])
        object.__setattr__(self, "_ci", ci)
        return ci

    def tidy(self) -> pd.DataFrame:
        """Records with ``ppl``, ``delta_nll`` (vs ``none``) and its interval.

        The interval is ``delta_nll_lo``/``delta_nll_hi`` (:func:`delta_interval`; NaN
        without chunks), and ``excludes_zero`` whether it lies above or below 0.
        """
        df = self.records.copy()
        base = df[df["kind"] == "none"].set_index("evaluated")["nll"]
        df["ppl"] = np.exp(df["nll"])
        df["delta_nll"] = df["nll"] - df["evaluated"].map(base)
        df.loc[df["kind"] == "none", "delta_nll"] = 0.0
        df = df.merge(self._intervals(), on=["row", "evaluated"], how="left")
        df["excludes_zero"] = (df["delta_nll_lo"] > 0) | (df["delta_nll_hi"] < 0)
        return df

    def table(self, value: str = "delta_nll") -> pd.DataFrame:
        """A :meth:`tidy` column as a matrix: index = row label, columns = evaluated language.

        Args:
            value: ``nll``, ``ppl``, ``delta_nll``/``_lo``/``_hi``, ``excludes_zero`` or ``tokens``.
        """
        df = self.tidy()
        if value not in df.columns:
            raise ValueError(
                f"unknown value {value!r}; use nll, ppl, delta_nll, delta_nll_lo, "
                "delta_nll_hi, excludes_zero or tokens"
            )
        wide = df.pivot(index="row", columns="evaluated", values=value)
        wide = wide.reindex(index=self.rows, columns=self.languages)
        return wide.rename_axis(index="deactivated", columns="evaluated")

    def nll_table(self) -> pd.DataFrame:
        """Absolute mean NLL (nats/token), wide."""
        return self.table("nll")

    def ppl_table(self) -> pd.DataFrame:
        """Perplexity, wide."""
        return self.table("ppl")

    def delta_table(self) -> pd.DataFrame:
        """ΔNLL vs no intervention, wide."""
        return self.table("delta_nll")

    def summary(self) -> pd.DataFrame:
        """One line per deactivated set.

        Columns: ``kind``, ``deactivated``, ``n_neurons``, ``diag_delta`` (ΔNLL on its own
        language) with ``diag_lo``/``diag_hi`` and ``diag_excludes_zero``,
        ``offdiag_mean_delta``, ``ratio`` (diag / off-diagonal, if that is positive); for
        LAPE rows, per control ``c``: ``c_diag_delta``/``_lo``/``_hi`` and ``beats_c``
        (larger, intervals apart; point estimates without intervals); with a ``random``
        control, ``lape_minus_random``.
        """
        df = self.tidy()
        df = df[df["kind"] != "none"]
        if df.empty:
            return pd.DataFrame()
        own = df["evaluated"] == df["deactivated"]
        diag = df[own].set_index("row")
        summ = df.groupby("row", sort=False)[["kind", "deactivated", "n_neurons"]].first()
        summ["n_neurons"] = summ["n_neurons"].astype(int)
        summ["diag_delta"] = diag["delta_nll"].astype(float)
        summ["diag_lo"] = diag["delta_nll_lo"].astype(float)
        summ["diag_hi"] = diag["delta_nll_hi"].astype(float)
        off = summ["offdiag_mean_delta"] = df[~own].groupby("row")["delta_nll"].mean()
        summ["ratio"] = (summ["diag_delta"] / off).where(off > 0)
        summ["diag_excludes_zero"] = (summ["diag_lo"] > 0) | (summ["diag_hi"] < 0)
        lape = summ["kind"] == "lape"
        for c in self.controls:
            ctrl = summ[summ["kind"] == c].set_index("deactivated")
            for col in ("diag_delta", "diag_lo", "diag_hi"):
                summ[f"{c}_{col}"] = summ["deactivated"].map(ctrl[col]).where(lape)
            has_ci = summ["diag_lo"].notna() & summ[f"{c}_diag_hi"].notna()
            lo = summ["diag_lo"].where(has_ci, summ["diag_delta"])
            hi = summ[f"{c}_diag_hi"].where(has_ci, summ[f"{c}_diag_delta"])
            summ[f"beats_{c}"] = (lo > hi).where(summ[f"{c}_diag_delta"].notna())
        if "random" in self.controls:
            summ["lape_minus_random"] = summ["diag_delta"] - summ["random_diag_delta"]
        return summ

    # ------------------------------------------------------------------ files
    def to_csv(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes :meth:`tidy` to ``path``, the chunks to ``<stem>.chunks.csv``, meta to ``.json``.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        refuse_overwrite([path], overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tidy().to_csv(path, index=False)
        if self.chunks is not None:
            self.chunks.to_csv(_chunks_path(path), index=False)
        Path(str(path) + ".json").write_text(json.dumps(self.meta, indent=2, default=str))
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> PplMatrix:
        """Reads a matrix written by :meth:`to_csv` (chunks and sidecar are optional)."""
        path = Path(path)
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
        need = ["row", "kind", "deactivated", "n_neurons", "evaluated", "nll", "tokens"]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"{path} is not a perplexity matrix: columns {missing} missing")
        df["deactivated"] = df["deactivated"].fillna("").astype(str)
        chunks_path = _chunks_path(path)
        chunks = pd.read_csv(chunks_path) if chunks_path.exists() else None
        side = Path(str(path) + ".json")
        meta = json.loads(side.read_text()) if side.exists() else {}
        return cls(df[need].copy(), chunks, meta)

    def __repr__(self) -> str:
        return (
            f"PplMatrix({len(self.rows)} rows x {len(self.languages)} languages "
            f"{self.languages}, controls {self.controls}, model={self.meta.get('model')!r})"
        )


def _chunks_path(path: Path) -> Path:
    return path.with_name(path.stem + ".chunks.csv")


def perplexity_matrix(
    model: LapeModel, selection: NeuronSelection, heldout: PackedCorpus, *,
    controls: Mapping[str, NeuronSelection] | None = None, batch_size: int = 4,
    languages: Sequence[str] | None = None, progress: bool = True,
) -> PplMatrix:
    """NLL of held-out text of each language with each language's neurons deactivated.

    Rows (``lape-method.md`` §3): ``"none"`` (once), then each language's LAPE set zeroed at
    every position, then the same per control. An empty set reuses the none row (ΔNLL 0).
    Every chunk's NLL is kept, for the intervals of :meth:`PplMatrix.tidy`.

    Args:
        model: The loaded model.
        selection: The language-specific neurons (of this model).
        heldout: Packed held-out text (:func:`~lape_utils.packing.pack`): the columns.
        controls: ``{name: selection}`` with the same languages, e.g. ``{"random":
            random_matched(sel, 0)}`` (the default); ``{}`` for none.
        batch_size: Chunks per forward pass.
        languages: Deactivated languages (rows), default all of the selection.
        progress: Show a progress bar.

    Returns:
        A :class:`PplMatrix`.

    Raises:
        InterventionError: a selection that does not fit the model, or a language not in it.
    """
    from .lape import random_matched

    check_selection(model, selection)
    if controls is None:
        controls = {"random": random_matched(selection, 0)}
    if {"none", "lape"} & set(controls):
        raise ValueError(f"controls cannot be called 'none' or 'lape', got {list(controls)}")
    cols = list(heldout.languages)
    if not cols:
        raise ValueError("the held-out corpus has no language")
    rows_langs = list(languages) if languages is not None else list(selection.languages)
    specs: list[tuple[str, str, Intervention | None]] = [("none", "", None)]
    for kind, sel in [("lape", selection), *controls.items()]:  # all checks before any forward
        check_selection(model, sel)
        specs += [(kind, lang, Intervention.zero(sel, lang)) for lang in rows_langs]
    missing = [lang for lang in rows_langs if lang not in cols]
    if missing:
        log.warning("no held-out text for %s: their diagonal will be NaN", missing)

    # all languages' chunks in one tensor: full batches even with a chunk or two per language
    chunks = [heldout.chunks[lang] for lang in cols]
    owner = torch.cat([torch.full((int(c.shape[0]),), j) for j, c in enumerate(chunks)])
    index = torch.cat([torch.arange(int(c.shape[0])) for c in chunks])
    same_len = len({c.shape[1] for c in chunks}) == 1
    n_forward = sum(1 for _, _, iv in specs if iv is None or iv.n_neurons > 0)
    bar = tqdm(total=int(owner.numel()) * n_forward, desc="perplexity matrix", unit="chunk",
               disable=not progress)
    base: tuple[torch.Tensor, torch.Tensor] | None = None
    records, per_chunk = [], []
    for kind, lang, iv in specs:
        label = NONE_ROW if kind == "none" else lang if kind == "lape" else f"{lang} ({kind})"
        if iv is not None and iv.n_neurons == 0:
            sums, counts = base
        else:
            bar.set_postfix_str(label)
            # chunks of different lengths cannot share a batch: one language at a time
            parts = [_chunk_nll(model, c, [] if iv is None else [iv], batch_size, bar)
                     for c in ([torch.cat(chunks)] if same_len else chunks)]
            sums, counts = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            if kind == "none":
                base = (sums, counts)
        for j, col in enumerate(cols):
            total = int(counts[owner == j].sum())
            records.append({
                "row": label, "kind": kind, "deactivated": lang,
                "n_neurons": 0 if iv is None else iv.n_neurons, "evaluated": col,
                "nll": float(sums[owner == j].sum() / total) if total else math.nan,
                "tokens": total,
            })
        per_chunk.append(pd.DataFrame({
            "row": label, "evaluated": [cols[int(j)] for j in owner], "chunk": index.numpy(),
            "nll_sum": sums.numpy(), "tokens": counts.numpy(),
        }))
        log.debug("%s: nll %s", label, [round(r["nll"], 4) for r in records[-len(cols):]])
    bar.close()
    meta = {
        "model": model.describe(),
        "selection": {"method": selection.method, "languages": list(selection.languages),
                      "config": selection.config, "n_layers": selection.n_layers,
                      "n_neurons": selection.n_neurons},
        "heldout": heldout.provenance(),
        "controls": {name: {"method": sel.method, "seed": sel.provenance.get("seed")}
                     for name, sel in controls.items()},
        "batch_size": batch_size,
        "intervention": "zero at every position of every layer holding neurons of the set",
        "intervals": f"{CONFIDENCE:.0%} paired bootstrap over held-out chunks (BCa)",
    }
    if "random" in controls:
        meta["seed"] = controls["random"].provenance.get("seed")
    return PplMatrix(pd.DataFrame(records), pd.concat(per_chunk, ignore_index=True), meta)


def threshold_effect(
    model: LapeModel, stats, heldout: PackedCorpus, top_rates: Sequence[float], *,
    config: LapeConfig = LapeConfig(), batch_size: int = 4, progress: bool = True,
) -> pd.DataFrame:
    """What the selection threshold does to the evidence.

    For each ``top_rate``, identifies from ``stats`` and runs :func:`perplexity_matrix`
    (no control) over the languages both selected and in ``heldout``.

    Args:
        model: The loaded model.
        stats: Its :class:`~lape_utils.stats.ActivationStats`.
        heldout: Packed held-out text; its languages are evaluated.
        top_rates: Fractions of all neurons to select, e.g. ``(0.0025, 0.005, 0.01)``.
        config: The other thresholds.
        batch_size: Chunks per forward pass.
        progress: Show progress bars.

    Returns:
        Tidy DataFrame: ``top_rate``, ``language``, ``n_neurons``, ``diag_delta``,
        ``diag_lo``, ``diag_hi``, ``offdiag_mean_delta``.
    """
    from .lape import identify

    frames = []
    for rate in top_rates:
        sel = identify(stats.over_zero, stats.n, stats.languages,
                       dataclasses.replace(config, top_rate=rate))
        rows = [lang for lang in sel.languages if lang in heldout.languages]
        summ = perplexity_matrix(model, sel, heldout, controls={}, batch_size=batch_size,
                                 languages=rows, progress=progress).summary()
        summ = summ.reset_index()[["deactivated", "n_neurons", "diag_delta", "diag_lo",
                                   "diag_hi", "offdiag_mean_delta"]]
        frames.append(summ.rename(columns={"deactivated": "language"}).assign(top_rate=rate))
    out = pd.concat(frames, ignore_index=True)
    return out[["top_rate", *[c for c in out.columns if c != "top_rate"]]]
