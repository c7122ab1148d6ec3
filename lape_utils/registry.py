"""The one place that knows where each model family keeps its MLP neurons.

A *neuron site* is the module whose output is the neuron activation of LAPE (see
``docs``/the method): ``act_fn(gate_proj(x))`` for gated MLPs (LLaMA, Mistral, Qwen, Gemma,
Phi-3) and ``act(fc1(x))`` for plain MLPs (GPT-2, GPT-NeoX, BLOOM, OPT, Phi).

Each family is an :class:`Architecture`: a dotted path from the causal-LM module to its list
of decoder layers, a dotted path from one layer to the site, and how to read the site's width
from the model config. :func:`architecture_for` finds the entry for a loaded model from its
``config.model_type``; :func:`register_architecture` adds a family; :func:`self_check` proves
on a short forward pass that an entry is right for a given model, and :func:`check_structure`
does the part of it that needs no weights (for a model on the meta device, run on NDIF).

Example (adding a family)::

    from lape_utils.registry import register_architecture
    register_architecture(
        "my-family", model_types=("my_model",),
        layers="model.layers", site="mlp.act_fn", width="intermediate_size",
    )
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

WidthRule = str | Callable[[object], int]


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its MLP neuron activations.

    Attributes:
        family: Short human name of the family, e.g. ``"llama"``.
        model_types: ``config.model_type`` values served by this entry.
        layers: Dotted path from the causal-LM module to the decoder layer list,
            e.g. ``"model.layers"``.
        site: Dotted path from one decoder layer to the activation module whose output
            is the neuron activation, e.g. ``"mlp.act_fn"``.
        width: Name of the config attribute holding the number of neurons per layer, or a
            function ``config -> int``.
        gated: Whether the MLP is gated (``act(gate(x)) * up(x)``).
        text_config: Name of a sub-config that holds the text model's settings (multimodal
            models), or ``None``.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    site: str
    width: WidthRule = "intermediate_size"
    gated: bool = True
    text_config: str | None = None

    def text_cfg(self, config):
        """Returns the config object that holds the language model's sizes."""
        if self.text_config is None:
            return config
        return getattr(config, self.text_config)

    def n_neurons(self, config) -> int:
        """Neurons per layer according to the config."""
        cfg = self.text_cfg(config)
        if callable(self.width):
            return int(self.width(cfg))
        return int(getattr(cfg, self.width))

    def n_layers(self, config) -> int:
        """Number of decoder layers according to the config."""
        cfg = self.text_cfg(config)
        for name in ("num_hidden_layers", "n_layer", "num_layers"):
            if getattr(cfg, name, None) is not None:
                return int(getattr(cfg, name))
        raise AttributeError(f"config of {self.family} has no layer count")

    def layer_modules(self, root) -> list:
        """The decoder layers of ``root`` (a transformers model or its nnsight envoy)."""
        return resolve(root, self.layers)

    def site_module(self, root, layer: int):
        """The neuron-site module of decoder layer ``layer`` of ``root``."""
        return resolve(self.layer_modules(root)[layer], self.site)


def resolve(obj, dotted: str):
    """Follows a dotted attribute path, e.g. ``resolve(model, "model.layers")``."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(
    family: str,
    *,
    model_types: tuple[str, ...] | list[str],
    layers: str,
    site: str,
    width: WidthRule = "intermediate_size",
    gated: bool = True,
    text_config: str | None = None,
    replace: bool = False,
) -> Architecture:
    """Registers a model family so that every tool of the workbook can find its neurons.

    Args:
        family: Short name of the family.
        model_types: ``config.model_type`` values this entry serves.
        layers: Dotted path from the causal-LM module to the list of decoder layers.
        site: Dotted path from a decoder layer to the activation module.
        width: Config attribute (or function of the config) giving neurons per layer.
        gated: Whether the MLP is gated.
        text_config: Sub-config name for multimodal models.
        replace: Allow replacing an existing entry for the same model type.

    Returns:
        The new :class:`Architecture`.

    Raises:
        ValueError: if a model type is already registered and ``replace`` is false.
    """
    arch = Architecture(
        family=family,
        model_types=tuple(model_types),
        layers=layers,
        site=site,
        width=width,
        gated=gated,
        text_config=text_config,
    )
    for mt in arch.model_types:
        if mt in _REGISTRY and not replace:
            raise ValueError(
                f"model type {mt!r} is already registered as family "
                f"{_REGISTRY[mt].family!r}; pass replace=True to override it"
            )
    for mt in arch.model_types:
        _REGISTRY[mt] = arch
    return arch


def supported_families() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted({a.family for a in _REGISTRY.values()})


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values with a registered family, sorted."""
    return sorted(_REGISTRY)


