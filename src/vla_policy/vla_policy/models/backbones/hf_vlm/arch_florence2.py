"""Florence-2 adapter (``hf_arch: florence2``): DaViT vision encoder + BART-style encoder-decoder LM.

HF classes: ``Florence2ForConditionalGeneration`` (``model_type 'florence2'``; ``model.vision_tower`` DaViT,
``model.multi_modal_projector``, ``model.language_model`` a ``BartModel``, ``lm_head`` tied to the shared
token embedding). Xiao et al. 2023, "Florence-2: Advancing a Unified Representation for a Variety of
Vision Tasks", arXiv 2311.06242.

Image tokens per image (P): DaViT downsamples by the product of its stage strides (4*2*2*2 = 32 for the
released models) to an ``h x w`` map; the projector adds 2-D learned positions and prepends one
spatially mean-pooled token, so ``P = h*w + 1`` with ``h = w = S / stride``.

Pixels: ``(x - mean) / std`` with the ImageNet constants (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
that the released Florence-2 checkpoints put in their ``preprocessor_config.json`` (a
``CLIPImageProcessor``; HF's fast variant needs torchvision, so no processor runs here: images arrive as
tensors already at ``backbone.image_size``). A DaViT takes any size divisible by its total stride.

Mapping of :meth:`~VLMBackbone.fused_forward` onto the encoder-decoder (``prefix_len = k``)::

    positions [0, k)  -> BART encoder (bidirectional self-attention, masked by attention_mask[:, :k])
    positions [k, N)  -> BART decoder (causal self-attention + cross-attention to the encoder output)
    returned hidden   = cat(encoder output, decoder output) along the sequence, (B, N, D)

so the one-step continuous sequence ``[images] + [instruction] | [<act>]`` runs the encoder over images
and instruction (as Florence-2 does with its task prompt) and the decoder over the ``<act>`` token alone,
whose decoder state is the feature. ``prefix_len`` None or 0: the decoder alone over the whole sequence
(causal, cross-attention skipped: BART decoder layers skip it without encoder states);
``prefix_len == N``: the encoder alone. Each half counts its learned positions from 0, as in BART.
Under the other structures: ``one_step_discrete`` (prefix = images + instruction) decodes
``[<act>, a_1 .. a_{N-1}]``, so the learned ``<act>`` plays BART's decoder-start token and the action
tokens are teacher-forced as in seq2seq training; ``interleaved`` (prefix = the instruction) encodes the
instruction and decodes ``[images_t][LRN]`` per history step, cross-attending to it.

Tiny config (``BackboneConfig`` fields; ``patch_size`` must be ``4 * 2**k``): ``1 + k`` DaViT stages,
strides ``(4, 2, ..., 2)`` (total = ``patch_size``), kernels/paddings ``(7, 3, ...)`` / ``(3, 1, ...)`` as
Florence-2, widths doubling to ``vision_hidden`` (heads/groups ``gcd(width, num_heads)``), depths
``(1, ..., 1, vision_layers)``, window ``S / patch_size`` (the last stage attends globally); BART with
``text_hidden`` width, ``text_layers`` encoder and ``text_layers`` decoder layers, ``num_heads`` heads, FFN
``2 * text_hidden``, 1024 positions, no dropout. ``freeze_text_layers`` counts encoder layers first, then
decoder layers.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .base import VLMBackbone, register_hf_arch

__all__ = ['Florence2Backbone']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_hf_arch('florence2')
class Florence2Backbone(VLMBackbone):
    """Florence-2 behind the :class:`VLMBackbone` contract (see the module docstring for the mapping).

    Raises (construction): as :class:`VLMBackbone`, plus ValueError when ``patch_size`` is not
    ``4 * 2**k``, ``vision_hidden`` is not divisible by ``2**k`` (tiny config), or ``image_size`` is not
    divisible by the DaViT total stride / exceeds its 2-D position table.
    """

    model_types = ('florence2',)
    pixel_mean = IMAGENET_MEAN
    pixel_std = IMAGENET_STD

    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        from transformers import Florence2Config
        k = int(round(math.log2(b.patch_size / 4))) if b.patch_size >= 4 else -1
        if k < 0 or 4 * 2 ** k != b.patch_size:
            raise ValueError(f'hf_arch florence2: backbone.patch_size ({b.patch_size}) must be 4 * 2**k (DaViT '
                             f'stage strides 4, 2, 2, ...)')
        n = k + 1
        if b.vision_hidden % 2 ** k:
            raise ValueError(f'hf_arch florence2: backbone.vision_hidden ({b.vision_hidden}) must be divisible by '
                             f'{2 ** k} (DaViT widths halve per earlier stage)')
        dims = [b.vision_hidden // 2 ** (n - 1 - i) for i in range(n)]
        heads = [math.gcd(d, b.num_heads) for d in dims]
        side = b.image_size // b.patch_size
        vision = dict(depths=[1] * (n - 1) + [b.vision_layers], patch_size=[7] + [3] * k,
                      patch_stride=[4] + [2] * k, patch_padding=[3] + [1] * k,
                      patch_prenorm=[False] + [True] * k, embed_dim=dims, num_heads=heads, num_groups=heads,
                      window_size=max(1, side), drop_path_rate=0.0, projection_dim=b.text_hidden,
                      max_position_embeddings=max(1, side))
        text = dict(model_type='bart', vocab_size=vocab_size, d_model=b.text_hidden, encoder_layers=b.text_layers,
                    decoder_layers=b.text_layers, encoder_attention_heads=b.num_heads,
                    decoder_attention_heads=b.num_heads, encoder_ffn_dim=2 * b.text_hidden,
                    decoder_ffn_dim=2 * b.text_hidden, max_position_embeddings=1024, dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, pad_token_id=0, bos_token_id=None,
                    eos_token_id=None, decoder_start_token_id=0, forced_eos_token_id=None)
        return Florence2Config(vision_config=vision, text_config=text, image_token_id=vocab_size)

    # ------------------------------------------------------------------ geometry
    def _stride(self) -> int:
        return int(math.prod(self.model.config.vision_config.patch_stride))

    def check_image_size(self, size: int) -> None:
        vc = self.model.config.vision_config
        stride = self._stride()
        if size % stride:
            raise ValueError(f'hf_arch florence2: backbone.image_size ({size}) must be divisible by the DaViT '
                             f'total stride {stride}')
        if size // stride > vc.max_position_embeddings:
            raise ValueError(f'hf_arch florence2: {size} px gives a {size // stride}x{size // stride} map but the '
                             f'projector has {vc.max_position_embeddings} 2-D positions per side')

    def compute_image_tokens(self, size: int) -> int:
        return (size // self._stride()) ** 2 + 1  # + the spatially mean-pooled token

    # ------------------------------------------------------------------ parts
    @property
    def text_tower(self) -> nn.Module:
        """The BART encoder-decoder (``BartModel``, no LM head)."""
        return self.model.language_model

    def text_layers(self) -> nn.ModuleList:
        """Encoder layers, then decoder layers (``freeze_text_layers`` freezes the first N of these)."""
        lm = self.model.language_model
        return nn.ModuleList(list(lm.encoder.layers) + list(lm.decoder.layers))

    # ------------------------------------------------------------------ compute
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, S, S) normalised -> (M, h*w + 1, D): DaViT + Florence-2 projector."""
        return self.model.get_image_features(pixel_values).pooler_output

    def fused_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      prefix_len: Optional[int] = None, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N, D), (B, N) -> (B, N, D): encoder over ``[0, prefix_len)``, decoder over the rest.

        ``position_ids`` must be None (BART has learned 1-D positions per half).

        Raises:
            ValueError: ``prefix_len`` outside ``[0, N]`` or ``position_ids`` given.
        """
        if position_ids is not None:
            raise ValueError('hf_arch florence2 takes no position_ids (BART learned positions per half)')
        n = inputs_embeds.shape[1]
        k = 0 if prefix_len is None else int(prefix_len)
        if not 0 <= k <= n:
            raise ValueError(f'hf_arch florence2: prefix_len {prefix_len} outside [0, {n}]')
        lm = self.model.language_model
        parts = []
        enc = None
        if k > 0:
            enc = lm.encoder(inputs_embeds=inputs_embeds[:, :k], attention_mask=attention_mask[:, :k]).last_hidden_state
            parts.append(enc)
        if k < n:
            dec = lm.decoder(inputs_embeds=inputs_embeds[:, k:], attention_mask=attention_mask[:, k:],
                             encoder_hidden_states=enc,
                             encoder_attention_mask=attention_mask[:, :k] if enc is not None else None,
                             use_cache=False).last_hidden_state
            parts.append(dec)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
