"""Settings of the main job (``lape run``), shared with the notebooks it executes.

One frozen, validated :class:`JobConfig` says what the whole pipeline runs on: the model,
the text, the budgets of every stage. ``lape run`` turns each field into an option (so no
option can be dropped on the way), the main job hands the same values to the notebooks,
and :data:`PRESETS` name the paper's settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from ..config import LapeConfig
from ..languages import LANGUAGE_ORDER, PAPER_LANGUAGES, parse_languages
from ..models import DEFAULT_MODEL

__all__ = ["PRESETS", "SMOKE", "JobConfig"]

# settings whose default is a list of languages, cut to those captured when not given
_ADAPTIVE = {
    "ppl_languages": PAPER_LANGUAGES,
    "threshold_languages": ("zh", "fr", "ja"),
    "steer_targets": ("fr", "zh", "ru"),
}


@dataclass(frozen=True)
class JobConfig:
    """What the main job runs; the defaults fit 2 CPU cores in about 12 minutes.

    Variants with ``dataclasses.replace`` (validation runs again), or
    :meth:`with_preset`. Every field is an option of ``lape run`` (``--heldout-tokens``...).
    """

    model: str = DEFAULT_MODEL
    """Model: hub id, local directory, ``.gguf`` file, the embedded default, ``tiny-<f>``."""
    dtype: str = "float32"
    """Parameter dtype (``float32``, ``bf16``, ``fp16``, ``auto``)."""
    device_map: str | None = None
    """transformers/accelerate device map, e.g. ``"auto"`` to shard over the GPUs."""
    remote: bool = False
    """Run every trace on NDIF (needs an API key and a hub id NDIF serves)."""
    corpus: str = "builtin"
    """Text: ``builtin``, a directory of ``<code>.txt`` files, or ``wikipedia``."""
    filter_language: bool = False
    """Drop lines the language identifier does not give to the labelled language."""
    languages: tuple[str, ...] = tuple(LANGUAGE_ORDER)
    """Languages captured and identified."""
    tokens_per_language: int = 4088
    """Detection tokens per language (the paper: ~100M)."""
    seq_len: int = 512
    """Tokens per detection chunk (BOS included)."""
    replicates: int = 16
    """Poisson-bootstrap replicates recorded during capture (0: none)."""
    batch_size: int = 4
    """Chunks per forward pass."""
    top_rate: float = 0.01
    """LAPE: share of all neurons selected (see :class:`~lape_utils.config.LapeConfig`)."""
    filter_rate: float = 0.95
    """LAPE: quantile of the filter threshold."""
    activation_bar_ratio: float = 0.95
    """LAPE: quantile of the assignment bar."""
    ppl_languages: tuple[str, ...] | None = None
    """Rows and columns of the perplexity matrix (default: the paper's seven, those that
    are captured)."""
    heldout_tokens: int = 378
    """Held-out tokens per language for perplexity (6 chunks of 64: enough chunks for a
    paired bootstrap, at a cost that keeps the job in budget)."""
    heldout_seq_len: int = 64
    """Tokens per held-out chunk; chunks are the bootstrap's resampling unit."""
    threshold_rates: tuple[float, ...] = (0.0025, 0.005, 0.01, 0.02, 0.04)
    """``top_rate`` values of the threshold → effect stage (empty: skip it)."""
    threshold_languages: tuple[str, ...] | None = None
    """Languages of the threshold → effect stage (default: zh, fr, ja, those captured)."""
    threshold_tokens: int = 189
    """Held-out tokens per language of the threshold → effect stage."""
    steer_source: str = "en"
    """Language of the steering questions."""
    steer_targets: tuple[str, ...] | None = None
    """Target languages of steering; the first also gets the strength sweep (default: fr,
    zh, ru, those captured)."""
    steer_prompts: int = 12
    """Questions per steering run (Wilson intervals need more than a handful)."""
    steer_max_new_tokens: int = 24
    """Tokens generated per answer."""
    sweep_strengths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    """Strengths of the sweep (empty: skip it)."""
    chat: bool | None = None
    """Chat template for steering prompts: None = when the tokenizer has one."""
    notebooks: bool = True
    """Execute the numbered notebooks on the results and export them to HTML."""
    seed: int = 0
    """Seed of packing, bootstrap, controls and sampling."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", tuple(parse_languages(self.languages)))
        for name, default in _ADAPTIVE.items():  # unset: the defaults that were captured
            if getattr(self, name) is None:
                object.__setattr__(self, name, tuple(x for x in default if x in self.languages))
        for f in fields(self):
            if f.name.endswith(("languages", "targets")):
                value = getattr(self, f.name)
                object.__setattr__(self, f.name, tuple(parse_languages(value)) if value else ())
            elif f.name in ("threshold_rates", "sweep_strengths"):
                object.__setattr__(self, f.name, tuple(float(x) for x in getattr(self, f.name)))
        for name in ("tokens_per_language", "seq_len", "batch_size", "heldout_tokens",
                     "heldout_seq_len", "threshold_tokens", "steer_prompts",
                     "steer_max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.languages:
            raise ValueError("languages must name at least one language")
        if self.replicates < 0:
            raise ValueError(f"replicates must be >= 0, got {self.replicates}")
        self.lape_config()  # validates the three thresholds
        for rate in self.threshold_rates:
            dataclasses.replace(self.lape_config(), top_rate=rate)
        known = set(self.languages)
        for name in ("ppl_languages", "threshold_languages", "steer_targets"):
            extra = [x for x in getattr(self, name) if x not in known]
            if extra:
                raise ValueError(
                    f"{name} {list(extra)} are not among the captured languages "
                    f"{list(self.languages)}; add them to languages or drop them"
                )
        if self.steer_source in self.steer_targets:
            raise ValueError(f"steer_source {self.steer_source!r} is also a steering target")
        if self.remote and self.device_map is not None:
            raise ValueError("remote runs on NDIF's machines: device_map does not apply")
        if self.remote and self.notebooks:
            raise ValueError(
                "the notebooks load the model locally; run a remote job with notebooks=False "
                "(lape run --remote --no-notebooks)"
            )

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's documentation (the string under it), for ``lape run --help``."""
        import ast
        import inspect
        import textwrap

        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        out = {}
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(
                getattr(nxt, "value", None), ast.Constant
            ):
                out[node.target.id] = " ".join(str(nxt.value.value).split())
        return out

    def lape_config(self) -> LapeConfig:
        """The three LAPE thresholds as a :class:`~lape_utils.config.LapeConfig`."""
        return LapeConfig(self.top_rate, self.filter_rate, self.activation_bar_ratio)

    def score_batch_size(self) -> int:
        """Chunks per scoring forward (perplexity matrix, threshold → effect).

        Scoring computes every position's logits, so short held-out chunks are batched up
        to 512 tokens (at most 8 chunks), and never fewer than ``batch_size``.
        """
        return max(self.batch_size, min(8, 512 // self.heldout_seq_len))

    def with_preset(self, name: str) -> JobConfig:
        """These settings with a preset's values (see :data:`PRESETS`) on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return dataclasses.replace(self, **PRESETS[name])


#: Named settings. ``paper``: the paper's seven languages, Wikipedia text (language-filtered),
#: ~100M detection tokens and ~1M held-out tokens per language in 4096-token chunks, its
#: thresholds (the defaults), all 40 built-in questions per language (the paper used 70),
#: 64 new tokens per answer. It needs the internet (Wikipedia through ``datasets``) and,
#: for a 7B model, a GPU.
PRESETS: dict[str, dict] = {
    "paper": {
        "corpus": "wikipedia",
        "filter_language": True,
        "languages": tuple(PAPER_LANGUAGES),
        "ppl_languages": tuple(PAPER_LANGUAGES),
        "tokens_per_language": 100_000_000,
        "seq_len": 4096,
        "heldout_tokens": 1_000_000,
        "heldout_seq_len": 4096,
        "steer_targets": ("fr", "zh", "ja"),
        "steer_prompts": 40,
        "steer_max_new_tokens": 64,
        "threshold_languages": ("zh", "fr", "ja"),
        "top_rate": 0.01,
        "filter_rate": 0.95,
        "activation_bar_ratio": 0.95,
    },
}

#: Small settings for the test suite's runs on a tiny model (``JobConfig(**SMOKE)``).
SMOKE: dict = {
    "model": "tiny-llama",
    "languages": ("en", "fr", "zh", "ru"),
    "tokens_per_language": 630,
    "seq_len": 64,
    "replicates": 3,
    "ppl_languages": ("en", "fr", "zh"),
    "heldout_tokens": 126,
    "heldout_seq_len": 32,
    "threshold_rates": (0.01, 0.05),
    "threshold_languages": ("fr", "zh"),
    "threshold_tokens": 62,
    "steer_targets": ("fr", "ru"),
    "steer_prompts": 2,
    "steer_max_new_tokens": 4,
    "sweep_strengths": (1.0, 2.0),
}
