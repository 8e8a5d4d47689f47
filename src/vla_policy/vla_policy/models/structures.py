"""VLA structures: how the backbone's outputs become an action chunk (``VLAConfig.structure``).

The RoboVLMs taxonomy (Li et al. 2024, "Towards Generalist Robot Policies: What Matters in
Building Vision-Language-Action Models", arXiv 2412.14058, sec. 3 / fig. 3), one class each:

* ``one_step_continuous`` (:class:`OneStepContinuous`, the default): the backbone reads all
  ``n_images`` images + the instruction + a learned action token and returns one feature (B, D);
  the head predicts the chunk. (RoboVLMs "one-step continuous"; today's behaviour.)
* ``one_step_discrete`` (:class:`OneStepDiscrete`, RT-2 / OpenVLA): ``[images][instruction][<act>]
  [a_1 .. a_N]`` with the ``N = chunk_size * action_dim`` actions (time-major, dim-minor) written
  as vocabulary ids (:class:`~vla_policy.models.action_tokenizer.ActionTokenizer`). Training is
  teacher-forced cross-entropy over the full LM vocabulary (as RT-2 / OpenVLA) on the N action
  tokens, padded chunk rows (``action_is_pad``) excluded. Inference decodes greedily with the LM
  head restricted to the ``n_bins`` action ids (constrained decoding, so every decoded token is a
  valid bin) and returns the bin centres. ``<act>`` (``backbone.act_embedding``) starts the
  action sequence, so the first action is never predicted from an instruction pad position.
  No head (``head.name: none``).
* ``interleaved`` (:class:`Interleaved`, RoboVLMs "interleaved-continuous", GR-1 / Octo style):
  ``[instruction] + for each history step t: [images of step t][LRN]``, causal over the whole
  sequence, with the instruction as the bidirectional prefix where the architecture has one; the
  feature is the hidden state at the last ``[LRN]`` (B, D), or at every ``[LRN]`` (B, T, D)
  for a sequence head. ``[LRN]`` is ``backbone.act_embedding``.
* ``policy_head`` (:class:`PolicyHead`, RoboVLMs' best: "policy-head-continuous"): one backbone
  pass per history step (images of that step only, ``len(camera_names)`` of them, the same
  instruction) -> per-step features (B, T, D), oldest first -> a history head
  (``sequence_input = True``: ``lstm`` / ``gpt``) -> chunk. The T passes run as one batch of B*T.

Token sequences of the VLM structures are built here from the VLM backbone contract
(``encode_images``, ``embed_tokens``, ``fused_forward``, ``lm_logits``, ``act_embedding``,
``image_tokens_per_image``, ``vocab_size``). Non-VLM backbones (``film_cnn``, ``octo``) give only
``forward(images, token_ids, attention_mask, state) -> (B, D)``; they serve ``one_step_continuous``
and ``policy_head``.

Inference cost of ``one_step_discrete``: greedy decoding without a KV cache runs N full LM passes
over sequences of ``n_images * P + L + 1 .. + N`` tokens (P image tokens per image, L instruction
length), i.e. O(N * (prefix + N)^2) attention work, against one pass for the continuous
structures; ``discrete.max_action_tokens`` (default 256) bounds N. Measured for the default tiny
Idefics3 (64 px, one camera, 8 x 8 chunk = 64 tokens) on one CPU thread: about 70 ms per chunk
against 3 ms for ``one_step_continuous``. A KV cache would make each step O(prefix + N), but the
VLM contract's ``fused_forward`` does not expose one.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import registry
from .action_tokenizer import ActionTokenizer
from .config import STRUCTURES, VLAConfig

__all__ = ['Structure', 'OneStepContinuous', 'OneStepDiscrete', 'Interleaved', 'PolicyHead',
           'make_structure', 'vlm_backbones', 'sequence_heads', 'STRUCTURES', 'max_positions']

Batch = Dict[str, torch.Tensor]


def _backbone_cls(name: str):
    registry.available_backbones()  # loads the built-ins
    return registry._BACKBONES.get(name)


def _head_cls(name: str):
    registry.available_heads()
    return registry._HEADS.get(name)


def vlm_backbones() -> List[str]:
    """Registered backbone names whose class declares ``is_vlm = True`` (VLM contract)."""
    return [n for n in registry.available_backbones() if getattr(_backbone_cls(n), 'is_vlm', False)]


def sequence_heads() -> List[str]:
    """Registered head names whose class declares ``sequence_input = True`` (history heads)."""
    return [n for n in registry.available_heads() if getattr(_head_cls(n), 'sequence_input', False)]


def max_positions(backbone) -> Optional[int]:
    """Longest token sequence the backbone's LM accepts, or None when it does not say.

    ``backbone.max_position_embeddings`` if defined, else ``text_tower.config.max_position_embeddings``
    (the HF text config; RoPE models can run past it, but not at the quality they were trained at).
    """
    n = getattr(backbone, 'max_position_embeddings', None)
    if n is None:
        tower = getattr(backbone, 'text_tower', None)
        n = getattr(getattr(tower, 'config', None), 'max_position_embeddings', None)
    return int(n) if n else None


def _last_state(cfg: VLAConfig, batch: Batch) -> Optional[torch.Tensor]:
    return batch['state'][:, -1] if cfg.state_dim else None  # (B, S)


class Structure:
    """One way of turning a batch into actions. Stateless (no parameters: the state dict of a
    ``VLA`` stays ``backbone.*`` + ``head.*``); methods take the owning ``VLA``.

    ``check(cfg)`` runs before the backbone is built (registry-level checks), ``bind(vla)`` after.
    """

    name = ''
    needs_vlm = False
    head_name_none = False   # True: no registry head (actions come out of the LM head)

    @classmethod
    def check(cls, cfg: VLAConfig) -> None:
        """Registry-dependent compatibility checks; ValueError lists the valid choices."""
        if cls.head_name_none != (cfg.head.name == 'none'):
            raise ValueError(f"head.name 'none' goes with structure 'one_step_discrete' only; structure "
                             f'{cls.name!r} got head {cfg.head.name!r} (valid heads: '
                             f"{['none'] if cls.head_name_none else registry.available_heads()})")
        b_cls = _backbone_cls(cfg.backbone.name)
        if cls.needs_vlm and b_cls is not None and not getattr(b_cls, 'is_vlm', False):
            raise ValueError(f'structure {cls.name!r} builds a VLM token sequence and needs a VLM backbone '
                             f'(valid: {vlm_backbones()}); backbone {cfg.backbone.name!r} is not one. With it use '
                             f"structure 'one_step_continuous' or 'policy_head'")
        if not cls.head_name_none:
            h_cls = _head_cls(cfg.head.name)
            if h_cls is not None:
                limit = getattr(h_cls, 'max_horizon', None)
                if limit is not None and cfg.chunk.chunk_size > int(limit):
                    raise ValueError(f'chunk.chunk_size ({cfg.chunk.chunk_size}) exceeds the horizon head '
                                     f'{cfg.head.name!r} can produce ({int(limit)})')

    def bind(self, vla) -> None:
        """Checks that need the built backbone (sizes); default none."""

    def features(self, vla, batch: Batch) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, vla, batch: Batch, **head_kwargs: Any) -> torch.Tensor:
        feat, last = self.features(vla, batch)
        return vla.head(feat, last, **head_kwargs)

    def loss(self, vla, batch: Batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        feat, last = self.features(vla, batch)
        return vla.head.loss(feat, last, batch['actions'], batch.get('action_is_pad'))

    def _seq_check(self, vla, n: int, what: str) -> None:
        m = max_positions(vla.backbone)
        if m is not None and n > m:
            raise ValueError(f'structure {self.name!r}: {what} is {n} tokens, more than the LM accepts '
                             f'({m} positions); reduce chunk.chunk_size, chunk.n_obs_steps, cameras or max_tokens')


class OneStepContinuous(Structure):
    """Backbone feature (B, D) over all images -> head (RoboVLMs one-step continuous; the default)."""

    name = 'one_step_continuous'

    def features(self, vla, batch):
        state = batch.get('state') if vla.config.state_dim else None
        feat = vla.backbone(batch['images'], batch['token_ids'], batch['attention_mask'], state)  # (B, D)
        return feat, _last_state(vla.config, batch)


class PolicyHead(Structure):
    """One backbone pass per history step (B*T batch of ``len(camera_names)`` images each) -> (B, T, D)."""

    name = 'policy_head'

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        h_cls = _head_cls(cfg.head.name)
        if h_cls is not None and not getattr(h_cls, 'sequence_input', False):
            raise ValueError(f"structure 'policy_head' needs a history head with sequence_input "
                             f'(valid: {sequence_heads()}); head {cfg.head.name!r} takes one feature')

    def features(self, vla, batch):
        cfg = vla.config
        images = batch['images']  # (B, T*C, 3, S, S)
        b, t, c = images.shape[0], cfg.chunk.n_obs_steps, len(cfg.camera_names)
        imgs = images.reshape(b * t, c, *images.shape[2:])  # (B*T, C, 3, S, S): step t's cameras
        ids = batch['token_ids'].repeat_interleave(t, dim=0)  # (B*T, L)
        mask = batch['attention_mask'].repeat_interleave(t, dim=0)
        state = None
        if cfg.state_dim:
            st = batch['state']  # (B, T, S)
            state = st.reshape(b * t, 1, st.shape[-1])  # (B*T, 1, S): the step's own state
        feat = vla.backbone(imgs, ids, mask, state)  # (B*T, D)
        return feat.reshape(b, t, feat.shape[-1]), _last_state(cfg, batch)  # (B, T, D)


def _fused(bb, seq: torch.Tensor, mask: torch.Tensor, prefix_len: int, segments) -> torch.Tensor:
    """``bb.fused_forward`` with the arch's position ids for ``segments`` (``('image', n_images)`` /
    ``('text', length)``; Qwen-VL's 3-D M-RoPE needs them, 1-D archs return None = 0..N-1)."""
    rope = getattr(bb, 'rope_position_ids', None)
    pos = None
    if rope is not None:
        takes_mask = 'attention_mask' in inspect.signature(rope).parameters   # Qwen-VL: padding skipped
        pos = rope(segments, seq.shape[0], attention_mask=mask) if takes_mask else rope(segments, seq.shape[0])
    if pos is None:
        return bb.fused_forward(seq, mask, prefix_len=prefix_len)
    return bb.fused_forward(seq, mask, prefix_len=prefix_len, position_ids=pos)


