"""``ActionTokenizer``: continuous normalized actions <-> bins <-> language-model vocabulary ids.

RT-2 (Brohan et al. 2023, "RT-2: Vision-Language-Action Models Transfer Web Knowledge to Robotic
Control", arXiv 2307.15818, sec. 3.2) discretizes each action dimension into 256 uniform bins and
writes the bin ids as language tokens, overwriting the 256 least used tokens of the vocabulary;
OpenVLA (Kim et al. 2024, arXiv 2406.09246, ``prismatic/vla/action_tokenizer.py`` ``ActionTokenizer``)
does the same over the 1st..99th-quantile range and maps bins onto the *last* 256 ids.

Here actions arrive already quantile-normalized (:mod:`vla_policy.normalization`: q01 -> -1,
q99 -> +1, clipped), so the bins are uniform over [-1, 1]:

* bin width ``w = 2 / n_bins``; ``bin(x) = clip(floor((x + 1) / w), 0, n_bins - 1)``
  (x = +1 falls in the last bin; values outside [-1, 1] clip to the end bins);
* decoded value = bin centre ``-1 + (bin + 0.5) w``, so ``|decode(encode(x)) - x| <= w / 2`` on [-1, 1];
* vocabulary id = ``vocab_offset + bin`` (ascending). ``vocab_offset = None`` means
  ``vocab_size - n_bins``: the last ``n_bins`` ids.

Differences from OpenVLA, on purpose: OpenVLA uses ``np.digitize`` with ``n_bins`` *edges*
(``n_bins - 1`` usable centres) and maps bin ``b`` to id ``vocab_size - b`` (descending); we use
``n_bins`` bins with ``n_bins`` centres and ascending ids, which makes the id range one slice
``[offset, offset + n_bins)`` of the LM logits.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ['ActionTokenizer']


class ActionTokenizer:
    """Uniform binning of [-1, 1] onto ``n_bins`` consecutive LM vocabulary ids.

    Args:
        n_bins: number of bins (>= 2; RT-2 / OpenVLA: 256).
        vocab_size: rows of the LM head (logit width).
        vocab_offset: id of bin 0; ``None`` = ``vocab_size - n_bins`` (the last ``n_bins`` ids).

    Raises:
        ValueError: ``n_bins < 2``; the vocabulary has fewer than ``n_bins`` ids; ``vocab_offset +
            n_bins`` exceeds ``vocab_size`` (names the valid offsets).
    """

    def __init__(self, n_bins: int, vocab_size: int, vocab_offset: Optional[int] = None) -> None:
        n_bins, vocab_size = int(n_bins), int(vocab_size)
        if n_bins < 2:
            raise ValueError(f'ActionTokenizer needs n_bins >= 2, got {n_bins}')
        if vocab_size < n_bins:
            raise ValueError(f'the LM vocabulary has {vocab_size} ids, too small for discrete.n_bins={n_bins} '
                             f'action tokens; use n_bins <= {vocab_size} or a larger vocabulary')
        offset = vocab_size - n_bins if vocab_offset is None else int(vocab_offset)
        if not 0 <= offset <= vocab_size - n_bins:
            raise ValueError(f'discrete.vocab_offset={offset} + n_bins={n_bins} exceeds the LM vocabulary '
                             f'({vocab_size} ids); valid offsets: 0..{vocab_size - n_bins}')
        self.n_bins, self.vocab_size, self.offset = n_bins, vocab_size, offset
        self.bin_width = 2.0 / n_bins

    @property
    def id_range(self) -> range:
        """The vocabulary ids of bins 0..n_bins-1."""
        return range(self.offset, self.offset + self.n_bins)

    def to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (...) in [-1, 1] -> long bins (...) in [0, n_bins); outside values clip."""
        b = torch.floor((actions.float() + 1.0) / self.bin_width).long()
        return b.clamp(0, self.n_bins - 1)

    def bin_centers(self, bins: torch.Tensor) -> torch.Tensor:
        """Long bins (...) -> float32 bin centres (...) in (-1, 1). Raises ValueError on an invalid bin."""
        if bins.numel() and (int(bins.min()) < 0 or int(bins.max()) >= self.n_bins):
            raise ValueError(f'bins must lie in [0, {self.n_bins}), got range [{int(bins.min())}, {int(bins.max())}]')
        return -1.0 + (bins.float() + 0.5) * self.bin_width

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (...) -> vocabulary ids (...) in ``id_range``."""
        return self.to_bins(actions) + self.offset

    def decode(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids (...) -> bin centres (...). Raises ValueError on an id outside ``id_range``."""
        bins = token_ids.long() - self.offset
        if bins.numel() and (int(bins.min()) < 0 or int(bins.max()) >= self.n_bins):
            raise ValueError(f'action token ids must lie in [{self.offset}, {self.offset + self.n_bins}), got '
                             f'[{int(token_ids.min())}, {int(token_ids.max())}]')
        return self.bin_centers(bins)
