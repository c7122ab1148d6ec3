"""Languages, corpus loading (builtin, directories, Wikipedia fixture), prompts and packing."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch

from lape_utils import corpus as corpus_mod
from lape_utils import packing
from lape_utils.corpus import (
    Corpus,
    CorpusError,
    data_dir,
    load_corpus,
    load_prompts,
    tokenizer_identity,
)
from lape_utils.languages import (
    LANGUAGE_NAMES,
    LANGUAGE_ORDER,
    parse_languages,
    sort_languages,
)
from lape_utils.packing import PackedCorpus, pack
from lape_utils.tiny import byte_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
WIKI = FIXTURES / "wikipedia"

EN = [
    "The first document is about rivers and the mills that stood along them.",
    "The second document describes a market held every Saturday in the old square.",
    "The third document explains how paper was made from linen rags.",
]
FR = [
    "Le premier document parle des rivières et des moulins qui les bordaient.",
    "Le deuxième document décrit un marché qui se tient chaque samedi sur la vieille place.",
    "Le troisième document explique comment on fabriquait le papier avec des chiffons de lin.",
]


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def write(path: Path, lines: list[str] | str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text(lines if isinstance(lines, str) else "\n".join(lines) + "\n", "utf-8")
    return path


@pytest.fixture
def user_dir(tmp_path) -> Path:
    write(tmp_path / "en.txt", ["", EN[0], "   ", EN[1], EN[2], ""])
    write(tmp_path / "fr.txt", FR)
    return tmp_path


def parallel_corpus(n_docs: int = 40, langs=("en", "fr", "de")) -> Corpus:
    """Document i of every language starts with a marker of i (for alignment checks)."""
    return Corpus(
        source="synthetic",
        split="detect",
        documents={
            lang: [f"[{i:03d}] {lang} " + "text " * (5 + i % 7) for i in range(n_docs)]
            for lang in langs
        },
    )


# ------------------------------------------------------------------ languages


def test_language_order_and_names():
    assert LANGUAGE_ORDER == ("en", "zh", "fr", "es", "vi", "id", "ja", "de", "ru", "ko")
    assert all(code in LANGUAGE_NAMES for code in LANGUAGE_ORDER)
    assert len(LANGUAGE_NAMES) >= 50
    assert LANGUAGE_NAMES["id"] == "Indonesian" and LANGUAGE_NAMES["ms"] == "Malay"


def test_sort_languages():
    assert sort_languages(["pt", "ko", "en", "it", "ja", "en"]) == ["en", "ja", "ko", "it", "pt"]


def test_parse_languages():
    avail = ["fr", "en", "zh"]
    assert parse_languages("en,zh", avail) == ["en", "zh"]
    assert parse_languages(" zh , EN fr", avail) == ["zh", "en", "fr"]
    assert parse_languages(["fr", "fr", "en"], avail) == ["fr", "en"]
    assert parse_languages(None, avail) == ["en", "zh", "fr"]
    assert parse_languages("all", avail) == ["en", "zh", "fr"]
    assert "de" in parse_languages("de")  # default: every known code
    with pytest.raises(ValueError, match=r"'xx', 'yy'.*available: en \(English\), zh"):
        parse_languages("en,xx,yy", avail)
    with pytest.raises(ValueError, match="no language chosen"):
        parse_languages(" , ", avail)


# ------------------------------------------------------------------ builtin corpus


def test_builtin_corpus_loads_in_module_order():
    det = load_corpus()
    held = load_corpus("builtin", split="heldout")
    assert det.source == "builtin" and det.split == "detect"
    assert det.languages == list(LANGUAGE_ORDER)
    assert held.languages == list(LANGUAGE_ORDER)
    assert {len(d) for d in det.documents.values()} == {72}
    assert {len(d) for d in held.documents.values()} == {18}
    for lang in LANGUAGE_ORDER:
        assert not set(det.documents[lang]) & set(held.documents[lang])
        assert all(doc and "\n" not in doc and doc == doc.strip() for doc in det.documents[lang])
    assert re.fullmatch(r"[0-9a-f]{64}", det.fingerprint)
    assert det.fingerprint != held.fingerprint


def test_builtin_subset_and_table(tok):
    det = load_corpus("builtin", "ja,en")
    assert det.languages == ["ja", "en"]
    table = det.table()
    assert table.index.name == "language"
    assert list(table.index) == ["ja", "en"]
    assert list(table.columns) == ["documents", "characters"]
    with_tokens = det.table(tok)
    assert list(with_tokens.columns) == ["documents", "characters", "tokens", "chars_per_token"]
    # byte tokenizer: one token per UTF-8 byte
    assert with_tokens.loc["ja", "tokens"] == sum(len(d.encode()) for d in det.documents["ja"])
    assert with_tokens.loc["en", "chars_per_token"] == pytest.approx(1.0, abs=1e-3)
    sub = load_corpus().subset(["en", "ja"])
    assert sub.languages == ["en", "ja"]
    assert sub.fingerprint == load_corpus("builtin", "en,ja").fingerprint
    with pytest.raises(ValueError, match="'xx'"):
        det.subset("xx")


def test_fingerprint_depends_on_content_only():
    a = Corpus("a", "detect", {"en": EN, "fr": FR})
    b = Corpus("b", "heldout", {"fr": FR, "en": EN})
    c = Corpus("a", "detect", {"en": EN, "fr": FR[:2]})
    d = Corpus("a", "detect", {"en": EN, "de": FR})
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    c.documents["fr"] = list(FR)
    assert c.refresh_fingerprint() == a.fingerprint


def test_data_dir_override(tmp_path, monkeypatch):
    write(tmp_path / "corpus" / "detect" / "en.txt", EN)
    write(tmp_path / "corpus" / "heldout" / "en.txt", EN[:1])
    write(tmp_path / "prompts" / "en.txt", ["What is a river?"])
    monkeypatch.setenv("LAPE_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert load_corpus().documents == {"en": EN}
    assert load_corpus(split="heldout").documents == {"en": EN[:1]}
    assert load_prompts(language="en") == ["What is a river?"]
    monkeypatch.setenv("LAPE_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="LAPE_DATA_DIR"):
        load_corpus()


# ------------------------------------------------------------------ user directories


def test_directory_source_ignores_blank_lines(user_dir):
    c = load_corpus(user_dir)
    assert c.documents == {"en": EN, "fr": FR}
    assert c.source == str(user_dir.resolve())
    assert load_corpus(str(user_dir), "fr").languages == ["fr"]
    same = Corpus("x", "detect", {"fr": FR, "en": EN})
    assert load_corpus(user_dir).fingerprint == same.fingerprint


def test_directory_with_split_folders(tmp_path):
    write(tmp_path / "detect" / "en.txt", EN[:2])
    write(tmp_path / "heldout" / "en.txt", EN[2:])
    assert load_corpus(tmp_path).documents["en"] == EN[:2]
    assert load_corpus(tmp_path, split="heldout").documents["en"] == EN[2:]
    (tmp_path / "heldout" / "en.txt").unlink()
    (tmp_path / "heldout").rmdir()
    with pytest.raises(FileNotFoundError, match="no 'heldout'"):
        load_corpus(tmp_path, split="heldout")


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    write(tmp_path / "fr.txt", "\ufeff".encode() + "\r\n".join(FR).encode() + b"\r\n")
    assert load_corpus(tmp_path).documents["fr"] == FR


def test_unknown_language_lists_available(user_dir):
    with pytest.raises(ValueError, match=r"'de'.*available: en \(English\), fr \(French\)"):
        load_corpus(user_dir, "en,de")
    with pytest.raises(ValueError, match=r"'xx'.*available: en.*ko \(Korean\)"):
        load_corpus("builtin", ["en", "xx"])


def test_empty_file_is_named(user_dir):
    bad = write(user_dir / "de.txt", "\n   \n\n")
    with pytest.raises(CorpusError, match=re.escape(str(bad)) + ".*empty"):
        load_corpus(user_dir)
    assert load_corpus(user_dir, "en,fr").languages == ["en", "fr"]  # only asked files are read


def test_non_utf8_file_is_named(user_dir):
    bad = write(user_dir / "de.txt", "Grüße aus München\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=re.escape(str(bad)) + r" is not UTF-8.*line 1"):
        load_corpus(user_dir, "de")


def test_unreadable_file_is_named(user_dir):
    (user_dir / "de.txt").mkdir()  # a directory where a file should be
    with pytest.raises(CorpusError, match=r"cannot read .*de\.txt"):
        load_corpus(user_dir, "de")


def test_directory_without_code_files(tmp_path):
    write(tmp_path / "notes.md", ["hello"])
    with pytest.raises(CorpusError, match=r"no <code>\.txt files in"):
        load_corpus(tmp_path)


def test_bad_sources(tmp_path, user_dir):
    with pytest.raises(ValueError, match=r"unknown corpus source 'wikipedai'.*builtin"):
        load_corpus("wikipedai")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match="is a file"):
        load_corpus(user_dir / "en.txt")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_corpus(split="test")
    with pytest.raises(ValueError, match="bad Wikipedia dump date"):
        load_corpus("wikipedia:2023", tokens_per_language=10)


def test_too_little_text_for_budget(user_dir, tok, caplog):
    en_bytes = sum(len(x.encode()) for x in EN)
    msg = rf"'en'.*has {en_bytes} tokens but 100,000 were asked.*take_all"
    with pytest.raises(ValueError, match=msg):
        load_corpus(user_dir, tokens_per_language=100_000, tokenizer=tok)
    with caplog.at_level(logging.WARNING, logger="lape_utils.corpus"):
        c = load_corpus(user_dir, tokens_per_language=100_000, tokenizer=tok, take_all=True)
    assert c.languages == ["en", "fr"]
    assert "take_all" in caplog.text


def test_language_filter_drops_and_reports(tmp_path, caplog):
    english = "This line slipped into the French file and is written entirely in English."
    write(tmp_path / "fr.txt", [FR[0], english, "Paris", FR[1], FR[2]])
    write(tmp_path / "en.txt", EN)
    with caplog.at_level(logging.INFO, logger="lape_utils.corpus"):
        c = load_corpus(tmp_path, filter_language=True)
    assert c.documents["fr"] == FR
    assert c.documents["en"] == EN
    assert c.dropped == {"en": (0, 0), "fr": (2, len(english) + len("Paris"))}
    assert "dropped 2 of 5 lines" in caplog.text
    table = c.table()
    assert table.loc["fr", "dropped_lines"] == 2
    assert c.fingerprint == Corpus("x", "detect", {"en": EN, "fr": FR}).fingerprint
    assert load_corpus(tmp_path).dropped == {}
    write(tmp_path / "de.txt", EN)  # mislabelled: English text in de.txt
    with pytest.raises(CorpusError, match="dropped every line of 'de'"):
        load_corpus(tmp_path, "de", filter_language=True)


# ------------------------------------------------------------------ prompts


def test_builtin_prompts_are_parallel():
    counts = {lang: len(load_prompts("builtin", lang)) for lang in LANGUAGE_ORDER}
    assert len(set(counts.values())) == 1 and counts["en"] >= 30
    assert load_prompts(language="en")[0].endswith("?")


def test_prompts_from_file_and_directory(tmp_path):
    f = write(tmp_path / "mine.txt", ["", "Why is the sky blue?", "What is rain?"])
    assert load_prompts(f) == ["Why is the sky blue?", "What is rain?"]
    write(tmp_path / "d" / "fr.txt", ["Pourquoi le ciel est-il bleu ?"])
    assert load_prompts(tmp_path / "d", "fr") == ["Pourquoi le ciel est-il bleu ?"]
    with pytest.raises(ValueError, match="choose the language.*fr"):
        load_prompts(tmp_path / "d")
    with pytest.raises(ValueError, match="'de'.*fr"):
        load_prompts(tmp_path / "d", "de")
    with pytest.raises(ValueError, match="'xx'"):
        load_prompts("builtin", "xx")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "none.txt")
    with pytest.raises(CorpusError, match="empty"):
        load_prompts(write(tmp_path / "empty.txt", "\n"))


# ------------------------------------------------------------------ packing


def test_pack_shapes_bos_and_equal_budget(tok):
    c = load_corpus("builtin", "en,zh,ja")
    p = pack(c, tok, seq_len=128)
    assert isinstance(p, PackedCorpus)
    assert p.languages == ["en", "zh", "ja"]
    n = {lang: p.n_chunks(lang) for lang in p.languages}
    assert len(set(n.values())) == 1  # equal budget by default
    smallest = min(sum(len(d.encode()) for d in docs) for docs in c.documents.values())
    assert n["en"] == pytest.approx(smallest / 127, abs=2)  # + separators, - tail
    for lang in p.languages:
        x = p.chunks[lang]
        assert x.dtype == torch.long and x.shape == (n[lang], 128)
        assert (x[:, 0] == tok.bos_token_id).all()
        assert (x[:, 1:] != tok.bos_token_id).all()
        assert p.tokens[lang] == n[lang] * 127
    table = p.table()
    assert list(table.columns) == ["documents", "characters", "tokens", "chars_per_token", "chunks"]
    assert table.index.name == "language"
    assert 0 < table.loc["zh", "chars_per_token"] < 0.5 < table.loc["en", "chars_per_token"] <= 1.0
    assert 0 < table.loc["en", "documents"] <= 72
    json.dumps(p.provenance())


def test_pack_stream_is_the_documents_joined(tok):
    c = Corpus("s", "detect", {"en": EN})
    p = pack(c, tok, seq_len=32, seed=0, bos=False)
    order = packing._permutation(len(EN), 0)
    text = "\n\n".join(EN[i] for i in order)
    decoded = tok.decode(p.chunks["en"].flatten().tolist())
    assert text.startswith(decoded)
    assert len(decoded) == p.chunks["en"].numel() > len(text) - 32
    assert p.documents["en"] == 3 and p.characters["en"] <= sum(map(len, EN))


def test_pack_exact_budget_and_errors(tok, caplog):
    c = parallel_corpus()
    p = pack(c, tok, seq_len=64, tokens_per_language=1000)
    assert {p.n_chunks(x) for x in p.languages} == {1000 // 63}
    assert p.tokens["en"] == (1000 // 63) * 63
    with pytest.raises(ValueError, match="less than one chunk"):
        pack(c, tok, seq_len=64, tokens_per_language=10)
    short = Corpus("s", "detect", {"en": c.documents["en"], "fr": c.documents["fr"][:3]})
    with pytest.raises(ValueError, match=r"'fr' of s has \d+ tokens but tokens_per_language=1,000"):
        pack(short, tok, seq_len=64, tokens_per_language=1000)
    with caplog.at_level(logging.WARNING, logger="lape_utils.corpus"):
        p = pack(short, tok, seq_len=64, tokens_per_language=1000, take_all=True)
    assert "take_all" in caplog.text
    assert p.n_chunks("en") == 1000 // 63 > p.n_chunks("fr") > 0
    unequal = pack(short, tok, seq_len=64, take_all=True)
    assert unequal.n_chunks("en") > unequal.n_chunks("fr")
    assert pack(short, tok, seq_len=64).n_chunks("en") == unequal.n_chunks("fr")
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        pack(c, tok, seq_len=1)
    with pytest.raises(ValueError, match="exceeds the tokenizer's model_max_length 512"):
        pack(c, tok, seq_len=1024)
    with pytest.raises(ValueError, match="has 40 tokens, less than one chunk"):
        pack(Corpus("s", "detect", {"en": ["x" * 40]}), tok, seq_len=64)


def test_pack_without_bos(tok):
    c = parallel_corpus()
    p = pack(c, tok, seq_len=64, tokens_per_language=640, bos=False)
    assert p.chunks["en"].shape == (10, 64) and p.tokens["en"] == 640
    assert (p.chunks["en"][:, 0] != tok.bos_token_id).any()
    assert p.fingerprint != pack(c, tok, seq_len=64, tokens_per_language=640).fingerprint

    class NoBos:
        bos_token_id = None
        model_max_length = 512
        __call__ = staticmethod(tok.__call__)
        __len__ = staticmethod(tok.__len__)

    with pytest.raises(ValueError, match="no BOS token; pass bos=False"):
        pack(c, NoBos(), seq_len=64)
    assert pack(c, NoBos(), seq_len=64, bos=False).chunks["en"].shape[1] == 64


def test_pack_is_deterministic_and_seeded(tok):
    c = parallel_corpus()
    a = pack(c, tok, seq_len=64, seed=3)
    b = pack(parallel_corpus(), byte_tokenizer(), seq_len=64, seed=3)
    other = pack(c, tok, seq_len=64, seed=4)
    assert a.fingerprint == b.fingerprint
    for lang in c.languages:
        assert torch.equal(a.chunks[lang], b.chunks[lang])
    assert a.fingerprint != other.fingerprint
    assert not torch.equal(a.chunks["en"], other.chunks["en"])
    assert a.fingerprint != pack(c, tok, seq_len=65, seed=3).fingerprint
    assert a.fingerprint != pack(c, tok, seq_len=64, seed=3, tokens_per_language=630).fingerprint
    assert a.fingerprint != pack(c.subset("en,fr"), tok, seq_len=64, seed=3).fingerprint


def test_pack_keeps_a_parallel_corpus_aligned(tok):
    c = parallel_corpus(n_docs=40)
    p = pack(c, tok, seq_len=256, seed=7)
    firsts = {lang: tok.decode(p.chunks[lang][0, 1:7].tolist()) for lang in c.languages}
    assert len(set(firsts.values())) == 1 and firsts["en"].startswith("[")
    assert firsts["en"] != "[000] "  # really shuffled


def test_iter_batches(tok):
    p = pack(parallel_corpus(), tok, seq_len=32)
    n = p.n_chunks("fr")
    batches = list(p.iter_batches("fr", 4))
    assert [i for i, _ in batches] == list(range(0, n, 4))
    assert torch.equal(torch.cat([x for _, x in batches]), p.chunks["fr"])
    assert all(x.shape[1] == 32 and x.shape[0] <= 4 for _, x in batches)
    resumed = list(p.iter_batches("fr", 4, start_chunk=5))
    assert resumed[0][0] == 5 and torch.equal(resumed[0][1], p.chunks["fr"][5:9])
    assert list(p.iter_batches("fr", 4, start_chunk=n)) == []
    with pytest.raises(ValueError, match="'ko' is not in this packed corpus; it has en, fr, de"):
        next(p.iter_batches("ko", 4))
    with pytest.raises(ValueError, match="batch_size"):
        next(p.iter_batches("fr", 0))
    with pytest.raises(ValueError, match="start_chunk"):
        next(p.iter_batches("fr", 4, start_chunk=n + 1))


def test_tokenizer_identity(tok):
    ident = tokenizer_identity(tok)
    assert ident["vocab_size"] == len(tok)
    assert ident == tokenizer_identity(byte_tokenizer())
    assert re.fullmatch(r"[0-9a-f]{64}", ident["probe_sha256"])


# ------------------------------------------------------------------ Wikipedia (local fixture)


def wiki(tmp_path, **kw) -> Corpus:
    kw.setdefault("wikipedia_path", WIKI)
    kw.setdefault("cache_dir", tmp_path / "cache")
    return load_corpus(kw.pop("source", "wikipedia"), kw.pop("languages", None), **kw)


def test_wikipedia_fixture_budget_and_cache(tmp_path, tok, monkeypatch):
    c = wiki(tmp_path, tokens_per_language=300, tokenizer=tok, seed=1)
    assert c.source == "wikipedia:20231101" and c.split == "detect"
    assert c.languages == ["en", "fr", "ja"]  # the fixture's configs, module order
    for docs in c.documents.values():
        tokens = sum(len(d.encode()) for d in docs)
        assert 300 <= tokens < 300 + max(len(d.encode()) for d in docs)
        assert all("\n" not in d for d in docs)
    folders = list((tmp_path / "cache" / "wikipedia").glob("20231101*/detect"))
    assert len(folders) == 1
    meta = json.loads((folders[0] / "fr.json").read_text())
    assert meta["seed"] == 1 and meta["tokens_per_language"] == 300
    assert meta["config"] == "20231101.fr"
    assert meta["counted_with"] == tokenizer_identity(tok)["name"]
    # the cache is a plain corpus directory
    cached = load_corpus(folders[0].parent)
    assert all(set(c.documents[x]) <= set(cached.documents[x]) for x in c.languages)

    def offline(*a, **k):
        raise AssertionError("should have re-used the cache")

    monkeypatch.setattr(corpus_mod, "_open_wikipedia", offline)
    again = wiki(tmp_path, tokens_per_language=300, tokenizer=tok, seed=1)
    assert again.fingerprint == c.fingerprint
    smaller = wiki(tmp_path, tokens_per_language=100, tokenizer=tok, seed=1)
    for x in c.languages:
        assert smaller.documents[x] == c.documents[x][: len(smaller.documents[x])]


def test_wikipedia_cache_reuse_equals_fresh_download(tmp_path, tok):
    wiki(tmp_path, languages="fr", tokens_per_language=600, tokenizer=tok)
    reused = wiki(tmp_path, languages="fr", tokens_per_language=250, tokenizer=tok)
    fresh = wiki(tmp_path, languages="fr", tokens_per_language=250, tokenizer=tok,
                 cache_dir=tmp_path / "other")
    assert reused.documents == fresh.documents


def test_wikipedia_seed_changes_sample(tmp_path):
    a = wiki(tmp_path, languages="en", tokens_per_language=150, seed=0)
    b = wiki(tmp_path, languages="en", tokens_per_language=150, seed=5, cache_dir=tmp_path / "b")
    a2 = wiki(tmp_path, languages="en", tokens_per_language=150, seed=0, cache_dir=tmp_path / "c")
    assert a.documents == a2.documents
    assert a.documents != b.documents


def test_wikipedia_heldout_is_disjoint(tmp_path):
    det = wiki(tmp_path, take_all=True)
    held = wiki(tmp_path, split="heldout", take_all=True)
    for lang in det.languages:
        assert held.documents[lang]
        assert not set(det.documents[lang]) & set(held.documents[lang])
    n_articles = sum(1 for _ in open(WIKI / "20231101.fr" / "train.jsonl"))
    meta = json.loads(next((tmp_path / "cache").rglob("heldout/fr.json")).read_text())
    assert 0 < meta["articles"] < n_articles and meta["exhausted"]


def test_wikipedia_language_filter(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lape_utils.corpus"):
        c = wiki(tmp_path, languages="fr", take_all=True, filter_language=True)
    lines, chars = c.dropped["fr"]
    # an English sentence, an English "See also" line and the heading "Histoire" (too short)
    assert lines == 3 and chars > 100
    assert not any("English" in d or "See also" in d for d in c.documents["fr"])
    assert "Histoire" not in c.documents["fr"]
    assert "language filter, fr: dropped" in caplog.text
    raw = wiki(tmp_path, languages="fr", take_all=True)
    assert len(raw.documents["fr"]) == len(c.documents["fr"]) + lines


def test_wikipedia_errors(tmp_path, caplog):
    with pytest.raises(ValueError, match="needs tokens_per_language"):
        wiki(tmp_path)
    with pytest.raises(ValueError, match=r"'de'.*available: en \(English\), fr \(French\), ja"):
        wiki(tmp_path, languages="en,de", tokens_per_language=100)
    msg = r"'en' of wikipedia:20231101 \(detect\) has \d+ tokens but 1,000,000"
    with pytest.raises(ValueError, match=msg):
        wiki(tmp_path, languages="en", tokens_per_language=1_000_000)
    with caplog.at_level(logging.WARNING, logger="lape_utils.corpus"):
        c = wiki(tmp_path, languages="en", tokens_per_language=1_000_000, take_all=True)
    assert c.documents["en"] and "take_all" in caplog.text
    with pytest.raises(FileNotFoundError, match="wikipedia_path"):
        wiki(tmp_path, tokens_per_language=100, wikipedia_path=tmp_path / "nowhere")


def test_wikipedia_hub_call_and_offline_message(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    msg = r"wikimedia/wikipedia config '20220301\.fr'.*wikipedia_path="
    with pytest.raises(RuntimeError, match=msg):
        load_corpus("wikipedia:20220301", "fr", tokens_per_language=100, cache_dir=tmp_path)
    expected = (("wikimedia/wikipedia", "20220301.fr"), {"split": "train", "streaming": True})
    assert calls == [expected]


# ------------------------------------------------------------------ the builtin corpus, measured


@pytest.mark.slow
def test_builtin_corpus_meets_the_issue_requirements():
    from transformers import AutoTokenizer

    from lape_utils import models
    from lape_utils.langid import detect_batch

    path = models.cache_dir() / "models" / "gemma-3-270m"
    if not path.exists():
        models.convert_default()
    gemma = AutoTokenizer.from_pretrained(path)
    det, held = load_corpus(split="detect"), load_corpus(split="heldout")
    assert det.languages == held.languages == list(LANGUAGE_ORDER)
    det_tokens, held_tokens = det.table(gemma)["tokens"], held.table(gemma)["tokens"]
    assert (det_tokens >= 12_000).all(), det_tokens
    assert (held_tokens >= 3_000).all(), held_tokens
    sentence_end = re.compile(r"(?<=[.!?。！？])\s*")
    for lang in LANGUAGE_ORDER:
        lines = det.documents[lang] + held.documents[lang]
        agree = sum(r.label == lang for r in detect_batch(lines))
        assert agree >= 0.95 * len(lines), (lang, agree, len(lines))
        assert len(set(lines)) == len(lines), f"{lang}: a line repeats"
        long_min = 25 if lang in ("zh", "ja", "ko") else 50
        sentences = [s.strip() for line in lines for s in sentence_end.split(line)]
        long = [s for s in sentences if len(s) >= long_min]
        assert len(set(long)) == len(long), f"{lang}: a long sentence repeats"
    counts = {lang: len(load_prompts(language=lang)) for lang in LANGUAGE_ORDER}
    assert len(set(counts.values())) == 1 and counts["en"] >= 30, counts
    # packing with the real tokenizer is deterministic and has the equal budget
    a = pack(det, gemma, seq_len=512)
    b = pack(load_corpus(), gemma, seq_len=512)
    assert a.fingerprint == b.fingerprint
    assert all(torch.equal(a.chunks[x], b.chunks[x]) for x in a.languages)
    assert len({a.n_chunks(x) for x in a.languages}) == 1
    assert a.tokens["en"] >= 12_000 - 511
