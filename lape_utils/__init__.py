"""LAPE workbook: find and steer the language-specific neurons of LLMs.

The package wraps nnsight tracing for activation capture and interventions, and keeps the
math of LAPE (Tang et al., ACL 2024) model-free. The names below are the path a notebook
walks; everything else (error types, the architecture registry, plots, widgets, the
published sets, the main job) is imported from its module. A session::

    import lape_utils as lu

    model = lu.load_model("gemma-3-270m")
    packed = lu.pack(lu.load_corpus("builtin"), model.tokenizer, seq_len=512)
    stats = lu.capture(model, packed, "cache/stats")          # counts, cached
    neurons = lu.identify(stats.over_zero, stats.n, stats.languages, lu.LapeConfig())

    heldout = lu.pack(lu.load_corpus("builtin", neurons.languages, split="heldout"),
                      model.tokenizer, seq_len=256)
    matrix = lu.perplexity_matrix(model, neurons, heldout)    # zero each language's set
    result = lu.steer(model, neurons, stats, lu.load_prompts("builtin", language="en")[:8],
                      lu.SteerSpec("fr", source="en"))       # set them to their mean

``stats`` is an :class:`ActivationStats` (``over_zero: [layer, neuron, lang]``, ``n:
[lang]``), ``neurons`` a :class:`NeuronSelection` (per language, per layer, the neuron
indices); an :class:`Intervention` zeroes, sets, adds to or scales neurons in a forward
pass or a generation. The three formulas of the method, on count tensors:
:func:`activation_probability` (``P = over_zero / n``), :func:`lape_entropy` (entropy over
languages) and :func:`kth_quantile` (the reference's pooled-quantile threshold).
"""

from .capture import capture
from .config import LapeConfig
from .corpus import load_corpus, load_prompts
from .evaluate import perplexity_matrix
from .intervene import Intervention
from .lape import activation_probability, identify, kth_quantile, lape_entropy
from .models import load_model
from .packing import pack
from .selection import NeuronSelection
from .stats import ActivationStats
from .steering import SteerSpec, steer

__version__ = "0.1.0"

__all__ = [
    "ActivationStats",
    "Intervention",
    "LapeConfig",
    "NeuronSelection",
    "SteerSpec",
    "activation_probability",
    "capture",
    "identify",
    "kth_quantile",
    "lape_entropy",
    "load_corpus",
    "load_model",
    "load_prompts",
    "pack",
    "perplexity_matrix",
    "steer",
]
