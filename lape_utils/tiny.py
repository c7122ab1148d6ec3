"""Tiny random-weight models of every supported family, built offline from a config.

Real transformers classes with a few small layers (``--model tiny-llama`` etc.) and a
byte-level tokenizer, so that any UTF-8 text tokenizes without a download.
"""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

HIDDEN = 64
NEURONS = 128
LAYERS = 2
HEADS = 4

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: every UTF-8 byte is one token."""
    symbols = [*SPECIALS, *sorted(pre_tokenizers.ByteLevel.alphabet())]
    vocab = {tok: i for i, tok in enumerate(symbols)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        pad_token="<pad>",
    )
    tok.model_max_length = 512
    return tok


def _configs(vocab: int) -> dict[str, tuple[str, object]]:
    c = dict(vocab_size=vocab, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    dec = dict(
        hidden_size=HIDDEN,
        intermediate_size=NEURONS,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=512,
        **c,
    )
    gemma = dict(dec, head_dim=16)
    return {
        "llama": ("LlamaForCausalLM", transformers.LlamaConfig(**dec)),
        "mistral": ("MistralForCausalLM", transformers.MistralConfig(**dec, sliding_window=None)),
        "qwen2": ("Qwen2ForCausalLM", transformers.Qwen2Config(**dec)),
        "qwen3": ("Qwen3ForCausalLM", transformers.Qwen3Config(**dec, head_dim=16)),
        "gemma": ("GemmaForCausalLM", transformers.GemmaConfig(**gemma)),
        "gemma2": ("Gemma2ForCausalLM", transformers.Gemma2Config(**gemma)),
        "gemma3": ("Gemma3ForCausalLM", transformers.Gemma3TextConfig(**gemma)),
        "gemma3-multimodal": (
            "Gemma3ForConditionalGeneration",
            transformers.Gemma3Config(
                text_config=transformers.Gemma3TextConfig(**gemma),
                vision_config=transformers.SiglipVisionConfig(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    image_size=28,
                    patch_size=14,
                ),
                mm_tokens_per_image=4,
                image_token_index=3,
                boi_token_index=3,
                eoi_token_index=3,
                **{k: v for k, v in c.items() if k != "vocab_size"},
            ),
        ),
        "phi3": ("Phi3ForCausalLM", transformers.Phi3Config(**dec)),
        "phi": ("PhiForCausalLM", transformers.PhiConfig(**dec)),
        "gpt-neox": ("GPTNeoXForCausalLM", transformers.GPTNeoXConfig(**dec)),
        "gpt2": (
            "GPT2LMHeadModel",
            transformers.GPT2Config(
                n_embd=HIDDEN, n_inner=NEURONS, n_layer=LAYERS, n_head=HEADS,
                n_positions=512, **c,
            ),
        ),
        "bloom": (
            "BloomForCausalLM",
            transformers.BloomConfig(hidden_size=NEURONS // 4, n_layer=LAYERS, n_head=HEADS, **c),
        ),
        "opt": (
            "OPTForCausalLM",
            transformers.OPTConfig(
                hidden_size=HIDDEN, ffn_dim=NEURONS, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN,
                max_position_embeddings=512, **c,
            ),
        ),
    }


TINY_FAMILIES: tuple[str, ...] = tuple(_configs(300))


def build_tiny(family: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """Builds a tiny random-weight model of ``family`` and its byte tokenizer.

    Args:
        family: One of :data:`TINY_FAMILIES`.
        seed: Seed of the weight initialisation (same seed, same weights).
        dtype: Parameter dtype.

    Returns:
        ``(hf_model, tokenizer)``, the model in eval mode.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(
            f"no tiny model for family {family!r}; available: {', '.join(TINY_FAMILIES)}"
        )
    tok = byte_tokenizer()
    cls_name, config = _configs(len(tok))[family]
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config)
    return model.to(dtype).eval(), tok
