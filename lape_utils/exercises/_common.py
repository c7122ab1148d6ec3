"""The machinery of the exercises: feedback, the registry, and the checks' helpers."""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch

from lape_utils.languages import language_name


@dataclass(frozen=True)
class Feedback:
    """What a check says about an answer: passed or not, and why, in plain words.

    Renders in Jupyter as a green "✓ ..." or red "✗ ..." box; ``repr`` is the same text.

    Attributes:
        passed: Whether the answer is right.
        message: The explanation (what is right, or the first thing that is wrong).
    """

    passed: bool
    message: str

    def __repr__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.message}"

    def _repr_html_(self) -> str:
        colour, background = ("#1a7f37", "#dafbe1") if self.passed else ("#cf222e", "#ffebe9")
        return (
            f'<div style="border-left: 4px solid {colour}; background: {background}; '
            'color: #1f2328; padding: 6px 10px; white-space: pre-wrap; font-family: '
            f'sans-serif;"><b style="color: {colour}">{"✓" if self.passed else "✗"}</b> '
            f"{html.escape(self.message)}</div>"
        )


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook.

    Attributes:
        name: Identifier; also the name of the function the student writes and of its
            solution in :mod:`lape_utils.solutions`.
        notebook: ``"01"`` .. ``"04"``.
        title: Short title.
        objective: What the student will be able to do (or see) afterwards.
        minutes: Estimated time.
        difficulty: 1 (★) to 3 (★★★).
        check: The check, ``check(answer, *data) -> Feedback``.
    """

    name: str
    notebook: str
    title: str
    objective: str
    minutes: int
    difficulty: int
    check: Callable[..., Feedback]

    @property
    def stars(self) -> str:
        """The difficulty as stars, e.g. ``"★★"``."""
        return "★" * self.difficulty


#: Every exercise by name, in notebook order.
EXERCISES: dict[str, Exercise] = {}


class _Stop(Exception):
    """Ends a check early with its feedback (never leaves this module)."""

    def __init__(self, feedback: Feedback):
        super().__init__(feedback.message)
        self.feedback = feedback


def _fail(message: str) -> NoReturn:
    raise _Stop(Feedback(False, message))


def _exercise(name: str, notebook: str, title: str, objective: str, minutes: int,
              difficulty: int):
    """Registers a check as an exercise; the check returns Feedback, or stops with it."""

    def register(check: Callable[..., Feedback]) -> Callable[..., Feedback]:
        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> Feedback:
            try:
                return check(*args, **kwargs)
            except _Stop as stop:
                return stop.feedback

        EXERCISES[name] = Exercise(name, notebook, title, objective, minutes, difficulty, run)
        return run

    return register


def _call(fn: Any, *args: Any, hint: Callable[[Exception], str] | None = None) -> Any:
    """Calls the student's function; an unfilled stub or an exception ends the check.

    ``hint(err)`` may add an explanation of a typical exception.
    """
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        _fail(
            f"pass the function itself, without calling it: got a {type(fn).__name__} "
            f"({_short(fn)}), not a function."
        )
    try:
        return fn(*args)
    except NotImplementedError:
        _fail(
            f"not done yet: replace `raise NotImplementedError` in `{name}` with your code, "
            "then run this cell again."
        )
    except Exception as err:  # the student's bug, reported in one line
        lines = str(err).strip().splitlines()
        text = lines[0][:200] if lines else ""
        line = None
        code = getattr(fn, "__code__", None)
        tb = err.__traceback__
        while tb is not None:  # the deepest line of the student's own file
            if code is not None and tb.tb_frame.f_code.co_filename == code.co_filename:
                line = tb.tb_lineno - code.co_firstlineno + 1
            tb = tb.tb_next
        where = f" (line {line} of `{name}`)" if line else ""
        _fail(_join(f"your `{name}` raised {type(err).__name__}: {text}{where}.",
                    hint(err) if hint else ""))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _row(t: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in t.tolist()]


def _number(value: Any, name: str) -> float:
    """The student's answer as a float, or a failure saying what came back instead."""
    if value is None:
        _fail(f"`{name}` returned None: did you forget `return`?")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if (value.size if isinstance(value, np.ndarray) else value.numel()) != 1:
            _fail(
                f"`{name}` returned an array of shape {tuple(value.shape)}; return one number "
                "(a float; `.item()` turns a one-element tensor into one)."
            )
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        _fail(f"`{name}` returned {type(value).__name__} {_short(value)}; return one number.")


def _tensor(value: Any, name: str) -> torch.Tensor:
    if value is None:
        _fail(f"`{name}` returned None: did you forget `return`?")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        _fail(f"`{name}` returned {type(value).__name__} {_short(value)}; return a tensor.")


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _diagnose(answer: float, mistakes: list[tuple[float, str]], tol: float = 1e-6) -> str:
    """The message of the first typical mistake whose value equals the answer, or ``""``."""
    return next((msg for value, msg in mistakes if _close(answer, value, tol)), "")


def _join(head: str, why: str) -> str:
    """``head``, then the diagnosis ``why`` as a sentence of its own (if any).

    A leading plain word is capitalised; code (``math.log``, ``torch.quantile``) is not.
    """
    if not why:
        return head
    first = why.split(" ", 1)[0]
    return f"{head} {why[0].upper() + why[1:] if first.isalpha() else why}"


def _ok(message: str) -> Feedback:
    return Feedback(True, message)


def _lang(code: str) -> str:
    return language_name(code)


