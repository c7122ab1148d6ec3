"""Multilingual text for LAPE: load it from the built-in corpus, a directory or Wikipedia.

:func:`load_prompts` reads the open questions used for steering; :mod:`lape_utils.packing`
cuts the text into token chunks.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .languages import LANGUAGE_ORDER, parse_languages, sort_languages

log = logging.getLogger(__name__)

__all__ = [
    "CHARS_PER_TOKEN_ESTIMATE", "SPLITS", "Corpus", "CorpusError", "data_dir", "load_corpus",
    "load_prompts", "tokenizer_identity",
]

SPLITS: tuple[str, ...] = ("detect", "heldout")
"""Splits of the built-in corpus: text for finding neurons, and separate text for perplexity."""

CHARS_PER_TOKEN_ESTIMATE = 3.0
"""Characters per token assumed without a tokenizer: low (Gemma 3 gives 4-5 on Latin script,
1.4-1.8 on CJK), so that a Wikipedia budget errs towards fetching too much text."""

WIKIPEDIA_DATASET = "wikimedia/wikipedia"
WIKIPEDIA_DEFAULT_DATE = "20231101"
WIKIPEDIA_SHUFFLE_BUFFER = 10_000
"""Documents held by the streaming shuffle buffer (``IterableDataset.shuffle``)."""
WIKIPEDIA_HELDOUT_MODULUS = 10
"""An article is held out when ``sha256(id) % 10 == 0``: the splits never share an article."""

_SEPARATOR = "\n\n"
_PROBE = (
    "Hello world. Bonjour le monde. ¡Hola, mundo! Hallo Welt. Xin chào thế giới. Halo dunia. "
    "Привет, мир. 你好，世界。こんにちは、世界。안녕하세요 세계.\n\n 12345 <tag> é"
)
_CODE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class CorpusError(ValueError):
    """A corpus file or directory that cannot be used (names the file and what to do)."""


# ---------------------------------------------------------------------------------------
# Files and the Corpus


def data_dir() -> Path:
    """The folder of the built-in data: ``$LAPE_DATA_DIR``, else the checkout's ``data/``.

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    env = os.environ.get("LAPE_DATA_DIR")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data"
    if not path.is_dir():
        where = "$LAPE_DATA_DIR" if env else "the repository checkout"
        raise FileNotFoundError(
            f"the built-in data folder {path} (from {where}) does not exist; install the "
            "workbook from its repository (pip install -e .) or set LAPE_DATA_DIR"
        )
    return path


