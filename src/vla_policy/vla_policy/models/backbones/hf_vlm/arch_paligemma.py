"""PaliGemma adapter (``hf_arch: paligemma``).

Sequence (one-step continuous): ``[N x P image tokens] [instruction] [<act>]`` through the Gemma
decoder with PaliGemma's prefix-LM mask: ``token_type_ids`` 0 for positions ``< prefix_len`` (images +
instruction attend bidirectionally, as in its pre-training) and 1 after (causal). ``prefix_len=None``
-> fully causal.

* Vision: SigLIP encoder + linear projector (``get_image_features``), P = (S / patch)^2, no pooling.
* Gemma scales input embeddings by sqrt(D) inside the decoder, so ``embed_tokens`` returns the raw
  table rows, as the HF model does.
* Pixels ``(x - 0.5) / 0.5`` (SigLIP). ``image_processor`` (pretrained dirs only) is the slow
  ``SiglipImageProcessor`` (``use_fast=False``; the fast one needs torchvision).
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import VLMBackbone, register_hf_arch

__all__ = ['PaliGemmaBackbone']


@register_hf_arch('paligemma')
class PaliGemmaBackbone(VLMBackbone):
    """PaliGemma: SigLIP + linear projector + Gemma decoder (prefix-LM attention)."""

    model_types = ('paligemma',)

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import PaliGemmaConfig
        vision = dict(model_type='siglip_vision_model', hidden_size=b.vision_hidden,
                      intermediate_size=2 * b.vision_hidden, num_hidden_layers=b.vision_layers,
                      num_attention_heads=b.num_heads, image_size=b.image_size, patch_size=b.patch_size)
        text = dict(model_type='gemma', vocab_size=vocab_size, hidden_size=b.text_hidden,
                    intermediate_size=2 * b.text_hidden, num_hidden_layers=b.text_layers,
                    num_attention_heads=b.num_heads, num_key_value_heads=b.num_heads,
                    head_dim=b.text_hidden // b.num_heads, max_position_embeddings=1024,
                    pad_token_id=0, bos_token_id=None, eos_token_id=None)
        return PaliGemmaConfig(vision_config=vision, text_config=text, projection_dim=b.text_hidden,
                               hidden_size=b.text_hidden, image_token_index=vocab_size)

    def compute_image_tokens(self, size: int) -> int:
        return (size // self.model.config.vision_config.patch_size) ** 2

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values).pooler_output  # (M, P, D)

    def fused_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      prefix_len: Optional[int] = None, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """See :meth:`VLMBackbone.fused_forward`; ``prefix_len`` -> ``token_type_ids`` (0 = prefix)."""
        tt = torch.ones_like(attention_mask)
        if prefix_len:
            tt[:, :prefix_len] = 0
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, token_type_ids=tt,
                         position_ids=position_ids, use_cache=False)
        return out.last_hidden_state