class UnknownArchitectureError(ValueError):
    """Raised for a model whose family is not in the registry."""


def architecture_for(config) -> Architecture:
    """Finds the registry entry for a transformers config.

    Raises:
        UnknownArchitectureError: naming the families supported and how to add one.
    """
    model_type = getattr(config, "model_type", None)
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    raise UnknownArchitectureError(
        f"model type {model_type!r} is not in the architecture registry. Supported "
        f"families: {', '.join(supported_families())} (model types: "
        f"{', '.join(supported_model_types())}). To add one, tell the registry where its "
        "MLP activation lives, e.g.\n"
        "    from lape_utils.registry import register_architecture\n"
        f"    register_architecture('my-family', model_types=({model_type!r},),\n"
        "        layers='model.layers', site='mlp.act_fn', width='intermediate_size')\n"
        "then load the model again; the self-check will verify the entry."
    )


def _gpt2_width(cfg) -> int:
    return int(cfg.n_inner) if cfg.n_inner is not None else 4 * int(cfg.n_embd)


def _bloom_width(cfg) -> int:
    return 4 * int(cfg.hidden_size)


for _family, _types in [
    ("llama", ("llama",)),
    ("mistral", ("mistral",)),
    ("qwen2", ("qwen2",)),
    ("qwen3", ("qwen3",)),
    ("gemma", ("gemma",)),
    ("gemma2", ("gemma2",)),
    ("gemma3", ("gemma3_text",)),
]:
    register_architecture(_family, model_types=_types, layers="model.layers", site="mlp.act_fn")
register_architecture(
    "gemma3-multimodal",
    model_types=("gemma3",),
    layers="model.language_model.layers",
    site="mlp.act_fn",
    text_config="text_config",
)
register_architecture("phi3", model_types=("phi3",), layers="model.layers", site="mlp.activation_fn")
register_architecture(
    "phi", model_types=("phi",), layers="model.layers", site="mlp.activation_fn", gated=False
)
register_architecture(
    "gpt2", model_types=("gpt2",), layers="transformer.h", site="mlp.act", width=_gpt2_width,
    gated=False,
)
register_architecture(
    "gpt-neox", model_types=("gpt_neox",), layers="gpt_neox.layers", site="mlp.act", gated=False
)
register_architecture(
    "bloom", model_types=("bloom",), layers="transformer.h", site="mlp.gelu_impl",
    width=_bloom_width, gated=False,
)
register_architecture(
    "opt", model_types=("opt",), layers="model.decoder.layers", site="activation_fn",
    width="ffn_dim", gated=False,
)


class SelfCheckError(RuntimeError):
    """Raised when a registry entry does not fit the loaded model."""


def _find_sites(hf_model, arch: Architecture) -> list[torch.nn.Module]:
    """The neuron-site module of every layer, or a :class:`SelfCheckError` saying what is off."""
    n_layers = arch.n_layers(hf_model.config)
    try:
        layers = arch.layer_modules(hf_model)
    except AttributeError as err:
        raise SelfCheckError(
            f"{arch.family}: the model has no decoder layer list at {arch.layers!r} ({err})"
        ) from err
    if not isinstance(layers, (torch.nn.ModuleList, list, tuple)):
        raise SelfCheckError(
            f"{arch.family}: {arch.layers!r} is a {type(layers).__name__}, not a list of layers"
        )
    if len(layers) != n_layers:
        raise SelfCheckError(
            f"{arch.family}: found {len(layers)} layers at {arch.layers!r}, config says {n_layers}"
        )
    sites = []
    for i in range(n_layers):
        try:
            sites.append(arch.site_module(hf_model, i))
        except AttributeError as err:
            raise SelfCheckError(
                f"{arch.family}: layer {i} has no neuron site {arch.site!r} ({err}); "
                "fix the registry entry with register_architecture(..., replace=True)"
            ) from err
    if len({id(s) for s in sites}) != n_layers:
        raise SelfCheckError(f"{arch.family}: layers share one activation module instance")
    return sites


def _check_widths(arch: Architecture, widths: dict[int, int], n_layers: int, n_neurons: int):
    """Every layer's site was called and has the config's width, or a :class:`SelfCheckError`."""
    missing = [i for i in range(n_layers) if i not in widths]
    if missing:
        raise SelfCheckError(f"{arch.family}: the neuron site was not called in layers {missing}")
    wrong = {i: w for i, w in widths.items() if w != n_neurons}
    if wrong:
        raise SelfCheckError(
            f"{arch.family}: site width {wrong} differs from the config's {n_neurons} neurons"
        )


