"""``hf_vlm``: Hugging Face ``transformers`` VLMs behind one contract (:class:`VLMBackbone`).

``backbone.name: hf_vlm`` + ``backbone.hf_arch: <arch>`` picks an adapter from the arch registry
(:func:`register_hf_arch`, :func:`available_hf_archs`); one module per arch family. See ``base.py`` for
the sequence layout, building (tiny config / ``pretrained`` / ``hf_config``), freezing and LoRA.
"""
from __future__ import annotations

from ...registry import register_backbone
from .base import VLMBackbone, available_hf_archs, get_hf_arch, register_hf_arch

# arch families: importing a module registers its archs (one explicit line each)
from . import arch_idefics3  # noqa: F401,E402
from . import arch_paligemma  # noqa: F401,E402
from . import arch_qwen_vl  # noqa: F401,E402
from . import arch_florence2  # noqa: F401,E402
from . import arch_kosmos2  # noqa: F401,E402
from . import arch_llava  # noqa: F401,E402

__all__ = ['HFVLMBackbone', 'VLMBackbone', 'register_hf_arch', 'available_hf_archs', 'get_hf_arch',
           'tiny_hf_config']


@register_backbone('hf_vlm')
class HFVLMBackbone(VLMBackbone):
    """Registry entry ``hf_vlm``: ``HFVLMBackbone(cfg)`` returns the adapter of ``cfg.backbone.hf_arch``
    (an instance of a :class:`VLMBackbone` subclass, e.g. ``Idefics3Backbone``).

    Raises:
        ValueError: unknown ``hf_arch`` (lists the available archs), plus the adapter's errors.
    """

    def __new__(cls, cfg, *args, **kwargs):
        if cls is HFVLMBackbone:
            return get_hf_arch(cfg.backbone.hf_arch)(cfg, *args, **kwargs)
        return super().__new__(cls)


def tiny_hf_config(b, vocab_size: int):
    """Tiny random-init HF config of ``b.hf_arch`` from ``BackboneConfig`` fields (no download)."""
    return get_hf_arch(b.hf_arch).tiny_config(b, vocab_size)