def _embed_act(vla, bsz: int, n: int, dtype) -> torch.Tensor:
    return vla.backbone.act_embedding.to(dtype).expand(bsz, n, -1)  # (B, n, D)


class Interleaved(Structure):
    """``[instruction] + [images_t][LRN] per step``; feature at the last LRN (or every LRN)."""

    name = 'interleaved'
    needs_vlm = True

    def bind(self, vla):
        cfg, bb = vla.config, vla.backbone
        n = cfg.max_tokens + cfg.chunk.n_obs_steps * (len(cfg.camera_names) * bb.image_tokens_per_image + 1)
        self._seq_check(vla, n, 'the interleaved sequence (instruction + per step images + [LRN])')

    def features(self, vla, batch):
        cfg, bb = vla.config, vla.backbone
        images, mask = batch['images'], batch['attention_mask']
        b, t = images.shape[0], cfg.chunk.n_obs_steps
        txt = bb.embed_tokens(batch['token_ids'])  # (B, L, D)
        img = bb.encode_images(images).to(txt.dtype)  # (B, T*C*P, D)
        img = img.reshape(b, t, -1, img.shape[-1])  # (B, T, C*P, D), time-major as the images
        step = torch.cat([img, _embed_act(vla, b, t, txt.dtype)[:, :, None]], dim=2)  # (B, T, C*P+1, D)
        per = step.shape[2]
        seq = torch.cat([txt, step.reshape(b, t * per, -1)], dim=1)  # (B, L + T*(C*P+1), D)
        full_mask = torch.cat([mask, mask.new_ones(b, t * per)], dim=1)
        segments = [('text', txt.shape[1])] + [('image', len(cfg.camera_names)), ('text', 1)] * t
        hidden = _fused(bb, seq, full_mask, txt.shape[1], segments)  # (B, N, D)
        pos = txt.shape[1] + per * torch.arange(t, device=seq.device) + per - 1  # LRN positions
        feat = hidden[:, pos]  # (B, T, D)
        if not getattr(vla.head, 'sequence_input', False):
            feat = feat[:, -1]  # (B, D)
        return feat, _last_state(cfg, batch)


