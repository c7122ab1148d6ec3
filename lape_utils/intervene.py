"""Interventions on MLP neurons: zero, set, add or scale them during a forward pass or generation.

An :class:`Intervention` names neurons per layer (``{layer: LongTensor}``), an operation and
the positions it applies to. It is applied through nnsight (the default: the site outputs are
edited inside ``model.nn.trace``/``generate``) or through plain forward hooks (:func:`hooked`,
the fallback and the tests' reference); both share :func:`apply_op`.

Position scopes, in forward passes of a generation with a KV cache (step 0 runs the whole
left-padded prompt, every later step one new token):

* ``"all"``: every position of every step;
* ``"prompt"``: every position of step 0;
* ``"last_prompt"``: the last position of step 0 (it predicts the first generated token);
* ``"generated"``: every later step. The first generated token is predicted at step 0, so
  ``"generated"`` leaves it untouched; ``"all"`` steers every generated token.

Interventions compose per layer in list order, each on the previous one's output (e.g. zero
the source language's neurons, then set the target's); each layer's site is read once per
step, layers in forward order. :func:`forward_logits` runs a step 0 (here or on NDIF);
generation is :func:`lape_utils.generation.generate`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .models import LapeModel
    from .selection import NeuronSelection
    from .stats import ActivationStats

__all__ = [
    "BACKENDS", "OPS", "POSITIONS", "Intervention", "InterventionError", "apply_in_trace",
    "apply_op", "check_interventions", "check_selection", "forward_logits", "hooked",
]

OPS: tuple[str, ...] = ("zero", "set", "add", "scale")
"""Operations: ``zero`` (:= 0), ``set`` (:= value), ``add`` (+= value), ``scale`` (*= value)."""

POSITIONS: tuple[str, ...] = ("all", "prompt", "generated", "last_prompt")
"""Position scopes (see the module docstring)."""

BACKENDS: tuple[str, ...] = ("nnsight", "hooks")


class InterventionError(ValueError):
    """An intervention that cannot be applied to this model or these inputs."""


# ============================================================================ checks
# (shared with generation, evaluate and steering: each error reads the same everywhere)

_ANOTHER_MODEL = (
    "it comes from another model. Select neurons on this model (lape capture + lape "
    "identify), or load the matching model"
)


def _check_finite(value: float, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InterventionError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InterventionError(f"{what} must be finite, got {value!r}; pass a finite number")
    return v


def _check_shape(what: str, have, other: str, want, consequence: str) -> None:
    """Refuses ``have`` = ``(layers, neurons)`` unlike ``other``'s ``want``, naming both."""
    if tuple(have) != tuple(want):
        raise InterventionError(
            f"{what} for {have[0]} layers x {have[1]} neurons, but {other} has {want[0]} "
            f"layers x {want[1]} neurons: {consequence}"
        )


def _require_language(lang: str | None, languages, where: str, role: str = "language") -> None:
    """Refuses a language missing from a neuron set or statistics, naming what they hold."""
    if lang not in languages:
        raise InterventionError(f"{role} {lang!r} is not in the {where} (languages: {languages})")


def check_selection(model: LapeModel, selection: NeuronSelection) -> None:
    """Checks that a neuron set was made for a model of this shape.

    Raises:
        InterventionError: naming both shapes when layers or width differ.
    """
    made_for = selection.provenance.get("model") or selection.provenance.get("matched_to")
    hint = f" (made for {made_for})" if isinstance(made_for, str) else ""
    have, want = (selection.n_layers, selection.n_neurons), (model.n_layers, model.n_neurons)
    _check_shape(f"the neuron set{hint} is", have, model.name, want, _ANOTHER_MODEL)


