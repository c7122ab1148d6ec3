"""The thresholds of LAPE identification, in one frozen, validated dataclass.

No imports from the package, so that every module can import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["LapeConfig"]

_CONFIG_RANGES = {"top_rate": "(0, 1]", "filter_rate": "[0, 1)", "activation_bar_ratio": "[0, 1)"}


@dataclass(frozen=True)
class LapeConfig:
    """Every threshold of LAPE identification (paper defaults).

    Frozen and validated; make variants with ``dataclasses.replace(cfg, top_rate=0.02)``
    (validation runs again). Values are stored as Python floats.
    """

    top_rate: float = 0.01
    """Fraction of all FFN neurons to select, globally across layers: ``round(L·D·top_rate)``
    neurons with the lowest entropy. In (0, 1]."""

    filter_rate: float = 0.95
    """Quantile (:func:`~lape_utils.lape.kth_quantile`) of all activation probabilities,
    giving ``tau``; a neuron with ``P <= tau`` in every language is excluded. In [0, 1)."""

    activation_bar_ratio: float = 0.95
    """Quantile of the same probabilities giving ``bar``; a selected neuron belongs to every
    language with ``P > bar``. In [0, 1). One number in the paper, two in the reference code."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = _CONFIG_RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"LapeConfig.{f.name} must be a real number in {allowed}, got {value!r} "
                    f"({type(value).__name__})."
                )
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(
                    f"LapeConfig.{f.name} must be a finite number in {allowed}, got {value!r}."
                )
            object.__setattr__(self, f.name, value)
            top = f.name == "top_rate"
            if not (0.0 < value <= 1.0 if top else 0.0 <= value < 1.0):
                meaning = (
                    "the fraction of all neurons to select (paper: 0.01)" if top
                    else "a quantile of the pooled activation probabilities (paper: 0.95)"
                )
                raise ValueError(
                    f"LapeConfig.{f.name} = {value!r} is outside {allowed}; it is {meaning}."
                )

    def to_dict(self) -> dict[str, float]:
        """Plain dict of the fields (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LapeConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults.

        Raises:
            ValueError: A key that is not a field.
        """
        unknown = sorted(set(data) - set(_CONFIG_RANGES))
        if unknown:
            raise ValueError(
                f"LapeConfig.from_dict: unknown field(s) {unknown}; allowed: "
                f"{sorted(_CONFIG_RANGES)}."
            )
        return cls(**dict(data))

    def label(self) -> str:
        """Short text for figure titles, e.g. ``"top 1% · filter q0.95 · bar q0.95"``."""
        return (
            f"top {self.top_rate * 100:g}% · filter q{self.filter_rate:g} · "
            f"bar q{self.activation_bar_ratio:g}"
        )
