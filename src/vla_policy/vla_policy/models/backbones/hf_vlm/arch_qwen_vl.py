"""Qwen-VL adapters: ``hf_arch`` ``qwen2_vl`` (Qwen2-VL), ``qwen2_5_vl`` (Qwen2.5-VL), ``qwen3_vl`` (Qwen3-VL).

Sequence (one-step continuous): ``[N x P image tokens] [instruction] [<act>]`` through the Qwen decoder
(causal; ``prefix_len`` is ignored), feature = hidden state at ``<act>``.

* Vision input: the Qwen vision towers take *flattened patches* plus ``grid_thw``, not an image batch.
  :func:`qwen_patchify` reproduces ``Qwen2VLImageProcessor``'s flattening in torch (the still image is
  repeated ``temporal_patch_size`` times, patches grouped by ``spatial_merge_size`` x ``spatial_merge_size``
  blocks), so no HF processor is needed; an S px image has ``grid_thw = (1, S/patch, S/patch)`` and gives
  P = (S / patch)^2 / merge^2 tokens after the patch merger. S must be a multiple of patch x merge (the
  processor's ``smart_resize`` would resize to one; here ``backbone.image_size`` is checked instead).
* Positions: multimodal rotary embeddings (M-RoPE, Qwen2-VL paper Sec. 2.1). :meth:`rope_position_ids`
  builds the ``(3, B, N)`` temporal / height / width ids by the rule of the HF ``get_rope_index`` (image
  tokens from the HF model's ``get_vision_position_ids``: ``t = offset``, ``h = offset + row``,
  ``w = offset + col``; text continues at ``max + 1``; padded positions skipped via the attention
  mask), so a one-image sequence gets exactly the positions the HF processor + model give it (tested).
  Consecutive images are separate blocks (HF would have ``<vision_start>/<vision_end>`` tokens between
  them; the adapter adds no separator tokens, so the tiny vocabulary stays the tokenizer's).
  :meth:`forward` uses them; a structure that calls :meth:`fused_forward` should pass
  ``position_ids=rope_position_ids(segments, B, mask)`` for its layout, else it gets 1-D positions on
  all three axes (the text-only M-RoPE case).
* Qwen3-VL "DeepStack" (vision features of intermediate ViT layers added to the first LM layers) is
  applied by :meth:`forward` (``visual_pos_masks`` / ``deepstack_visual_embeds`` of the HF text model);
  :meth:`encode_images` / :meth:`fused_forward` (used by other structures) return / take the final
  merged features only. The tiny config has one DeepStack level (after vision layer 0).
* Pixels: Qwen2-VL / Qwen2.5-VL use the OpenAI-CLIP mean / std, Qwen3-VL 0.5 / 0.5 (their image
  processors' defaults). ``image_processor`` (pretrained dirs only) is the slow ``Qwen2VLImageProcessor``
  (``use_fast=False``; the fast one needs torchvision).
* Tiny configs: ``scale_factor`` is the spatial merge size; M-RoPE sections split head_dim / 2 as
  Qwen2-VL's (16, 24, 24) of 64 does (1/4 temporal, 3/8 height, 3/8 width).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .base import VLMBackbone, register_hf_arch

__all__ = ['Qwen2VLBackbone', 'Qwen2_5_VLBackbone', 'Qwen3VLBackbone', 'qwen_patchify']

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OPENAI_CLIP_MEAN (Qwen2VLImageProcessor default)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def qwen_patchify(pix: torch.Tensor, patch: int, merge: int, temporal: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (M, C, S, S) -> (flattened patches (M * g * g, C * temporal * patch^2), grid_thw (M, 3)).

    Same layout as ``Qwen2VLImageProcessor._preprocess`` for one still image (g = S / patch).

    Raises:
        ValueError: S is not a multiple of ``patch * merge``.
    """
    m, c, h, w = pix.shape
    if h % (patch * merge) or w % (patch * merge):
        raise ValueError(f'Qwen-VL images must be a multiple of patch_size x spatial_merge_size = '
                         f'{patch * merge} px, got {h} x {w}')
    gh, gw = h // patch, w // patch
    x = pix.unsqueeze(1).expand(m, temporal, c, h, w)  # still image repeated over the temporal patch
    x = x.reshape(m, 1, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # (M, t, gh/m, gw/m, m, m, C, temporal, p, p)
    flat = x.reshape(m * gh * gw, c * temporal * patch * patch)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=pix.device).expand(m, 3)
    return flat, grid


def _mrope_section(head_dim: int) -> List[int]:
    half = head_dim // 2
    hw = (3 * half) // 8
    return [half - 2 * hw, hw, hw]