def check_interventions(
    model: LapeModel, interventions: Sequence[Intervention] | Intervention
) -> list[Intervention]:
    """Validates interventions against a model, before any forward.

    Returns:
        The interventions as a list.

    Raises:
        InterventionError: not an Intervention, or neurons of a model of another shape.
    """
    out = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    L, D = model.n_layers, model.n_neurons
    for i, iv in enumerate(out):
        if not isinstance(iv, Intervention):
            raise InterventionError(
                f"interventions[{i}] is a {type(iv).__name__}, not an Intervention; build one "
                "with Intervention.zero/set_to/add/scale"
            )
        where = f"interventions[{i}] ({iv.label or iv.op})"
        if iv.shape is not None:
            _check_shape(f"{where} is", iv.shape, model.name, (L, D), _ANOTHER_MODEL)
        for layer, idx in iv.neurons.items():
            if layer >= L or int(idx[-1]) >= D:
                raise InterventionError(
                    f"{where} touches neuron {int(idx[-1])} of layer {layer}, but {model.name} "
                    f"has {L} layers (0..{L - 1}) x {D} neurons: the neuron set is from another "
                    "model"
                )
    return out


# ============================================================================ the dataclass


@dataclass(frozen=True, eq=False)
class Intervention:
    """An operation on a set of MLP neurons, at some positions.

    Attributes:
        neurons: ``{layer: LongTensor [k]}`` sorted neuron indices (empty layers dropped).
        op: One of :data:`OPS`.
        value: A float, or ``{layer: FloatTensor [k]}`` one per neuron; ignored by ``zero``.
        positions: One of :data:`POSITIONS`.
        label: Human-readable description (e.g. ``"set fr (mean on fr) x1.0"``).
        shape: ``(n_layers, n_neurons)`` the neuron set was made for, if known (checked).
    """

    neurons: Mapping[int, torch.Tensor]
    op: str = "zero"
    value: float | Mapping[int, torch.Tensor] = 0.0
    positions: str = "all"
    label: str = ""
    shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InterventionError(f"unknown op {self.op!r}; use one of {OPS}")
        if self.positions not in POSITIONS:
            raise InterventionError(f"unknown positions {self.positions!r}; use one of {POSITIONS}")
        if not isinstance(self.neurons, Mapping):
            raise InterventionError(
                f"neurons must be a dict {{layer: LongTensor}}, got {type(self.neurons).__name__}"
            )
        neurons: dict[int, torch.Tensor] = {}
        for layer, idx in sorted(self.neurons.items(), key=lambda kv: int(kv[0])):
            if isinstance(layer, bool) or int(layer) != layer or int(layer) < 0:
                raise InterventionError(f"layer keys must be non-negative ints, got {layer!r}")
            t = _as_neurons(idx, f"neurons[{int(layer)}]")
            if t.numel():
                neurons[int(layer)] = t
        value = self.value
        if self.op == "zero":
            value = 0.0
        elif isinstance(value, Mapping):
            given, value = {int(k): v for k, v in value.items()}, {}
            for layer, idx in neurons.items():
                if layer not in given:
                    raise InterventionError(
                        f"value has no entry for layer {layer}, which holds {idx.numel()} neurons"
                    )
                v = torch.as_tensor(given[layer], dtype=torch.float64).reshape(-1)
                if v.numel() == 1:
                    v = v.expand(idx.numel()).clone()
                if v.numel() != idx.numel():
                    raise InterventionError(
                        f"value[{layer}] has {v.numel()} entries for {idx.numel()} neurons"
                    )
                bad = (~torch.isfinite(v)).nonzero()
                if len(bad):
                    raise InterventionError(
                        f"value[{layer}] is not finite for neuron {int(idx[bad[0, 0]])} "
                        f"({float(v[bad[0, 0]])}); the statistics may lack tokens for that "
                        "language"
                    )
                value[layer] = v
        else:
            value = _check_finite(value, f"value of op {self.op!r}")
        object.__setattr__(self, "neurons", neurons)
        object.__setattr__(self, "value", value)
        if self.shape is not None:
            object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @property
    def n_neurons(self) -> int:
        """Total neurons touched."""
        return sum(int(t.numel()) for t in self.neurons.values())

    def layer_value(self, layer: int) -> float | torch.Tensor:
        """The value applied at ``layer``: a float, or ``[k]`` float64 per neuron."""
        return self.value[layer] if isinstance(self.value, Mapping) else self.value

    def __repr__(self) -> str:
        v = "per-neuron" if isinstance(self.value, Mapping) else f"{self.value:g}"
        return (
            f"Intervention({self.label or self.op!r}: {self.op} {self.n_neurons} neurons in "
            f"{len(self.neurons)} layers, value={v}, positions={self.positions!r})"
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_selection(
        cls, selection: NeuronSelection, lang: str, op: str = "zero",
        value: float | Mapping[int, torch.Tensor] = 0.0, *, positions: str = "all",
        label: str | None = None,
    ) -> Intervention:
        """``op`` with ``value`` on the neurons of ``lang`` in ``selection`` (and its shape).

        Raises:
            InterventionError: ``lang`` is not in the selection, or a bad op/value/positions.
        """
        if label is None:
            label = f"{op} {lang} ({selection.method})"
        neurons = _selection_neurons(selection, lang)
        return cls(neurons, op, value, positions, label, (selection.n_layers, selection.n_neurons))

    @classmethod
    def zero(cls, selection: NeuronSelection, lang: str, *, positions: str = "all") -> Intervention:
        """Deactivate ``lang``'s neurons (activation := 0), the paper's §3 setting."""
        return cls.from_selection(selection, lang, "zero", positions=positions)

    @classmethod
    def set_to(
        cls, selection: NeuronSelection, lang: str, stats: ActivationStats,
        source_lang: str | None = None, strength: float = 1.0, *, positions: str = "all",
    ) -> Intervention:
        """Set ``lang``'s neurons to ``strength`` x their mean activation (the paper's steering).

        Args:
            selection: The neuron sets.
            lang: Whose neurons are set.
            stats: Activation statistics with activation sums, of the same model.
            source_lang: Whose mean activation gives the value (default ``lang``).
            strength: Multiplier of the mean activation.
            positions: Position scope.
        """
        strength = _check_finite(strength, "strength")
        source = source_lang or lang
        return cls.from_selection(
            selection, lang, "set", _mean_values(selection, stats, lang, source, strength),
            positions=positions,
            label=f"set {lang} := mean on {source} x{strength:g} ({selection.method})",
        )

    @classmethod
    def add(
        cls, selection: NeuronSelection, lang: str, value: float, *,
        stats: ActivationStats | None = None, source_lang: str | None = None,
        positions: str = "all",
    ) -> Intervention:
        """Add to ``lang``'s neurons: ``value``, or ``value`` x mean activation if ``stats``.

        Args:
            selection: The neuron sets.
            lang: Whose neurons are changed.
            value: The amount (a strength when ``stats`` is given).
            stats: If given, ``value`` x each neuron's mean activation on ``source_lang``.
            source_lang: Whose mean activation (default ``lang``).
            positions: Position scope.
        """
        value = _check_finite(value, "value of add")
        label = f"add {value:g} to {lang} ({selection.method})"
        if stats is not None:
            source = source_lang or lang
            label = f"add {value:g} x mean on {source} to {lang} ({selection.method})"
            value = _mean_values(selection, stats, lang, source, value)
        return cls.from_selection(selection, lang, "add", value, positions=positions, label=label)

    @classmethod
    def scale(
        cls, selection: NeuronSelection, lang: str, factor: float, *, positions: str = "all"
    ) -> Intervention:
        """Multiply ``lang``'s neurons' activation by ``factor``."""
        factor = _check_finite(factor, "scale factor")
        return cls.from_selection(selection, lang, "scale", factor, positions=positions,
                                  label=f"scale {lang} x{factor:g} ({selection.method})")


def _as_neurons(idx, where: str) -> torch.Tensor:
    t = torch.as_tensor(idx)
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InterventionError(f"{where}: neuron indices must be integers, got dtype {t.dtype}")
    t = t.reshape(-1).to(torch.long)
    if int(t.min()) < 0:
        raise InterventionError(f"{where}: negative neuron index {int(t.min())}")
    return torch.unique(t)  # sorted, duplicate-free


def _selection_neurons(selection: NeuronSelection, lang: str) -> dict[int, torch.Tensor]:
    _require_language(lang, selection.languages, "neuron set")
    return {li: t for li, t in enumerate(selection.indices[lang]) if t.numel()}


def _mean_values(
    selection: NeuronSelection, stats: ActivationStats, lang: str, source: str, factor: float
) -> dict[int, torch.Tensor]:
    """Per layer, ``factor`` x the mean activation on ``source`` of each of ``lang``'s neurons."""
    _check_shape(
        "the statistics are", (stats.n_layers, stats.n_neurons), "the neuron set",
        (selection.n_layers, selection.n_neurons), "they come from different models; use "
        "statistics captured on the model the neurons were selected for",
    )
    _require_language(source, stats.languages, "statistics")
    if stats.activation_sum is None:
        raise InterventionError(
            "these statistics hold no activation sums, so no mean activation; capture them again"
        )
    if int(stats.n[stats.index(source)]) == 0:
        raise InterventionError(f"the statistics counted no {source!r} token; no mean activation")
    mean = stats.mean_activation(source)
    return {li: mean[li, idx] * factor for li, idx in _selection_neurons(selection, lang).items()}


# ============================================================================ the op


def apply_op(
    act: torch.Tensor, neurons: torch.Tensor, op: str, value: float | torch.Tensor = 0.0,
    position_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Applies one operation to some neurons of a site output (pure: returns a new tensor).

    Args:
        act: ``[batch, pos, neuron]`` (any ``[..., neuron]`` without ``position_mask``).
        neurons: ``[k]`` neuron indices (on any device).
        op: One of :data:`OPS`.
        value: A float or ``[k]`` per-neuron values (cast to ``act``'s dtype and device).
        position_mask: ``[batch, pos]`` bool, positions to change; ``None`` = all.

    Returns:
        A new tensor like ``act``.
    """
    neurons = neurons.to(act.device)
    sub = act[..., neurons]
    if op == "zero":
        new = torch.zeros_like(sub)
    else:
        v = value.to(device=act.device, dtype=act.dtype) if torch.is_tensor(value) else float(value)
        if op == "set":
            new = torch.zeros_like(sub) + v
        elif op == "add":
            new = sub + v
        elif op == "scale":
            new = sub * v
        else:
            raise InterventionError(f"unknown op {op!r}; use one of {OPS}")
    if position_mask is not None:
        new = torch.where(position_mask.to(act.device)[..., None], new, sub)
    out = act.clone()
    out[..., neurons] = new
    return out


# ============================================================================ planning


@dataclass
class _LayerOp:
    """One intervention's part at one layer, on the model's device and dtype."""

    neurons: torch.Tensor
    op: str
    value: float | torch.Tensor
    positions: str


_Plan = list[tuple[int, list[_LayerOp]]]  # per layer (ascending), the ops in list order


def _plan(model: LapeModel, interventions) -> _Plan:
    """Checks the interventions (:func:`check_interventions`) and prepares them by layer."""
    device, dtype = model.device, model.dtype
    per_layer: dict[int, list[_LayerOp]] = {}
    for iv in check_interventions(model, interventions):
        for layer, idx in iv.neurons.items():
            v = iv.layer_value(layer)
            if torch.is_tensor(v):
                v = v.to(device=device, dtype=dtype)
            per_layer.setdefault(layer, []).append(_LayerOp(idx.to(device), iv.op, v, iv.positions))
    return sorted(per_layer.items())


def _active(ops: list[_LayerOp], step: int) -> list[tuple[_LayerOp, str]]:
    """The ops covering ``step``, each with its scope there: ``"all"`` or ``"last"``."""
    out = []
    for o in ops:
        if o.positions == "all" or (step > 0 and o.positions == "generated"):
            out.append((o, "all"))
        elif step == 0 and o.positions in ("prompt", "last_prompt"):
            out.append((o, "all" if o.positions == "prompt" else "last"))
    return out


def _edit(act: torch.Tensor, active: list[tuple[_LayerOp, str]], batch: int) -> torch.Tensor:
    """Applies :func:`_active`'s pairs, in order, to ``act`` ``[batch, pos, neuron]``.

    A 2-D ``[batch * pos, neuron]`` output (OPT) is reshaped with ``batch``, and back.
    """
    x = act.reshape(batch, -1, act.shape[-1]) if act.ndim == 2 else act
    last = None
    if any(scope == "last" for _, scope in active):
        last = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
        last[..., -1] = True
    for o, scope in active:
        x = apply_op(x, o.neurons, o.op, o.value, last if scope == "last" else None)
    return x.reshape(act.shape)


def _edit_step_nnsight(model: LapeModel, plan: _Plan, step: int, batch: int) -> None:
    """Inside a trace: edits every layer's site output for ``step`` (forward order, read once)."""
    for layer, ops in plan:
        active = _active(ops, step)
        if active:
            site = model.site(layer)
            site.output = _edit(site.output, active, batch)


def apply_in_trace(
    model: LapeModel, interventions: Sequence[Intervention] | Intervention, batch_size: int,
    step: int = 0,
) -> None:
    """Applies interventions from inside a ``model.nn.trace``/``generate`` block.

    Call it before reading anything downstream of the first edited layer.

    Example::

        with model.nn.trace(ids) as tracer:
            apply_in_trace(model, [Intervention.zero(sel, "fr")], batch_size=ids.shape[0])
            logits = tracer.result.logits.save()

    Args:
        model: The loaded model.
        interventions: Applied in list order.
        batch_size: Rows of the batch (to reshape 2-D site outputs such as OPT's).
        step: Which forward of a generation this is (0 = the prompt).
    """
    _edit_step_nnsight(model, _plan(model, interventions), step, batch_size)


# ============================================================================ hooks


@dataclass
class HookState:
    """Forward counter of a :func:`hooked` context (``step`` 0 = the first forward)."""

    step: int = -1
    batch: int = 0


@contextmanager
def hooked(
    model: LapeModel, interventions: Sequence[Intervention] | Intervention
) -> Iterator[HookState]:
    """Applies interventions with plain forward hooks while the block runs.

    Each forward of the model in the block is one step (the first is step 0), so use a
    fresh block per generation or forward pass.

    Example::

        with hooked(model, [Intervention.zero(sel, "fr")]):
            logits = model.hf(input_ids).logits

    Yields:
        A :class:`HookState` with the step counter.
    """
    plan, state = _plan(model, interventions), HookState()

    def pre_hook(_module, args, kwargs):
        state.step += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        state.batch = int((kwargs.get("inputs_embeds") if ids is None else ids).shape[0])

    def make_hook(ops: list[_LayerOp]):
        def hook(_module, _inputs, output):
            active = _active(ops, state.step)
            return _edit(output, active, state.batch) if active else None

        return hook

    handles = [model.hf.register_forward_pre_hook(pre_hook, with_kwargs=True)]
    try:
        for layer, ops in plan:
            handles.append(model.hf_site(layer).register_forward_hook(make_hook(ops)))
        yield state
    finally:
        for h in handles:
            h.remove()


# ============================================================================ forward


def _accepts(model: LapeModel, name: str) -> bool:
    try:
        return name in inspect.signature(model.hf.forward).parameters
    except (TypeError, ValueError):
        return False


def _model_inputs(
    model: LapeModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> dict:
    """Model inputs on the model's device; left-padded rows get mask-derived position ids."""
    if input_ids.ndim != 2:
        raise InterventionError(f"input_ids must be [batch, pos], got {tuple(input_ids.shape)}")
    inputs = {"input_ids": input_ids.to(model.device)}
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise InterventionError(
                f"attention_mask {tuple(attention_mask.shape)} differs from input_ids "
                f"{tuple(input_ids.shape)}"
            )
        mask = attention_mask.to(model.device).long()
        inputs["attention_mask"] = mask
        if not bool(mask.all()) and _accepts(model, "position_ids"):
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    return inputs


def _left_pad(rows: Sequence[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as one left-padded batch: ``(ids, attention mask)``, ``[batch, pos]``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


def _resolve_remote(model: LapeModel, remote: bool | str | None, backend: str = "nnsight"):
    """The ``remote`` setting of a call (``None``: the model's), checked before any trace.

    Refuses an unknown backend, hooks with a remote setting, ``remote=True`` without NDIF key.
    """
    from .remote import prepare_remote

    if backend not in BACKENDS:
        raise InterventionError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    remote = model.remote if remote is None else remote
    if remote and backend == "hooks":
        raise InterventionError(
            f"backend='hooks' runs plain forward hooks on local weights, but remote={remote!r}: "
            "remote runs go through nnsight. Use backend='nnsight', or remote=False with "
            "local weights."
        )
    return prepare_remote(remote, name=model.name) if remote else remote


def forward_logits(
    model: LapeModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    interventions: Sequence[Intervention] | Intervention = (), *, last_only: bool = False,
    backend: str = "nnsight", remote: bool | str | None = None,
    reduce: Callable[[torch.Tensor], object] | None = None,
):
    """One forward pass (step 0) with interventions; returns the logits, or ``reduce`` of them.

    With nnsight it is one ``model.nn.trace`` (also without interventions, so that a remote
    model runs on NDIF); ``reduce`` runs inside it, so only its result comes back.

    Args:
        model: The loaded model.
        input_ids: ``[batch, pos]`` token ids, left padded if padded.
        attention_mask: ``[batch, pos]`` 1 for real tokens, or ``None`` (no padding).
        interventions: Applied in list order.
        last_only: Compute the logits of the last position only (``logits_to_keep=1``).
        backend: ``"nnsight"`` or ``"hooks"``.
        remote: ``True``: on NDIF; ``"local"``: dry-run the serialisation; ``None``: the model's.
        reduce: Function of the ``[batch, pos, vocab]`` logits run where the model runs (e.g.
            per-sequence NLL sums); it may reach only its input and this package.

    Returns:
        ``[batch, pos, vocab]`` logits (``pos`` = 1 with ``last_only``) in the model's
        device and dtype, or what ``reduce`` returns.

    Raises:
        InterventionError: bad inputs or interventions; hooks with a remote setting.
        MissingNDIFKeyError: ``remote=True`` without an NDIF key.
    """
    import nnsight

    remote = _resolve_remote(model, remote, backend)
    plan = _plan(model, interventions)
    inputs = _model_inputs(model, input_ids, attention_mask)
    if last_only and _accepts(model, "logits_to_keep"):
        inputs["logits_to_keep"] = 1
    kwargs = {"remote": remote} if remote else {}
    with torch.inference_mode():
        if backend == "hooks":
            with hooked(model, interventions):
                logits = model.hf(**inputs).logits
            logits = logits[:, -1:] if last_only else logits
            return logits if reduce is None else reduce(logits)
        with model.nn.trace(inputs, **kwargs) as tracer:
            _edit_step_nnsight(model, plan, 0, int(input_ids.shape[0]))
            logits = tracer.result.logits
            logits = logits[:, -1:] if last_only else logits
            out = nnsight.save(logits if reduce is None else reduce(logits))
    return out
