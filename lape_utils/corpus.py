"""Multilingual text for LAPE: the built-in corpus, user directories, Wikipedia; packing.

Three kinds of source, all loaded by :func:`load_corpus` into a :class:`Corpus` (documents per
language):

* ``"builtin"``: the project's own parallel corpus in ``data/corpus/<split>/<code>.txt``
  (see ``data/README.md``), found next to the package in the repository checkout, or in
  ``$LAPE_DATA_DIR`` (the folder holding ``corpus/`` and ``prompts/``).
* a directory: one UTF-8 file ``<code>.txt`` per language, one document (or paragraph) per
  line, blank lines ignored. When the directory has a ``<split>/`` sub-folder (``detect/``,
  ``heldout/``), that one is read. This is how users bring their own text.
* ``"wikipedia"`` / ``"wikipedia:<date>"``: ``wikimedia/wikipedia`` through ``datasets``,
  streamed and shuffled with a seed until a token budget is met, cached locally.

:func:`pack` then follows the paper's protocol (§1 of ``lape-method.md``): tokenize with the
model's own tokenizer, concatenate each language's documents into one stream, cut it into
fixed-length chunks with no padding, with the same token budget for every language by
default. :func:`load_prompts` reads the open questions used for steering. For an
instruction-tuned model, ``pack(..., chat=True)`` wraps each document in a user turn of its
chat template and marks which tokens are the message's, so that only those are counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .languages import LANGUAGE_ORDER, parse_languages, sort_languages

log = logging.getLogger(__name__)

__all__ = [
    "CHARS_PER_TOKEN_ESTIMATE",
    "SPLITS",
    "ChatTemplateError",
    "Corpus",
    "CorpusError",
    "PackedCorpus",
    "chat_turn",
    "data_dir",
    "load_corpus",
    "load_prompts",
    "pack",
    "tokenizer_identity",
]

SPLITS: tuple[str, ...] = ("detect", "heldout")
"""Splits of the built-in corpus: text for finding neurons, and separate text for perplexity."""

CHARS_PER_TOKEN_ESTIMATE = 3.0
"""Characters per token assumed when a Wikipedia budget is counted without a tokenizer.

Deliberately low so that the estimate errs towards fetching too much text: Gemma 3's
tokenizer gives about 4-5 characters per token on Latin-script text, 3.9 on Russian and
1.4-1.8 on Chinese, Japanese and Korean. Pass ``tokenizer=`` for an exact count.
"""

WIKIPEDIA_DATASET = "wikimedia/wikipedia"
WIKIPEDIA_DEFAULT_DATE = "20231101"
WIKIPEDIA_SHUFFLE_BUFFER = 10_000
"""Documents held by the streaming shuffle buffer (``IterableDataset.shuffle``)."""
WIKIPEDIA_HELDOUT_MODULUS = 10
"""An article is held out when ``sha256(id) % 10 == 0`` (10% of articles), else it is detect
text; the two splits of Wikipedia never share an article, whatever the seed or budget."""

_SEPARATOR = "\n\n"
_PROBE = (
    "Hello world. Bonjour le monde. ¡Hola, mundo! Hallo Welt. Xin chào thế giới. Halo dunia. "
    "Привет, мир. 你好，世界。こんにちは、世界。안녕하세요 세계.\n\n 12345 <tag> é"
)
_CODE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class CorpusError(ValueError):
    """A corpus file or directory that cannot be used (names the file and what to do)."""


class ChatTemplateError(ValueError):
    """A tokenizer without a chat template, or one that cannot render a user turn."""


# ---------------------------------------------------------------------------------------
# Locations and files


def data_dir() -> Path:
    """The folder of the built-in data (``corpus/``, ``prompts/``).

    ``$LAPE_DATA_DIR`` when set, else ``data/`` at the root of the repository checkout the
    package is installed from (editable install).

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    env = os.environ.get("LAPE_DATA_DIR")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data"
    if not path.is_dir():
        where = "$LAPE_DATA_DIR" if env else "the repository checkout"
        raise FileNotFoundError(
            f"the built-in data folder {path} (from {where}) does not exist. Install the "
            "workbook from its repository (pip install -e .) or set LAPE_DATA_DIR to a "
            "folder holding corpus/detect, corpus/heldout and prompts/."
        )
    return path


