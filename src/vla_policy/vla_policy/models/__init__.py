"""VLA models: typed config, name registries, backbones, heads, tokenizer."""
from .config import BackboneConfig, ChunkConfig, HeadConfig, VLAConfig
from .registry import (available_backbones, available_heads, make_backbone, make_head,
                       register_backbone, register_head)
from .tokenizer import HFTokenizer, WordTokenizer, load_tokenizer
from .vla import VLA

__all__ = ['BackboneConfig', 'ChunkConfig', 'HeadConfig', 'VLAConfig', 'available_backbones',
           'available_heads', 'make_backbone', 'make_head', 'register_backbone', 'register_head',
           'HFTokenizer', 'WordTokenizer', 'load_tokenizer', 'VLA']
