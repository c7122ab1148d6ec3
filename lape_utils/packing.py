"""Packing text into token chunks, as the paper does, with an optional chat format.

:func:`pack` tokenizes a :class:`~lape_utils.corpus.Corpus` and cuts each language into
fixed-length chunks; :func:`chat_turn` renders one user turn of a chat template and finds
the message in it, so that capture can count only the message's tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .corpus import _SEPARATOR, Corpus, _budget, _check_budget, tokenizer_identity

log = logging.getLogger(__name__)

__all__ = ["ChatTemplateError", "PackedCorpus", "chat_turn", "pack"]


class ChatTemplateError(ValueError):
    """A tokenizer without a chat template, or one that cannot render a user turn."""


_SENTINEL = "LAPE-USER-MESSAGE-7F3A"
_NO_CHAT = "use plain text (chat=False, --no-chat)"


def chat_turn(tokenizer, content: str, *, generation_prompt: bool = False) -> tuple[str, int, int]:
    """One user turn in the tokenizer's chat template, and where the message lies in it.

    ``content`` must render between the template text found around a sentinel message
    (stripped of whitespace at most, as LLaMA-2-Chat does), so that every character is known
    to be the message's or the template's.

    Args:
        tokenizer: A Hugging Face tokenizer with a ``chat_template``.
        content: The user's message.
        generation_prompt: Append the assistant header (``add_generation_prompt=True``).

    Returns:
        ``(text, start, end)``: the rendered text (BOS text included) and the span
        ``text[start:end]`` of the message.

    Raises:
        ChatTemplateError: no chat template, or one that raises, drops the message or changes
            it beyond stripping whitespace.
    """
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer {name!r} has no chat template (tokenizer.chat_template is None); "
            f"{_NO_CHAT}, or set tokenizer.chat_template to the model's Jinja template"
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
                f"({type(err).__name__}: {err}); fix tokenizer.chat_template, or {_NO_CHAT}"
            ) from err

    frame = render(_SENTINEL)
    if frame.count(_SENTINEL) != 1:
        raise ChatTemplateError(
            f"the chat template of {name!r} renders a user turn without the user's message "
            f"({_SENTINEL!r} gave {frame!r:.200}); fix tokenizer.chat_template, or {_NO_CHAT}"
        )
    prefix, suffix = frame.split(_SENTINEL)
    text = render(content)
    for message in (content, content.strip()):
        if text == prefix + message + suffix:
            return text, len(prefix), len(prefix) + len(message)
    raise ChatTemplateError(
        f"the chat template of {name!r} changes the message beyond stripping whitespace "
        f"({content!r:.80} became {text!r:.200}), so the message's tokens cannot be told "
        f"from the template's; {_NO_CHAT}"
    )


def _chat_tokens(tokenizer, docs: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Token ids of each document as a user turn, and which of them hold the message.

    A token belongs to the message when its offsets overlap the message's span. The
    template's leading BOS text is dropped: each chunk brings its own BOS.
    """
    bos = getattr(tokenizer, "bos_token", None)
    texts, spans = [], []
    for doc in docs:
        text, start, end = chat_turn(tokenizer, doc)
        cut = len(bos) if bos and text.startswith(bos) else 0
        texts.append(text[cut:])
        spans.append((start - cut, end - cut))
    try:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
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


