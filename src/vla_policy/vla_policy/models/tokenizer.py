"""Instruction tokenizers that turn a language instruction into ``token_ids (L,)`` + ``attention_mask (L,)``.

* :class:`WordTokenizer`: deterministic word-level tokenizer that needs no hub download: lower-case,
  split on non-alphanumerics, vocabulary built from the training instructions plus reserved ids
  ``<pad>=0``, ``<unk>=1``, ``<act>=2``. Saved with the checkpoint as ``tokenizer.json``.
* :class:`HFTokenizer`: wraps ``transformers.AutoTokenizer`` loaded from the same path as a
  pretrained VLM (``BackboneConfig.pretrained``); saved in ``hf_tokenizer/`` next to ``tokenizer.json``.

Both right-pad / truncate to a fixed length ``max_len`` so batches are rectangular.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np

__all__ = ['WordTokenizer', 'HFTokenizer', 'load_tokenizer', 'Tokenizer']

PAD, UNK, ACT = '<pad>', '<unk>', '<act>'
_SPLIT = re.compile(r'[^0-9a-z]+')


def _atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + path.name + '.', dir=str(path.parent))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class WordTokenizer:
    """Word-level tokenizer with a fixed vocabulary.

    Args:
        vocab: token strings; ids are list positions. Must start with ``<pad>, <unk>, <act>``.
        max_len: fixed output length ``L`` (tokens beyond are truncated, shorter is right-padded).

    Raises:
        ValueError: reserved tokens missing/misplaced, duplicate tokens, or ``max_len < 1``.
    """

    kind = 'word'

    def __init__(self, vocab: Sequence[str], max_len: int = 16) -> None:
        vocab = list(vocab)
        if vocab[:3] != [PAD, UNK, ACT]:
            raise ValueError(f'WordTokenizer vocab must start with {[PAD, UNK, ACT]}, got {vocab[:3]}')
        if len(set(vocab)) != len(vocab):
            raise ValueError('WordTokenizer vocab has duplicate tokens')
        if max_len < 1:
            raise ValueError(f'WordTokenizer max_len must be >= 1, got {max_len}')
        self.vocab: List[str] = vocab
        self.index: Dict[str, int] = {w: i for i, w in enumerate(vocab)}
        self.max_len = int(max_len)

    pad_id, unk_id, act_id = 0, 1, 2

    @staticmethod
    def split(text: str) -> List[str]:
        """Lower-case ``text`` and split on runs of non-alphanumerics (empty pieces dropped)."""
        return [w for w in _SPLIT.split(str(text).lower()) if w]

    @classmethod
    def build(cls, instructions: Iterable[str], max_len: int = 16) -> 'WordTokenizer':
        """Vocabulary = reserved ids + the sorted set of words in ``instructions`` (deterministic)."""
        words = sorted({w for s in instructions for w in cls.split(s)})
        return cls([PAD, UNK, ACT] + [w for w in words if w not in (PAD, UNK, ACT)], max_len)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> Tuple[np.ndarray, np.ndarray]:
        """``(token_ids int64 (L,), attention_mask int64 (L,))``; unknown words map to ``<unk>``."""
        ids = [self.index.get(w, self.unk_id) for w in self.split(text)][: self.max_len]
        out = np.zeros(self.max_len, dtype=np.int64)
        mask = np.zeros(self.max_len, dtype=np.int64)
        out[: len(ids)] = ids
        mask[: len(ids)] = 1
        return out, mask

    def encode_batch(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """``(token_ids (N, L), attention_mask (N, L))`` int64."""
        pairs = [self.encode(t) for t in texts]
        return (np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, self.max_len), np.int64),
                np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, self.max_len), np.int64))

    def to_dict(self) -> dict:
        return {'type': self.kind, 'vocab': self.vocab, 'max_len': self.max_len}

    def save(self, directory: Union[str, Path]) -> None:
        """Write ``directory/tokenizer.json`` atomically."""
        _atomic_write_text(Path(directory) / 'tokenizer.json', json.dumps(self.to_dict(), indent=1))


class HFTokenizer:
    """``transformers.AutoTokenizer`` adapter with the :class:`WordTokenizer` interface.

    Args:
        name_or_path: hub id or local directory holding the tokenizer of the pretrained VLM.
        max_len: fixed output length ``L``.
    """

    kind = 'hf'

    def __init__(self, name_or_path: str, max_len: int = 32) -> None:
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(name_or_path)
        self.max_len = int(max_len)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode_batch(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        enc = self.tok(list(texts), padding='max_length', truncation=True, max_length=self.max_len,
                       add_special_tokens=False, return_tensors='np')
        return enc['input_ids'].astype(np.int64), enc['attention_mask'].astype(np.int64)

    def encode(self, text: str) -> Tuple[np.ndarray, np.ndarray]:
        ids, mask = self.encode_batch([text])
        return ids[0], mask[0]

    def save(self, directory: Union[str, Path]) -> None:
        directory = Path(directory)
        self.tok.save_pretrained(str(directory / 'hf_tokenizer'))
        _atomic_write_text(directory / 'tokenizer.json', json.dumps(
            {'type': self.kind, 'subdir': 'hf_tokenizer', 'max_len': self.max_len}, indent=1))


Tokenizer = Union[WordTokenizer, HFTokenizer]


def load_tokenizer(directory: Union[str, Path]) -> Tokenizer:
    """Load the tokenizer saved by ``save(directory)``.

    Raises:
        FileNotFoundError: ``tokenizer.json`` missing (path named).
        ValueError: malformed file or unknown ``type``.
    """
    path = Path(directory) / 'tokenizer.json'
    if not path.is_file():
        raise FileNotFoundError(f'tokenizer file missing: {path}')
    try:
        d = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e})') from None
    kind = d.get('type')
    if kind == 'word':
        for k in ('vocab', 'max_len'):
            if k not in d:
                raise ValueError(f'{path}: missing field {k!r}')
        return WordTokenizer(d['vocab'], d['max_len'])
    if kind == 'hf':
        return HFTokenizer(str(Path(directory) / d.get('subdir', 'hf_tokenizer')), d.get('max_len', 32))
    raise ValueError(f"{path}: unknown tokenizer type {kind!r} (expected 'word' or 'hf')")
