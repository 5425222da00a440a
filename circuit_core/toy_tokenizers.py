"""Offline stand-ins for the tokenizers of the model families the dashboard supports, for tests.

No tokenizer can be downloaded here, so each family's behaviour that matters to the task builders is
rebuilt with the `tokenizers` library and wrapped as a `transformers.PreTrainedTokenizerFast`, which is
what the builders get from a real model:

- "gpt2": GPT-2's own byte-level BPE (toy.gpt2_tokenizer); BOS = EOS = <|endoftext|>, never added.
- "pythia": GPT-NeoX-like. GPT-2's vocabulary and merges with other ids (<|endoftext|> 0,
  <|padding|> 1, then every GPT-2 token one place on), so nothing may rest on GPT-2's ids; no BOS added.
- "qwen2": Qwen2-like. Byte-level, no BOS token at all (bos_token None), <|endoftext|> as EOS and pad.
- "llama3": Llama-3-like. Byte-level, a BOS of its own (<|begin_of_text|>) that `encode` adds.
- "llama": Llama-1/2- and Mistral-like SentencePiece: a dummy prefix ("Mary" and " Mary" alike are
  read as "▁Mary", so " Mary" alone becomes "▁▁Mary", two tokens), "▁" marks a space, and <s> added.
- "gemma": Gemma-like SentencePiece: "▁" marks a space, no dummy prefix, and <bos> added.

The two SentencePiece stand-ins are Unigram models over a written vocabulary rather than trained ones,
so that which words are single tokens is fixed: every piece of the tasks' prompts as a whole piece
("▁Mary", "▁store", "▁Orange", "▁K" and "etchup" for Acronyms' "Ketchup", ...), every printable ASCII
character for the rest, but not the words in `missing` (by default MISSING: a few names, objects, a
capitalised colour and Acronyms words), which then split into several tokens as a real tokenizer's
rarer words do.
"""
from __future__ import annotations

import json
import string

from .toy import BOS as ENDOFTEXT
from .toy import GPT2_TOKENIZER_DIR, gpt2_tokenizer

FAMILIES = ("gpt2", "pythia", "qwen2", "llama3", "llama", "gemma")
ADDS_BOS = ("llama3", "llama", "gemma")  # families whose tokenizer starts every text with its own BOS

# Task words the SentencePiece stand-ins do not keep whole (by default).
MISSING = {
    "names": ["Christina", "Elizabeth", "Jessica", "Sullivan", "Victoria"],  # IOI
    "objects": ["envelope", "textbook"],  # Colored Objects
    "colors": ["Purple"],  # Colored Objects: "purple" is one token, its answer " Purple" is not
    "acronyms": ["Wombat", "Zither"],  # one token whole, so not " W" + "ombat"
}
SPLIT_WHOLE = ("acronyms",)  # missing words of these lists are single tokens whole (not split as the task needs)