def _lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, stripped."""
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def _read_lines(path: Path) -> list[str]:
    """Non-blank, stripped lines of a UTF-8 file (a BOM is ignored).

    Raises:
        CorpusError: the file cannot be read, is not UTF-8, or has no non-blank line.
    """
    try:
        raw = path.read_bytes()
        lines = _lines(raw.decode("utf-8-sig"))
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CorpusError(
            f"{path} is not UTF-8 (invalid byte 0x{raw[err.start]:02x} at byte {err.start}, "
            f"line {line}). Convert it, e.g. `iconv -f <its encoding> -t UTF-8`."
        ) from err
    if not lines:
        raise CorpusError(f"{path} is empty; put one document per line, or remove the file")
    return lines


def _code_files(directory: Path) -> dict[str, Path]:
    """``{code: path}`` of the ``<code>.txt`` files in ``directory``."""
    files = sorted(directory.glob("*.txt"))
    return {p.stem: p for p in files if _CODE_RE.match(p.stem) and not p.name.startswith(".")}


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
        split: ``"detect"`` or ``"heldout"`` (only a label for a directory without splits).
        documents: ``{code: [document, ...]}``, languages in the order asked for.
        fingerprint: sha256 of the languages and documents (not of their order or
            ``source``); call :meth:`refresh_fingerprint` after editing ``documents``.
        dropped: ``{code: (lines, characters)}`` removed by the language filter.
    """

    source: str
    split: str
    documents: dict[str, list[str]]
    fingerprint: str = ""
    dropped: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.refresh_fingerprint()

    def refresh_fingerprint(self) -> str:
        """Recomputes :attr:`fingerprint` from the documents and returns it."""
        self.fingerprint = _fingerprint(self.documents)
        return self.fingerprint

    @property
    def languages(self) -> list[str]:
        """Language codes, in corpus order."""
        return list(self.documents)

    def table(self, tokenizer=None) -> pd.DataFrame:
        """Sizes per language: a DataFrame indexed by ``language`` (corpus order).

        Columns: ``documents``, ``characters``; with a ``tokenizer``, ``tokens`` (without
        special tokens) and ``chars_per_token``; after the language filter,
        ``dropped_lines`` and ``dropped_characters``.
        """
        rows = {}
        for lang, docs in self.documents.items():
            row = {"documents": len(docs), "characters": sum(len(d) for d in docs)}
            if tokenizer is not None:
                row["tokens"] = sum(_counter(tokenizer)(docs))
                row["chars_per_token"] = row["characters"] / (row["tokens"] or math.nan)
            if self.dropped:
                row["dropped_lines"], row["dropped_characters"] = self.dropped.get(lang, (0, 0))
            rows[lang] = row
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")

    def subset(self, languages: str | Iterable[str]) -> Corpus:
        """A corpus with only ``languages``, in the order given.

        Raises:
            ValueError: a code is not in this corpus (lists those that are).
        """
        chosen = parse_languages(languages, self.languages)
        return Corpus(
            source=self.source, split=self.split,
            documents={lang: list(self.documents[lang]) for lang in chosen},
            dropped={k: v for k, v in self.dropped.items() if k in chosen},
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.documents.items())
        return (
            f"Corpus(source={self.source!r}, split={self.split!r}, documents: {sizes}, "
            f"fingerprint={self.fingerprint[:12]})"
        )


# ---------------------------------------------------------------------------------------
# Token budgets and the language filter (shared by the loaders)


def _counter(tokenizer) -> Callable[[Sequence[str]], list[int]]:
    """Counts the tokens of each text, without special tokens (or estimates them)."""
    if tokenizer is None:
        return lambda texts: [math.ceil(len(t) / CHARS_PER_TOKEN_ESTIMATE) for t in texts]

    def count(texts: Sequence[str]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(texts), 1000):  # bounded memory for a large corpus
            ids = tokenizer(list(texts[i : i + 1000]), add_special_tokens=False, verbose=False)
            out += map(len, ids["input_ids"])
        return out

    return count


def _budget(tokens_per_language: int | None) -> int | None:
    if tokens_per_language is not None and int(tokens_per_language) <= 0:
        raise ValueError(f"tokens_per_language must be positive, got {tokens_per_language}")
    return None if tokens_per_language is None else int(tokens_per_language)


def _check_budget(
    lang: str, source: str, found: int, asked: int | None, take_all: bool, what: str = ""
) -> None:
    """Raises, or with ``take_all`` only warns, when ``found`` tokens are fewer than ``asked``."""
    if asked is None or found >= asked:
        return
    what = what or f"{asked:,} were asked"
    msg = f"language {lang!r} of {source} has {found:,} tokens but {what}"
    if not take_all:
        raise ValueError(f"{msg}; lower tokens_per_language, add text, or pass take_all=True")
    log.warning("%s; taking all there is (take_all=True)", msg)


