"""Kosmos-2 adapter (``hf_arch: kosmos2``): CLIP-style ViT + latent-query image-to-text projection +
causal decoder LM.

HF class: ``Kosmos2ForConditionalGeneration`` (``model_type 'kosmos-2'``): ``vision_model`` (CLIP ViT),
``image_to_text_projection`` (a linear map, then ``latent_query_num`` learned queries cross-attend to
[patch features; queries]), ``text_model`` (``Kosmos2TextForCausalLM``: decoder ``.model`` + ``lm_head``
tied to the token embedding). Peng et al. 2023, "Kosmos-2: Grounding Multimodal Large Language Models
to the World", arXiv 2306.14824.

Image tokens per image: ``P = latent_query_num`` (64 in the released model, for 16x16 = 256 patches).
Image features are computed as in ``Kosmos2ForConditionalGeneration.forward``: the whole last hidden
state through the vision ``post_layernorm``, L2-normalised, then the projection.

Pixels: ``(x - mean) / std`` with the OpenAI CLIP constants (0.48145466, 0.4578275, 0.40821073) /
(0.26862954, 0.26130258, 0.27577711) of the ``CLIPImageProcessor`` Kosmos-2 uses (HF
``image_processing_auto``: ``kosmos-2`` -> CLIP); no processor runs here (its fast variant needs
torchvision): images arrive as tensors at ``backbone.image_size``, which must equal the ViT's
``image_size`` (fixed position table).

Sequence: as :class:`VLMBackbone` (image tokens first, then the instruction, then ``<act>``); the decoder
is causal, so ``prefix_len`` is ignored. As in HF, ``inputs_embeds`` are the unscaled table rows:
the decoder multiplies the whole sequence (image tokens included) by ``sqrt(D)`` (``scale_embedding``)
and adds its sinusoidal positions.

Tiny config (``BackboneConfig`` fields): ViT ``vision_hidden`` x ``vision_layers``, ``num_heads`` heads,
``patch_size``; decoder ``text_hidden`` x ``text_layers``, FFN ``2 * text_hidden``, 1024 positions, no
dropout; ``latent_query_num = max(1, (S / patch_size)**2 // scale_factor**2)`` (at the default
``scale_factor`` 2 this is Kosmos-2's own 4:1 patch-to-query ratio).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from .base import VLMBackbone, register_hf_arch

__all__ = ['Kosmos2Backbone']

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@register_hf_arch('kosmos2')
class Kosmos2Backbone(VLMBackbone):
    """Kosmos-2 behind the :class:`VLMBackbone` contract.

    ``model`` (and ``hf_model``) is the whole ``Kosmos2ForConditionalGeneration`` (it has no ``.model``
    submodule); ``lm_head`` is its ``text_model.lm_head`` (tied to the token embedding).
    """

    model_types = ('kosmos-2',)
    pixel_mean = OPENAI_CLIP_MEAN
    pixel_std = OPENAI_CLIP_STD

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import Kosmos2Config
        side = b.image_size // b.patch_size
        vision = dict(hidden_size=b.vision_hidden, intermediate_size=2 * b.vision_hidden,
                      num_hidden_layers=b.vision_layers, num_attention_heads=b.num_heads,
                      image_size=b.image_size, patch_size=b.patch_size)
        text = dict(vocab_size=vocab_size, embed_dim=b.text_hidden, layers=b.text_layers, ffn_dim=2 * b.text_hidden,
                    attention_heads=b.num_heads, max_position_embeddings=1024, dropout=0.0, attention_dropout=0.0,
                    activation_dropout=0.0, pad_token_id=0, bos_token_id=None, eos_token_id=None)
        return Kosmos2Config(vision_config=vision, text_config=text,
                             latent_query_num=max(1, side * side // b.scale_factor ** 2))

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        object.__setattr__(self, '_hf_full', self.model)  # hf_model / save_pretrained: the whole model

    def _build_hf(self, b):
        full = super()._build_hf(b)
        # the base keeps ``full.model`` / ``full.lm_head``; Kosmos-2 has no ``.model`` and keeps its head
        # in ``text_model``: the whole model is ``model`` here
        return SimpleNamespace(model=full, lm_head=full.get_output_embeddings())

    def compute_image_tokens(self, size: int) -> int:
        return int(self.model.config.latent_query_num)

    # ------------------------------------------------------------------ parts
    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def projector(self) -> nn.Module:
        return self.model.image_to_text_projection

    @property
    def text_tower(self) -> nn.Module:
        """The decoder stack (``Kosmos2TextTransformer``, no LM head)."""
        return self.model.text_model.model

    # ------------------------------------------------------------------ compute
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) normalised -> (M, latent_query_num, D)."""
        vision = self.model.vision_model
        hs = vision(pixel_values=pixel_values).last_hidden_state  # (M, 1 + patches, Dv)
        hs = nn.functional.normalize(vision.model.post_layernorm(hs), dim=-1)
        feats, _ = self.model.image_to_text_projection(hs)
        return feats