def _read_lines(path: Path) -> list[str]:
    """Non-blank, stripped lines of a UTF-8 file (a BOM is ignored).

    Raises:
        CorpusError: the file cannot be read, is not UTF-8, or has no non-blank line.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CorpusError(
            f"cannot read {path}: {err.strerror or err}. Check that it is a readable file."
        ) from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CorpusError(
            f"{path} is not UTF-8 (invalid byte 0x{raw[err.start]:02x} at byte {err.start}, "
            f"line {line}). Convert it, e.g. `iconv -f <its encoding> -t UTF-8`."
        ) from err
    lines = [s for s in (line.strip() for line in text.splitlines()) if s]
    if not lines:
        raise CorpusError(
            f"{path} is empty (no non-blank line). Put one document per line, or remove the "
            "file to drop the language."
        )
    return lines


def _code_files(directory: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(directory.glob("*.txt"))
        if _CODE_RE.match(p.stem) and not p.name.startswith(".")
    }


def _resolve_directory(directory: Path, split: str) -> Path:
    """``directory/<split>`` when it exists, else ``directory`` itself."""
    sub = directory / split
    if sub.is_dir():
        return sub
    present = [s for s in SPLITS if (directory / s).is_dir()]
    if present:
        raise FileNotFoundError(
            f"{directory} has split folder(s) {', '.join(present)} but no {split!r}; "
            f"use split={present[0]!r} or add {sub}/<code>.txt files."
        )
    return directory


# ---------------------------------------------------------------------------------------
# Corpus


def _fingerprint(documents: dict[str, list[str]]) -> str:
    """sha256 over the content: each language code and its documents, languages sorted."""
    outer = hashlib.sha256()
    for lang in sorted(documents):
        inner = hashlib.sha256(json.dumps(documents[lang], ensure_ascii=False).encode())
        outer.update(f"{lang}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


@dataclass
class Corpus:
    """Documents per language, with where they came from.

    Attributes:
        source: ``"builtin"``, a directory path, or ``"wikipedia:<date>"``.
        split: ``"detect"`` or ``"heldout"`` (a plain label for a directory without split
            folders).
        documents: ``{code: [document, ...]}``, languages in the order they were asked for
            (default: :data:`~lape_utils.languages.LANGUAGE_ORDER` first). A document holds no
            newline when it was read from a file.
        fingerprint: sha256 of the content (languages and documents, independent of the
            order of languages and of ``source``). Computed when left empty; recompute with
            :meth:`refresh_fingerprint` after editing ``documents`` by hand.
        dropped: ``{code: (lines, characters)}`` removed by the language filter (empty when
            the filter was off).
    """

    source: str
    split: str
    documents: dict[str, list[str]]
    fingerprint: str = ""
    dropped: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = _fingerprint(self.documents)

    def refresh_fingerprint(self) -> str:
        """Recomputes :attr:`fingerprint` from the documents and returns it."""
        self.fingerprint = _fingerprint(self.documents)
        return self.fingerprint

    @property
    def languages(self) -> list[str]:
        """Language codes, in corpus order."""
        return list(self.documents)

    def table(self, tokenizer=None) -> pd.DataFrame:
        """Sizes per language.

        Args:
            tokenizer: A Hugging Face tokenizer; when given, documents are tokenized without
                special tokens and ``tokens`` and ``chars_per_token`` are added.

        Returns:
            DataFrame indexed by ``language`` (corpus order) with columns ``documents``,
            ``characters`` (``len`` of the documents, whitespace included), then
            ``tokens`` and ``chars_per_token`` with a tokenizer, and ``dropped_lines`` and
            ``dropped_characters`` when the language filter ran.
        """
        rows = {}
        for lang, docs in self.documents.items():
            row: dict[str, float | int] = {
                "documents": len(docs),
                "characters": sum(len(d) for d in docs),
            }
            if tokenizer is not None:
                tokens = int(sum(_token_counts(tokenizer, docs)))
                row["tokens"] = tokens
                row["chars_per_token"] = row["characters"] / tokens if tokens else math.nan
            if self.dropped:
                lines, chars = self.dropped.get(lang, (0, 0))
                row["dropped_lines"] = lines
                row["dropped_characters"] = chars
            rows[lang] = row
        df = pd.DataFrame.from_dict(rows, orient="index")
        df.index.name = "language"
        return df

    def subset(self, languages: str | Iterable[str]) -> Corpus:
        """A corpus with only ``languages`` (in the order given).

        Raises:
            ValueError: a code is not in this corpus (lists those that are).
        """
        chosen = parse_languages(languages, self.languages)
        return Corpus(
            source=self.source,
            split=self.split,
            documents={lang: list(self.documents[lang]) for lang in chosen},
            dropped={k: v for k, v in self.dropped.items() if k in chosen},
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.documents.items())
        return (
            f"Corpus(source={self.source!r}, split={self.split!r}, documents: {sizes}, "
            f"fingerprint={self.fingerprint[:12]})"
        )


def _token_counts(tokenizer, texts: Sequence[str], batch: int = 1000) -> list[int]:
    """Tokens of each text, without special tokens."""
    out: list[int] = []
    for i in range(0, len(texts), batch):
        block = list(texts[i : i + batch])
        ids = tokenizer(block, add_special_tokens=False, verbose=False)["input_ids"]
        out.extend(len(x) for x in ids)
    return out


def _estimate_counts(texts: Sequence[str]) -> list[int]:
    return [math.ceil(len(t) / CHARS_PER_TOKEN_ESTIMATE) for t in texts]


def _counter(tokenizer) -> Callable[[Sequence[str]], list[int]]:
    if tokenizer is None:
        return _estimate_counts
    return lambda texts: _token_counts(tokenizer, texts)


def _filter_lines(lines: list[str], lang: str) -> tuple[list[str], tuple[int, int], Counter]:
    """Keeps the lines identified as ``lang``; returns kept, (lines, chars) dropped, labels."""
    from .langid import detect_batch

    results = detect_batch(lines)
    kept, reasons, n_drop, c_drop = [], Counter(), 0, 0
    for line, res in zip(lines, results, strict=True):
        if res.label == lang:
            kept.append(line)
        else:
            n_drop += 1
            c_drop += len(line)
            reasons[res.label] += 1
    return kept, (n_drop, c_drop), reasons


def _log_dropped(
    lang: str, total: int, chars: int, dropped: tuple[int, int], reasons: Counter
) -> None:
    if dropped[0]:
        what = ", ".join(f"{k} {v}" for k, v in reasons.most_common(6))
        log.info(
            "language filter, %s: dropped %d of %d lines (%d of %d characters); detected as %s",
            lang, dropped[0], total, dropped[1], chars, what,
        )
    else:
        log.info("language filter, %s: kept all %d lines", lang, total)


def load_corpus(
    source: str | os.PathLike = "builtin",
    languages: str | Iterable[str] | None = None,
    *,
    split: str = "detect",
    filter_language: bool = False,
    tokens_per_language: int | None = None,
    tokenizer=None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    take_all: bool = False,
    wikipedia_path: str | os.PathLike | None = None,
) -> Corpus:
    """Loads multilingual text.

    Args:
        source: ``"builtin"`` (the project's parallel corpus), a directory of ``<code>.txt``
            files (one document per line; ``<dir>/<split>/`` is used when it exists), or
            ``"wikipedia"`` / ``"wikipedia:<date>"`` (``wikimedia/wikipedia``, config
            ``<date>.<code>``, default date 20231101).
        languages: ``"en,zh,fr"``, a list, or ``None`` for all available (builtin and
            directories: every ``<code>.txt`` there; Wikipedia: the project's ten).
        split: ``"detect"`` or ``"heldout"``. For Wikipedia, 10% of articles (chosen by a
            hash of their id) are held out and never appear in ``detect``.
        filter_language: Drop lines that the language identifier (fastText lid.176, see
            :mod:`lape_utils.langid`) does not assign to the file's language, including
            lines it cannot judge (too short, not confident, mixed). What was dropped is in
            :attr:`Corpus.dropped` and logged.
        tokens_per_language: Wikipedia: documents are taken until the kept paragraphs hold
            this many tokens (required unless ``take_all``). Files: when a ``tokenizer`` is
            given too, a language with fewer tokens raises early (no text is cut here; the
            exact budget is applied by :func:`pack`).
        tokenizer: Counts tokens (without special tokens). Without it, Wikipedia budgets
            are estimated at :data:`CHARS_PER_TOKEN_ESTIMATE` characters per token.
        seed: Seed of the Wikipedia shuffle (same seed, same documents).
        cache_dir: Root of the Wikipedia cache (default ``lape_utils.models.cache_dir()``);
            text lands in ``<cache_dir>/wikipedia/<date>/<split>/<code>.txt`` (the directory
            format above) with a ``<code>.json`` sidecar (seed, budget, counts).
        take_all: Accept less text than ``tokens_per_language`` (a warning is logged), or
            with Wikipedia and no budget, stream every article.
        wikipedia_path: A local copy of the dataset for tests or offline use: a folder with
            ``<date>.<code>/`` sub-folders of ``.parquet`` or ``.jsonl`` files having the
            dataset's columns (``id``, ``url``, ``title``, ``text``).

    Returns:
        A :class:`Corpus`.

    Raises:
        ValueError: unknown source or language code (the message lists what is available),
            a language with less text than the budget, bad split.
        CorpusError: an empty, unreadable or non-UTF-8 file (named), a directory with no
            ``<code>.txt`` file.
        FileNotFoundError: a path that does not exist.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if tokens_per_language is not None and int(tokens_per_language) <= 0:
        raise ValueError(f"tokens_per_language must be positive, got {tokens_per_language}")
    started = time.perf_counter()
    src = os.fspath(source)
    if src == "builtin":
        corpus = _load_directory(data_dir() / "corpus", languages, split, label="builtin")
    elif src == "wikipedia" or src.startswith("wikipedia:"):
        date = src.partition(":")[2] or WIKIPEDIA_DEFAULT_DATE
        if not re.fullmatch(r"\d{8}", date):
            raise ValueError(
                f"bad Wikipedia dump date {date!r} in source {src!r}; use e.g. "
                f"'wikipedia:{WIKIPEDIA_DEFAULT_DATE}'"
            )
        return _load_wikipedia(
            date, languages, split=split, filter_language=filter_language,
            tokens_per_language=tokens_per_language, tokenizer=tokenizer, seed=seed,
            cache_dir=cache_dir, take_all=take_all, local=wikipedia_path, started=started,
        )
    else:
        path = Path(src).expanduser()
        if path.is_dir():
            corpus = _load_directory(path, languages, split, label=str(path.resolve()))
        elif path.exists():
            raise CorpusError(
                f"corpus source {src!r} is a file; give a directory holding one <code>.txt "
                "file per language (one document per line)"
            )
        elif os.sep in src or src.startswith((".", "~")) or isinstance(source, os.PathLike):
            raise FileNotFoundError(f"corpus directory {src!r} does not exist")
        else:
            raise ValueError(
                f"unknown corpus source {src!r}; use 'builtin', 'wikipedia', "
                f"'wikipedia:<date>' (e.g. wikipedia:{WIKIPEDIA_DEFAULT_DATE}) or the path of "
                "a directory of <code>.txt files"
            )

    if filter_language:
        for lang in corpus.languages:
            lines = corpus.documents[lang]
            kept, dropped, reasons = _filter_lines(lines, lang)
            _log_dropped(lang, len(lines), sum(len(x) for x in lines), dropped, reasons)
            if not kept:
                raise CorpusError(
                    f"the language filter dropped every line of {lang!r} "
                    f"(detected: {dict(reasons.most_common(3))}); is the file labelled with "
                    "the right code? Load without filter_language to keep it."
                )
            corpus.documents[lang] = kept
            corpus.dropped[lang] = dropped
        corpus.refresh_fingerprint()

    if tokens_per_language is not None and tokenizer is not None:
        for lang, docs in corpus.documents.items():
            found = sum(_token_counts(tokenizer, docs))
            if found < tokens_per_language:
                _short(lang, found, int(tokens_per_language), take_all, corpus.source)
    log.info("loaded %r in %.1f s", corpus, time.perf_counter() - started)
    return corpus


def _short(lang: str, found: int, asked: int, take_all: bool, source: str) -> None:
    msg = (
        f"language {lang!r} of {source} has {found:,} tokens but {asked:,} were asked"
    )
    if not take_all:
        raise ValueError(
            f"{msg}; lower tokens_per_language, add text, or pass take_all=True to use all "
            "there is"
        )
    log.warning("%s; taking all %s tokens (take_all=True)", msg, f"{found:,}")


def _load_directory(directory: Path, languages, split: str, label: str) -> Corpus:
    folder = _resolve_directory(directory, split)
    files = _code_files(folder)
    if not files:
        raise CorpusError(
            f"no <code>.txt files in {folder}: a corpus directory holds one UTF-8 file per "
            "language named by its code (en.txt, zh.txt, ...), one document per line"
        )
    chosen = parse_languages(languages, files) if languages is not None else sort_languages(files)
    documents = {lang: _read_lines(files[lang]) for lang in chosen}
    return Corpus(source=label, split=split, documents=documents)


# ---------------------------------------------------------------------------------------
# Wikipedia


def _wikipedia_available(local: Path | None, date: str) -> list[str] | None:
    if local is None:
        return None
    return sorted(p.name.split(".", 1)[1] for p in local.glob(f"{date}.*") if p.is_dir())


def _open_wikipedia(date: str, code: str, local: Path | None, seed: int):
    """The shuffled stream of articles (dicts with id, url, title, text)."""
    import datasets

    config = f"{date}.{code}"
    if local is None:
        try:
            ds = datasets.load_dataset(WIKIPEDIA_DATASET, config, split="train", streaming=True)
        except Exception as err:  # network, unknown config...
            raise RuntimeError(
                f"could not open {WIKIPEDIA_DATASET} config {config!r}: {err}. This needs the "
                "internet (and a config that exists); offline, point wikipedia_path= at a "
                "local copy, or use source='builtin' or a directory of <code>.txt files."
            ) from err
    else:
        folder = local / config
        files = sorted(str(p) for p in folder.glob("*.parquet"))
        builder = "parquet"
        if not files:
            files = sorted(str(p) for p in folder.glob("*.json*"))
            builder = "json"
        if not files:
            raise CorpusError(
                f"no .parquet or .jsonl files in {folder} (local copy of {WIKIPEDIA_DATASET})"
            )
        ds = datasets.load_dataset(
            builder, data_files={"train": files}, split="train", streaming=True
        )
    return ds.shuffle(seed=seed, buffer_size=WIKIPEDIA_SHUFFLE_BUFFER)


def _article_split(article_id: str) -> str:
    h = int(hashlib.sha256(str(article_id).encode()).hexdigest()[:8], 16)
    return "heldout" if h % WIKIPEDIA_HELDOUT_MODULUS == 0 else "detect"


def _paragraphs(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def _take_prefix(
    lines: list[str], lang: str, budget: int | None, count, filter_language: bool
) -> tuple[list[str], tuple[int, int], Counter, int, bool]:
    """Walks ``lines`` in order until the kept ones hold ``budget`` tokens.

    Returns:
        ``(kept, (dropped lines, dropped chars), drop reasons, tokens kept, budget met)``.
    """
    kept: list[str] = []
    reasons: Counter = Counter()
    n_drop = c_drop = tokens = 0
    step = 256
    for i in range(0, len(lines), step):
        block = lines[i : i + step]
        if filter_language:
            from .langid import detect_batch

            labels = [r.label for r in detect_batch(block, progress=False)]
        else:
            labels = [lang] * len(block)
        counts = count(block)
        for line, label, n in zip(block, labels, counts, strict=True):
            if label != lang:
                n_drop += 1
                c_drop += len(line)
                reasons[label] += 1
                continue
            kept.append(line)
            tokens += n
            if budget is not None and tokens >= budget:
                return kept, (n_drop, c_drop), reasons, tokens, True
    return kept, (n_drop, c_drop), reasons, tokens, budget is None


def _load_wikipedia(
    date: str, languages, *, split: str, filter_language: bool, tokens_per_language,
    tokenizer, seed: int, cache_dir, take_all: bool, local, started: float,
) -> Corpus:
    from .models import cache_dir as default_cache_dir

    if tokens_per_language is None and not take_all:
        raise ValueError(
            "source 'wikipedia' needs tokens_per_language (how much text to stream per "
            "language, e.g. 1_000_000), or take_all=True to stream every article"
        )
    local_path = Path(local).expanduser().resolve() if local is not None else None
    if local_path is not None and not local_path.is_dir():
        raise FileNotFoundError(f"wikipedia_path {local} is not a directory")
    available = _wikipedia_available(local_path, date)
    if available is not None:
        if not available:
            raise CorpusError(f"no {date}.<code>/ folders in wikipedia_path {local_path}")
        chosen = parse_languages(languages, available)
    elif languages is None or (isinstance(languages, str) and languages.strip() == "all"):
        chosen = list(LANGUAGE_ORDER)
    else:
        items = languages.replace(",", " ").split() if isinstance(languages, str) else languages
        chosen = list(dict.fromkeys(str(c).strip().lower() for c in items))
        bad = [c for c in chosen if not _CODE_RE.match(c)]
        if bad or not chosen:
            raise ValueError(
                f"bad language code(s) {bad or languages!r} for Wikipedia; give codes such "
                "as 'en,zh,fr' (the config is <date>.<code>)"
            )
    origin = str(local_path) if local_path else f"hf://datasets/{WIKIPEDIA_DATASET}"
    folder_name = date if local_path is None else (
        f"{date}-local-{hashlib.sha256(origin.encode()).hexdigest()[:8]}"
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / "wikipedia" / folder_name / split
    count = _counter(tokenizer)
    counted_with = tokenizer_identity(tokenizer)["name"] if tokenizer is not None else (
        f"estimate: {CHARS_PER_TOKEN_ESTIMATE:g} characters per token"
    )
    budget = int(tokens_per_language) if tokens_per_language is not None else None

    documents: dict[str, list[str]] = {}
    dropped: dict[str, tuple[int, int]] = {}
    for lang in chosen:
        text_path, meta_path = folder / f"{lang}.txt", folder / f"{lang}.json"
        result = None
        if text_path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("seed") != seed or meta.get("origin") != origin:
                log.warning(
                    "Wikipedia cache %s was made with seed %s from %s; replacing it (seed %s)",
                    text_path, meta.get("seed"), meta.get("origin"), seed,
                )
            else:
                lines = _read_lines(text_path)
                result = _take_prefix(lines, lang, budget, count, filter_language)
                if result[4] or meta.get("exhausted"):
                    log.info("Wikipedia %s/%s: re-using the cache %s", lang, split, text_path)
                else:
                    log.info(
                        "Wikipedia %s/%s: the cache holds %d tokens, fewer than the %d asked; "
                        "streaming again", lang, split, result[3], budget,
                    )
                    result = None
        if result is None:
            lines, exhausted, n_docs = _stream_wikipedia(
                date, lang, split, local_path, seed, budget, count, filter_language
            )
            if not lines:
                raise CorpusError(f"Wikipedia {date}.{lang} gave no {split} text")
            folder.mkdir(parents=True, exist_ok=True)
            tmp = text_path.with_suffix(".txt.tmp")
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(tmp, text_path)
            result = _take_prefix(lines, lang, budget, count, filter_language)
            meta = {
                "dataset": WIKIPEDIA_DATASET,
                "config": f"{date}.{lang}",
                "origin": origin,
                "split": split,
                "split_rule": (
                    f"heldout when int(sha256(id)[:8], 16) % {WIKIPEDIA_HELDOUT_MODULUS} == 0"
                ),
                "seed": seed,
                "shuffle_buffer": WIKIPEDIA_SHUFFLE_BUFFER,
                "tokens_per_language": budget,
                "counted_with": counted_with,
                "filter_language": filter_language,
                "articles": n_docs,
                "lines": len(lines),
                "characters": sum(len(x) for x in lines),
                "tokens_kept": result[3],
                "exhausted": exhausted,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        kept, drop, reasons, tokens, met = result
        if filter_language:
            total = len(kept) + drop[0]
            _log_dropped(lang, total, sum(len(x) for x in kept) + drop[1], drop, reasons)
            dropped[lang] = drop
        if not kept:
            raise CorpusError(f"no {lang!r} text left from Wikipedia {date}.{lang} ({split})")
        if not met:
            _short(lang, tokens, budget or 0, take_all, f"wikipedia:{date} ({split})")
        documents[lang] = kept
    corpus = Corpus(source=f"wikipedia:{date}", split=split, documents=documents, dropped=dropped)
    log.info("loaded %r in %.1f s", corpus, time.perf_counter() - started)
    return corpus


def _stream_wikipedia(
    date: str, lang: str, split: str, local: Path | None, seed: int, budget: int | None,
    count, filter_language: bool,
) -> tuple[list[str], bool, int]:
    """Streams articles of ``split`` until the kept paragraphs reach ``budget`` tokens.

    Returns:
        ``(paragraph lines of every article read, stream exhausted, articles read)``.
    """
    from .langid import detect_batch

    lines: list[str] = []
    tokens = n_docs = 0
    bar = tqdm(desc=f"wikipedia {date}.{lang} ({split})", unit="tok", total=budget)
    try:
        for article in _open_wikipedia(date, lang, local, seed):
            if _article_split(article["id"]) != split:
                continue
            pars = _paragraphs(article["text"])
            if not pars:
                continue
            n_docs += 1
            lines.extend(pars)
            if filter_language:
                results = detect_batch(pars, progress=False)
                pars = [p for p, r in zip(pars, results, strict=True) if r.label == lang]
            new = int(sum(count(pars))) if pars else 0
            tokens += new
            bar.update(new)
            if budget is not None and tokens >= budget:
                return lines, False, n_docs
    finally:
        bar.close()
    return lines, True, n_docs


# ---------------------------------------------------------------------------------------
# Prompts


def load_prompts(
    source: str | os.PathLike = "builtin", language: str | None = None
) -> list[str]:
    """Loads open questions for steering, one per line.

    Args:
        source: ``"builtin"`` (``data/prompts/<code>.txt``, line ``i`` the same question
            in every language), a directory of ``<code>.txt`` files, or a plain file.
        language: Which language's file to read (required for a directory; ignored for a
            plain file).

    Returns:
        The prompts, blank lines skipped.

    Raises:
        ValueError: no or unknown ``language`` for a directory (lists what is available).
        CorpusError: an empty, unreadable or non-UTF-8 file, or a directory with no
            ``<code>.txt`` file.
        FileNotFoundError: a path that does not exist.
    """
    src = os.fspath(source)
    path = data_dir() / "prompts" if src == "builtin" else Path(src).expanduser()
    if path.is_file():
        return _read_lines(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"prompt source {src!r} is neither 'builtin', a file nor a directory"
        )
    files = _code_files(path)
    if not files:
        raise CorpusError(f"no <code>.txt prompt files in {path}")
    if language is None:
        raise ValueError(
            f"choose the language of the prompts in {path}: one of "
            f"{', '.join(sort_languages(files))}"
        )
    (lang,) = parse_languages([language], files)
    return _read_lines(files[lang])


# ---------------------------------------------------------------------------------------
# Packing


_SENTINEL = "LAPE-USER-MESSAGE-7F3A"


def chat_turn(tokenizer, content: str, *, generation_prompt: bool = False) -> tuple[str, int, int]:
    """One user turn in the tokenizer's chat template, and where the message lies in it.

    The template is rendered once around a sentinel message to find its text before and
    after the message; the rendering of ``content`` must be exactly that text around the
    message (or around the message stripped of surrounding whitespace, which templates such
    as LLaMA-2-Chat's do), so that every character is known to be the message's or the
    template's.

    Args:
        tokenizer: A Hugging Face tokenizer with a ``chat_template``.
        content: The user's message.
        generation_prompt: Append the assistant header (``add_generation_prompt=True``), as
            for a prompt the model should answer.

    Returns:
        ``(text, start, end)``: the rendered text (as the template writes it, BOS text
        included) and the character span ``text[start:end]`` of the message.

    Raises:
        ChatTemplateError: the tokenizer has no chat template; the template raises; it
            renders no user message; it changes the message beyond stripping whitespace.
    """
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer {name!r} has no chat template (tokenizer.chat_template is None); "
            "use plain text (chat=False, --no-chat), or set tokenizer.chat_template to the "
            "model's Jinja template"
        )

    def render(message: str) -> str:
        try:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": message}],
                add_generation_prompt=generation_prompt, tokenize=False,
            )
        except Exception as err:  # jinja2 and the template's own raise_exception
            raise ChatTemplateError(
                f"the chat template of {name!r} cannot render one user turn "
                f"({type(err).__name__}: {err}); fix tokenizer.chat_template, or use plain "
                "text (chat=False, --no-chat)"
            ) from err

    frame = render(_SENTINEL)
    if frame.count(_SENTINEL) != 1:
        raise ChatTemplateError(
            f"the chat template of {name!r} renders a user turn without the user's message "
            f"(a message {_SENTINEL!r} gave {frame!r:.200}); fix tokenizer.chat_template, or "
            "use plain text (chat=False, --no-chat)"
        )
    prefix, suffix = frame.split(_SENTINEL)
    text = render(content)
    for message in (content, content.strip()):
        if text == prefix + message + suffix:
            return text, len(prefix), len(prefix) + len(message)
    raise ChatTemplateError(
        f"the chat template of {name!r} changes the message beyond stripping whitespace "
        f"({content!r:.80} became {text!r:.200}), so the message's tokens cannot be told "
        "from the template's; use plain text (chat=False)"
    )


def _chat_tokens(tokenizer, docs: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Token ids of each document as a user turn, and which of them hold the message.

    A token belongs to the message when it holds at least one of its characters (its
    offsets overlap the message's span): a word token that carries the template's space
    before the message counts, the template's markers do not. The template's leading BOS
    text is dropped: each chunk brings its own BOS (``pack(bos=...)``).
    """
    bos = getattr(tokenizer, "bos_token", None)
    texts, spans = [], []
    for doc in docs:
        text, start, end = chat_turn(tokenizer, doc)
        cut = len(bos) if bos and text.startswith(bos) else 0
        texts.append(text[cut:])
        spans.append((start - cut, end - cut))
    try:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                        verbose=False)
    except NotImplementedError as err:
        raise ChatTemplateError(
            f"chat packing needs a fast tokenizer (token offsets); {type(tokenizer).__name__} "
            "has none. Load the model's fast tokenizer (use_fast=True)."
        ) from err
    content = [
        np.array([s < end and e > start for s, e in offsets], dtype=bool)
        for offsets, (start, end) in zip(enc["offset_mapping"], spans, strict=True)
    ]
    return enc["input_ids"], content


def tokenizer_identity(tokenizer) -> dict:
    """What identifies a tokenizer in provenance records.

    Returns:
        ``{"name": ..., "vocab_size": ..., "probe_sha256": ...}``: the ``name_or_path``
        (only its last component for an absolute local path, so that the same tokenizer
        gives the same identity on every machine), ``len(tokenizer)``, and the sha256 of
        the ids of a fixed multilingual probe text encoded with special tokens.
    """
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    if os.path.isabs(name):
        name = Path(name).name
    probe = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
    digest = hashlib.sha256(json.dumps([int(x) for x in probe]).encode()).hexdigest()
    return {"name": name, "vocab_size": len(tokenizer), "probe_sha256": digest}


@dataclass
class PackedCorpus:
    """Token chunks per language, ready to be fed to a model.

    Attributes:
        languages: Language codes, in corpus order.
        chunks: ``{code: LongTensor[n_chunks, seq_len]}``. With ``bos``, column 0 is the
            BOS token and must not be counted as text (the capture code skips position 0).
        seq_len: Tokens per chunk, BOS included.
        tokens: Text tokens in the chunks per language (BOS excluded; document separators
            included) = ``n_chunks * (seq_len - bos)``; with ``content_mask``, the message
            tokens only. This is the ``n[k]`` LAPE counts.
        fingerprint: sha256 over the corpus fingerprint, the tokenizer identity, seq_len,
            budget, seed, take_all and bos (and the chat template, for chat text).
        source: Source of the corpus.
        bos: Whether each chunk starts with BOS.
        documents: Documents with at least one token in the chunks, per language.
        characters: Characters of document text in the chunks per language (the document
            cut by the end of the last chunk counted pro rata to its tokens kept).
        split: Split of the corpus.
        provenance_extra: Tokenizer identity, budget asked, seed (for sidecars); for chat
            text the sha256 of the chat template (``chat_template_sha256``).
        content_mask: ``None`` for plain text. For chat text (``pack(chat=True)``):
            ``{code: BoolTensor[n_chunks, seq_len]}``, True where the token belongs to a
            message, False for the template's tokens, separators and the BOS; capture
            counts only the True positions.
    """

    languages: list[str]
    chunks: dict[str, torch.Tensor]
    seq_len: int
    tokens: dict[str, int]
    fingerprint: str
    source: str
    bos: bool
    documents: dict[str, int]
    characters: dict[str, int]
    split: str = ""
    provenance_extra: dict = field(default_factory=dict)
    content_mask: dict[str, torch.Tensor] | None = None

    def n_chunks(self, lang: str) -> int:
        """Chunks of ``lang``."""
        return int(self._chunks(lang).shape[0])

    def _chunks(self, lang: str) -> torch.Tensor:
        if lang not in self.chunks:
            raise ValueError(
                f"language {lang!r} is not in this packed corpus; it has "
                f"{', '.join(self.languages)}"
            )
        return self.chunks[lang]

    def table(self) -> pd.DataFrame:
        """Sizes per language.

        Returns:
            DataFrame indexed by ``language`` with ``documents``, ``characters``,
            ``tokens`` (text tokens, BOS excluded), ``chars_per_token`` and ``chunks``.
        """
        rows = {
            lang: {
                "documents": self.documents[lang],
                "characters": self.characters[lang],
                "tokens": self.tokens[lang],
                "chars_per_token": self.characters[lang] / self.tokens[lang],
                "chunks": self.n_chunks(lang),
            }
            for lang in self.languages
        }
        df = pd.DataFrame.from_dict(rows, orient="index")
        df.index.name = "language"
        return df

    def iter_batches(
        self, lang: str, batch_size: int, start_chunk: int = 0
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Batches of chunks of one language, in order.

        Args:
            lang: Language code.
            batch_size: Chunks per batch (the last batch may be smaller).
            start_chunk: First chunk (to resume an interrupted pass).

        Yields:
            ``(chunk_index, ids)``: index of the batch's first chunk and
            ``LongTensor[batch, seq_len]``.
        """
        data = self._chunks(lang)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= start_chunk <= data.shape[0]:
            raise ValueError(
                f"start_chunk {start_chunk} is outside 0..{data.shape[0]} for {lang!r}"
            )
        for i in range(start_chunk, data.shape[0], batch_size):
            yield i, data[i : i + batch_size]

    def provenance(self) -> dict:
        """A JSON-able description (no tensors) for result sidecars."""
        return {
            "fingerprint": self.fingerprint,
            "source": self.source,
            "split": self.split,
            "languages": list(self.languages),
            "seq_len": self.seq_len,
            "bos": self.bos,
            "tokens": dict(self.tokens),
            "chunks": {k: self.n_chunks(k) for k in self.languages},
            "documents": dict(self.documents),
            "characters": dict(self.characters),
            **self.provenance_extra,
        }

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={self.n_chunks(k)}" for k in self.languages)
        chat = ", chat content only" if self.content_mask is not None else ""
        return (
            f"PackedCorpus(source={self.source!r}, seq_len={self.seq_len}, bos={self.bos}"
            f"{chat}, chunks: {sizes}, fingerprint={self.fingerprint[:12]})"
        )


def _permutation(n: int, seed: int) -> np.ndarray:
    """The document order for ``n`` documents: the same for every language of equal size.

    Uses numpy's legacy ``RandomState``, whose stream is frozen across numpy versions.
    """
    return np.random.RandomState(seed).permutation(n)


def _stream(
    tokenizer, docs: list[str], order: np.ndarray, sep: list[int], need: int | None, lang: str,
    chat: bool = False,
) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray | None]:
    """Token stream of ``docs`` in ``order`` joined by ``sep``; stops once ``need`` is reached.

    With ``chat``, each document is one user turn of the chat template (:func:`_chat_tokens`).

    Returns:
        ``(ids [stream], [(tokens, characters) per document in stream order], content)``:
        ``content`` is ``None``, or with ``chat`` ``[stream]`` bool, True for message tokens.
    """
    parts: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    sep_arr = np.asarray(sep, dtype=np.int64)
    total = 0
    batch = 512
    bar = tqdm(total=len(docs), desc=f"tokenizing {lang}", unit="doc", disable=len(docs) < 5000)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        texts = [docs[j] for j in idx]
        if chat:
            ids, content = _chat_tokens(tokenizer, texts)
        else:
            ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            content = [None] * len(ids)
        for text, row, inside in zip(texts, ids, content, strict=True):
            if parts:
                parts.append(sep_arr)
                flags.append(np.zeros(len(sep_arr), dtype=bool))
                total += len(sep_arr)
            parts.append(np.asarray(row, dtype=np.int64))
            flags.append(inside)
            total += len(row)
            spans.append((len(row), len(text)))
        bar.update(len(idx))
        if need is not None and total >= need:
            break
    bar.close()
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    mask = (np.concatenate(flags) if flags else np.zeros(0, dtype=bool)) if chat else None
    return stream, spans, mask


def pack(
    corpus: Corpus,
    tokenizer,
    *,
    seq_len: int = 512,
    tokens_per_language: int | None = None,
    seed: int = 0,
    take_all: bool = False,
    bos: bool = True,
    chat: bool = False,
) -> PackedCorpus:
    r"""Tokenizes a corpus and cuts each language into fixed-length chunks (the paper's way).

    For each language: every document is tokenized without special tokens; documents are put
    in a seeded random order (the same permutation for languages with the same number of
    documents, so a parallel corpus stays aligned); they are joined into one stream with the
    tokens of ``"\\n\\n"`` between documents; the stream is cut into chunks of
    ``seq_len - 1`` text tokens, each preceded by the BOS token (``bos=True``: the model
    needs BOS at position 0; the capture code does not count position 0), or ``seq_len``
    text tokens with ``bos=False``. No padding: the incomplete tail is dropped, as in the
    reference code.

    With ``chat=True`` (instruction-tuned models), each document becomes one user turn of
    the tokenizer's chat template (:func:`chat_turn`; the template's own leading BOS text is
    dropped, the chunk's BOS stands for it), and the packed corpus records per position
    whether the token belongs to the message (:attr:`PackedCorpus.content_mask`), so that
    capture counts the message tokens only, not the template's. The budget then counts
    every token of the formatted stream; :attr:`PackedCorpus.tokens` the message tokens.

    Args:
        corpus: The documents.
        tokenizer: The model's tokenizer (a Hugging Face tokenizer).
        seq_len: Tokens per chunk, BOS included (>= 2, <= ``tokenizer.model_max_length``).
        tokens_per_language: Text tokens per language, rounded down to whole chunks.
            ``None``: the same budget for every language, that of the language with the
            least text.
        seed: Seed of the document order.
        take_all: A language with fewer tokens than asked gets what it has (a warning is
            logged) instead of an error; with ``tokens_per_language=None``, every language
            gets all its text (unequal budgets).
        bos: Start each chunk with the BOS token.
        chat: Format each document as a user turn of the tokenizer's chat template and
            record which tokens are the message's. Off, packing (and its fingerprint) is
            that of plain text.

    Returns:
        A :class:`PackedCorpus` (``chunks[lang]: LongTensor[n_chunks, seq_len]``).

    Raises:
        ValueError: bad ``seq_len``; a language with less text than the budget (names it,
            with the tokens found and asked) unless ``take_all``; a language with less than
            one chunk of text; ``bos=True`` with a tokenizer that has no BOS token.
        ChatTemplateError: ``chat=True`` and the tokenizer has no chat template, or one
            that cannot render a user turn around each document.
    """
    seq_len = int(seq_len)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    max_len = getattr(tokenizer, "model_max_length", None)
    if max_len is not None and max_len < 1e6 and seq_len > max_len:
        raise ValueError(
            f"seq_len {seq_len} exceeds the tokenizer's model_max_length {max_len}; "
            f"use seq_len <= {max_len}"
        )
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos and bos_id is None:
        raise ValueError(
            "the tokenizer has no BOS token; pass bos=False to pack chunks without it"
        )
    if tokens_per_language is not None and int(tokens_per_language) <= 0:
        raise ValueError(f"tokens_per_language must be positive, got {tokens_per_language}")
    per_chunk = seq_len - 1 if bos else seq_len
    asked_chunks = None
    if tokens_per_language is not None:
        asked_chunks = int(tokens_per_language) // per_chunk
        if asked_chunks == 0:
            raise ValueError(
                f"tokens_per_language={tokens_per_language} is less than one chunk of "
                f"{per_chunk} text tokens; ask for more tokens or a smaller seq_len"
            )
    if not corpus.languages:
        raise ValueError("the corpus has no languages")

    sep = tokenizer(_SEPARATOR, add_special_tokens=False, verbose=False)["input_ids"]
    need = asked_chunks * per_chunk if asked_chunks is not None else None
    streams: dict[str, np.ndarray] = {}
    spans: dict[str, list[tuple[int, int]]] = {}
    flags: dict[str, np.ndarray | None] = {}
    for lang in corpus.languages:
        docs = corpus.documents[lang]
        if not docs:
            raise ValueError(f"language {lang!r} of {corpus.source} has no documents")
        order = _permutation(len(docs), seed)
        streams[lang], spans[lang], flags[lang] = _stream(
            tokenizer, docs, order, sep, need, lang, chat
        )

    available = {lang: int(s.shape[0]) for lang, s in streams.items()}
    n_chunks: dict[str, int] = {}
    if asked_chunks is None:
        if take_all:
            n_chunks = {lang: n // per_chunk for lang, n in available.items()}
        else:
            smallest = min(available.values())
            n_chunks = {lang: smallest // per_chunk for lang in available}
    else:
        needed = asked_chunks * per_chunk
        for lang, n in available.items():
            if n < needed:
                msg = (
                    f"language {lang!r} of {corpus.source} has {n:,} tokens but "
                    f"tokens_per_language={int(tokens_per_language):,} asks for {needed:,} "
                    f"({asked_chunks} chunks of {per_chunk} text tokens)"
                )
                if not take_all:
                    raise ValueError(
                        f"{msg}; lower tokens_per_language, add text, or pass take_all=True"
                    )
                log.warning(
                    "%s; taking all %d chunks there are (take_all=True)", msg, n // per_chunk
                )
                n_chunks[lang] = n // per_chunk
            else:
                n_chunks[lang] = asked_chunks
    for lang, k in n_chunks.items():
        if k == 0:
            raise ValueError(
                f"language {lang!r} of {corpus.source} has {available[lang]:,} tokens, less "
                f"than one chunk of {per_chunk} text tokens; use a smaller seq_len or more text"
            )

    chunks, tokens, documents, characters, content = {}, {}, {}, {}, {}
    for lang in corpus.languages:
        k = n_chunks[lang]
        body = torch.from_numpy(streams[lang][: k * per_chunk].copy()).view(k, per_chunk)
        if bos:
            body = torch.cat([torch.full((k, 1), int(bos_id), dtype=torch.long), body], dim=1)
        chunks[lang] = body.contiguous()
        tokens[lang] = k * per_chunk
        if chat:
            inside = torch.from_numpy(flags[lang][: k * per_chunk].copy()).view(k, per_chunk)
            if bos:
                inside = torch.cat([torch.zeros(k, 1, dtype=torch.bool), inside], dim=1)
            content[lang] = inside.contiguous()
            tokens[lang] = int(inside.sum())
        documents[lang], characters[lang] = _used(spans[lang], k * per_chunk, len(sep))

    identity = tokenizer_identity(tokenizer)
    extra = {
        "tokenizer": identity,
        "tokens_per_language": None if tokens_per_language is None else int(tokens_per_language),
        "seed": seed,
        "take_all": take_all,
        "corpus_fingerprint": corpus.fingerprint,
    }
    if chat:  # only then: plain text keeps its fingerprint
        extra["chat_template_sha256"] = hashlib.sha256(
            str(tokenizer.chat_template).encode()
        ).hexdigest()
    key = {"corpus": corpus.fingerprint, "seq_len": seq_len, "bos": bos, **extra}
    key.pop("corpus_fingerprint")
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    packed = PackedCorpus(
        languages=list(corpus.languages), chunks=chunks, seq_len=seq_len, tokens=tokens,
        fingerprint=fingerprint, source=corpus.source, bos=bos, documents=documents,
        characters=characters, split=corpus.split, provenance_extra=extra,
        content_mask=content if chat else None,
    )
    log.info("packed %r", packed)
    return packed


def _used(spans: list[tuple[int, int]], kept: int, sep_len: int) -> tuple[int, int]:
    """Documents touched and characters held by the first ``kept`` tokens of a stream."""
    pos = docs = 0
    chars = 0.0
    for i, (n_tok, n_chr) in enumerate(spans):
        if i:
            pos += sep_len
        if pos >= kept:
            break
        take = min(n_tok, kept - pos)
        if take > 0 and n_tok:
            docs += 1
            chars += n_chr * take / n_tok
        pos += n_tok
    return docs, int(round(chars))
