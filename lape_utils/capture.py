"""Capture of activation statistics through nnsight (or plain forward hooks).

Inside the trace, :func:`reduce_site` reduces each layer's neuron-site output to per-neuron
active counts, activation sums and weighted active counts: Poisson-bootstrap replicates and
0/1 weights that keep the first 1/16, 1/8, 1/4 and 1/2 of each language's chunks (budget
snapshots, at no extra forward). Nothing of size ``[batch, pos, neuron]`` leaves the trace,
and it stops after the last layer, so the ``lm_head`` is never computed. The hook backend
runs the same reduction. Runs checkpoint and resume to bit-identical counts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import distributed
from .models import LapeModel, parse_dtype
from .remote import prepare_remote
from .stats import (
    BUDGET_FRACTIONS,
    IDENTITY_KEYS,
    ActivationStats,
    ProvenanceMismatchError,
    check_provenance,
    counted_chunks,
    now_utc,
    package_versions,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BACKENDS = ("nnsight", "hooks")


# --------------------------------------------------------------------------- reduction
def reduce_site(
    act: torch.Tensor, count_mask: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Reduces one layer's neuron activations of one batch to counts.

    Args:
        act: ``[batch, pos, neuron]`` (or ``[batch*pos, neuron]``) site output.
        count_mask: ``[batch, pos]`` bool, positions to count (no padding, no leading BOS).
        weights: ``[rep, batch]`` bootstrap weights of the sequences, or ``None``.

    Returns:
        ``(over_zero [neuron] int64, activation_sum [neuron] float64,
        boot_over_zero [rep, neuron] int64 or None)``.
    """
    b, s = count_mask.shape
    act = act.reshape(b, s, act.shape[-1]).float()
    # masked sums over positions as batched matrix products, in one pass; float32 counts
    # are exact up to 2**24 positions per sequence
    mask = count_mask.to(device=act.device, dtype=torch.float32)[:, None, :]  # [batch, 1, pos]
    per_seq = torch.bmm(mask, (act > 0).float())[:, 0].long()  # [batch, neuron]
    over_zero = per_seq.sum(dim=0)
    act_sum = torch.bmm(mask, act)[:, 0].double().sum(dim=0)
    boot = None
    if weights is not None:
        boot = weights.to(per_seq.device) @ per_seq  # [rep, neuron]
    return over_zero, act_sum, boot


@dataclass
class BatchCounts:
    """Counts of one batch, stacked over layers (all on CPU)."""

    n: int
    over_zero: torch.Tensor  # [layer, neuron] int64
    activation_sum: torch.Tensor  # [layer, neuron] float64
    boot_n: torch.Tensor | None  # [rep] int64
    boot_over_zero: torch.Tensor | None  # [rep, layer, neuron] int64


def _model_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    # no KV cache: capture never generates, and a 7B model's cache costs gigabytes per batch
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids, "use_cache": False}


