"""``VLMBackbone``: the contract every Hugging Face VLM adapter implements (RoboVLMs' ``BaseRoboVLM``).

An adapter wraps one ``transformers`` ``*ForConditionalGeneration`` model and exposes its parts:
``vision_tower``, ``text_tower`` (the decoder stack), ``word_embedding``, the LM head (``lm_logits``) and
``encode_images`` (vision tower + projector + a learned scale). The token sequence is built here, not by
the HF processor: image features are concatenated with the token embeddings instead of scattered into
``image_token_id`` placeholders, so no HF processor (several import torchvision, unavailable here) is
needed at run time. Images are normalised with the arch family's processor mean / std.

The one-step continuous sequence (RoboVLMs "one-step continuous", :meth:`VLMBackbone.forward`)::

    [image features of image 1 .. N (P each)] + [instruction tokens (L)] + [<act>]

and the feature is the last hidden state at ``<act>`` (B, D). ``<act>`` is a learned embedding.

Building (``cfg.backbone``): ``hf_config`` set -> the architecture is rebuilt from it (weights come from a
checkpoint); else ``pretrained`` (hub id or local dir) -> ``from_pretrained`` and ``hf_config`` is filled
in so a checkpoint rebuilds offline; else a tiny random config from the ``BackboneConfig`` fields with
``vocab_size`` rows (our tokenizer).

Freezing / LoRA (``BackboneConfig.freeze``, ``freeze_text_layers``, ``lora_*``) apply to every arch.

Adding an arch: subclass :class:`VLMBackbone`, implement the hooks marked "arch hook" and decorate with
``@register_hf_arch('<name>')``; import the module in ``hf_vlm/__init__.py``.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ['VLMBackbone', 'register_hf_arch', 'available_hf_archs', 'get_hf_arch']

_ARCHS: Dict[str, type] = {}


def register_hf_arch(name: str) -> Callable[[type], type]:
    """Class decorator: register a :class:`VLMBackbone` subclass for ``backbone.hf_arch == name``.

    Stack it to register aliases (``smolvlm`` -> the Idefics3 adapter).
    """
    def deco(cls: type) -> type:
        if name in _ARCHS and _ARCHS[name] is not cls:
            raise ValueError(f'hf_arch {name!r} already registered ({_ARCHS[name].__name__})')
        _ARCHS[name] = cls
        return cls
    return deco


def available_hf_archs() -> List[str]:
    """Sorted registered ``hf_arch`` names."""
    return sorted(_ARCHS)


def get_hf_arch(name: str) -> type:
    """Adapter class for ``name``; ValueError listing the available archs otherwise."""
    if name not in _ARCHS:
        raise ValueError(f'unknown backbone.hf_arch {name!r}; available: {available_hf_archs()}')
    return _ARCHS[name]


class VLMBackbone(nn.Module):
    """Base of the HF VLM adapters: images + instruction -> hidden states / feature.

    Attributes:
        is_vlm: ``True`` (structures that need an LM check it).
        arch: the configured ``backbone.hf_arch``.
        model: the HF base model (``*ForConditionalGeneration.model``); ``lm_head`` its LM head.
        hidden_size, out_dim: D, the language model width.
        image_tokens_per_image: P, tokens one image contributes (``image_seq_len`` is an alias).
        vocab_size: rows of the LM head (last dim of :meth:`lm_logits`).
        n_images: images one :meth:`forward` call takes (``cfg.images_per_pass``).
        image_scale: learned scalar on projected image features (init ``backbone.image_feature_scale``
            for a random model, where image features start ~20x larger than token embeddings; 1.0 for
            pretrained weights).
        act_embedding: (D,) learned ``<act>`` / ``[LRN]`` readout token.

    Raises (construction):
        ValueError: unknown arch; tiny config without ``backbone.vocab_size``; a pretrained dir or
            ``hf_config`` of another architecture (message names both types); vision input size differs
            from ``backbone.image_size``; ``freeze_text_layers`` larger than the LM depth; LoRA targets
            that match no module.
    """

    is_vlm = True
    registry_name = 'hf_vlm'
    # --- arch hooks (class attributes) ---
    model_types: Tuple[str, ...] = ()              # accepted HF ``config.model_type`` values
    pixel_mean: Tuple[float, ...] = (0.5, 0.5, 0.5)   # SigLIP normalisation (SmolVLM, PaliGemma)
    pixel_std: Tuple[float, ...] = (0.5, 0.5, 0.5)

    def __init__(self, cfg) -> None:
        super().__init__()
        b = cfg.backbone
        self.arch = b.hf_arch
        self.n_images = int(getattr(cfg, 'images_per_pass', cfg.n_images))
        self.image_size = int(b.image_size)
        self._pretrained = b.pretrained
        self._image_processor = None
        full = self._build_hf(b)
        self.model = full.model
        self.lm_head = full.lm_head
        object.__setattr__(self, '_hf_full', full)  # same modules; not registered twice
        self.check_image_size(b.image_size)
        self.hidden_size = self.out_dim = int(self.word_embedding.weight.shape[1])
        self.vocab_size = int(self.lm_head.weight.shape[0])
        self.image_tokens_per_image = int(self.compute_image_tokens(b.image_size))
        init_scale = 1.0 if b.pretrained else b.image_feature_scale
        self.image_scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.act_embedding = nn.Parameter(torch.randn(self.hidden_size) * 0.02)
        self.register_buffer('_pix_mean', torch.tensor(self.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('_pix_std', torch.tensor(self.pixel_std).view(1, 3, 1, 1), persistent=False)
        self._register_load_state_dict_pre_hook(self._fill_missing_lm_head)
        self._apply_lora_and_freeze(b)

    # ------------------------------------------------------------------ building
    @classmethod
    def tiny_config(cls, b, vocab_size: int):
        """Arch hook: a small random-init HF config from ``BackboneConfig`` fields (no download)."""
        raise NotImplementedError

    @classmethod
    def config_from_dict(cls, d: dict):
        """HF config object from ``backbone.hf_config`` (``model_type`` picks the class)."""
        from transformers import CONFIG_MAPPING
        mt = d.get('model_type')
        if mt not in cls.model_types:
            raise ValueError(f'backbone.hf_config has model_type {mt!r} but backbone.hf_arch {cls._arch_label()} '
                             f'expects {list(cls.model_types)}')
        return CONFIG_MAPPING[mt].from_dict(dict(d))

    @classmethod
    def _arch_label(cls) -> str:
        names = [k for k, v in _ARCHS.items() if v is cls]
        return repr(names[0]) if len(names) == 1 else repr(names)

    @classmethod
    def model_class(cls):
        """Arch hook: the HF class with an LM head (default: ``AutoModelForImageTextToText``)."""
        from transformers import AutoModelForImageTextToText
        return AutoModelForImageTextToText

    def _build_hf(self, b):
        """-> HF model with an LM head (``*ForConditionalGeneration``)."""
        mc = self.model_class()
        if b.hf_config is not None:
            return mc.from_config(self.config_from_dict(b.hf_config))
        if b.pretrained:
            from transformers import AutoConfig
            mt = AutoConfig.from_pretrained(b.pretrained).model_type
            if mt not in self.model_types:
                raise ValueError(f'backbone.pretrained {b.pretrained!r} is a {mt!r} model but backbone.hf_arch '
                                 f'{b.hf_arch!r} expects model_type {list(self.model_types)}')
            full = mc.from_pretrained(b.pretrained)
            b.hf_config = full.config.to_dict()
            return full
        if b.vocab_size < 3:
            raise ValueError(f'hf_vlm tiny config needs backbone.vocab_size from the tokenizer, got {b.vocab_size}')
        return mc.from_config(self.tiny_config(b, b.vocab_size))

    def check_image_size(self, size: int) -> None:
        """Arch hook: raise ValueError when the vision tower cannot take ``size`` px images."""
        vc = self.model.config.vision_config
        if int(vc.image_size) != size:
            raise ValueError(f'hf_vlm: the vision encoder expects {vc.image_size} px images but '
                             f'backbone.image_size is {size}')

    def compute_image_tokens(self, size: int) -> int:
        """Arch hook: P, tokens per ``size`` px image after the projector."""
        raise NotImplementedError

    @property
    def hf_model(self) -> nn.Module:
        """The HF ``*ForConditionalGeneration`` model sharing :attr:`model` and :attr:`lm_head`."""
        return self._hf_full

    def save_pretrained(self, directory: str) -> None:
        """Write the HF model (config + weights) for ``backbone.pretrained: <directory>``.

        Raises:
            ValueError: LoRA adapters are injected (not part of the HF architecture).
        """
        if any('lora_' in n for n, _ in self.model.named_parameters()):
            raise ValueError('save_pretrained: the model holds LoRA adapters; save the VLA checkpoint instead')
        self._hf_full.save_pretrained(directory)

    @property
    def image_seq_len(self) -> int:
        """Alias of :attr:`image_tokens_per_image` (older name)."""
        return self.image_tokens_per_image

    # ------------------------------------------------------------------ parts (RoboVLMs BaseRoboVLM)
    @property
    def word_embedding(self) -> nn.Module:
        """Token embedding table (``get_input_embeddings``), (vocab, D)."""
        return self.model.get_input_embeddings()

    # The three parts default to the attribute names transformers' LLaVA-family ``*Model`` classes share
    # (LLaVA, PaliGemma, Florence-2); an architecture with other names overrides them.
    @property
    def vision_tower(self) -> nn.Module:
        """Arch hook: the vision encoder (default ``model.vision_tower``)."""
        return self.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        """Arch hook: vision -> LM width projector / connector (default ``model.multi_modal_projector``)."""
        return self.model.multi_modal_projector

    @property
    def text_tower(self) -> nn.Module:
        """Arch hook: the language model decoder stack, no LM head (default ``model.language_model``)."""
        return self.model.language_model

    def text_layers(self) -> nn.ModuleList:
        """The decoder layers of :attr:`text_tower` (``freeze_text_layers`` freezes the first N)."""
        return self.text_tower.layers

    def vision_modules(self) -> List[nn.Module]:
        """Modules frozen by ``freeze: vision`` (vision tower + projector)."""
        return [self.vision_tower, self.projector]

    @property
    def image_processor(self):
        """HF image processor of a pretrained local dir (the slow PIL/numpy variant: ``backend='pil'``,
        ``use_fast=False`` before transformers 5; the fast ones need torchvision, which this stack does not
        ship), or ``None`` (tiny config, or no
        ``preprocessor_config.json``). Not used by :meth:`encode_images`, which takes tensors already
        resized to ``backbone.image_size`` and normalises with the family's mean / std."""
        if self._image_processor is None and self._pretrained and \
                os.path.isfile(os.path.join(self._pretrained, 'preprocessor_config.json')):
            import transformers
            from transformers import AutoImageProcessor
            # transformers >= 5 names the PIL/numpy variant backend='pil'; 4.x calls it use_fast=False
            kw = dict(backend='pil') if int(transformers.__version__.split('.')[0]) >= 5 else dict(use_fast=False)
            self._image_processor = AutoImageProcessor.from_pretrained(self._pretrained, **kw)
        return self._image_processor

    # ------------------------------------------------------------------ compute
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Arch hook: normalised pixels (M, 3, S, S) -> projected features (M, P, D), no scale."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, N, 3, S, S) in [0, 1] -> image tokens (B, N*P, D) (projector and learned scale applied)."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f'encode_images expects (B, N, 3, S, S), got {tuple(images.shape)}')
        bsz, n = images.shape[:2]
        dtype = self.word_embedding.weight.dtype
        pix = (images.reshape(bsz * n, *images.shape[2:]) - self._pix_mean) / self._pix_std
        feats = self.encode_pixels(pix.to(dtype)) * self.image_scale.to(dtype)  # (B*N, P, D)
        return feats.reshape(bsz, n * feats.shape[1], feats.shape[2])

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (B, L) -> embeddings (B, L, D) (the LM's own table; an arch's input scaling, e.g.
        Gemma's sqrt(D), happens inside :meth:`fused_forward` as in the HF model)."""
        return self.word_embedding(token_ids)

    def rope_position_ids(self, segments: Sequence[Tuple[str, int]], batch_size: int,
                          attention_mask: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Position ids for a sequence laid out as ``segments`` (``('image', n_images)`` /
        ``('text', length)`` in order; ``attention_mask`` (B, N) of the whole sequence), or ``None`` =
        the arch's default 1-D positions 0..N-1. Arch hook: Qwen-VL returns 3-D M-RoPE ids (3, B, N)."""
        return None

    def fused_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      prefix_len: Optional[int] = None, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """inputs_embeds (B, N, D), attention_mask (B, N) (1 = attend) -> last hidden states (B, N, D).

        ``prefix_len``: positions ``< prefix_len`` attend bidirectionally where the arch supports it
        (PaliGemma); causal otherwise (default implementation: causal decoder). ``position_ids``: e.g.
        from :meth:`rope_position_ids`; ``None`` = 0..N-1.
        """
        out = self.text_tower(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, N, D) -> logits (B, N, vocab_size) with the arch's LM head."""
        return self.lm_head(hidden)

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor,
                state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One-step continuous: images (B, N, 3, S, S) in [0, 1] (N = ``n_images``), token_ids /
        attention_mask (B, L) -> feature at ``<act>`` (B, D). ``state`` is ignored (the head takes it).

        Raises:
            ValueError: N differs from ``n_images``.
        """
        bsz, n = images.shape[:2]
        if n != self.n_images:
            raise ValueError(f'hf_vlm expects {self.n_images} images per sample, got {n}')
        img = self.encode_images(images)  # (B, N*P, D)
        txt = self.embed_tokens(token_ids)  # (B, L, D)
        act = self.act_embedding.to(txt.dtype).expand(bsz, 1, -1)  # (B, 1, D)
        embeds = torch.cat([img, txt, act], dim=1)  # (B, N*P + L + 1, D)
        mask = torch.cat([attention_mask.new_ones(bsz, img.shape[1]), attention_mask,
                          attention_mask.new_ones(bsz, 1)], dim=1)
        pos = self.rope_position_ids([('image', n), ('text', token_ids.shape[1] + 1)], bsz, mask)
        hidden = self.fused_forward(embeds, mask, prefix_len=img.shape[1] + token_ids.shape[1], position_ids=pos)
        return hidden[:, -1]  # (B, D)

    # ------------------------------------------------------------------ freeze / LoRA
    def _apply_lora_and_freeze(self, b) -> None:
        """LoRA first (peft ``inject_adapter_in_model`` on :attr:`model`, target modules matched by name
        suffix; every non-adapter HF weight and the LM head frozen), then ``freeze``: ``'vision'`` freezes
        :meth:`vision_modules` (adapters inside them too), ``'all'`` every HF weight except adapters;
        then the first ``freeze_text_layers`` decoder layers (adapters inside them too). ``act_embedding``
        and ``image_scale`` always train."""
        if b.lora_r:
            from peft import LoraConfig, inject_adapter_in_model
            lc = LoraConfig(r=b.lora_r, lora_alpha=b.lora_alpha, lora_dropout=b.lora_dropout,
                            target_modules=list(b.lora_targets))
            try:
                inject_adapter_in_model(lc, self.model)
            except ValueError as e:
                raise ValueError(f'backbone.lora_targets {list(b.lora_targets)} matched no module of the '
                                 f'{self.arch} model: {e}') from e
            for name, p in self.model.named_parameters():
                p.requires_grad_('lora_' in name)
            self.lm_head.requires_grad_(False)
        if b.freeze == 'all':   # every HF weight; LoRA adapters (if any) keep training
            for name, p in self.model.named_parameters():
                if 'lora_' not in name:
                    p.requires_grad_(False)
            self.lm_head.requires_grad_(False)
        elif b.freeze == 'vision' or b.freeze_vision:
            for m in self.vision_modules():
                m.requires_grad_(False)
        if b.freeze_text_layers:
            layers = self.text_layers()
            if b.freeze_text_layers > len(layers):
                raise ValueError(f'backbone.freeze_text_layers ({b.freeze_text_layers}) exceeds the '
                                 f'{len(layers)} language-model layers of the {self.arch} model')
            for layer in list(layers)[:b.freeze_text_layers]:
                layer.requires_grad_(False)

    def _fill_missing_lm_head(self, state_dict, prefix, *args) -> None:
        """Checkpoints written before ``lm_head`` was kept (base model only) load: the LM head is taken
        from the embedding table when tied, else it keeps its current value (it was unused then)."""
        key = prefix + 'lm_head.weight'
        if key in state_dict or not any(k.startswith(prefix + 'model.') for k in state_dict):
            return
        w = self.lm_head.weight
        for name, t in self.state_dict(keep_vars=True).items():
            if t is w and name != 'lm_head.weight' and prefix + name in state_dict:
                state_dict[key] = state_dict[prefix + name]
                return
        state_dict[key] = w.detach().clone()
