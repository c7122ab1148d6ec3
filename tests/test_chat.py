"""Chat models: prompts as chat turns (no doubled BOS), clear errors for broken templates,
capture counting only the message tokens of chat-formatted text, the CLI switch.

The tiny byte tokenizer gets, in a fixture only, a Jinja chat template whose text starts
with the BOS text and a post-processor that adds BOS (as LLaMA's tokenizers do), so that a
doubled BOS would show.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import processors

from lape_utils.capture import capture
from lape_utils.corpus import Corpus
from lape_utils.generation import GenerationConfig, generate
from lape_utils.intervene import InterventionError
from lape_utils.models import wrap_model
from lape_utils.packing import ChatTemplateError, chat_turn, pack
from lape_utils.selection import NeuronSelection
from lape_utils.stats import ProvenanceMismatchError
from lape_utils.steering import SteerSpec, steer
from lape_utils.tiny import build_tiny, byte_tokenizer

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
BOS = 1
PROMPTS = ["What is a cat?", "How do bees make honey?"]
GEN = GenerationConfig(max_new_tokens=3, batch_size=2)


def _chat_tokenizer(template: str | None = TEMPLATE):
    tok = byte_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", BOS)]
    )
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def chat_model():
    """tiny-llama's weights with the chat tokenizer (the default tiny models stay as they are)."""
    hf, _ = build_tiny("llama")
    return wrap_model(hf, _chat_tokenizer(), name="tiny-llama-chat", fingerprint="tiny-llama:chat")


def _selection():
    g = torch.Generator().manual_seed(0)
    return NeuronSelection.from_masks(
        {lang: torch.rand(2, 128, generator=g) < 0.1 for lang in ("en", "fr", "zh")}
    )


@pytest.fixture
def seen(monkeypatch):
    """Records the prompts steering hands to ``generate`` and what came back."""
    import lape_utils.steering as steering

    calls = []

    def spy(model, prompts, *args, **kwargs):
        out = generate(model, prompts, *args, **kwargs)
        calls.append((list(prompts), out))
        return out

    monkeypatch.setattr(steering, "generate", spy)
    return calls


# --------------------------------------------------------------------------- steering


def test_steering_uses_the_chat_template_once_and_bos_once(chat_model, seen):
    res = steer(chat_model, _selection(), None, PROMPTS, SteerSpec("fr", mode="scale", strength=2),
                generation=GEN)
    assert res.config["chat_template_used"] is True and res.config["chat"] is None
    assert len(seen) == 2  # unsteered, then steered: the same formatted prompts
    for prompts, out in seen:
        assert prompts == [f"<bos><|user|>{p}<|end|><|assistant|>" for p in PROMPTS]
        for p, ids in zip(PROMPTS, out.prompt_ids):
            want = [BOS, *chat_model.tokenizer(f"<|user|>{p}<|end|><|assistant|>",
                                               add_special_tokens=False)["input_ids"]]
            assert ids.tolist() == want  # one BOS, from the template text


def test_chat_false_keeps_the_papers_format(chat_model, seen):
    res = steer(chat_model, _selection(), None, PROMPTS[:1],
                SteerSpec("fr", mode="scale", strength=2, chat=False), generation=GEN)
    assert res.config["chat_template_used"] is False
    prompts, out = seen[0]
    assert prompts == ["Q: What is a cat?\nA:"]
    assert "<|user|>" not in prompts[0]
    ids = out.prompt_ids[0].tolist()
    assert ids[0] == BOS and ids.count(BOS) == 1  # the tokenizer adds it


def test_another_template_formats_the_users_message(chat_model, seen):
    spec = SteerSpec("fr", mode="scale", strength=2, template="Answer in one word: {prompt}")
    steer(chat_model, _selection(), None, PROMPTS[:1], spec, generation=GEN)
    assert seen[0][0] == ["<bos><|user|>Answer in one word: What is a cat?<|end|><|assistant|>"]


def test_generate_does_not_double_a_bos_already_in_the_text(chat_model):
    out = generate(chat_model, ["<bos>abc", "abc"], [], GEN)
    abc = chat_model.tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert out.prompt_ids[0].tolist() == out.prompt_ids[1].tolist() == [BOS, *abc]