def count_batch(
    model: LapeModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    count_mask: torch.Tensor | None = None, weights: torch.Tensor | None = None, *,
    backend: str = "nnsight", remote: bool | str = False,
) -> BatchCounts:
    """Runs one batch and returns the per-neuron counts of every layer.

    Args:
        model: The loaded model.
        input_ids: ``[batch, pos]`` token ids (left padded if padded).
        attention_mask: ``[batch, pos]``, 1 for real tokens (default: all ones).
        count_mask: ``[batch, pos]`` positions to count (default: the attention mask).
        weights: ``[rep, batch]`` int64 bootstrap weights, or ``None``.
        backend: ``"nnsight"`` (default) or ``"hooks"`` (plain forward hooks).
        remote: nnsight backend only: ``True`` (NDIF) or ``"local"`` (dry run).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if count_mask is None:
        count_mask = attention_mask
    count_mask = count_mask.bool() & attention_mask.bool()
    inputs = _model_inputs(input_ids.to(model.device), attention_mask.to(model.device))
    n_layers = model.n_layers
    with torch.inference_mode():
        if backend == "nnsight":
            results = _run_nnsight(model, inputs, count_mask, weights, n_layers, remote)
        elif backend == "hooks":
            results = _run_hooks(model, inputs, count_mask, weights, n_layers)
        else:
            raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    over_zero = torch.stack([r[0].cpu() for r in results])
    act_sum = torch.stack([r[1].cpu() for r in results])
    boot = None if weights is None else torch.stack([r[2].cpu() for r in results], dim=1)
    per_seq_n = count_mask.sum(dim=1).long()
    return BatchCounts(
        n=int(per_seq_n.sum()), over_zero=over_zero, activation_sum=act_sum,
        boot_n=None if weights is None else weights.long() @ per_seq_n, boot_over_zero=boot,
    )


def _run_nnsight(model, inputs, count_mask, weights, n_layers, remote):
    import nnsight

    kwargs = {"remote": remote} if remote else {}
    with model.nn.trace(inputs, **kwargs) as tracer:
        results = nnsight.save([])
        for layer in range(n_layers):
            act = model.site(layer).output
            results.append(reduce_site(act, count_mask, weights))
        tracer.stop()
    return results


class _StopForward(Exception):
    pass


def _run_hooks(model, inputs, count_mask, weights, n_layers):
    results: list = [None] * n_layers

    def make_hook(layer):
        def hook(_module, _inputs, output):
            results[layer] = reduce_site(output, count_mask, weights)
            if layer == n_layers - 1:
                raise _StopForward

        return hook

    handles = [model.hf_site(i).register_forward_hook(make_hook(i)) for i in range(n_layers)]
    try:
        model.hf(**inputs)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return results


# ------------------------------------------------------------------------- bootstrap
def bootstrap_weights(seed: int, lang: str, chunk_ids: list[int], replicates: int) -> torch.Tensor:
    """Poisson(1) weights ``[rep, batch]``, a function of ``(seed, lang, chunk)`` only.

    So they do not depend on the batch size, the shard or a resume.
    """
    cols = []
    for c in chunk_ids:
        digest = hashlib.sha256(f"{seed}:{lang}:{c}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        cols.append(torch.poisson(torch.ones(replicates, dtype=torch.float64), generator=g))
    return torch.stack(cols, dim=1).long()


def budget_chunks(n_chunks: int) -> list[int]:
    """Chunks in each budget snapshot: the first ``ceil(f * n_chunks)``, at least one.

    One per fraction of :data:`~lape_utils.stats.BUDGET_FRACTIONS`.
    """
    return [max(1, math.ceil(f * n_chunks)) for f in BUDGET_FRACTIONS]


def budget_weights(chunk_ids: list[int], thresholds: list[int]) -> torch.Tensor:
    """0/1 weights ``[snapshot, batch]``: chunk ``c`` is in snapshot ``s`` iff c < thresholds[s].

    Chunk indices are global, so snapshots are prefixes whatever the batch size or shard.
    """
    c = torch.tensor(chunk_ids, dtype=torch.int64)
    return (c[None, :] < torch.tensor(thresholds, dtype=torch.int64)[:, None]).long()


# --------------------------------------------------------------------------- capture
@dataclass
class _LangState:
    next_chunk: int
    n: int
    over_zero: torch.Tensor
    activation_sum: torch.Tensor
    boot_n: torch.Tensor | None
    boot_over_zero: torch.Tensor | None
    budget_n: torch.Tensor | None = None  # absent from checkpoints of older versions
    budget_over_zero: torch.Tensor | None = None

    @classmethod
    def empty(cls, n_layers, n_neurons, replicates, start=0):
        def rows(r):
            return (
                torch.zeros(r, dtype=torch.int64) if r else None,
                torch.zeros(r, n_layers, n_neurons, dtype=torch.int64) if r else None,
            )

        return cls(
            start, 0, torch.zeros(n_layers, n_neurons, dtype=torch.int64),
            torch.zeros(n_layers, n_neurons, dtype=torch.float64),
            *rows(replicates), *rows(len(BUDGET_FRACTIONS)),
        )

    def add(self, counts: BatchCounts, n_chunks: int, replicates: int) -> None:
        """Adds a batch whose weighted rows are ``replicates`` bootstrap rows, then budgets."""
        self.next_chunk += n_chunks
        self.n += counts.n
        self.over_zero += counts.over_zero
        self.activation_sum += counts.activation_sum
        if self.boot_n is not None:
            self.boot_n += counts.boot_n[:replicates]
            self.boot_over_zero += counts.boot_over_zero[:replicates]
        if self.budget_n is not None:
            self.budget_n += counts.boot_n[replicates:]
            self.budget_over_zero += counts.boot_over_zero[replicates:]


def capture_provenance(
    model: LapeModel, packed, *, batch_size, replicates, seed, backend, shard=None, world_size=1
) -> dict:
    """The provenance a capture of ``packed`` by ``model`` will record.

    ``chunks`` holds the chunk intervals ``[start, stop)`` counted per language (those of
    shard ``k`` of ``m`` with ``shard=(k, m)``), ``corpus_chunks`` the corpus' chunks.
    """
    tok = model.tokenizer
    k, m = shard if shard is not None else (0, 1)
    n_chunks = {lang: packed.n_chunks(lang) for lang in packed.languages}
    chunks = {
        lang: [list(distributed.shard_range(n, batch_size, k, m))] for lang, n in n_chunks.items()
    }
    return {
        "model": model.name, "model_fingerprint": model.fingerprint, "family": model.arch.family,
        "site": f"{model.arch.layers}[i].{model.arch.site}",
        "dtype": str(model.dtype).replace("torch.", ""),
        "tokenizer": {"name_or_path": str(getattr(tok, "name_or_path", "")),
                      "vocab_size": len(tok), "class": type(tok).__name__},
        "corpus_source": packed.source, "corpus_fingerprint": packed.fingerprint,
        "languages": list(packed.languages),
        "tokens_per_language": {lang: int(packed.tokens[lang]) for lang in packed.languages},
        "seq_len": int(packed.seq_len), "bos_prepended_not_counted": bool(packed.bos),
        **({"chat_content_only": True} if packed.content_mask is not None else {}),
        "batch_size": int(batch_size), "bootstrap_replicates": int(replicates),
        "bootstrap_seed": int(seed), "backend": backend, "remote": model.remote,
        "chunks": chunks, "corpus_chunks": n_chunks, "budget_fractions": list(BUDGET_FRACTIONS),
        "budget_chunks": {lang: budget_chunks(n) for lang, n in n_chunks.items()},
        "shard": None if shard is None else [k, m], "world_size": int(world_size),
        "packages": package_versions(),
    }


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".lape_write_probe.{os.getpid()}"  # one per rank
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to output directory {out_dir}: {err}") from None


def capture(
    model: LapeModel, packed, out_dir: str | os.PathLike | None = None, *, batch_size: int = 4,
    replicates: int = 16, seed: int = 0, backend: str = "nnsight", checkpoint_every: int = 8,
    overwrite: bool = False, remote: bool | str | None = None, progress: bool = True,
    on_batch: Callable[[str, int], None] | None = None, shard: tuple[int, int] | None = None,
) -> ActivationStats:
    """Counts, per language, how often every MLP neuron is active.

    Data-parallel under ``torchrun``/``accelerate launch`` (or an initialised
    ``torch.distributed``): each rank counts its block of whole batches
    (:mod:`lape_utils.distributed`) with the model it loaded (one GPU per rank:
    :func:`~lape_utils.distributed.local_device`), checkpoints in ``checkpoint.rank<k>.pt``,
    and the counts are summed with ``all_reduce``; rank 0 writes them. Integer counts are
    bit-identical to a one-process run; ``activation_sum`` is added in another order, so it
    agrees up to float64 rounding. Launch every rank with the same arguments; a multi-node
    ``out_dir`` must be shared.

    Args:
        model: The loaded model (:func:`lape_utils.load_model`).
        packed: A :class:`lape_utils.packing.PackedCorpus`. A leading BOS is not counted; for
            chat text (``pack(chat=True)``) only the message tokens are.
        out_dir: Directory for ``stats.pt``, ``provenance.json`` and checkpoints; statistics
            already there with the same provenance are returned, others refused. ``None``:
            in memory only (no resume).
        batch_size: Chunks per forward pass.
        replicates: Poisson-bootstrap replicates ``R`` (0 disables them).
        seed: Seed of the bootstrap weights.
        backend: ``"nnsight"`` or ``"hooks"``.
        checkpoint_every: Save a checkpoint every this many batches.
        overwrite: Recompute even if ``out_dir`` holds statistics (of any provenance).
        remote: ``True`` (NDIF) or ``"local"`` (dry run); default the model's own setting.
        progress: Show a tqdm bar per language (rank 0 only).
        on_batch: Called as ``on_batch(lang, next_chunk)`` after each batch (tests use it).
        shard: ``(k, m)``: count only shard ``k`` of ``m`` (e.g. on separate machines; add
            them up with :meth:`ActivationStats.merge`); ranks split the shard.

    Returns:
        The :class:`~lape_utils.stats.ActivationStats`; their provenance records the chunks
        counted (``chunks``) and the ``world_size``.

    Raises:
        ValueError: Bad batch size, replicates, backend or shard, ``seq_len`` beyond the
            context, more parts than batches of a language, or ranks that disagree.
        PermissionError: The output directory is not writable.
        ProvenanceMismatchError: ``out_dir`` holds statistics or a checkpoint of another run.
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    remote = model.remote if remote is None else remote
    if remote and backend == "hooks":
        raise ValueError("remote runs go through nnsight; backend='hooks' needs local weights")
    if remote:
        prepare_remote(remote, name=model.name)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(replicates, int) or replicates < 0:
        raise ValueError(f"replicates must be an integer >= 0, got {replicates!r}")
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (k, m) with 0 <= k < m, got {shard!r}")
    ctx = model.max_positions
    if ctx is not None and packed.seq_len > ctx:
        raise ValueError(
            f"seq_len {packed.seq_len} is longer than the model's context ({ctx} positions); "
            "pack the corpus with a smaller seq_len"
        )
    empty = [lang for lang in packed.languages if packed.chunks[lang].shape[0] == 0]
    if empty:
        raise ValueError(f"no complete chunk of text for languages {empty}; add text or lower seq_len")

    rank, world = distributed.init_from_env()
    k, m = shard if shard is not None else (0, 1)
    part, parts = k * world + rank, m * world
    if parts > 1:
        distributed.check_shardable(
            {lang: packed.n_chunks(lang) for lang in packed.languages}, batch_size, parts,
            f"{parts} parts ({m} shard(s) x {world} rank(s))",
        )
    mine = {
        lang: distributed.shard_range(packed.n_chunks(lang), batch_size, part, parts)
        for lang in packed.languages
    }
    prov = capture_provenance(
        model, packed, batch_size=batch_size, replicates=replicates, seed=seed, backend=backend,
        shard=shard, world_size=world,
    )
    identity = {key: prov[key] for key in (*IDENTITY_KEYS, "corpus_fingerprint", "languages")}
    run_keys = ("batch_size", "bootstrap_replicates", "bootstrap_seed", "backend")
    run = {key: prov[key] for key in run_keys}
    if world > 1:
        distributed.same_on_all_ranks(identity | run | {"shard": prov["shard"]}, "what to capture")
    ckpt_file = CHECKPOINT_FILE if world == 1 else f"checkpoint.rank{rank}.pt"
    ckpt_identity = identity | run | {
        "world_size": world, "chunks": {lang: [list(r)] for lang, r in mine.items()},
    }
    out = Path(out_dir) if out_dir is not None else None
    states: dict[str, _LangState] = {}
    started = now_utc()
    if out is not None:
        _check_writable(out)
        if (out / "stats.pt").exists() and not overwrite:
            stats = ActivationStats.load(out, expect=identity | {"bootstrap_replicates": replicates})
            check_provenance(
                {"chunks": counted_chunks(stats.provenance)}, {"chunks": prov["chunks"]}, str(out)
            )
            log.info("activation statistics found in %s (same provenance); not recomputing", out)
            return stats
        ckpt_path = out / ckpt_file
        if ckpt_path.exists() and not overwrite:
            ckpt = torch.load(ckpt_path, weights_only=True)
            # checkpoints from before shards existed are one-process runs over every chunk
            full = {lang: [[0, n]] for lang, n in prov["corpus_chunks"].items()}
            found = {"world_size": 1, "chunks": full} | ckpt["provenance"]
            check_provenance(found, ckpt_identity, where=str(ckpt_path))
            states = {lang: _LangState(**s) for lang, s in ckpt["states"].items()}
            started = ckpt["provenance"].get("started", started)
            done = {lang: s.next_chunk for lang, s in states.items()}
            log.info("resuming capture from %s: chunks done %s", ckpt_path, done)

    prov["started"] = started

    def save_checkpoint():
        if out is None:
            return
        payload = {
            "provenance": prov | ckpt_identity,
            "states": {lang: vars(s) for lang, s in states.items()},
        }
        tmp = out / (ckpt_file + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, out / ckpt_file)

    wall = time.perf_counter()
    for lang in packed.languages:
        chunks = packed.chunks[lang]
        first, stop = mine[lang]
        state = states.setdefault(
            lang, _LangState.empty(model.n_layers, model.n_neurons, replicates, first)
        )
        count_mask = torch.ones(batch_size, chunks.shape[1], dtype=torch.bool)
        if packed.bos:
            count_mask[:, 0] = False
        per_chunk_tokens = int(count_mask[0].sum())
        total, done = (stop - first) * per_chunk_tokens, (state.next_chunk - first) * per_chunk_tokens
        # chat text: only the messages' tokens (the mask is False at the BOS too)
        content = None if packed.content_mask is None else packed.content_mask[lang]
        if content is not None:
            total, done = int(content[first:stop].sum()), int(content[first : state.next_chunk].sum())
        bar = tqdm(
            total=total, initial=done,
            desc=f"capture {lang}" + (f" (rank 0's shard of {world})" if world > 1 else ""),
            unit="tok", unit_scale=True, disable=not progress or rank != 0,
        )
        batches_since = 0
        while state.next_chunk < stop:
            start = state.next_chunk
            ids = chunks[start : min(start + batch_size, stop)]
            b = ids.shape[0]
            chunk_ids = list(range(start, start + b))
            weights = budget_weights(chunk_ids, prov["budget_chunks"][lang])
            if replicates:
                weights = torch.cat([bootstrap_weights(seed, lang, chunk_ids, replicates), weights])
            mask = count_mask[:b] if content is None else count_mask[:b] & content[start : start + b]
            counts = count_batch(model, ids, None, mask, weights, backend=backend, remote=remote)
            state.add(counts, b, replicates)
            bar.update(counts.n)
            batches_since += 1
            if batches_since >= checkpoint_every:
                save_checkpoint()
                batches_since = 0
            if on_batch is not None:
                on_batch(lang, state.next_chunk)
        bar.close()
        save_checkpoint()

    prov["finished"] = now_utc()
    prov["date"] = prov["finished"]
    prov["capture_seconds_this_session"] = round(time.perf_counter() - wall, 2)
    langs = list(packed.languages)

    def stack(name):
        values = [getattr(states[lang], name) for lang in langs]
        return None if any(v is None for v in values) else torch.stack(values, dim=-1)

    totals = [torch.tensor([states[lang].n for lang in langs])]
    totals += [stack(name) for name in ("over_zero", "activation_sum", "boot_n", "boot_over_zero",
                                        "budget_n", "budget_over_zero")]
    if world > 1:
        totals = distributed.all_reduce_sum(totals)
    stats = ActivationStats(langs, *totals, provenance=prov)
    if out is not None:
        if rank == 0:
            stats.save(out, overwrite=True)
        if world > 1:
            distributed.barrier()  # the statistics are on disk before any checkpoint goes
        (out / ckpt_file).unlink(missing_ok=True)
    return stats


