"""The one place that knows where each model family keeps its MLP neurons.

A *neuron site* is the module whose output is LAPE's neuron activation: ``act_fn(gate_proj(x))``
for gated MLPs (LLaMA, Mistral, Qwen, Gemma, Phi-3), ``act(fc1(x))`` for plain ones (GPT-2,
GPT-NeoX, BLOOM, OPT, Phi). Entries are found by ``config.model_type``; :func:`self_check`
proves one on a short forward pass. Adding a family::

    register_architecture("my-family", model_types=("my_model",), layers="model.layers",
                          site="mlp.act_fn", width="intermediate_size")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import torch

WidthRule = str | Callable[[object], int]


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its MLP neuron activations.

    Attributes:
        family: Short name of the family, e.g. ``"llama"``.
        model_types: ``config.model_type`` values served by this entry.
        layers: Dotted path from the causal-LM module to the decoder layers (``"model.layers"``).
        site: Dotted path from one decoder layer to the neuron site (``"mlp.act_fn"``).
        width: Config attribute holding the neurons per layer, or a function ``config -> int``.
        text_config: Sub-config of the text model (multimodal models), or ``None``.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    site: str
    width: WidthRule = "intermediate_size"
    text_config: str | None = None

    def text_cfg(self, config):
        """The config object that holds the language model's sizes."""
        return config if self.text_config is None else getattr(config, self.text_config)

    def n_neurons(self, config) -> int:
        """Neurons per layer according to the config."""
        cfg = self.text_cfg(config)
        return int(self.width(cfg) if callable(self.width) else getattr(cfg, self.width))

    def n_layers(self, config) -> int:
        """Number of decoder layers according to the config."""
        cfg = self.text_cfg(config)
        for name in ("num_hidden_layers", "n_layer", "num_layers"):
            if getattr(cfg, name, None) is not None:
                return int(getattr(cfg, name))
        raise AttributeError(f"config of {self.family} has no layer count")

    def layer_modules(self, root) -> list:
        """The decoder layers of ``root`` (a transformers model or its nnsight envoy)."""
        return attrgetter(self.layers)(root)  # follows the dotted path

    def site_module(self, root, layer: int):
        """The neuron-site module of decoder layer ``layer`` of ``root``."""
        return attrgetter(self.site)(self.layer_modules(root)[layer])


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(
    family: str, *, model_types: tuple[str, ...] | list[str], layers: str, site: str,
    width: WidthRule = "intermediate_size", text_config: str | None = None, replace: bool = False,
) -> Architecture:
    """Registers a model family so that every tool of the workbook can find its neurons.

    Args:
        family: Short name of the family.
        model_types: ``config.model_type`` values this entry serves.
        layers: Dotted path from the causal-LM module to the list of decoder layers.
        site: Dotted path from a decoder layer to the activation module.
        width: Config attribute (or function of the config) giving neurons per layer.
        text_config: Sub-config name for multimodal models.
        replace: Allow replacing an existing entry for the same model type.

    Returns:
        The new :class:`Architecture`.

    Raises:
        ValueError: A model type is already registered and ``replace`` is false.
    """
    arch = Architecture(family, tuple(model_types), layers, site, width, text_config)
    taken = [mt for mt in arch.model_types if mt in _REGISTRY]
    if taken and not replace:
        raise ValueError(
            f"model type {taken[0]!r} is already registered as family "
            f"{_REGISTRY[taken[0]].family!r}; pass replace=True to override it"
        )
    _REGISTRY.update(dict.fromkeys(arch.model_types, arch))
    return arch


def supported_families() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted({a.family for a in _REGISTRY.values()})


class UnknownArchitectureError(ValueError):
    """Raised for a model whose family is not in the registry."""


def architecture_for(config) -> Architecture:
    """Finds the registry entry for a transformers config.

    Raises:
        UnknownArchitectureError: The family is not registered (says how to add it).
    """
    model_type = getattr(config, "model_type", None)
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    raise UnknownArchitectureError(
        f"model type {model_type!r} is not in the architecture registry. Supported "
        f"families: {', '.join(supported_families())} (model types: "
        f"{', '.join(sorted(_REGISTRY))}). To add one, tell the registry where its "
        "MLP activation lives, e.g.\n"
        "    from lape_utils.registry import register_architecture\n"
        f"    register_architecture('my-family', model_types=({model_type!r},),\n"
        "        layers='model.layers', site='mlp.act_fn', width='intermediate_size')\n"
        "then load the model again; the self-check will verify the entry."
    )


def _gpt2_width(cfg) -> int:
    return 4 * int(cfg.n_embd) if cfg.n_inner is None else int(cfg.n_inner)