@dataclass
class _Kept:
    """The lines of one language that a loader keeps, in order, up to ``budget`` tokens.

    With ``filter_language``, a line that :mod:`lape_utils.langid` does not label ``lang``
    is dropped, counted in ``dropped`` (lines, characters) and ``reasons`` (labels).
    """

    lang: str
    budget: int | None
    count: Callable[[Sequence[str]], list[int]] | None
    filter_language: bool
    lines: list[str] = field(default_factory=list)
    tokens: int = 0
    dropped: tuple[int, int] = (0, 0)
    reasons: Counter = field(default_factory=Counter)

    def add(self, lines: list[str]) -> bool:
        """Takes ``lines`` until the budget is met; returns whether it is (never without one)."""
        from .langid import detect_batch

        show = self.filter_language and len(lines) > 2000
        desc = f"language filter, {self.lang} (blocks of 256 lines)"
        for i in tqdm(range(0, len(lines), 256), desc=desc, disable=not show):
            block = lines[i : i + 256]
            labels = [self.lang] * len(block)
            if self.filter_language:
                labels = [r.label for r in detect_batch(block, progress=False)]
            counts = self.count(block) if self.count else [0] * len(block)
            for line, label, n in zip(block, labels, counts, strict=True):
                if label != self.lang:
                    self.dropped = (self.dropped[0] + 1, self.dropped[1] + len(line))
                    self.reasons[label] += 1
                    continue
                self.lines.append(line)
                self.tokens += n
                if self.budget is not None and self.tokens >= self.budget:
                    return True
        return False

    def report(self, source: str) -> None:
        """Logs what the language filter dropped; raises ``CorpusError`` if it dropped all."""
        n, chars = self.dropped
        total = len(self.lines) + n
        if n:
            log.info(
                "language filter, %s: dropped %d of %d lines (%d of %d characters); detected as %s",
                self.lang, n, total, chars, chars + sum(map(len, self.lines)),
                ", ".join(f"{k} {v}" for k, v in self.reasons.most_common(6)),
            )
        else:
            log.info("language filter, %s: kept all %d lines", self.lang, total)
        if not self.lines:
            raise CorpusError(
                f"the language filter dropped every line of {self.lang!r} in {source} "
                f"(detected: {dict(self.reasons.most_common(3))}); is the text labelled with "
                "the right code? Load without filter_language to keep it."
            )


# ---------------------------------------------------------------------------------------
# Loading