def _gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = json.loads((GPT2_TOKENIZER_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (GPT2_TOKENIZER_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return vocab, merges


def _byte_level(vocab: dict[str, int], merges, bos: str | None = None):
    """A byte-level BPE over `vocab` and `merges`; with `bos`, a post-processor that adds it to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, vocab[bos])])
    return tok


def pythia_like():
    """GPT-NeoX-like: byte-level BPE with other ids than GPT-2's; <|endoftext|> (id 0) as BOS and EOS,
    not added; <|padding|> as pad."""
    from transformers import PreTrainedTokenizerFast

    gpt2, merges = _gpt2_vocab_and_merges()
    vocab = {ENDOFTEXT: 0, "<|padding|>": 1}
    for piece, _ in sorted(gpt2.items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    tok = _byte_level(vocab, merges)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                   unk_token=ENDOFTEXT, pad_token="<|padding|>")


def qwen2_like():
    """Qwen2-like: byte-level BPE with no BOS token at all; <|endoftext|> as EOS and pad."""
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _gpt2_vocab_and_merges()
    return PreTrainedTokenizerFast(tokenizer_object=_byte_level(vocab, merges), eos_token=ENDOFTEXT,
                                   pad_token=ENDOFTEXT)


def llama3_like():
    """Llama-3-like: byte-level BPE; a BOS of its own, <|begin_of_text|>, that `encode` adds; EOS
    <|end_of_text|>; no pad."""
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _gpt2_vocab_and_merges()
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    vocab = {**vocab, bos: len(vocab), eos: len(vocab) + 1}
    return PreTrainedTokenizerFast(tokenizer_object=_byte_level(vocab, merges, bos), bos_token=bos, eos_token=eos)


def _task_pieces() -> set[str]:
    """Every piece of the registered tasks' prompts, GPT-2-style (" Mary" with its leading space)."""
    from .tasks import REGISTRY

    return {w for task in REGISTRY.values() if task.vocabulary for w in task.vocabulary()}


def sentencepiece_like(dummy_prefix: bool = True, missing: dict[str, list[str]] | None = None):
    """A SentencePiece-style tokenizer (Unigram, "▁" for a space) that adds its BOS to every text.

    dummy_prefix=True is Llama-1/2's (<s>, </s>, <unk>; a "▁" before the text, so " Mary" alone is
    "▁▁Mary"); False is Gemma's (<pad>, <eos>, <bos>, <unk>). `missing`: task words not kept whole,
    by list as in MISSING (default MISSING).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    missing = MISSING if missing is None else missing
    if dummy_prefix:
        specials = {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}
        order = ["<unk>", "<s>", "</s>"]
    else:
        specials = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}
        order = ["<pad>", "<eos>", "<bos>", "<unk>"]
    drop = {"▁" + w for name, words in missing.items() if name not in SPLIT_WHOLE for w in words}
    words = set()
    for piece in _task_pieces():
        if piece.startswith(" "):
            words.add("▁" + piece[1:])
        elif piece[:1].isalpha():  # a word that starts a prompt: "▁Then" after a dummy prefix
            words |= {piece, "▁" + piece}
        else:
            words.add(piece)
    words -= drop
    words |= {"▁" + w for name in SPLIT_WHOLE for w in missing.get(name, [])}  # one token whole
    chars = [c for c in string.printable if c not in " \t\r\x0b\x0c"] + ["▁"]
    # Whole pieces score above characters, so the Viterbi split prefers the fewest whole pieces.
    vocab = [(s, 0.0) for s in order] + [(c, -10.0) for c in chars]
    vocab += [(w, -1.0) for w in sorted(words) if w not in set(chars)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=order.index(specials["unk"]), byte_fallback=False))
    replace = normalizers.Replace(" ", "▁")
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), replace]) if dummy_prefix else replace
    steps = [decoders.Replace("▁", " "), decoders.Fuse()] + ([decoders.Strip(" ", 1, 0)] if dummy_prefix else [])
    tok.decoder = decoders.Sequence(steps)
    bos = specials["bos"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, order.index(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{k}_token": v for k, v in specials.items()})


def llama_like(missing: dict[str, list[str]] | None = None):
    """Llama-1/2-like SentencePiece tokenizer (dummy prefix, <s> added); see sentencepiece_like."""
    return sentencepiece_like(dummy_prefix=True, missing=missing)


def gemma_like(missing: dict[str, list[str]] | None = None):
    """Gemma-like SentencePiece tokenizer (no dummy prefix, <bos> added); see sentencepiece_like."""
    return sentencepiece_like(dummy_prefix=False, missing=missing)


def family_tokenizer(family: str):
    """The stand-in tokenizer of `family` (one of FAMILIES)."""
    makers = {"gpt2": gpt2_tokenizer, "pythia": pythia_like, "qwen2": qwen2_like, "llama3": llama3_like,
              "llama": llama_like, "gemma": gemma_like}
    if family not in makers:
        raise ValueError(f"Unknown tokenizer family '{family}'. Known: {', '.join(FAMILIES)}.")
    return makers[family]()