@dataclass
class PackedCorpus:
    """Token chunks per language, ready to be fed to a model (made by :func:`pack`).

    Attributes:
        languages: Language codes, in corpus order.
        chunks: ``{code: LongTensor[n_chunks, seq_len]}``; with ``bos``, column 0 is BOS
            (capture skips it).
        seq_len: Tokens per chunk, BOS included.
        tokens: Text tokens per language, the ``n[k]`` LAPE counts:
            ``n_chunks * (seq_len - bos)`` (separators included), or the message tokens.
        fingerprint: sha256 over the corpus fingerprint, the tokenizer identity and every
            packing setting (and the chat template, for chat text).
        source: Source of the corpus.
        bos: Whether each chunk starts with BOS.
        documents: Documents with at least one token in the chunks, per language.
        characters: Their characters in the chunks (a cut document pro rata to its tokens).
        split: Split of the corpus.
        provenance_extra: Tokenizer identity, budget, seed, ... (for sidecars).
        content_mask: ``None`` for plain text; for chat text ``{code: BoolTensor[n_chunks,
            seq_len]}``, True for a message's tokens (the only ones capture counts).
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
            have = ", ".join(self.languages)
            raise ValueError(f"language {lang!r} is not in this packed corpus; it has {have}")
        return self.chunks[lang]

    def table(self) -> pd.DataFrame:
        """Sizes per language: documents, characters, tokens, chars_per_token and chunks."""
        df = pd.DataFrame(
            {"documents": self.documents, "characters": self.characters, "tokens": self.tokens}
        ).loc[self.languages].rename_axis("language")
        df["chars_per_token"] = df["characters"] / df["tokens"]
        df["chunks"] = [self.n_chunks(lang) for lang in self.languages]
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
            ``(i, ids)``: the index of the batch's first chunk, ``LongTensor[batch, seq_len]``.
        """
        data = self._chunks(lang)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= start_chunk <= data.shape[0]:
            raise ValueError(f"start_chunk {start_chunk} is outside 0..{len(data)} for {lang!r}")
        for i in range(start_chunk, data.shape[0], batch_size):
            yield i, data[i : i + batch_size]

    def provenance(self) -> dict:
        """A JSON-able description (no tensors) for result sidecars."""
        return {
            "fingerprint": self.fingerprint, "source": self.source, "split": self.split,
            "languages": list(self.languages), "seq_len": self.seq_len, "bos": self.bos,
            "tokens": dict(self.tokens), "chunks": {k: self.n_chunks(k) for k in self.languages},
            "documents": dict(self.documents), "characters": dict(self.characters),
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
    chat: bool,
) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """Token stream of ``docs`` in ``order`` joined by ``sep``; stops once ``need`` is reached.

    Returns:
        ``(ids, spans, content)``: ``ids [stream]``; ``(tokens, characters)`` of each
        document in stream order; ``content [stream]``, False for the separators and, with
        ``chat``, for the template's tokens.
    """
    sep_ids = np.asarray(sep, dtype=np.int64)
    ids: list[np.ndarray] = []
    content: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    total = 0
    bar = tqdm(total=len(docs), desc=f"tokenizing {lang}", unit="doc", disable=len(docs) < 5000)
    for i in range(0, len(order), 512):
        texts = [docs[j] for j in order[i : i + 512]]
        if chat:
            rows, inside = _chat_tokens(tokenizer, texts)
        else:
            rows = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            inside = [np.ones(len(row), dtype=bool) for row in rows]
        for text, row, flags in zip(texts, rows, inside, strict=True):
            if ids:
                ids.append(sep_ids)
                content.append(np.zeros(len(sep_ids), dtype=bool))
                total += len(sep_ids)
            ids.append(np.asarray(row, dtype=np.int64))
            content.append(flags)
            spans.append((len(row), len(text)))
            total += len(row)
        bar.update(len(texts))
        if need is not None and total >= need:
            break
    bar.close()
    return np.concatenate(ids), spans, np.concatenate(content)


def _rows(values: np.ndarray, k: int, first: int | bool | None) -> torch.Tensor:
    """``values`` as ``k`` rows, each preceded by ``first`` unless it is ``None``."""
    rows = torch.from_numpy(values.copy()).view(k, -1)
    if first is not None:
        rows = torch.cat([torch.full((k, 1), first, dtype=rows.dtype), rows], dim=1)
    return rows.contiguous()


