"""Exercises of the four notebooks, ARENA style: a stub to fill in, a check that explains.

Every exercise has an objective, an estimated time, a difficulty (1-3 stars), a stub the
student fills in the notebook, a check here and a hidden solution in
:mod:`lape_utils.solutions`. A notebook cell runs::

    from lape_utils import exercises as ex

    def toy_entropy(p: list[float]) -> float:
        ...  # the student's code

    ex.check_toy_entropy(toy_entropy)     # -> a green "✓ ..." or red "✗ ..." box
    ex.show_solution("toy_entropy")       # in a collapsed cell: the solution's code
    ex.overview("01")                     # the exercises of notebook 01, as a table

A check never raises for a wrong answer: it returns :class:`Feedback` saying in plain words
what is wrong (an unfilled stub, an exception in the student's code, or the typical mistake
its answer matches), so a notebook run headless with the stubs unfilled shows feedback, not
a traceback. The ground truth is the package itself (:func:`~lape_utils.lape.lape_entropy`,
:func:`~lape_utils.lape.kth_quantile`, :func:`~lape_utils.intervene.apply_op`,
:func:`~lape_utils.evaluate.nll`, ...), on inputs the check builds or on the notebook's data.
"""

from __future__ import annotations

import inspect

import pandas as pd

from lape_utils import solutions

from ._common import EXERCISES, Exercise, Feedback
from .deactivation import check_shared_zero, check_zero_in_trace
from .detection import check_assign_languages, check_pooled_threshold, check_toy_entropy
from .distribution import (
    check_most_specific_neuron,
    check_overlap_prediction,
    check_specificity_table,
)
from .steering import check_steered_activation, check_target_mass, check_wilson_interval

__all__ = [
    "EXERCISES",
    "Exercise",
    "Feedback",
    "Solution",
    "check_assign_languages",
    "check_most_specific_neuron",
    "check_overlap_prediction",
    "check_pooled_threshold",
    "check_shared_zero",
    "check_specificity_table",
    "check_steered_activation",
    "check_target_mass",
    "check_toy_entropy",
    "check_wilson_interval",
    "check_zero_in_trace",
    "overview",
    "show_solution",
]


# ============================================================================ browsing


class Solution(str):
    """A solution's source code: a Markdown code block in Jupyter, plain text elsewhere."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        return f"```python\n{self}```"


def show_solution(name: str) -> Solution:
    """The source code of an exercise's solution (from :mod:`lape_utils.solutions`).

    Args:
        name: The exercise's name (see :data:`EXERCISES`).

    Returns:
        The source, which renders as a Markdown code block in Jupyter.

    Raises:
        KeyError: no exercise of that name (the message lists them).
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are {list(EXERCISES)}.")
    return Solution(inspect.getsource(getattr(solutions, name)))


def overview(notebook: str | None = None) -> pd.DataFrame:
    """The exercises as a table, all of them or those of one notebook.

    Args:
        notebook: ``"01"`` .. ``"04"``, or ``None`` for all.

    Returns:
        DataFrame indexed by ``name``: ``notebook``, ``title``, ``objective``, ``minutes``,
        ``difficulty`` (as stars).
    """
    rows = [
        {"name": e.name, "notebook": e.notebook, "title": e.title, "objective": e.objective,
         "minutes": e.minutes, "difficulty": e.stars}
        for e in EXERCISES.values() if notebook is None or e.notebook == str(notebook)
    ]
    columns = ["name", "notebook", "title", "objective", "minutes", "difficulty"]
    return pd.DataFrame(rows, columns=columns).set_index("name")
