"""Language codes, names and the one language order used by every table and plot.

Codes are the ISO 639 codes that fastText's lid.176 reports (``"zh"``, ``"id"``, ``"ms"``...).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "LANGUAGE_NAMES",
    "LANGUAGE_ORDER",
    "PAPER_LANGUAGES",
    "language_name",
    "parse_languages",
    "sort_languages",
]

PAPER_LANGUAGES: tuple[str, ...] = ("en", "zh", "fr", "es", "vi", "id", "ja")
"""The languages of Tang et al. (2024), in the index order of their published neuron files."""

LANGUAGE_ORDER: tuple[str, ...] = (*PAPER_LANGUAGES, "de", "ru", "ko")
"""The module-level language order of every table and plot: the paper's seven, then de, ru, ko."""

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "zh": "Chinese",
    "fr": "French",
    "es": "Spanish",
    "vi": "Vietnamese",
    "id": "Indonesian",
    "ja": "Japanese",
    "de": "German",
    "ru": "Russian",
    "ko": "Korean",
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "az": "Azerbaijani",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "el": "Greek",
    "eo": "Esperanto",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "ga": "Irish",
    "gl": "Galician",
    "gu": "Gujarati",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "hy": "Armenian",
    "is": "Icelandic",
    "it": "Italian",
    "jv": "Javanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "kn": "Kannada",
    "la": "Latin",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "my": "Burmese",
    "ne": "Nepali",
    "nl": "Dutch",
    "no": "Norwegian",
    "pa": "Punjabi",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sq": "Albanian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "th": "Thai",
    "tl": "Tagalog",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "yue": "Cantonese",
    "wuu": "Wu Chinese",
}
"""English name of each language code (the project's ten and ~60 that lid.176 knows)."""


def language_name(code: str) -> str:
    """English name of ``code``, or the code itself when it is not in :data:`LANGUAGE_NAMES`."""
    return LANGUAGE_NAMES.get(code, code)


def sort_languages(codes: Iterable[str]) -> list[str]:
    """Sorts language codes: :data:`LANGUAGE_ORDER` first, then the rest alphabetically.

    Duplicates are removed: ``["pt", "ja", "en", "it", "ja"]`` -> ``["en", "ja", "it", "pt"]``.
    """
    rank = {code: i for i, code in enumerate(LANGUAGE_ORDER)}
    return sorted(dict.fromkeys(codes), key=lambda c: (rank.get(c, len(rank)), c))


def parse_languages(
    spec: str | Iterable[str] | None, available: Iterable[str] | None = None
) -> list[str]:
    """Turns a user's choice of languages into a validated list of codes.

    Args:
        spec: ``"en,zh,fr"`` (commas and/or spaces), a list of codes, ``None`` or ``"all"``
            (every available language, in :func:`sort_languages` order). Codes are
            lower-cased; duplicates are dropped; the user's order is kept.
        available: The codes that exist here (e.g. a corpus's); ``None``: :data:`LANGUAGE_NAMES`.

    Returns:
        The chosen codes.

    Raises:
        ValueError: an unavailable code (the message lists the available ones), or no code.
    """
    avail = sort_languages(LANGUAGE_NAMES if available is None else available)
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        if not avail:
            raise ValueError("no languages are available to choose from")
        return avail
    items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"language codes must be strings, got {item!r} in {spec!r}")
    codes = list(dict.fromkeys(c for c in (item.strip().lower() for item in items) if c))
    if not codes:
        raise ValueError(
            f"no language chosen in {spec!r}; give codes such as 'en,zh,fr' "
            f"(available: {', '.join(avail)})"
        )
    unknown = ", ".join(repr(c) for c in codes if c not in avail)
    if unknown:
        listing = ", ".join(f"{c} ({language_name(c)})" for c in avail)
        raise ValueError(f"unknown language code(s) {unknown}; available: {listing}")
    return codes
