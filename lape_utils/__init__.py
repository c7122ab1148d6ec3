"""LAPE workbook: find and steer the language-specific neurons of LLMs.

The package wraps nnsight tracing for activation capture and interventions, and keeps the
math of LAPE (Tang et al., ACL 2024) model-free. Start with :func:`load_model`.
"""

from .models import DEFAULT_MODEL, LapeModel, ModelLoadError, load_model
from .registry import (
    Architecture,
    SelfCheckError,
    UnknownArchitectureError,
    register_architecture,
    self_check,
    supported_families,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Architecture",
    "LapeModel",
    "ModelLoadError",
    "SelfCheckError",
    "UnknownArchitectureError",
    "load_model",
    "register_architecture",
    "self_check",
    "supported_families",
]
