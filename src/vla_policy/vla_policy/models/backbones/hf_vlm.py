"""``hf_vlm``: adapter around a Hugging Face transformers VLM (Idefics3 = SmolVLM architecture, PaliGemma).

The sequence fed to the language model is built here, not by the HF processor (Idefics3's
default image processor imports torchvision, and the tiny config has no processor at all)::

    [image features of image 1 .. N (image_seq_len each)] + [instruction tokens] + [<act>]

``pixel_values`` are ``(x - 0.5) / 0.5`` (SigLIP normalisation used by SmolVLM and PaliGemma).
Instead of placing ``image_token_id`` placeholders and letting the HF model scatter the features
(``inputs_merger`` / ``masked_scatter``), the adapter calls the vision encoder + connector itself
and concatenates embeddings. This is the same sequence, and it sidesteps
``Idefics3Model.get_image_features`` dropping an image whose pixels are exactly 0 (its padding
convention; a mid-grey image normalises to all zeros).

* Image tokens per image: Idefics3 ``(S/patch)^2 / scale_factor^2`` (pixel shuffle); PaliGemma ``(S/patch)^2``.
* Image features are multiplied by a learned scalar (init ``image_feature_scale`` for a random
  tiny model, where features start ~20x larger than token embeddings; 1.0 for pretrained weights).
* ``<act>`` is a learned embedding (RoboVLMs' learnable action token); the feature is the last
  hidden state at its position (B, D). With an Idefics3 (Llama, causal) trunk it is last so it sees
  everything; PaliGemma gets ``token_type_ids`` 0 for the image+instruction prefix (bidirectional
  prefix attention, as in its pre-training) and 1 for ``<act>``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..registry import register_backbone

__all__ = ['HFVLMBackbone', 'tiny_hf_config']


def tiny_hf_config(b, vocab_size: int):
    """A small random-init HF config from ``BackboneConfig`` fields (no download).

    Returns ``Idefics3Config`` or ``PaliGemmaConfig``; vocabulary = ``vocab_size`` (our tokenizer).
    """
    vision = dict(hidden_size=b.vision_hidden, intermediate_size=2 * b.vision_hidden,
                  num_hidden_layers=b.vision_layers, num_attention_heads=b.num_heads,
                  image_size=b.image_size, patch_size=b.patch_size)
    head_dim = b.text_hidden // b.num_heads
    text = dict(vocab_size=vocab_size, hidden_size=b.text_hidden, intermediate_size=2 * b.text_hidden,
                num_hidden_layers=b.text_layers, num_attention_heads=b.num_heads,
                num_key_value_heads=b.num_heads, head_dim=head_dim, max_position_embeddings=1024,
                pad_token_id=0, bos_token_id=None, eos_token_id=None)
    if b.hf_arch == 'idefics3':
        from transformers import Idefics3Config
        return Idefics3Config(vision_config=vision, text_config=dict(model_type='llama', **text),
                              scale_factor=b.scale_factor, image_token_id=vocab_size, tie_word_embeddings=False)
    from transformers import PaliGemmaConfig
    vision['model_type'] = 'siglip_vision_model'
    return PaliGemmaConfig(vision_config=vision, text_config=dict(model_type='gemma', **text),
                           projection_dim=b.text_hidden, hidden_size=b.text_hidden,
                           image_token_index=vocab_size)


def _config_from_dict(arch: str, d: dict):
    if arch == 'idefics3':
        from transformers import Idefics3Config as C
    else:
        from transformers import PaliGemmaConfig as C
    return C.from_dict(dict(d))


@register_backbone('hf_vlm')
class HFVLMBackbone(nn.Module):
    """HF VLM trunk -> feature at the ``<act>`` token (B, D = text hidden size).

    Args:
        cfg: ``VLAConfig``. With ``backbone.pretrained`` set and ``backbone.hf_config`` unset,
            weights come from ``from_pretrained`` and ``backbone.hf_config`` is filled in (so a
            checkpoint rebuilds offline); with ``hf_config`` set the architecture is rebuilt from it
            (weights then come from the checkpoint); otherwise the tiny config is built.

    Raises:
        ValueError: vocab size unknown for a tiny config; the pretrained model is not of ``hf_arch``;
            its vision image size differs from ``backbone.image_size``.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        from transformers import AutoModel
        b = cfg.backbone
        self.arch = b.hf_arch
        self.n_images = cfg.n_images
        if b.hf_config is not None:
            hf_cfg = _config_from_dict(b.hf_arch, b.hf_config)
            self.model = AutoModel.from_config(hf_cfg)
            init_scale = 1.0 if b.pretrained else b.image_feature_scale
        elif b.pretrained:
            self.model = AutoModel.from_pretrained(b.pretrained)
            b.hf_config = self.model.config.to_dict()
            init_scale = 1.0
        else:
            if b.vocab_size < 3:
                raise ValueError(f'hf_vlm tiny config needs backbone.vocab_size from the tokenizer, got {b.vocab_size}')
            self.model = AutoModel.from_config(tiny_hf_config(b, b.vocab_size))
            init_scale = b.image_feature_scale
        mt = self.model.config.model_type
        if mt != b.hf_arch:
            raise ValueError(f'hf_vlm: model type {mt!r} does not match backbone.hf_arch {b.hf_arch!r}')
        vc = self.model.config.vision_config
        if int(vc.image_size) != b.image_size:
            raise ValueError(f'hf_vlm: the vision encoder expects {vc.image_size} px images but '
                             f'backbone.image_size is {b.image_size}')
        n_patch = (vc.image_size // vc.patch_size) ** 2
        self.image_seq_len = n_patch // (self.model.config.scale_factor ** 2) if mt == 'idefics3' else n_patch
        d = self.model.config.text_config.hidden_size
        self.out_dim = d
        self.image_scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.act_embedding = nn.Parameter(torch.randn(d) * 0.02)  # learned <act> readout token
        if b.freeze_vision:
            for p in self._vision_modules().parameters():
                p.requires_grad_(False)

    def _vision_modules(self) -> nn.ModuleList:
        if self.arch == 'idefics3':
            return nn.ModuleList([self.model.vision_model, self.model.connector])
        return nn.ModuleList([self.model.vision_tower, self.model.multi_modal_projector])

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, S, S) normalized to [-1, 1] -> (N, image_seq_len, D)."""
        if self.arch == 'idefics3':
            hs = self.model.vision_model(pixel_values=pixel_values).last_hidden_state  # (N, P, Dv)
            return self.model.connector(hs)  # (N, P / s^2, D)
        return self.model.get_image_features(pixel_values).pooler_output  # (N, P, D)

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor,
                state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images (B, T, 3, S, S) in [0, 1], token_ids/attention_mask (B, L) -> feature (B, D)."""
        bsz, t = images.shape[:2]
        if t != self.n_images:
            raise ValueError(f'hf_vlm expects {self.n_images} images per sample, got {t}')
        emb_layer = self.model.get_input_embeddings()
        dtype = emb_layer.weight.dtype
        pix = (images.reshape(bsz * t, *images.shape[2:]) - 0.5) / 0.5  # (B*T, 3, S, S)
        img = self.image_features(pix.to(dtype)) * self.image_scale  # (B*T, P, D)
        img = img.reshape(bsz, t * img.shape[1], img.shape[2])  # (B, T*P, D)
        txt = emb_layer(token_ids)  # (B, L, D)
        act = self.act_embedding.to(dtype).expand(bsz, 1, -1)  # (B, 1, D)
        embeds = torch.cat([img, txt, act], dim=1)  # (B, T*P + L + 1, D)
        n_img = img.shape[1]
        ones_img = attention_mask.new_ones(bsz, n_img)
        mask = torch.cat([ones_img, attention_mask, attention_mask.new_ones(bsz, 1)], dim=1)  # (B, N)
        if self.arch == 'idefics3':
            out = self.model.text_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        else:
            tt = torch.zeros_like(mask)
            tt[:, -1] = 1  # <act> is the suffix; image + instruction the bidirectional prefix
            out = self.model(inputs_embeds=embeds, attention_mask=mask, token_type_ids=tt, use_cache=False)
        return out.last_hidden_state[:, -1]  # (B, D)
