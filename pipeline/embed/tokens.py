"""Count CLIP BPE tokens without torch, so prompt settings are checked while a config loads.

In: a text. Out: how many tokens CLIP's BPE tokenizer (open_clip's ``SimpleTokenizer``, the
OpenAI vocabulary) makes of it, start and end markers included. Same cleaning (ftfy, HTML
unescaping, whitespace, lower case), same word pattern and same merges as open_clip, read
from the vocabulary file open_clip ships; open_clip itself (and torch) is never imported,
only located. ``tests/test_light_imports.py`` checks the count against open_clip's.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os

import ftfy
import regex

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary uses the file's first merges only
SPECIAL = ("<start_of_text>", "<end_of_text>")  # one token each, also inside a text
MARKERS = 2  # every encoded text starts and ends with a marker token


def count_tokens(text: str) -> int:
    """Tokens of ``text`` including the start and end markers."""
    words = regex.findall(_word_pattern(), _clean(text))
    return MARKERS + sum(_word_tokens(word) for word in words)


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


@functools.lru_cache(maxsize=1)
def _word_pattern() -> regex.Pattern:
    words = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
    return regex.compile("|".join(SPECIAL) + "|" + words, regex.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _byte_chars() -> dict[int, str]:
    """CLIP's reversible byte -> character map (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = dict(zip(printable, map(chr, printable)))
    others = [b for b in range(256) if b not in chars]
    chars.update((b, chr(256 + i)) for i, b in enumerate(others))
    return chars


@functools.lru_cache(maxsize=1)
def _merge_ranks() -> dict[tuple[str, str], int]:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed: its BPE vocabulary "
                                  f"({VOCAB_FILE}) is needed to count prompt tokens")
    path = os.path.join(list(spec.submodule_search_locations)[0], VOCAB_FILE)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:N_MERGES + 1]  # line 0 is a version header
    return {tuple(line.split()): rank for rank, line in enumerate(lines)}


@functools.lru_cache(maxsize=65536)
def _word_tokens(word: str) -> int:
    """BPE pieces of one pattern match: repeatedly merge the adjacent pair of best rank."""
    if word in SPECIAL:
        return 1
    chars = _byte_chars()
    symbols = [chars[b] for b in word.encode("utf-8")]
    symbols[-1] += "</w>"
    ranks = _merge_ranks()
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return len(symbols)