class _QwenVLBase(VLMBackbone):
    """Shared Qwen-VL logic: patchify + ``grid_thw``, patch merger output, M-RoPE positions."""

    pixel_mean = _CLIP_MEAN
    pixel_std = _CLIP_STD

    @classmethod
    def _special_tokens(cls, vocab_size: int) -> dict:
        """The four vision special ids just past the tokenizer's vocabulary (image, video, vision start / end),
        untied LM head: the tiny configs' top-level keys."""
        return dict(image_token_id=vocab_size, video_token_id=vocab_size + 1, vision_start_token_id=vocab_size + 2,
                    vision_end_token_id=vocab_size + 3, tie_word_embeddings=False)

    @classmethod
    def _text_config(cls, b, vocab_size: int, model_type: str, **extra) -> dict:
        head_dim = b.text_hidden // b.num_heads
        return dict(model_type=model_type, vocab_size=vocab_size, hidden_size=b.text_hidden,
                    intermediate_size=2 * b.text_hidden, num_hidden_layers=b.text_layers,
                    num_attention_heads=b.num_heads, num_key_value_heads=b.num_heads,
                    max_position_embeddings=1024, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                    rope_parameters=dict(rope_type='default', rope_theta=10000.0,
                                         mrope_section=_mrope_section(head_dim), **extra.pop('rope_extra', {})),
                    **extra)

    def _vc(self):
        return self.model.config.vision_config

    def check_image_size(self, size: int) -> None:
        vc = self._vc()
        step = vc.patch_size * vc.spatial_merge_size
        if size % step:
            raise ValueError(f'hf_vlm {self.arch}: backbone.image_size ({size}) must be a multiple of '
                             f'patch_size x spatial_merge_size = {step}')

    def compute_image_tokens(self, size: int) -> int:
        vc = self._vc()
        return (size // vc.patch_size) ** 2 // vc.spatial_merge_size ** 2

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.visual

    @property
    def projector(self) -> nn.Module:
        return self.model.visual.merger

    @property
    def text_tower(self) -> nn.Module:
        return self.model.language_model

    def _visual(self, pixel_values: torch.Tensor):
        vc = self._vc()
        flat, grid = qwen_patchify(pixel_values, vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size)
        return self.model.visual(flat, grid_thw=grid)

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self._visual(pixel_values).pooler_output  # (M * P, D), image-major
        return out.reshape(pixel_values.shape[0], self.image_tokens_per_image, out.shape[-1])

    def rope_position_ids(self, segments: Sequence[Tuple[str, int]], batch_size: int,
                          attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """M-RoPE ids (3, B, N) for ``segments`` (``('image', n)`` / ``('text', length)`` in order).

        Same rule as the HF ``get_rope_index``: text tokens get ``cur, cur + 1, ...`` on all three axes;
        an image gets the HF model's ``get_vision_position_ids(cur, grid_thw)`` (t = cur, h = cur + row,
        w = cur + col over the merged grid) and advances ``cur`` by ``max(h, w)``. Each image is its own
        block (HF separates images with ``<vision_start>/<vision_end>`` text tokens; here consecutive
        images follow each other directly). Positions with ``attention_mask`` 0 are skipped (id 0), as in HF.

        Raises:
            ValueError: unknown segment kind; an image token is masked out.
        """
        vc = self._vc()
        g = self.image_size // vc.patch_size
        dev = self.act_embedding.device
        grid = torch.tensor([1, g, g], dtype=torch.long)
        img_pos = self.model.get_vision_position_ids(0, grid, 1, vc.spatial_merge_size, device=dev)  # (3, P)
        step = g // vc.spatial_merge_size
        block = []   # per token: -1 text, k >= 0 image index
        k = 0
        for kind, n in segments:
            if kind == 'image':
                for _ in range(n):
                    block += [k] * self.image_tokens_per_image
                    k += 1
            elif kind == 'text':
                block += [-1] * n
            else:
                raise ValueError(f"rope_position_ids: segment kind must be 'image' or 'text', got {kind!r}")
        block_t = torch.tensor(block, device=dev)
        pos = torch.zeros(3, batch_size, len(block), dtype=torch.long, device=dev)
        for bi in range(batch_size):
            keep = torch.ones(len(block), dtype=torch.bool, device=dev) if attention_mask is None \
                else attention_mask[bi].bool()
            if bool((block_t[~keep] >= 0).any()):
                raise ValueError('rope_position_ids: image tokens must not be masked out')
            kept = block_t[keep].tolist()
            out, cur, i = [], 0, 0
            while i < len(kept):
                if kept[i] < 0:
                    j = i
                    while j < len(kept) and kept[j] < 0:
                        j += 1
                    out.append(torch.arange(cur, cur + j - i, device=dev).expand(3, -1))
                    cur += j - i
                else:
                    j = i + self.image_tokens_per_image
                    out.append(img_pos + cur)
                    cur += step
                i = j
            if out:
                pos[:, bi, keep] = torch.cat(out, dim=1)
        return pos

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor,
                state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """See :meth:`VLMBackbone.forward`; adds M-RoPE positions (and Qwen3-VL DeepStack features)."""
        bsz, n = images.shape[:2]
        if n != self.n_images:
            raise ValueError(f'hf_vlm expects {self.n_images} images per sample, got {n}')
        dtype = self.word_embedding.weight.dtype
        pix = ((images.reshape(bsz * n, *images.shape[2:]) - self._pix_mean) / self._pix_std).to(dtype)
        vis = self._visual(pix)
        scale = self.image_scale.to(dtype)
        img = (vis.pooler_output * scale).reshape(bsz, -1, vis.pooler_output.shape[-1])  # (B, N*P, D)
        txt = self.embed_tokens(token_ids)
        act = self.act_embedding.to(txt.dtype).expand(bsz, 1, -1)
        embeds = torch.cat([img, txt, act], dim=1)
        mask = torch.cat([attention_mask.new_ones(bsz, img.shape[1]), attention_mask,
                          attention_mask.new_ones(bsz, 1)], dim=1)
        pos = self.rope_position_ids([('image', n), ('text', token_ids.shape[1] + 1)], bsz, mask)
        extra = {}
        deep = getattr(vis, 'deepstack_features', None)
        if deep:
            vmask = torch.zeros_like(mask, dtype=torch.bool)
            vmask[:, :img.shape[1]] = True
            extra = dict(visual_pos_masks=vmask, deepstack_visual_embeds=[d * scale for d in deep])
        out = self.text_tower(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False, **extra)
        return out.last_hidden_state[:, -1]


@register_hf_arch('qwen2_vl')
class Qwen2VLBackbone(_QwenVLBase):
    """Qwen2-VL: ViT with 2-D RoPE + patch merger (MLP over merge x merge patches) + Qwen2 decoder, M-RoPE."""

    model_types = ('qwen2_vl',)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import Qwen2VLConfig
        vision = dict(depth=b.vision_layers, embed_dim=b.vision_hidden, hidden_size=b.text_hidden, mlp_ratio=2,
                      num_heads=b.num_heads, patch_size=b.patch_size, spatial_merge_size=b.scale_factor,
                      temporal_patch_size=2)
        return Qwen2VLConfig(vision_config=vision, text_config=cls._text_config(b, vocab_size, 'qwen2_vl_text'),
                             **cls._special_tokens(vocab_size))


@register_hf_arch('qwen2_5_vl')
class Qwen2_5_VLBackbone(_QwenVLBase):
    """Qwen2.5-VL: Qwen2-VL with a windowed-attention ViT (SwiGLU, RMSNorm) and absolute-time M-RoPE."""

    model_types = ('qwen2_5_vl',)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import Qwen2_5_VLConfig
        vision = dict(depth=b.vision_layers, hidden_size=b.vision_hidden, intermediate_size=2 * b.vision_hidden,
                      out_hidden_size=b.text_hidden, num_heads=b.num_heads, patch_size=b.patch_size,
                      spatial_merge_size=b.scale_factor, temporal_patch_size=2, window_size=b.image_size,
                      fullatt_block_indexes=[b.vision_layers - 1])
        return Qwen2_5_VLConfig(vision_config=vision,
                                text_config=cls._text_config(b, vocab_size, 'qwen2_5_vl_text'),
                                **cls._special_tokens(vocab_size))


@register_hf_arch('qwen3_vl')
class Qwen3VLBackbone(_QwenVLBase):
    """Qwen3-VL: ViT with learned (interpolated) positions + DeepStack + Qwen3 decoder, interleaved M-RoPE."""

    model_types = ('qwen3_vl',)
    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import Qwen3VLConfig
        g = b.image_size // b.patch_size
        vision = dict(depth=b.vision_layers, hidden_size=b.vision_hidden, intermediate_size=2 * b.vision_hidden,
                      out_hidden_size=b.text_hidden, num_heads=b.num_heads, patch_size=b.patch_size,
                      spatial_merge_size=b.scale_factor, temporal_patch_size=2, num_position_embeddings=g * g,
                      deepstack_visual_indexes=[0])
        text = cls._text_config(b, vocab_size, 'qwen3_vl_text', head_dim=b.text_hidden // b.num_heads,
                                rope_extra=dict(mrope_interleaved=True))
        return Qwen3VLConfig(vision_config=vision, text_config=text, **cls._special_tokens(vocab_size))
