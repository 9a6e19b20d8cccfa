"""Plain-text corpora -> [CLS] 126 [SEP] blocks: line filters per format, block cutting, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolang.data.corpus import (
    TokenBlocks,
    keep_line,
    load_token_stream,
    make_blocks,
    tokenize_corpus,
)
from videolang.errors import ConfigError

# WikiText-103 raw layout: lines start and end with a space, headings are " = ... = ".
WIKITEXT = "".join(f"{line}\n" for line in [
    " ", " = Valkyria Chronicles III = ", " ",
    " Senjō no Valkyria 3 is a tactical role @-@ playing video game . ", " ",
    " = = Gameplay = = ", " ", " The game is short . ",
])


def _words(lines: list[str]) -> list[list[int]]:
    return [[len(w) for w in line.split()] for line in lines]  # one "token" per word


def test_line_filters():
    assert not keep_line(" = Valkyria Chronicles III = \n", "wikitext")
    assert not keep_line(" = = Gameplay = = \n", "wikitext")
    assert keep_line(" The game is short . \n", "wikitext")
    assert not keep_line("   \n", "plain")
    assert not keep_line("Anarchism\n", "wikipedia") and not keep_line("too short line\n", "wikipedia")
    assert keep_line("a line with five words\n", "wikipedia")
    with pytest.raises(ConfigError, match="unknown corpus format 'xml'"):
        keep_line("x", "xml")


def test_wikitext_stream_skips_titles(tmp_path):
    f = tmp_path / "wiki.train.raw"
    f.write_text(WIKITEXT, encoding="utf-8")
    seen: list[str] = []

    def encode(lines):
        seen.extend(lines)
        return _words(lines)

    stream = tokenize_corpus([f], encode, "wikitext")
    assert seen == ["Senjō no Valkyria 3 is a tactical role @-@ playing video game .", "The game is short ."]
    assert stream.dtype == np.int32 and len(stream) == 13 + 5
    with pytest.raises(ConfigError, match="corpus file not found"):
        tokenize_corpus([tmp_path / "nope.raw"], encode)


def test_blocks_ignore_lines_and_drop_the_tail():
    stream = np.arange(10, 10 + 25)
    starts = make_blocks(stream, 8)
    assert starts.tolist() == [0, 8, 16]  # 25 tokens: 3 full blocks, the 1-token tail dropped
    # the original's exclusion rule: a block goes when its last index is inside [start, end)
    assert make_blocks(stream, 8, [[10, 16]]).tolist() == [0, 16]
    with pytest.raises(ConfigError, match="exclude range"):
        make_blocks(stream, 8, [[5, 5]])
    blocks = TokenBlocks(stream, cls_id=101, sep_id=102, block_size=8)
    assert len(blocks) == 3
    assert torch.equal(blocks[1], torch.tensor([101, *range(18, 26), 102]))
    with pytest.raises(ConfigError, match="not one block of 126"):
        TokenBlocks(stream, 101, 102, 126)


def test_token_stream_cache(tmp_path):
    from videolang.data.text import load_tokenizer

    tok = load_tokenizer("minilm")
    f = tmp_path / "corpus.txt"
    f.write_text("a red square moves left\n\nthe blue circle grows\n", encoding="utf-8")
    cache = tmp_path / "cache"
    first = load_token_stream([f], tok, "plain", cache_dir=cache)
    assert first.tolist() == tok("a red square moves left the blue circle grows", add_special_tokens=False)["input_ids"]
    assert len(list(cache.glob("tokens-*.npy"))) == 1
    assert np.array_equal(load_token_stream([f], tok, "plain", cache_dir=cache), first)
    f.write_text("a changed corpus with more words\n", encoding="utf-8")  # new size: a new key
    assert len(load_token_stream([f], tok, "plain", cache_dir=cache)) != len(first)
    assert len(list(cache.glob("tokens-*.npy"))) == 2
