"""SD-1.5's text tokenizer, lecture §5: prompt -> 77 CLIP token ids, built offline.

Stable Diffusion 1.5 conditions its U-Net on CLIP ViT-L/14's text encoder, whose input is a
byte-pair encoding (BPE) of the prompt: 49,408 tokens, padded or truncated to M = 77. Its
vocabulary is a single file, ``bpe_simple_vocab_16e6.txt.gz``, that OpenAI published with CLIP and
that the ``open_clip_torch`` wheel ships. This module reads that file through the package's
metadata — ``open_clip`` itself is never imported (it needs torchvision) — and builds
transformers' ``CLIPTokenizer`` from it in memory, with SD-1.5's settings:

* vocabulary: the 256 byte symbols, the same 256 with the end-of-word mark ``</w>``, the first
  48,894 merges of the file, ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407);
* lower-cased, whitespace collapsed (no ftfy: SD-1.5's transformers tokenizer has none either);
* ``[49406, tokens…, 49407]`` padded with ``<|endoftext|>`` (49407) to 77, truncated to 77.
"""
from __future__ import annotations

import gzip
import importlib.metadata
from functools import lru_cache

import torch

DISTRIBUTION = "open_clip_torch"
VOCAB_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
M = 77                                   # context length: SD-1.5's model_max_length
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2      # 48,894 = 49152 − 256 − 2, the slice CLIP reads
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1   # 49406, 49407
PAD_ID = EOS_ID                          # SD-1.5 pads with <|endoftext|> (SD-2 pads with "!")
INSTALL = ("pip install --no-deps open_clip_torch==3.3.0  (only its vocabulary file is read; "
           "--no-deps because its torchvision dependency need not match this torch)")


def bytes_to_unicode() -> dict[int, str]:
    """The 256 byte symbols of byte-level BPE: byte b -> a printable character.

    Printable Latin-1 bytes stand for themselves; the 68 others (controls, space, …) are moved
    to chr(256 + n), so that every symbol is visible and none is whitespace.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(printable), 0
    bytes_ = list(printable)
    for b in range(256):
        if b not in printable:
            bytes_.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(bytes_, map(chr, chars)))


def vocabulary_path():
    """Where the installed ``open_clip_torch`` wheel keeps CLIP's BPE file (found via metadata)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"SD-1.5's CLIP vocabulary comes from the open_clip_torch wheel, "
                                  f"which is not installed: {INSTALL}") from None
    path = dist.locate_file(VOCAB_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: open_clip_torch is installed but its {VOCAB_FILE} is missing")
    return path


def read_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab token -> id, merges in rank order) exactly as CLIP builds them from the file."""
    lines = gzip.open(vocabulary_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + N_MERGES]]   # line 0 is a "#version" header
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{vocabulary_path()}: expected {N_MERGES} merges of two symbols each")
    symbols = list(bytes_to_unicode().values())                      # 256 byte symbols
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"CLIP's vocabulary has {VOCAB_SIZE} distinct tokens; this file gives {len(vocab)}")
    return vocab, merges


@lru_cache(maxsize=1)
def clip_tokenizer():
    """transformers' ``CLIPTokenizer`` with SD-1.5's vocabulary and settings, built in memory."""
    from transformers import CLIPTokenizer

    vocab, merges = read_vocabulary()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, unk_token=EOS,
                        pad_token=EOS, model_max_length=M)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)
    return tok


def tokenize(prompts) -> torch.Tensor:
    """Prompts -> token ids (B, 77), as SD-1.5's pipeline calls its tokenizer.

    ``[<|startoftext|>, BPE tokens…, <|endoftext|>, <|endoftext|>…]``; a prompt longer than 75
    tokens is cut to 77 ids ending in <|endoftext|>, as SD-1.5 does (it cannot see further).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"a prompt is a string; got {type(p).__name__}")
    if not prompts:
        raise ValueError("no prompts: give a string or a non-empty list of strings")
    out = clip_tokenizer()(prompts, padding="max_length", max_length=M, truncation=True, return_tensors="pt")
    return out.input_ids                                             # (B, 77)


def decode(ids) -> list[str]:
    """Token ids (B, M) -> the text they spell, special tokens dropped."""
    ids = torch.as_tensor(ids)
    return clip_tokenizer().batch_decode(ids.reshape(-1, ids.shape[-1]), skip_special_tokens=True)


# ---------------------------------------------------------------- the reference: OpenAI's own code
REFERENCE_SOURCE = "open_clip/tokenizer.py"
_REFERENCE_NAMES = ("DEFAULT_CONTEXT_LENGTH", "default_bpe", "bytes_to_unicode", "get_pairs", "basic_clean",
                    "whitespace_clean", "_clean_lower", "get_clean_fn", "SimpleTokenizer")


@lru_cache(maxsize=1)
def reference_tokenizer():
    """OpenAI CLIP's ``SimpleTokenizer`` (as open_clip ships it), executed from the wheel's source.

    Only the tokenizer's own functions and class are run, with its imports, never the ``open_clip``
    package (whose ``__init__`` imports torchvision). ``ftfy.fix_text`` is replaced by the identity:
    ftfy repairs broken Unicode (mojibake, curly quotes, ligatures) and leaves clean text unchanged,
    so the two agree on clean prompts only; SD-1.5's transformers tokenizer never ran ftfy either.
    """
    import ast
    import types

    path = importlib.metadata.distribution(DISTRIBUTION).locate_file(REFERENCE_SOURCE)
    tree = ast.parse(path.read_text(), filename=str(path))
    keep = [node for node in tree.body
            if (isinstance(node, (ast.Import, ast.ImportFrom))
                and not any(a.name == "ftfy" for a in node.names))
            or (isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in _REFERENCE_NAMES)
            or (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets]
                == ["DEFAULT_CONTEXT_LENGTH"])]
    namespace = {"__file__": str(path), "__name__": "openai_clip_reference",
                 "ftfy": types.SimpleNamespace(fix_text=lambda text: text)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["SimpleTokenizer"]()


def reference_ids(prompt: str) -> list[int]:
    """OpenAI's encoding of one prompt: [start, BPE tokens…, end], unpadded and untruncated."""
    ref = reference_tokenizer()
    return [ref.sot_token_id, *ref.encode(prompt), ref.eot_token_id]