__all__ = [
    "BatchCounts", "ProvenanceMismatchError", "bootstrap_weights", "capture",
    "capture_provenance", "count_batch", "parse_dtype", "reduce_site",
]


# ------------------------------------------------------------------ neuron inspection
def top_activating_contexts(
    model: LapeModel, packed, layer: int, neuron: int, *, k: int = 5, window: int = 12,
    max_chunks: int | None = None, batch_size: int = 4,
) -> pd.DataFrame:
    """The tokens and contexts of each language that activate one neuron most.

    Only the neuron's ``[batch, pos]`` activations leave the trace, which stops at its layer.

    Args:
        model: The loaded model.
        packed: Packed corpus whose chunks are scanned.
        layer: Layer of the neuron.
        neuron: Index of the neuron in its layer.
        k: Contexts per language.
        window: Tokens of context on each side.
        max_chunks: Scan at most this many chunks per language (default: all).
        batch_size: Chunks per forward pass.

    Returns:
        DataFrame, ``k`` rows per language, largest first: ``language``, ``activation``,
        ``token``, ``context`` (the window's text), ``chunk``, ``position``, ``tokens`` and
        ``activations`` (the window's, one by one), ``center`` (the top token's index in
        them); ``attrs`` name the ``layer`` and ``neuron``.
    """
    import nnsight

    if not 0 <= layer < model.n_layers or not 0 <= neuron < model.n_neurons:
        raise ValueError(
            f"neuron ({layer}, {neuron}) is outside the model's {model.n_layers} layers x "
            f"{model.n_neurons} neurons"
        )
    tok = model.tokenizer
    rows = []
    for lang in packed.languages:
        chunks = packed.chunks[lang][:max_chunks]
        acts = []
        for start in range(0, chunks.shape[0], batch_size):
            ids = chunks[start : start + batch_size]
            b, s = ids.shape
            inputs = _model_inputs(ids.to(model.device), torch.ones_like(ids).to(model.device))
            with torch.inference_mode(), model.nn.trace(inputs) as tracer:
                act = nnsight.save(model.site(layer).output.reshape(b, s, -1)[..., neuron].float())
                tracer.stop()
            acts.append(act.cpu())
        act = torch.cat(acts)  # [chunk, pos]
        ranked = act.clone()
        if packed.bos:
            ranked[:, 0] = float("-inf")  # the BOS position is never reported
        top = ranked.reshape(-1).topk(min(k, ranked.numel()))
        for value, flat in zip(top.values.tolist(), top.indices.tolist()):
            c, pos = divmod(flat, act.shape[1])
            ids = chunks[c]
            lo, hi = max(int(packed.bos), pos - window), min(len(ids), pos + window + 1)
            rows.append({
                "language": lang, "activation": value, "token": tok.decode(ids[pos : pos + 1]),
                "context": tok.decode(ids[lo:hi], skip_special_tokens=True),
                "chunk": c, "position": pos,
                "tokens": [tok.decode(ids[t : t + 1]) for t in range(lo, hi)],
                "activations": act[c, lo:hi].tolist(), "center": pos - lo,
            })
    df = pd.DataFrame(rows, columns=["language", "activation", "token", "context", "chunk",
                                     "position", "tokens", "activations", "center"])
    df.attrs.update(layer=int(layer), neuron=int(neuron))
    return df