@torch.inference_mode()
def check_structure(hf_model, arch: Architecture, input_ids: torch.Tensor) -> dict:
    """The checks of :func:`self_check` that need no weights.

    The neuron site exists in every layer, is called on a forward pass and has the width
    the config declares. A model on the meta device (built from its config only, as for
    NDIF) runs that forward on fake tensors, which carry shapes but no values, so this
    costs no memory and reads no weights; a model with weights runs it for real. The
    check that zeroing a neuron changes the logits needs values, so only
    :func:`self_check` makes it.

    Args:
        hf_model: The transformers causal LM (not the nnsight wrapper).
        arch: The registry entry to check.
        input_ids: ``[batch, pos]`` a few tokens to run.

    Returns:
        ``{"n_layers": L, "n_neurons": D, "weights": bool}``; ``weights`` says whether the
        forward ran on real values.

    Raises:
        SelfCheckError: saying which of the checks failed and why.
    """
    cfg = hf_model.config
    n_layers, n_neurons = arch.n_layers(cfg), arch.n_neurons(cfg)
    sites = _find_sites(hf_model, arch)
    widths: dict[int, int] = {}
    handles = [
        s.register_forward_hook(lambda _m, _i, out, i=i: widths.__setitem__(i, out.shape[-1]))
        for i, s in enumerate(sites)
    ]
    meta = any(p.is_meta for p in hf_model.parameters())
    try:
        if meta:
            from torch._subclasses.fake_tensor import FakeTensorMode
            from torch.fx.experimental.symbolic_shapes import ShapeEnv

            # use_cache=False: the KV cache allocates real (meta) tensors that fake mode
            # refuses to mutate
            with FakeTensorMode(
                allow_non_fake_inputs=True, shape_env=ShapeEnv(assume_static_by_default=True)
            ):
                hf_model(input_ids=input_ids.to("meta"), use_cache=False)
        else:
            device = next(hf_model.parameters()).device
            hf_model(input_ids=input_ids.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    _check_widths(arch, widths, n_layers, n_neurons)
    return {"n_layers": n_layers, "n_neurons": n_neurons, "weights": not meta}


@torch.inference_mode()
def self_check(hf_model, arch: Architecture, input_ids: torch.Tensor) -> dict:
    """Proves on one short forward pass that ``arch`` describes ``hf_model``.

    Checks that the neuron site exists in every layer, is called on that forward, has the
    width the config declares, and that zeroing one neuron (the most active one of the first
    layer) changes the logits. A model without weights (meta device) can only take
    :func:`check_structure`.

    Args:
        hf_model: The transformers causal LM (not the nnsight wrapper).
        arch: The registry entry to check.
        input_ids: ``[batch, pos]`` a few tokens to run.

    Returns:
        ``{"n_layers": L, "n_neurons": D, "max_logit_change": float}``.

    Raises:
        SelfCheckError: saying which of the checks failed and why.
    """
    cfg = hf_model.config
    n_layers = arch.n_layers(cfg)
    n_neurons = arch.n_neurons(cfg)
    sites = _find_sites(hf_model, arch)

    widths: dict[int, int] = {}
    peak: dict[int, torch.Tensor] = {}

    def make_hook(i):
        def hook(_module, _inputs, output):
            widths[i] = output.shape[-1]
            if i == 0:
                peak[0] = output.detach().reshape(-1, output.shape[-1]).abs().amax(0)

        return hook

    device = next(hf_model.parameters()).device
    input_ids = input_ids.to(device)
    handles = [s.register_forward_hook(make_hook(i)) for i, s in enumerate(sites)]
    try:
        base = hf_model(input_ids=input_ids).logits.float()
    finally:
        for h in handles:
            h.remove()
    _check_widths(arch, widths, n_layers, n_neurons)
    neuron = int(peak[0].argmax())

    def zero_hook(_module, _inputs, output):
        output = output.clone()
        output[..., neuron] = 0
        return output

    handle = sites[0].register_forward_hook(zero_hook)
    try:
        edited = hf_model(input_ids=input_ids).logits.float()
    finally:
        handle.remove()
    change = float((edited - base).abs().max())
    if not change > 0:
        raise SelfCheckError(
            f"{arch.family}: zeroing neuron {neuron} of layer 0 at {arch.site!r} did not "
            "change the logits; the site is not on the model's computation path"
        )
    return {"n_layers": n_layers, "n_neurons": n_neurons, "max_logit_change": change}
