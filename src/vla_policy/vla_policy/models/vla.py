"""``VLA``: backbone + structure + action head, operating on normalized tensors (normalization lives outside).

Batch keys (all torch tensors):
    images (B, T_img, 3, S, S) float in [0, 1], T_img = n_obs_steps * cameras (time-major);
    token_ids (B, L) long; attention_mask (B, L) long/bool; state (B, T_obs, S) normalized;
    actions (B, H, A) normalized; action_is_pad (B, H) bool.

``cfg.structure`` picks how backbone outputs become actions (:mod:`vla_policy.models.structures`,
the RoboVLMs taxonomy). The state dict is ``backbone.*`` + ``head.*`` for every structure
(``one_step_discrete`` has no head), so checkpoints written before structures existed load unchanged.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .config import VLAConfig
from .registry import make_backbone, make_head
from .structures import make_structure

__all__ = ['VLA']


class VLA(nn.Module):
    """Backbone (``cfg.backbone.name``) + structure (``cfg.structure``) + head (``cfg.head.name``).

    A tiny from-scratch LM (``backbone.pretrained`` and ``backbone.hf_config`` unset) under
    ``one_step_discrete`` is built with ``discrete.n_bins`` vocabulary rows after the tokenizer's
    ``backbone.vocab_size`` ids, so the action bins (the last ``n_bins`` ids) never share an id
    with an instruction word; ``cfg.backbone.vocab_size`` itself stays the tokenizer's.

    Raises:
        KeyError: unknown backbone or head name (lists the registered ones).
        ValueError: structure incompatible with the backbone or head (lists the valid choices),
            LM vocabulary too small for ``discrete.n_bins``, or a token sequence / chunk longer than
            the backbone or head supports.
    """

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.config = cfg
        structure = make_structure(cfg)
        b = cfg.backbone
        if cfg.structure == 'one_step_discrete' and b.pretrained is None and b.hf_config is None and b.vocab_size > 0:
            bcfg = VLAConfig.from_dict(copy.deepcopy(cfg.to_dict()))
            bcfg.backbone.vocab_size = b.vocab_size + cfg.discrete.n_bins
            self.backbone = make_backbone(bcfg)
            if bcfg.backbone.hf_config is not None:   # the backbone recorded its HF config: keep it
                b.hf_config = bcfg.backbone.hf_config
        else:
            self.backbone = make_backbone(cfg)
        self.head = None if structure.head_name_none else make_head(cfg, self.backbone.out_dim)
        structure.bind(self)
        self.structure = structure

    @property
    def supports_guidance(self) -> bool:
        """True when RTC guided sampling applies: a head exposing a velocity field (``flow``) fed by
        :meth:`features`. False for ``one_step_discrete`` (no head) and non-sampling heads."""
        return self.head is not None and bool(getattr(self.head, 'supports_guidance', False))

    def _check(self, batch: Dict[str, torch.Tensor], need_actions: bool) -> None:
        keys = ['images', 'token_ids', 'attention_mask'] + (['actions'] if need_actions else [])
        if self.config.state_dim:
            keys.append('state')
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f'VLA batch lacks {missing} (has {sorted(batch)})')
        im = batch['images']
        s = self.config.backbone.image_size
        if im.ndim != 5 or im.shape[2:] != (3, s, s):
            raise ValueError(f'VLA batch images must be (B, T, 3, {s}, {s}), got {tuple(im.shape)}')
        if self.config.structure != 'one_step_continuous' and im.shape[1] != self.config.n_images:
            raise ValueError(f'VLA batch images must hold n_obs_steps x cameras = {self.config.n_images} '
                             f'images per sample, got {im.shape[1]}')
        if self.config.state_dim:
            st = batch['state']
            if st.ndim != 3 or st.shape[-1] != self.config.state_dim:
                raise ValueError(f'VLA batch state must be (B, T, {self.config.state_dim}), got {tuple(st.shape)}')
            if self.config.structure == 'policy_head' and st.shape[1] != self.config.chunk.n_obs_steps:
                raise ValueError(f'VLA batch state must hold n_obs_steps = {self.config.chunk.n_obs_steps} '
                                 f'steps for structure policy_head, got {st.shape[1]}')
        if need_actions:
            a = batch['actions']
            if a.shape[1:] != (self.config.chunk.chunk_size, self.config.action_dim):
                raise ValueError(f'VLA batch actions must be (B, {self.config.chunk.chunk_size}, '
                                 f'{self.config.action_dim}), got {tuple(a.shape)}')

    def features(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(feature, newest normalized state (B, S) or None)``: the head's inputs.

        feature is (B, D), or (B, T, D) (per history step, oldest first) for ``policy_head`` and for
        ``interleaved`` with a sequence head. For callers that drive the head themselves (RTC guided
        sampling, :mod:`vla_policy.rtc`). Raises KeyError/ValueError on a malformed batch, and
        ValueError for ``one_step_discrete`` (no continuous feature).
        """
        self._check(batch, need_actions=False)
        return self.structure.features(self, batch)

    def forward(self, batch: Dict[str, torch.Tensor], **head_kwargs: Any) -> torch.Tensor:
        """Predicted normalized action chunk (B, H, A). Raises KeyError/ValueError on a malformed batch.

        ``head_kwargs`` go to the head's forward: a sampling head (``flow``) takes ``noise``,
        ``generator`` and ``num_steps``. ``one_step_discrete`` decodes greedily (bin centres) and
        takes none.
        """
        self._check(batch, need_actions=False)
        return self.structure.forward(self, batch, **head_kwargs)

    def loss(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Training loss (scalar) and a dict of logged values."""
        self._check(batch, need_actions=True)
        return self.structure.loss(self, batch)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