def load_corpus(
    source: str | os.PathLike = "builtin", languages: str | Iterable[str] | None = None, *,
    split: str = "detect", filter_language: bool = False, tokens_per_language: int | None = None,
    tokenizer=None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
    take_all: bool = False, wikipedia_path: str | os.PathLike | None = None,
) -> Corpus:
    """Loads multilingual text.

    Args:
        source: ``"builtin"`` (``data/corpus``), a directory of ``<code>.txt`` files (UTF-8,
            one document per line; ``<dir>/<split>/`` when it exists), or ``"wikipedia"`` /
            ``"wikipedia:<date>"`` (``wikimedia/wikipedia``, config ``<date>.<code>``).
        languages: ``"en,zh,fr"``, a list, or ``None`` for all available (Wikipedia: the
            project's ten).
        split: ``"detect"`` or ``"heldout"``.
        filter_language: Drop lines that :mod:`lape_utils.langid` does not assign to the
            file's language, also those it cannot judge (see :attr:`Corpus.dropped`).
        tokens_per_language: Wikipedia: stream until the kept paragraphs hold this many
            tokens (required unless ``take_all``). Files: with a ``tokenizer``, only checked
            (:func:`~lape_utils.packing.pack` cuts).
        tokenizer: Counts tokens; without it, :data:`CHARS_PER_TOKEN_ESTIMATE` is used.
        seed: Seed of the Wikipedia shuffle.
        cache_dir: Root of the Wikipedia cache (default ``lape_utils.models.cache_dir()``):
            ``wikipedia/<date>/<split>/<code>.txt`` with a ``<code>.json`` sidecar.
        take_all: Accept less text than ``tokens_per_language`` (a warning), or with
            Wikipedia and no budget, stream every article.
        wikipedia_path: A local copy of the dataset (tests, offline): ``<date>.<code>/``
            folders of ``.parquet`` or ``.jsonl`` files with columns ``id``, ``url``,
            ``title``, ``text``.

    Raises:
        ValueError: unknown source, split or language code; a language short of the budget.
        CorpusError: an empty, unreadable or non-UTF-8 file, a directory with no
            ``<code>.txt`` file.
        FileNotFoundError: a path that does not exist.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    budget = _budget(tokens_per_language)
    started = time.perf_counter()
    src = os.fspath(source)
    if src == "wikipedia" or src.startswith("wikipedia:"):
        corpus = _load_wikipedia(
            src, languages, split=split, filter_language=filter_language, budget=budget,
            tokenizer=tokenizer, seed=seed, cache_dir=cache_dir, take_all=take_all,
            local=wikipedia_path,
        )
    else:
        corpus = _load_directory(source, languages, split)
        count = _counter(tokenizer) if budget is not None and tokenizer is not None else None
        if filter_language or count is not None:
            for lang in corpus.languages:
                kept = _Kept(lang, None, count, filter_language)
                kept.add(corpus.documents[lang])
                if filter_language:
                    kept.report(corpus.source)
                    corpus.documents[lang], corpus.dropped[lang] = kept.lines, kept.dropped
                if count is not None:
                    _check_budget(lang, corpus.source, kept.tokens, budget, take_all)
            corpus.refresh_fingerprint()
    log.info("loaded %r in %.1f s", corpus, time.perf_counter() - started)
    return corpus


def _load_directory(source: str | os.PathLike, languages, split: str) -> Corpus:
    """The corpus of ``"builtin"`` or of a directory (see :func:`load_corpus`)."""
    src = os.fspath(source)
    path = data_dir() / "corpus" if src == "builtin" else Path(src).expanduser()
    if src != "builtin" and not path.is_dir():
        if path.exists():
            raise CorpusError(f"corpus source {src!r} is a file; give a directory of <code>.txt")
        if os.sep in src or src.startswith((".", "~")) or isinstance(source, os.PathLike):
            raise FileNotFoundError(f"corpus directory {src!r} does not exist")
        raise ValueError(
            f"unknown corpus source {src!r}; use 'builtin', 'wikipedia', 'wikipedia:<date>' "
            f"(e.g. wikipedia:{WIKIPEDIA_DEFAULT_DATE}) or a directory of <code>.txt files"
        )
    present = [s for s in SPLITS if (path / s).is_dir()]
    if present and split not in present:
        raise FileNotFoundError(
            f"{path} has split folder(s) {', '.join(present)} but no {split!r}; "
            f"use split={present[0]!r} or add {path / split}/<code>.txt files."
        )
    folder = path / split if present else path
    files = _code_files(folder)
    if not files:
        raise CorpusError(
            f"no <code>.txt files in {folder}: a corpus directory holds one UTF-8 file per "
            "language named by its code (en.txt, zh.txt, ...), one document per line"
        )
    documents = {lang: _read_lines(files[lang]) for lang in parse_languages(languages, files)}
    label = "builtin" if src == "builtin" else str(path.resolve())
    return Corpus(source=label, split=split, documents=documents)


def load_prompts(source: str | os.PathLike = "builtin", language: str | None = None) -> list[str]:
    """Loads open questions for steering, one per line (blank lines skipped).

    Args:
        source: ``"builtin"`` (``data/prompts/<code>.txt``, line ``i`` the same question
            in every language), a directory of ``<code>.txt`` files, or a plain file.
        language: Which language's file to read (required for a directory).

    Raises:
        ValueError: no or unknown ``language`` for a directory.
        CorpusError: an unusable file, or a directory with no ``<code>.txt`` file.
        FileNotFoundError: a path that does not exist.
    """
    src = os.fspath(source)
    path = data_dir() / "prompts" if src == "builtin" else Path(src).expanduser()
    if path.is_file():
        return _read_lines(path)
    if not path.is_dir():
        raise FileNotFoundError(f"prompt source {src!r} is not 'builtin', a file or a directory")
    files = _code_files(path)
    if not files:
        raise CorpusError(f"no <code>.txt prompt files in {path}")
    if language is None:
        choices = ", ".join(sort_languages(files))
        raise ValueError(f"choose the language of the prompts in {path}: one of {choices}")
    (lang,) = parse_languages([language], files)
    return _read_lines(files[lang])


# ---------------------------------------------------------------------------------------
# Wikipedia


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
        files = sorted(folder.glob("*.parquet")) or sorted(folder.glob("*.json*"))
        if not files:
            raise CorpusError(f"no .parquet or .jsonl files in {folder}")
        builder = "parquet" if files[0].suffix == ".parquet" else "json"
        data_files = {"train": [str(f) for f in files]}
        ds = datasets.load_dataset(builder, data_files=data_files, split="train", streaming=True)
    return ds.shuffle(seed=seed, buffer_size=WIKIPEDIA_SHUFFLE_BUFFER)


def _article_split(article_id: str) -> str:
    h = int(hashlib.sha256(str(article_id).encode()).hexdigest()[:8], 16)
    return "heldout" if h % WIKIPEDIA_HELDOUT_MODULUS == 0 else "detect"


def _wikipedia_languages(languages, date: str, local: Path | None) -> list[str]:
    """The codes asked for: among the local copy's configs, else any well-formed code."""
    if local is not None:
        available = [p.name.split(".", 1)[1] for p in local.glob(f"{date}.*") if p.is_dir()]
        if not available:
            raise CorpusError(f"no {date}.<code>/ folders in wikipedia_path {local}")
        return parse_languages(languages, available)
    if languages is None or (isinstance(languages, str) and languages.strip() == "all"):
        return list(LANGUAGE_ORDER)
    items = languages.replace(",", " ").split() if isinstance(languages, str) else languages
    chosen = list(dict.fromkeys(str(c).strip().lower() for c in items))
    bad = [c for c in chosen if not _CODE_RE.match(c)]
    if bad or not chosen:
        raise ValueError(
            f"bad language code(s) {bad or languages!r} for Wikipedia; give codes such "
            "as 'en,zh,fr' (the config is <date>.<code>)"
        )
    return chosen


