"""LLaVA family adapters: ``hf_arch`` ``llava`` (1.5), ``llava_next`` (1.6 / NeXT), ``llava_onevision``.

All three are a ViT (CLIP, or SigLIP for OneVision) + a 2-layer GELU MLP projector + a causal decoder LM
(HF ``Llava*ForConditionalGeneration``: ``model.vision_tower``, ``model.multi_modal_projector``,
``model.language_model``, ``lm_head``). Image features are taken from the ViT hidden state
``vision_feature_layer`` (LLaVA-1.5/NeXT: -2, OneVision: -1) and, with ``vision_feature_select_strategy
'default'``, without the CLS token, exactly as ``Llava*Model.get_image_features``. With ``h = w = S / patch``:

* ``llava`` (Liu et al. 2023, "Improved Baselines with Visual Instruction Tuning", arXiv 2310.03744):
  ``P = h*w`` (``+ 1`` with strategy ``'full'``).
* ``llava_next`` (Liu et al. 2024, LLaVA-NeXT "AnyRes"): the image is used at one resolution only, i.e.
  AnyRes with ``image_grid_pinpoints == [[S, S]]`` (the tiny config sets exactly that; for a pretrained
  model the same single-tile layout is built here whatever its pinpoints): a base view plus ONE tile,
  and for a square S x S input the tile is the same image, so the ViT runs once and its features are
  reused. Layout per image, as ``LlavaNextModel.pack_image_features``: ``[base (h*w)] + [tile rows, each w
  tokens + image_newline] = h*w + h*(w+1)`` tokens (strategy ``'default'`` only, the NeXT setting).
* ``llava_onevision`` (Li et al. 2024, arXiv 2408.03326): OneVision's multi-image layout (what HF uses
  when a sample holds more than one image, ``batch_num_images > 1``) for every image, also when N = 1,
  so P does not depend on the image count: ``[base (h*w)] + [image_newline] = h*w + 1``.

Pixels: ``(x - mean) / std``. LLaVA-1.5 / NeXT: the OpenAI CLIP constants (0.48145466, 0.4578275,
0.40821073) / (0.26862954, 0.26130258, 0.27577711) of HF ``LlavaImageProcessor`` / ``LlavaNextImageProcessor``.
OneVision: 0.5 / 0.5, the SigLIP processor constants of its vision tower (LLaVA-OneVision's
``SigLipImageProcessor``; HF's ``LlavaOnevisionImageProcessor`` class default is CLIP's, the released
checkpoints set 0.5 in their ``preprocessor_config.json``). No HF processor runs (the fast ones need
torchvision; the slow PIL one is :attr:`image_processor`): images arrive as tensors at
``backbone.image_size``, which must equal the ViT's ``image_size``.

Sequence: as :class:`VLMBackbone` (image tokens, instruction, ``<act>``), causal decoder, ``prefix_len``
ignored; image features are concatenated instead of scattered into ``image_token_index`` placeholders.

Tiny config (``BackboneConfig`` fields): ViT ``vision_hidden`` x ``vision_layers`` (``patch_size``,
``num_heads``), LM ``text_hidden`` x ``text_layers`` (Llama for LLaVA-1.5/NeXT, Qwen2 for OneVision), MLP
widths ``2 x``, 1024 positions. Deviation: the tiny LLaVA-1.5/NeXT read the LAST ViT layer (-1) instead of
the penultimate (-2) so a from-scratch ViT has no layer whose output is thrown away; a pretrained model
keeps its own ``vision_feature_layer``. The ViT ``post_layernorm`` only feeds the pooled output / last
hidden state, which LLaVA does not read (it reads ``hidden_states``), so it gets no gradient in any
LLaVA; nor does the untied ``lm_head`` under a structure that does not use the LM head.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .base import VLMBackbone, register_hf_arch

__all__ = ['LlavaBackbone', 'LlavaNextBackbone', 'LlavaOnevisionBackbone']

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _vision(b, model_type: str) -> dict:
    d = dict(model_type=model_type, hidden_size=b.vision_hidden, intermediate_size=2 * b.vision_hidden,
             num_hidden_layers=b.vision_layers, num_attention_heads=b.num_heads, image_size=b.image_size,
             patch_size=b.patch_size)
    if model_type == 'siglip_vision_model':
        d['vision_use_head'] = False  # LLaVA-OneVision's SigLIP has no pooling head
    return d


def _text(b, vocab_size: int, model_type: str) -> dict:
    d = dict(model_type=model_type, vocab_size=vocab_size, hidden_size=b.text_hidden,
             intermediate_size=2 * b.text_hidden, num_hidden_layers=b.text_layers, num_attention_heads=b.num_heads,
             num_key_value_heads=b.num_heads, max_position_embeddings=1024, pad_token_id=0, bos_token_id=None,
             eos_token_id=None)
    if model_type == 'llama':
        d['head_dim'] = b.text_hidden // b.num_heads
    return d


class _NewlineHolder(nn.Module):
    """Carries ``image_newline`` so ``freeze: vision`` freezes it with the projector (not registered on the
    backbone: no duplicate state-dict key)."""

    def __init__(self, p: nn.Parameter) -> None:
        super().__init__()
        self.image_newline = p


class _LlavaFamily(VLMBackbone):
    """Shared LLaVA parts: ViT hidden-state selection + MLP projector (``Llava*Model.get_image_features``)."""

    pixel_mean = OPENAI_CLIP_MEAN
    pixel_std = OPENAI_CLIP_STD

    # ------------------------------------------------------------------ geometry
    def _side(self) -> int:
        vc = self.model.config.vision_config
        return int(vc.image_size) // int(vc.patch_size)

    def _base_tokens(self) -> int:
        """ViT tokens kept per image: h*w patches (+ CLS for a CLIP tower); strategy 'default' drops the
        first token (CLS; HF drops it from a SigLIP tower too)."""
        vc = self.model.config.vision_config
        cls_token = 1 if vc.model_type.startswith('clip') else 0
        drop = 1 if self.model.config.vision_feature_select_strategy == 'default' else 0
        return self._side() ** 2 + cls_token - drop

    # parts: vision_tower / multi_modal_projector / language_model, the base class's defaults
    # ------------------------------------------------------------------ compute
    def _projected(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) normalised -> projected ViT features (M, base tokens, D)."""
        cfg = self.model.config
        out = self.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        layer = cfg.vision_feature_layer
        if isinstance(layer, int):
            hs = out.hidden_states[layer]
            if cfg.vision_feature_select_strategy == 'default':
                hs = hs[:, 1:]
        else:
            pool = [out.hidden_states[i] for i in layer]
            if cfg.vision_feature_select_strategy == 'default':
                pool = [h[:, 1:] for h in pool]
            hs = torch.cat(pool, dim=-1)
        return self.model.multi_modal_projector(hs)