def pack(
    corpus: Corpus, tokenizer, *, seq_len: int = 512, tokens_per_language: int | None = None,
    seed: int = 0, take_all: bool = False, bos: bool = True, chat: bool = False,
) -> PackedCorpus:
    r"""Tokenizes a corpus and cuts each language into fixed-length chunks (the paper's way).

    Per language, the documents are put in a seeded order (the same permutation for languages
    with as many documents, so a parallel corpus stays aligned), joined by ``"\\n\\n"`` and
    cut into chunks of ``seq_len - 1`` text tokens after a BOS token (``seq_len`` without
    it). No padding: the incomplete tail is dropped, as in the reference code.

    Args:
        corpus: The documents.
        tokenizer: The model's tokenizer (a Hugging Face tokenizer).
        seq_len: Tokens per chunk, BOS included (>= 2, <= ``tokenizer.model_max_length``).
        tokens_per_language: Text tokens per language, rounded down to whole chunks;
            ``None``: that of the language with the least text.
        seed: Seed of the document order.
        take_all: A language short of the budget gets what it has (a warning); with
            ``tokens_per_language=None``, every language gets all its text.
        bos: Start each chunk with the BOS token.
        chat: Each document becomes one user turn of the chat template (:func:`chat_turn`)
            and :attr:`PackedCorpus.content_mask` marks the message's tokens. The budget
            counts every token of the formatted stream.

    Returns:
        A :class:`PackedCorpus` (``chunks[lang]: LongTensor[n_chunks, seq_len]``).

    Raises:
        ValueError: bad ``seq_len``; a language short of the budget (unless ``take_all``)
            or of one chunk; ``bos=True`` and the tokenizer has no BOS.
        ChatTemplateError: ``chat=True`` and a document cannot be a user turn (:func:`chat_turn`).
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
        raise ValueError("the tokenizer has no BOS token; pass bos=False to pack chunks without it")
    budget = _budget(tokens_per_language)
    per_chunk = seq_len - 1 if bos else seq_len
    asked = None if budget is None else budget // per_chunk  # chunks per language
    if asked == 0:
        raise ValueError(
            f"tokens_per_language={budget} is less than one chunk of {per_chunk} text "
            "tokens; ask for more tokens or a smaller seq_len"
        )
    if not corpus.languages:
        raise ValueError("the corpus has no languages")

    sep = tokenizer(_SEPARATOR, add_special_tokens=False, verbose=False)["input_ids"]
    need = None if asked is None else asked * per_chunk
    streams = {}
    for lang, docs in corpus.documents.items():
        if not docs:
            raise ValueError(f"language {lang!r} of {corpus.source} has no documents")
        order = _permutation(len(docs), seed)
        streams[lang] = _stream(tokenizer, docs, order, sep, need, lang, chat)

    smallest = min(len(ids) for ids, _, _ in streams.values())
    chunks, content, tokens, documents, characters = {}, {}, {}, {}, {}
    for lang, (ids, spans, inside) in streams.items():
        if need is None:
            k = (len(ids) if take_all else smallest) // per_chunk
        else:
            what = (f"tokens_per_language={budget:,} asks for {need:,} "
                    f"({asked} chunks of {per_chunk} text tokens)")
            _check_budget(lang, corpus.source, len(ids), need, take_all, what)
            k = min(asked, len(ids) // per_chunk)
        if k == 0:
            raise ValueError(
                f"language {lang!r} of {corpus.source} has {len(ids):,} tokens, less than "
                f"one chunk of {per_chunk} text tokens; use a smaller seq_len or more text"
            )
        n = k * per_chunk
        chunks[lang] = _rows(ids[:n], k, int(bos_id) if bos else None)
        tokens[lang] = n
        if chat:
            content[lang] = _rows(inside[:n], k, False if bos else None)
            tokens[lang] = int(content[lang].sum())
        documents[lang], characters[lang] = _used(spans, n, len(sep))

    extra = {
        "tokenizer": tokenizer_identity(tokenizer), "tokens_per_language": budget, "seed": seed,
        "take_all": take_all, "corpus_fingerprint": corpus.fingerprint,
    }
    if chat:  # only then: plain text keeps its fingerprint
        template = str(tokenizer.chat_template).encode()
        extra["chat_template_sha256"] = hashlib.sha256(template).hexdigest()
    key = {"corpus": corpus.fingerprint, "seq_len": seq_len, "bos": bos, **extra}
    del key["corpus_fingerprint"]
    packed = PackedCorpus(
        languages=list(corpus.languages), chunks=chunks, seq_len=seq_len, tokens=tokens,
        fingerprint=hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(),
        source=corpus.source, bos=bos, documents=documents, characters=characters,
        split=corpus.split, provenance_extra=extra, content_mask=content if chat else None,
    )
    log.info("packed %r", packed)
    return packed


def _used(spans: list[tuple[int, int]], kept: int, sep_len: int) -> tuple[int, int]:
    """Documents touched and characters held by the first ``kept`` tokens of a stream."""
    pos = docs = 0
    chars = 0.0
    for i, (n_tok, n_chr) in enumerate(spans):
        pos += sep_len if i else 0
        if pos >= kept:
            break
        take = min(n_tok, kept - pos)
        if take > 0 and n_tok:
            docs += 1
            chars += n_chr * take / n_tok
        pos += n_tok
    return docs, int(round(chars))
