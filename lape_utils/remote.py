"""NDIF without local weights: the key, what travels with a request, and how large it is.

With ``remote=True`` nnsight serialises a trace, runs it next to NDIF's weights and sends
back only the values it saves; ``"local"`` serialises it the same way but runs it here (real
weights, no key, no network). :mod:`lape_utils.models` imports this module, never the other
way round, so the names both use (:data:`DEFAULT_MODEL`, :class:`ModelLoadError`) live here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

DEFAULT_MODEL = "gemma-3-270m"
"""The embedded default model (Gemma 3 270M base); NDIF serves its twin ``google/gemma-3-270m``."""

REMOTE_MODES = (False, True, "local")
"""Values of ``remote``: local only, NDIF, or nnsight's local dry run of the NDIF path."""


class ModelLoadError(ValueError):
    """A model name or path that cannot be loaded (here, or on NDIF), with the reason."""


class MissingNDIFKeyError(RuntimeError):
    """``remote=True`` without an NDIF API key (raised before anything is built or sent)."""


class RemoteModelError(RuntimeError):
    """A model loaded with ``remote=True`` (no local weights) was asked to run locally."""


def ndif_api_key() -> str | None:
    """The NDIF API key nnsight will send, or ``None``.

    nnsight reads ``NDIF_API_KEY`` at import; a key exported later is copied in here.
    """
    from nnsight import CONFIG

    if not CONFIG.API.APIKEY and os.environ.get("NDIF_API_KEY"):
        CONFIG.API.APIKEY = os.environ["NDIF_API_KEY"]
    return CONFIG.API.APIKEY or None


def prepare_remote(remote: bool | str, *, name: str | None = None) -> bool | str:
    """Checks a ``remote`` setting and readies this process for it, before any work.

    ``True`` and ``"local"`` register this package with nnsight for pickling *by value*: NDIF
    does not have ``lape_utils``, so the functions a trace calls must travel with it.

    Args:
        remote: ``False``, ``True`` or ``"local"``.
        name: The model name, to refuse the ones NDIF cannot serve.

    Returns:
        ``remote``.

    Raises:
        ValueError: Any other value.
        ModelLoadError: ``remote=True`` for a tiny model, a GGUF file or the embedded default.
        MissingNDIFKeyError: ``remote=True`` and no key is set.
    """
    if not any(remote is mode or (isinstance(remote, str) and remote == mode)
               for mode in REMOTE_MODES):
        raise ValueError(
            f"remote must be False, True (run on NDIF) or 'local' (dry-run the NDIF "
            f"serialisation here), got {remote!r}"
        )
    local_only = name is not None and (
        name.startswith("tiny-") or name == DEFAULT_MODEL or name.endswith(".gguf")
    )
    if remote is True and local_only:
        hint = " (its hub twin is 'google/gemma-3-270m')" if name == DEFAULT_MODEL else ""
        raise ModelLoadError(
            f"NDIF runs models it hosts, named by hub id; {name!r} exists only on this "
            f"machine{hint}. Use a hub id with remote=True, or remote='local' to dry-run "
            "the serialisation offline with local weights."
        )
    if remote is True and ndif_api_key() is None:
        from nnsight import CONFIG

        raise MissingNDIFKeyError(
            f"remote=True runs traces on NDIF ({CONFIG.API.HOST}), which needs an API key, "
            "and none is set (nnsight.CONFIG.API.APIKEY is empty, NDIF_API_KEY is unset). "
            "Nothing was loaded or sent. Get a key at https://login.ndif.us, then "
            "`export NDIF_API_KEY=...` or call nnsight.CONFIG.set_default_api_key(key); or "
            "use remote='local' to dry-run the serialisation offline with local weights."
        )
    if remote:
        import nnsight

        nnsight.register(sys.modules[__name__.partition(".")[0]])
    return remote