class OneStepDiscrete(Structure):
    """RT-2 / OpenVLA action tokens through the LM head (see the module docstring)."""

    name = 'one_step_discrete'
    needs_vlm = True
    head_name_none = True

    def bind(self, vla):
        cfg, bb = vla.config, vla.backbone
        self.tokenizer = ActionTokenizer(cfg.discrete.n_bins, bb.vocab_size, cfg.discrete.vocab_offset)
        self.n_tokens = cfg.chunk.chunk_size * cfg.action_dim
        n = cfg.n_images * bb.image_tokens_per_image + cfg.max_tokens + self.n_tokens
        self._seq_check(vla, n, f'images + instruction + <act> + {self.n_tokens - 1} teacher-forced action tokens')

    def _segments(self, vla, batch, n_actions: int):
        """Layout for position ids: images, then instruction + <act> + ``n_actions`` action tokens."""
        return [('image', batch['images'].shape[1]), ('text', batch['token_ids'].shape[1] + 1 + n_actions)]

    def _prefix(self, vla, batch) -> Tuple[torch.Tensor, torch.Tensor, int]:
        bb = vla.backbone
        txt = bb.embed_tokens(batch['token_ids'])  # (B, L, D)
        img = bb.encode_images(batch['images']).to(txt.dtype)  # (B, N_img*P, D)
        b = txt.shape[0]
        seq = torch.cat([img, txt, _embed_act(vla, b, 1, txt.dtype)], dim=1)  # (B, N_img*P + L + 1, D)
        m = batch['attention_mask']
        mask = torch.cat([m.new_ones(b, img.shape[1]), m, m.new_ones(b, 1)], dim=1)
        return seq, mask, img.shape[1] + txt.shape[1]  # prefix_len: images + instruction

    def features(self, vla, batch):
        raise ValueError("structure 'one_step_discrete' has no continuous feature for a head: its actions "
                         'are LM tokens (VLA.forward decodes them); RTC / feature-driven sampling needs '
                         "a continuous structure with a 'flow' head")

    def teacher_forced_logits(self, vla, batch) -> torch.Tensor:
        """LM logits (B, N, V) predicting a_1 .. a_N from ``<act>, a_1 .. a_{N-1}`` (``batch['actions']``)."""
        bb = vla.backbone
        seq, mask, plen = self._prefix(vla, batch)
        actions = batch['actions']
        b = actions.shape[0]
        target = self.tokenizer.encode(actions).reshape(b, -1)  # (B, N) vocab ids
        inp = bb.embed_tokens(target[:, :-1]).to(seq.dtype)  # (B, N-1, D): a_1 .. a_{N-1}
        seq = torch.cat([seq, inp], dim=1)
        mask = torch.cat([mask, mask.new_ones(b, inp.shape[1])], dim=1)
        hidden = _fused(bb, seq, mask, plen, self._segments(vla, batch, inp.shape[1]))  # (B, prefix + N - 1, D)
        return bb.lm_logits(hidden[:, -self.n_tokens:]).float()  # (B, N, V)

    def loss(self, vla, batch):
        """Teacher-forced CE over the N = H*A action tokens (full LM vocabulary, as RT-2 / OpenVLA),
        padded chunk rows excluded; returns (loss, {'ce', 'token_acc'})."""
        logits = self.teacher_forced_logits(vla, batch)  # (B, N, V)
        actions = batch['actions']
        b = actions.shape[0]
        labels = self.tokenizer.encode(actions).reshape(b, -1)  # (B, N)
        pad = batch.get('action_is_pad')
        if pad is not None:
            keep = (~pad)[:, :, None].expand(-1, -1, actions.shape[-1]).reshape(b, -1)  # (B, N)
            labels[~keep] = -100
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        valid = labels != -100
        acc = ((logits.argmax(-1) == labels) & valid).sum().float() / valid.sum().clamp_min(1)
        return loss, {'ce': float(loss.detach()), 'token_acc': float(acc)}

    def decode_tokens(self, vla, batch) -> torch.Tensor:
        """Greedy decoding: (B, N) vocabulary ids, each in the action-bin id range.

        N LM passes (no KV cache): pass k re-reads the prefix and the k tokens decoded so far.
        """
        bb = vla.backbone
        seq, mask, plen = self._prefix(vla, batch)
        lo, hi = self.tokenizer.offset, self.tokenizer.offset + self.tokenizer.n_bins
        out = []
        for k in range(self.n_tokens):
            hidden = _fused(bb, seq, mask, plen, self._segments(vla, batch, k))  # (B, n, D)
            logits = bb.lm_logits(hidden[:, -1:])[:, 0, lo:hi]  # (B, n_bins): constrained to action ids
            tok = logits.argmax(-1) + lo  # (B,)
            out.append(tok)
            seq = torch.cat([seq, bb.embed_tokens(tok[:, None]).to(seq.dtype)], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        return torch.stack(out, dim=1)  # (B, N)

    def forward(self, vla, batch, **head_kwargs):
        """Greedy-decoded chunk (B, H, A) of bin centres in [-1, 1]. No kwargs (decoding is deterministic)."""
        if head_kwargs:
            raise ValueError(f"structure 'one_step_discrete' decodes greedily and takes no sampling "
                             f'arguments, got {sorted(head_kwargs)}')
        ids = self.decode_tokens(vla, batch)
        cfg = vla.config
        return self.tokenizer.decode(ids).reshape(-1, cfg.chunk.chunk_size, cfg.action_dim)


_STRUCTURES = {c.name: c for c in (OneStepContinuous, OneStepDiscrete, Interleaved, PolicyHead)}
assert tuple(_STRUCTURES) == tuple(sorted(_STRUCTURES, key=STRUCTURES.index))


def make_structure(cfg: VLAConfig) -> Structure:
    """The structure object for ``cfg.structure`` after its registry-level checks.

    Raises:
        ValueError: unknown structure (lists the valid ones), or an incompatible backbone / head
            (lists the valid choices).
    """
    if cfg.structure not in _STRUCTURES:
        raise ValueError(f'unknown structure {cfg.structure!r}; valid: {list(STRUCTURES)}')
    cls = _STRUCTURES[cfg.structure]
    cls.check(cfg)
    return cls()