@pytest.mark.parametrize(
    ("template", "match"),
    [
        (None, "has no chat template"),
        ("{{ raise_exception('only system turns') }}", "cannot render one user turn.*only system"),
        ("{% for m in messages %}", "cannot render one user turn"),
        ("{% for m in messages %}<|{{ m.role }}|>{% endfor %}", "without the user's message"),
        ("{% for m in messages %}{{ m.content | upper }}{% endfor %}", "changes the message"),
    ],
)
def test_a_broken_template_fails_before_any_generation(chat_model, monkeypatch, template, match):
    import lape_utils.steering as steering

    def boom(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(steering, "generate", boom)
    monkeypatch.setattr(chat_model.tokenizer, "chat_template", template)
    with pytest.raises(ChatTemplateError, match=match):
        steer(chat_model, _selection(), None, PROMPTS, SteerSpec("fr", mode="scale", chat=True),
              generation=GEN)


def test_chat_setting_is_validated():
    with pytest.raises(InterventionError, match="chat must be None.*True or False, got 'yes'"):
        SteerSpec("fr", chat="yes")
    with pytest.raises(InterventionError, match="got 1"):
        SteerSpec("fr", chat=1)


def test_chat_turn_spans_and_whitespace_stripping_templates():
    tok = _chat_tokenizer("{{ bos_token }}{% for m in messages %}[INST] {{ m.content | trim }} "
                          "[/INST]{% endfor %}")
    text, start, end = chat_turn(tok, "  bonjour ")
    assert text == "<bos>[INST] bonjour [/INST]" and text[start:end] == "bonjour"
    text, start, end = chat_turn(_chat_tokenizer(), "user", generation_prompt=True)
    assert (text, text[start:end], start) == ("<bos><|user|>user<|end|><|assistant|>", "user", 13)


# --------------------------------------------------------------------------- packing, capture


def _corpus():
    # stream per language: "<|user|>" + doc + "<|end|>", documents joined by "\n\n"
    return Corpus("hand", "detect", {"en": ["Hello", "cat"], "fr": ["été", "chat"]})


def test_chat_packing_counts_exactly_the_message_tokens(chat_model):
    tok = chat_model.tokenizer
    # by hand: en 8+5+7 + 2 + 8+3+7 = 40 tokens, fr 8+5+7 + 2 + 8+4+7 = 41 ("été" is 5
    # bytes); seq_len 41 with BOS = 40 text tokens: one chunk each, the last ">" of fr cut
    packed = pack(_corpus(), tok, seq_len=41, chat=True)
    assert {k: v.shape for k, v in packed.chunks.items()} == {"en": (1, 41), "fr": (1, 41)}
    assert packed.tokens == {"en": 5 + 3, "fr": 5 + 4}
    for lang, docs in _corpus().documents.items():
        ids, mask = packed.chunks[lang][0], packed.content_mask[lang][0]
        assert ids[0] == BOS and not mask[0]
        assert tok.decode(ids[mask]) in ("".join(docs), "".join(reversed(docs)))
        assert "<|user|>" in tok.decode(ids[~mask])
    stats = capture(chat_model, packed, replicates=2, progress=False)
    assert stats.n.tolist() == [8, 9]
    assert stats.boot_n.shape == (2, 2)
    assert stats.provenance["chat_content_only"] is True
    assert stats.provenance["tokens_per_language"] == {"en": 8, "fr": 9}
    assert (stats.over_zero <= stats.n).all()


def test_chat_packing_is_fingerprinted_and_plain_packing_unchanged(chat_model, tmp_path):
    tok = chat_model.tokenizer
    chat = pack(_corpus(), tok, seq_len=8, chat=True)
    plain = pack(_corpus(), tok, seq_len=8)
    no_template = _chat_tokenizer(None)
    assert plain.content_mask is None and "chat_template_sha256" not in plain.provenance()
    assert plain.fingerprint == pack(_corpus(), no_template, seq_len=8).fingerprint
    assert chat.fingerprint != plain.fingerprint
    assert len(chat.provenance()["chat_template_sha256"]) == 64
    capture(chat_model, plain, tmp_path, replicates=0, progress=False)
    with pytest.raises(ProvenanceMismatchError):
        capture(chat_model, chat, tmp_path, replicates=0, progress=False)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        pack(_corpus(), no_template, seq_len=41, chat=True)


# --------------------------------------------------------------------------- CLI


def test_cli_chat_switch(tmp_path):
    from lape_utils.cli import build_parser

    sel = tmp_path / "sel.pt"
    _selection().save(sel)
    base = ["steer", "--model", "tiny-llama", "--neurons", str(sel), "--prompts", "en",
            "--target", "fr", "--mode", "scale", "--out", str(tmp_path / "s.jsonl")]
    parser = build_parser()
    assert parser.parse_args(base).chat is None
    assert parser.parse_args([*base, "--chat"]).chat is True
    assert parser.parse_args([*base, "--no-chat"]).chat is False
    args = parser.parse_args([*base, "--chat"])  # tiny-llama's tokenizer has no template
    with pytest.raises(ChatTemplateError, match="has no chat template.*--no-chat"):
        args.func(args)
    assert not (tmp_path / "s.jsonl").exists()
    assert parser.parse_args(["capture", "--model", "tiny-llama", "--chat", "--out", "x"]).chat