@register_hf_arch('llava')
class LlavaBackbone(_LlavaFamily):
    """LLaVA-1.5: P = h*w image tokens per image (CLS dropped)."""

    model_types = ('llava',)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import LlavaConfig
        side = b.image_size // b.patch_size
        return LlavaConfig(vision_config=_vision(b, 'clip_vision_model'), text_config=_text(b, vocab_size, 'llama'),
                           image_token_index=vocab_size, image_seq_length=side * side, vision_feature_layer=-1)

    def compute_image_tokens(self, size: int) -> int:
        return self._base_tokens()

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._projected(pixel_values)


class _NewlineMixin:
    def vision_modules(self) -> List[nn.Module]:
        return [self.vision_tower, self.projector, _NewlineHolder(self.model.image_newline)]


@register_hf_arch('llava_next')
class LlavaNextBackbone(_NewlineMixin, _LlavaFamily):
    """LLaVA-NeXT with one AnyRes tile: P = h*w + h*(w+1) (base view + tile rows with ``image_newline``).

    Raises (construction): ValueError when the kept ViT tokens are not the h x w patch grid (strategy
    ``'full'`` with a CLIP tower), which AnyRes tiling needs.
    """

    model_types = ('llava_next',)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import LlavaNextConfig
        side = b.image_size // b.patch_size
        return LlavaNextConfig(vision_config=_vision(b, 'clip_vision_model'), text_config=_text(b, vocab_size, 'llama'),
                               image_token_index=vocab_size, image_seq_length=side * side, vision_feature_layer=-1,
                               image_grid_pinpoints=[[b.image_size, b.image_size]])

    def compute_image_tokens(self, size: int) -> int:
        h = self._side()
        if self._base_tokens() != h * h:
            raise ValueError(f'hf_arch llava_next: the ViT keeps {self._base_tokens()} tokens per image, not the '
                             f'{h}x{h} patch grid AnyRes tiles need (vision_feature_select_strategy '
                             f'{self.model.config.vision_feature_select_strategy!r})')
        return h * h + h * (h + 1)

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) -> (M, h*w + h*(w+1), D): [base view] + [the single tile, a newline after each row]."""
        base = self._projected(pixel_values)  # (M, h*w, D)
        m, _, d = base.shape
        h = self._side()
        nl = self.model.image_newline.to(base.dtype).view(1, 1, 1, d).expand(m, h, 1, d)
        tile = torch.cat([base.view(m, h, h, d), nl], dim=2).reshape(m, h * (h + 1), d)
        return torch.cat([base, tile], dim=1)


@register_hf_arch('llava_onevision')
class LlavaOnevisionBackbone(_NewlineMixin, _LlavaFamily):
    """LLaVA-OneVision, multi-image layout: P = h*w + 1 (base view + ``image_newline``)."""

    model_types = ('llava_onevision',)
    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import LlavaOnevisionConfig
        return LlavaOnevisionConfig(vision_config=_vision(b, 'siglip_vision_model'),
                                    text_config=_text(b, vocab_size, 'qwen2'), image_token_index=vocab_size,
                                    video_token_index=vocab_size + 1,
                                    image_grid_pinpoints=[[b.image_size, b.image_size]])

    def compute_image_tokens(self, size: int) -> int:
        return self._base_tokens() + 1

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) -> (M, h*w + 1, D): base view + ``image_newline``."""
        base = self._projected(pixel_values)
        nl = self.model.image_newline.to(base.dtype).view(1, 1, -1).expand(base.shape[0], 1, -1)
        return torch.cat([base, nl], dim=1)