def _load_wikipedia(
    source: str, languages, *, split: str, filter_language: bool, budget: int | None,
    tokenizer, seed: int, cache_dir, take_all: bool, local,
) -> Corpus:
    """Samples the articles of ``split`` per language (see :func:`load_corpus`).

    The cache holds every paragraph read, in stream order, so that a smaller budget takes a
    prefix of it. It is re-used when made with the same seed and origin and it holds the
    budget or the whole split; otherwise it is streamed again and replaced.
    """
    from .models import cache_dir as default_cache_dir

    date = source.partition(":")[2] or WIKIPEDIA_DEFAULT_DATE
    if not re.fullmatch(r"\d{8}", date):
        raise ValueError(
            f"bad Wikipedia dump date {date!r} in source {source!r}; use e.g. "
            f"'wikipedia:{WIKIPEDIA_DEFAULT_DATE}'"
        )
    if budget is None and not take_all:
        raise ValueError(
            "source 'wikipedia' needs tokens_per_language (how much text to stream per "
            "language, e.g. 1_000_000), or take_all=True to stream every article"
        )
    if local is not None:
        local = Path(local).expanduser().resolve()
        if not local.is_dir():
            raise FileNotFoundError(f"wikipedia_path {local} is not a directory")
    chosen = _wikipedia_languages(languages, date, local)
    origin = str(local) if local else f"hf://datasets/{WIKIPEDIA_DATASET}"
    name = f"{date}-local-{hashlib.sha256(origin.encode()).hexdigest()[:8]}" if local else date
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / "wikipedia" / name / split
    count = _counter(tokenizer)
    sidecar = {  # how the cache is made; _stream_wikipedia adds what it read
        "origin": origin,
        "split": split,
        "split_rule": f"heldout when int(sha256(id)[:8], 16) % {WIKIPEDIA_HELDOUT_MODULUS} == 0",
        "seed": seed,
        "shuffle_buffer": WIKIPEDIA_SHUFFLE_BUFFER,
        "tokens_per_language": budget,
        "counted_with": tokenizer_identity(tokenizer)["name"] if tokenizer is not None else (
            f"estimate: {CHARS_PER_TOKEN_ESTIMATE:g} characters per token"
        ),
        "filter_language": filter_language,
    }
    where = f"wikipedia:{date} ({split})"
    documents: dict[str, list[str]] = {}
    dropped: dict[str, tuple[int, int]] = {}
    for lang in chosen:
        kept = _Kept(lang, budget, count, filter_language)
        text_path, meta_path = folder / f"{lang}.txt", folder / f"{lang}.json"
        cached = False
        if text_path.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if (meta.get("seed"), meta.get("origin")) != (seed, origin):
                log.warning(
                    "Wikipedia cache %s was made with seed %s from %s; replacing it (seed %s)",
                    text_path, meta.get("seed"), meta.get("origin"), seed,
                )
            elif kept.add(_read_lines(text_path)) or meta.get("exhausted"):
                log.info("Wikipedia %s/%s: re-using the cache %s", lang, split, text_path)
                cached = True
            else:  # too few tokens, or every article asked for (take_all) and not all cached
                log.info(
                    "Wikipedia %s/%s: the cache holds %d tokens, not the %s asked; streaming "
                    "again", lang, split, kept.tokens, budget or "whole split",
                )
                kept = _Kept(lang, budget, count, filter_language)
        if not cached:
            _stream_wikipedia(kept, date, local, text_path, sidecar)
        if filter_language:
            kept.report(where)
            dropped[lang] = kept.dropped
        _check_budget(lang, where, kept.tokens, budget, take_all)
        documents[lang] = kept.lines
    return Corpus(source=f"wikipedia:{date}", split=split, documents=documents, dropped=dropped)


