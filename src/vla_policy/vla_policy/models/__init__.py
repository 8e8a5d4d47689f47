"""VLA models: typed config, name registries, backbones, heads, structures, tokenizers."""
from .action_tokenizer import ActionTokenizer
from .config import STRUCTURES, BackboneConfig, ChunkConfig, DiscreteConfig, HeadConfig, VLAConfig
from .registry import (available_backbones, available_heads, make_backbone, make_head,
                       register_backbone, register_head)
from .tokenizer import HFTokenizer, WordTokenizer, load_tokenizer
from .vla import VLA

__all__ = ['ActionTokenizer', 'STRUCTURES', 'BackboneConfig', 'ChunkConfig', 'DiscreteConfig', 'HeadConfig',
           'VLAConfig', 'available_backbones', 'available_heads', 'make_backbone', 'make_head',
           'register_backbone', 'register_head', 'HFTokenizer', 'WordTokenizer', 'load_tokenizer', 'VLA']
