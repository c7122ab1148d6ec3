"""Generation with interventions on every step (:func:`generate`).

nnsight 0.8.1 mechanics (measured, see ``tests/test_intervene.py``): inside
``model.nn.generate(...) as tracer``, one ``tracer.invoke(inputs)`` holds ``for step in
tracer.all():``, whose body edits that step's sites (step 0 sees ``[batch, prompt_len,
neuron]``, later steps ``[batch, 1, neuron]``). The open-ended loop never ends normally (its
last request dangles: a warning we silence), so the generated ids are read in a second, empty
``tracer.invoke()`` from ``tracer.result``; when no intervention applies after step 0 the loop
breaks after it, or it would spin forever. A remote model always generates this way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .intervene import (
    Intervention,
    InterventionError,
    _check_finite,
    _edit_step_nnsight,
    _left_pad,
    _plan,
    _resolve_remote,
    check_interventions,
    forward_logits,
    hooked,
)

if TYPE_CHECKING:
    from .models import LapeModel

__all__ = ["Generation", "GenerationConfig", "generate"]

_DANGLING = r".*was never reached.*"  # nnsight's warning at the end of an open tracer.all()


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. Frozen and validated; variants with ``dataclasses.replace``.

    Attributes:
        max_new_tokens: Tokens to generate at most per prompt (>= 1).
        do_sample: Sample instead of greedy decoding (top-k off: ``top_k=0``, not 50).
        temperature: Sampling temperature (> 0).
        top_p: Nucleus sampling threshold in (0, 1].
        repetition_penalty: transformers' repetition penalty (> 0; the paper's 1.1), or ``None``.
        batch_size: Prompts per forward pass (>= 1; left padded).
        seed: Seed of the global RNG before each batch (``seed + batch index``).
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float | None = None
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value:
                raise InterventionError(f"{name} must be an integer, got {value!r}")
            if name != "seed" and value < 1:
                raise InterventionError(f"{name} must be >= 1, got {int(value)}")
            object.__setattr__(self, name, int(value))
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if value is not None or name != "repetition_penalty":
                if _check_finite(value, name) <= 0:
                    raise InterventionError(f"{name} must be a finite number > 0, got {value!r}")
                object.__setattr__(self, name, float(value))
        if self.top_p > 1:
            raise InterventionError(f"top_p must be in (0, 1], got {self.top_p}")
        object.__setattr__(self, "do_sample", bool(self.do_sample))

    def hf_kwargs(self, pad_token_id: int | None) -> dict:
        """Keyword arguments of ``model.generate`` for these settings."""
        kwargs: dict = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                        "pad_token_id": pad_token_id}
        if self.do_sample:
            kwargs |= {"temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


@dataclass
class Generation:
    """What :func:`generate` returns.

    Attributes:
        texts: Decoded new text per prompt (special tokens skipped).
        prompt_ids: Per prompt, ``[prompt_len]`` its token ids (no padding).
        new_ids: Per prompt, ``[n_new]`` generated ids, cut after the first EOS (kept), unpadded.
        first_step_probs: ``[n_prompts, vocab]`` float32 next-token distribution of the first
            generated step (with step 0's interventions), or ``None``.
    """

    texts: list[str]
    prompt_ids: list[torch.Tensor]
    new_ids: list[torch.Tensor]
    first_step_probs: torch.Tensor | None = None


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """The prompts as a list, checked.

    Raises:
        InterventionError: no prompt, a bare str, or an empty or non-str prompt (named).
    """
    if isinstance(prompts, str):
        raise InterventionError("prompts must be a list of strings, got a single str; wrap it")
    prompts = list(prompts)
    if not prompts:
        raise InterventionError("no prompts given; pass at least one non-empty prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InterventionError(f"prompts[{i}] is a {type(p).__name__}, not a str: {p!r:.80}")
        if not p.strip():
            raise InterventionError(f"prompts[{i}] is empty ({p!r}); remove it or give it text")
    return prompts


def _generate_batch(model: LapeModel, ivs, plan, inputs: dict, kwargs: dict, backend, remote):
    """One batch: nnsight as the module docstring says, or ``model.hf.generate`` under hooks.

    The latter serves the hooks backend and local calls without intervention.
    """
    if backend == "hooks" or not (plan or remote):
        with hooked(model, ivs):
            return model.hf.generate(**inputs, **kwargs)
    batch = int(inputs["input_ids"].shape[0])
    later = any(o.positions in ("all", "generated") for _, ops in plan for o in ops)
    if remote:
        kwargs = kwargs | {"remote": remote}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DANGLING)
        with model.nn.generate(**kwargs) as tracer:
            with tracer.invoke(inputs):
                if plan:
                    for step in tracer.all():
                        _edit_step_nnsight(model, plan, step, batch)
                        if not later:
                            break
            with tracer.invoke():
                out = tracer.result.save()
    return out


def _encode_prompts(tokenizer, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}``, ``[batch, pos]`` int64, left padded; one BOS.

    A prompt starting with the BOS text (a chat template's output) gets no special tokens.
    """
    bos = getattr(tokenizer, "bos_token", None)
    rows = [
        torch.tensor(tokenizer(p, add_special_tokens=not (bos and p.startswith(bos)))["input_ids"])
        for p in prompts
    ]
    ids, mask = _left_pad(rows, int(tokenizer.pad_token_id or 0))
    return {"input_ids": ids, "attention_mask": mask}


def _new_tokens(row: torch.Tensor, eos: set[int], pad: int | None) -> torch.Tensor:
    """Generated ids of one row: cut after the first EOS (kept), padding dropped."""
    ends = [i for i, t in enumerate(row.tolist()) if t in eos]
    row = row[: ends[0] + 1] if ends else row
    return row[row != pad] if pad is not None and pad not in eos else row


def generate(
    model: LapeModel,
    prompts: Sequence[str],
    interventions: Sequence[Intervention] | Intervention = (),
    config: GenerationConfig = GenerationConfig(),
    *,
    first_step_probs: bool = False,
    backend: str = "nnsight",
    progress: bool = True,
    remote: bool | str | None = None,
) -> Generation:
    """Generates a continuation of each prompt (left padded) with interventions on every step.

    Args:
        model: The loaded model.
        prompts: Non-empty prompt strings.
        interventions: Applied in list order at every step their ``positions`` cover.
        config: Decoding, length, batching and seed.
        first_step_probs: Also return the first step's next-token distribution (one forward).
        backend: ``"nnsight"`` or ``"hooks"`` (same tokens; hooks are the tests' reference).
        progress: Show a progress bar over batches.
        remote: ``True``: on NDIF; ``"local"``: dry-run the serialisation; ``None``: the model's.

    Returns:
        A :class:`Generation` (only the new tokens decoded).

    Raises:
        InterventionError: bad prompts, interventions, backend or config; before generating.
        MissingNDIFKeyError: ``remote=True`` without an NDIF key (nothing is sent).
    """
    remote = _resolve_remote(model, remote, backend)
    if not isinstance(config, GenerationConfig):
        raise InterventionError(f"config must be a GenerationConfig, got {type(config).__name__}")
    prompts = check_prompts(prompts)
    ivs = check_interventions(model, interventions)
    plan = _plan(model, ivs)
    tok = model.tokenizer
    kwargs = config.hf_kwargs(tok.pad_token_id)
    eos = getattr(model.hf.generation_config, "eos_token_id", None)
    eos = tok.eos_token_id if eos is None else eos
    eos = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}
    out = Generation([], [], [], None)
    probs: list[torch.Tensor] = []
    starts = range(0, len(prompts), config.batch_size)
    bar = tqdm(starts, desc="generate", unit="batch", disable=not progress or len(starts) < 2)
    for b, start in enumerate(bar):
        chunk = prompts[start : start + config.batch_size]
        enc = _encode_prompts(tok, chunk)
        inputs = {k: v.to(model.device) for k, v in enc.items()}
        torch.manual_seed(config.seed + b)
        with torch.inference_mode():
            result = _generate_batch(model, ivs, plan, inputs, kwargs, backend, remote)
        seqs = result.sequences if hasattr(result, "sequences") else result
        n_prompt = inputs["input_ids"].shape[1]
        for row in range(len(chunk)):
            new = _new_tokens(seqs[row, n_prompt:].cpu(), eos, tok.pad_token_id)
            out.prompt_ids.append(enc["input_ids"][row][enc["attention_mask"][row].bool()])
            out.new_ids.append(new)
            out.texts.append(tok.decode(new, skip_special_tokens=True))
        if first_step_probs:
            logits = forward_logits(
                model, inputs["input_ids"], inputs["attention_mask"], ivs,
                last_only=True, backend=backend, remote=remote,
            )
            probs.append(torch.softmax(logits[:, -1].float(), dim=-1).cpu())
    if first_step_probs:
        out.first_step_probs = torch.cat(probs)
    return out