# the built-in families
for _arch in [
    Architecture("llama", ("llama",), "model.layers", "mlp.act_fn"),
    Architecture("mistral", ("mistral",), "model.layers", "mlp.act_fn"),
    Architecture("qwen2", ("qwen2",), "model.layers", "mlp.act_fn"),
    Architecture("qwen3", ("qwen3",), "model.layers", "mlp.act_fn"),
    Architecture("gemma", ("gemma",), "model.layers", "mlp.act_fn"),
    Architecture("gemma2", ("gemma2",), "model.layers", "mlp.act_fn"),
    Architecture("gemma3", ("gemma3_text",), "model.layers", "mlp.act_fn"),
    Architecture("gemma3-multimodal", ("gemma3",), "model.language_model.layers", "mlp.act_fn",
                 text_config="text_config"),
    Architecture("phi3", ("phi3",), "model.layers", "mlp.activation_fn"),
    Architecture("phi", ("phi",), "model.layers", "mlp.activation_fn"),
    Architecture("gpt2", ("gpt2",), "transformer.h", "mlp.act", _gpt2_width),
    Architecture("gpt-neox", ("gpt_neox",), "gpt_neox.layers", "mlp.act"),
    Architecture("bloom", ("bloom",), "transformer.h", "mlp.gelu_impl",
                 lambda cfg: 4 * cfg.hidden_size),
    Architecture("opt", ("opt",), "model.decoder.layers", "activation_fn", "ffn_dim"),
]:
    _REGISTRY.update(dict.fromkeys(_arch.model_types, _arch))


class SelfCheckError(RuntimeError):
    """Raised when a registry entry does not fit the loaded model."""


def _find_sites(hf_model, arch: Architecture, n_layers: int) -> list[torch.nn.Module]:
    """The neuron-site module of every layer, or a :class:`SelfCheckError` saying what is off."""
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


def _forward(hf_model, input_ids: torch.Tensor, hooks: dict[torch.nn.Module, Callable]):
    """One forward pass with forward hooks ``{module: hook}``, removed afterwards."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    try:
        return hf_model(input_ids=input_ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()


def _structure_forward(hf_model, arch: Architecture, input_ids: torch.Tensor, fake: bool):
    """The structure checks on one forward pass (on fake tensors when ``fake``).

    Returns ``({"n_layers", "n_neurons"}, logits, sites, output of the first site)``.
    """
    cfg = hf_model.config
    n_layers, n_neurons = arch.n_layers(cfg), arch.n_neurons(cfg)
    sites = _find_sites(hf_model, arch, n_layers)
    outputs: dict[int, torch.Tensor] = {}  # the site outputs of a few tokens: small
    hooks = {
        site: lambda _module, _inputs, output, i=i: outputs.__setitem__(i, output.detach())
        for i, site in enumerate(sites)
    }
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        # (_forward passes use_cache=False: fake mode refuses to mutate a meta KV cache)
        shapes = ShapeEnv(assume_static_by_default=True)
        with FakeTensorMode(allow_non_fake_inputs=True, shape_env=shapes):
            logits = _forward(hf_model, input_ids.to("meta"), hooks)
    else:
        logits = _forward(hf_model, input_ids.to(next(hf_model.parameters()).device), hooks)
    missing = [i for i in range(n_layers) if i not in outputs]
    if missing:
        raise SelfCheckError(f"{arch.family}: the neuron site was not called in layers {missing}")
    wrong = {i: o.shape[-1] for i, o in outputs.items() if o.shape[-1] != n_neurons}
    if wrong:
        raise SelfCheckError(
            f"{arch.family}: site width {wrong} differs from the config's {n_neurons} neurons"
        )
    return {"n_layers": n_layers, "n_neurons": n_neurons}, logits, sites, outputs[0]


@torch.inference_mode()
def check_structure(hf_model, arch: Architecture, input_ids: torch.Tensor) -> dict:
    """The checks of :func:`self_check` that need no weights.

    The neuron site exists in every layer, is called on a forward pass and has the config's
    width. A meta-device model (``remote=True``) runs the forward on fake tensors, for free.

    Args:
        hf_model: The transformers causal LM (not the nnsight wrapper).
        arch: The registry entry to check.
        input_ids: ``[batch, pos]`` a few tokens to run.

    Returns:
        ``{"n_layers": L, "n_neurons": D, "weights": bool}`` (whether values were real).

    Raises:
        SelfCheckError: Which check failed and why.
    """
    meta = any(p.is_meta for p in hf_model.parameters())
    return {**_structure_forward(hf_model, arch, input_ids, fake=meta)[0], "weights": not meta}


@torch.inference_mode()
def self_check(hf_model, arch: Architecture, input_ids: torch.Tensor) -> dict:
    """Proves on one short forward pass that ``arch`` describes ``hf_model``.

    The checks of :func:`check_structure`, then that zeroing the first layer's most active
    neuron changes the logits.

    Args:
        hf_model: The transformers causal LM (not the nnsight wrapper).
        arch: The registry entry to check.
        input_ids: ``[batch, pos]`` a few tokens to run.

    Returns:
        ``{"n_layers": L, "n_neurons": D, "max_logit_change": float}``.

    Raises:
        SelfCheckError: Which check failed and why.
    """
    input_ids = input_ids.to(next(hf_model.parameters()).device)
    # a real forward even when accelerate offloads weights (they sit on meta between calls)
    facts, base, sites, first = _structure_forward(hf_model, arch, input_ids, fake=False)
    neuron = int(first.reshape(-1, first.shape[-1]).abs().amax(0).argmax())  # the most active

    def zero(_module, _inputs, output):
        output = output.clone()
        output[..., neuron] = 0
        return output

    edited = _forward(hf_model, input_ids, {sites[0]: zero})
    change = float((edited.float() - base.float()).abs().max())
    if not change > 0:
        raise SelfCheckError(
            f"{arch.family}: zeroing neuron {neuron} of layer 0 at {arch.site!r} did not "
            "change the logits; the site is not on the model's computation path"
        )
    return {**facts, "max_logit_change": change}
