"""Idefics3 / SmolVLM adapter (``hf_arch: idefics3``, alias ``smolvlm``).

Sequence (one-step continuous): ``[N x P image tokens] [instruction] [<act>]`` through the Llama
decoder (causal; ``prefix_len`` is ignored), feature = hidden state at ``<act>``.

* Vision: SigLIP encoder -> connector (pixel shuffle by ``scale_factor`` + linear), so
  P = (S / patch)^2 / scale_factor^2 (SmolVLM: 64 px / 8 -> 64 patches -> 16 tokens at factor 2).
* The adapter calls the vision encoder + connector itself and concatenates embeddings instead of
  ``Idefics3Model.get_image_features``, which drops an image whose pixels are exactly 0 (its padding
  convention; a mid-grey image normalises to all zeros).
* Pixels: ``(x - 0.5) / 0.5`` (SigLIP). Idefics3's default image processor splits images into tiles and
  its fast variant imports torchvision; the adapter takes (B, N, 3, S, S) tensors directly, and
  ``image_processor`` (pretrained dirs only) is the slow PIL/numpy variant.
* Pretrained dirs of ``model_type`` ``idefics3`` or ``smolvlm`` are accepted for either name.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import VLMBackbone, register_hf_arch

__all__ = ['Idefics3Backbone']


@register_hf_arch('smolvlm')
@register_hf_arch('idefics3')
class Idefics3Backbone(VLMBackbone):
    """Idefics3 (SmolVLM architecture): SigLIP + pixel-shuffle connector + Llama decoder."""

    model_types = ('idefics3', 'smolvlm')

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import Idefics3Config
        vision = dict(hidden_size=b.vision_hidden, intermediate_size=2 * b.vision_hidden,
                      num_hidden_layers=b.vision_layers, num_attention_heads=b.num_heads,
                      image_size=b.image_size, patch_size=b.patch_size)
        text = dict(model_type='llama', vocab_size=vocab_size, hidden_size=b.text_hidden,
                    intermediate_size=2 * b.text_hidden, num_hidden_layers=b.text_layers,
                    num_attention_heads=b.num_heads, num_key_value_heads=b.num_heads,
                    head_dim=b.text_hidden // b.num_heads, max_position_embeddings=1024,
                    pad_token_id=0, bos_token_id=None, eos_token_id=None)
        return Idefics3Config(vision_config=vision, text_config=text, scale_factor=b.scale_factor,
                              image_token_id=vocab_size, tie_word_embeddings=False)

    def compute_image_tokens(self, size: int) -> int:
        vc = self.model.config.vision_config
        return (size // vc.patch_size) ** 2 // (self.model.config.scale_factor ** 2)

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def projector(self) -> nn.Module:
        return self.model.connector

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hs = self.model.vision_model(pixel_values=pixel_values).last_hidden_state  # (M, (S/p)^2, Dv)
        return self.model.connector(hs)  # (M, P, D)