def config_fingerprint(config) -> str:
    """A hash of a config's content (private and version keys left out), for ``remote=True``."""

    def clean(value):
        if isinstance(value, dict):
            return {
                k: clean(v) for k, v in value.items()
                if not str(k).startswith("_") and k != "transformers_version"
            }
        return value

    text = json.dumps(clean(config.to_dict()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class RemoteRequest:
    """What one trace would send to NDIF and get back, measured without sending it.

    Attributes:
        request_bytes: The serialised request (source, referenced values, tracer; the
            model by reference), uncompressed.
        request_bytes_zstd: The same, zstd-compressed as nnsight sends it by default.
        saved: For each value the trace saves, the ``(shape, dtype)`` of its tensors.
        response_bytes: Size of those values written with ``torch.save`` (uncompressed).
        payload: The serialised request itself (uncompressed).
    """

    request_bytes: int
    request_bytes_zstd: int
    saved: dict[str, list[tuple[tuple[int, ...], str]]]
    response_bytes: int
    payload: bytes = field(repr=False, compare=False)


class _Measured(Exception):
    """Carries a :class:`RemoteRequest` out of the trace that was measured."""

    def __init__(self, request: RemoteRequest):
        super().__init__("measured")
        self.request = request


def measure_remote_request(model, run: Callable) -> RemoteRequest:
    """Measures the NDIF request of the first remote trace ``run(model)`` opens.

    The trace is serialised as for NDIF, not sent, and run on fake tensors (no weights or
    network needed) to see what it saves; then ``run`` is stopped.

    Args:
        model: A loaded :class:`~lape_utils.models.LapeModel` (a meta model works).
        run: Opens the trace, e.g. ``lambda m: count_batch(m, ids, remote=True)``.

    Returns:
        A :class:`RemoteRequest`.

    Raises:
        ValueError: ``run`` opened no remote trace.
    """
    nn = model.nn
    prepare_remote("local")  # ship this package by value, as a remote run does
    # nnsight asks the model for its remote backend; an instance attribute answers first
    object.__setattr__(nn, "_remote_backend", lambda *args, **kwargs: partial(_measure, model))
    try:
        run(model)
    except _Measured as done:
        return done.request
    finally:
        nn.__dict__.pop("_remote_backend", None)
    raise ValueError(
        "run(model) finished without opening a trace with remote=True or 'local'; pass "
        "remote=True to the call it makes (e.g. count_batch(m, ids, remote=True))"
    )


def _map_tensors(value, fn):
    """``value`` with ``fn`` applied to every tensor in it (through dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in ``value``, in order."""
    found: list[torch.Tensor] = []
    _map_tensors(value, found.append)
    return found


def _measure(model, tracer) -> None:
    """The nnsight backend of :func:`measure_remote_request`: raises :class:`_Measured`."""
    import zstandard
    from nnsight.ndif import pull_env
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import _saves
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    model.nn.__dict__.pop("_remote_backend", None)  # not part of the request
    pull_env()
    blob = RequestModel.serialize(tracer, compress=False)
    compressed = zstandard.ZstdCompressor(level=6).compress(blob)
    config = model.hf.config
    use_cache, config.use_cache = config.use_cache, False  # fake mode refuses the cache
    try:
        with FakeTensorMode(
            allow_non_fake_inputs=True, shape_env=ShapeEnv(assume_static_by_default=True)
        ):
            tracer.execute(tracer.info.code)
    finally:
        config.use_cache = use_cache
    saves = _saves()
    saved = {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in saves}
    buffer = io.BytesIO()  # what comes back: the saved values, as zeros of the same shapes
    torch.save(_map_tensors(saved, lambda t: torch.zeros(tuple(t.shape), dtype=t.dtype)), buffer)
    raise _Measured(RemoteRequest(
        request_bytes=len(blob),
        request_bytes_zstd=len(compressed),
        saved={
            k: [(tuple(t.shape), str(t.dtype).replace("torch.", "")) for t in _tensors(v)]
            for k, v in saved.items()
        },
        response_bytes=len(buffer.getvalue()),
        payload=blob,
    ))
