"""LAPE workbook: find and steer the language-specific neurons of LLMs.

The package wraps nnsight tracing for activation capture and interventions, and keeps the
math of LAPE (Tang et al., ACL 2024) model-free. A typical session::

    import lape_utils as lu
    model = lu.load_model("gemma-3-270m")
    packed = lu.pack(lu.load_corpus("builtin"), model.tokenizer)
    stats = lu.capture(model, packed, "cache/stats")
    neurons = lu.identify(stats.over_zero, stats.n, stats.languages)
"""

from .capture import capture, top_activating_contexts
from .corpus import Corpus, PackedCorpus, load_corpus, load_prompts, pack
from .lape import LapeConfig, agreement, identify, random_matched, stability
from .languages import LANGUAGE_ORDER
from .models import DEFAULT_MODEL, LapeModel, ModelLoadError, load_model
from .registry import (
    Architecture,
    SelfCheckError,
    UnknownArchitectureError,
    register_architecture,
    self_check,
    supported_families,
)
from .selection import NeuronSelection
from .stats import ActivationStats, ProvenanceMismatchError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "LANGUAGE_ORDER",
    "ActivationStats",
    "Architecture",
    "Corpus",
    "LapeConfig",
    "LapeModel",
    "ModelLoadError",
    "NeuronSelection",
    "PackedCorpus",
    "ProvenanceMismatchError",
    "SelfCheckError",
    "UnknownArchitectureError",
    "agreement",
    "capture",
    "top_activating_contexts",
    "identify",
    "load_corpus",
    "load_model",
    "load_prompts",
    "pack",
    "random_matched",
    "register_architecture",
    "self_check",
    "stability",
    "supported_families",
]