def _stream_wikipedia(
    kept: _Kept, date: str, local: Path | None, text_path: Path, sidecar: dict
) -> None:
    """Streams articles of ``sidecar["split"]`` into ``kept`` and caches them in ``text_path``."""
    lines: list[str] = []
    articles = 0
    exhausted = False
    split, config = sidecar["split"], f"{date}.{kept.lang}"
    with tqdm(desc=f"wikipedia {config} ({split})", unit="tok", total=kept.budget) as bar:
        for article in _open_wikipedia(date, kept.lang, local, sidecar["seed"]):
            pars = _lines(article["text"]) if _article_split(article["id"]) == split else []
            if not pars:
                continue
            articles += 1
            lines += pars
            before = kept.tokens
            met = kept.add(pars)
            bar.update(kept.tokens - before)
            if met:
                break
        else:
            exhausted = True
    if not lines:
        raise CorpusError(f"Wikipedia {config} gave no {split} text")
    text_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = text_path.with_suffix(".txt.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, text_path)
    meta = {"dataset": WIKIPEDIA_DATASET, "config": config, **sidecar}
    meta.update(articles=articles, lines=len(lines), characters=sum(map(len, lines)),
                tokens_kept=kept.tokens, exhausted=exhausted,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    text_path.with_suffix(".json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def tokenizer_identity(tokenizer) -> dict:
    """What identifies a tokenizer in provenance records.

    Returns:
        ``{"name", "vocab_size", "probe_sha256"}``: ``name_or_path`` (the last component of
        an absolute path, the same on every machine), ``len(tokenizer)``, and the sha256 of
        the ids of a fixed multilingual probe text.
    """
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    if os.path.isabs(name):
        name = Path(name).name
    probe = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
    digest = hashlib.sha256(json.dumps([int(x) for x in probe]).encode()).hexdigest()
    return {"name": name, "vocab_size": len(tokenizer), "probe_sha256": digest}
