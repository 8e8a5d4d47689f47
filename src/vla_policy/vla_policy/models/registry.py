"""Name -> class registries for backbones and heads (LeRobot ``make_policy`` / RoboVLMs style).

A new family (GR00T/pi0/Octo/RT-2 style trunk, diffusion / flow-matching head, 256-bin
discrete head) is one new module that decorates its class with ``@register_backbone('name')`` or
``@register_head('name')`` and is imported in ``models/backbones/__init__.py`` or
``models/heads/__init__.py``. Contract:

* backbone ``cls(cfg: VLAConfig)`` with attribute ``out_dim`` (D) and
  ``forward(images (B,T,3,S,S) in [0,1], token_ids (B,L), attention_mask (B,L), state (B,T,S) | None) -> (B, D)``.
* head ``cls(cfg: VLAConfig, in_dim: int)`` with ``forward(feature (B,D), state (B,S)|None) -> (B,H,A)``
  and ``loss(feature, state, actions (B,H,A), action_is_pad (B,H)) -> (scalar, dict)``; generative
  heads implement ``forward`` as sampling.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Type

__all__ = ['register_backbone', 'register_head', 'make_backbone', 'make_head',
           'available_backbones', 'available_heads']

_BACKBONES: Dict[str, type] = {}
_HEADS: Dict[str, type] = {}


def _register(table: Dict[str, type], kind: str, name: str) -> Callable[[Type], Type]:
    def deco(cls: Type) -> Type:
        if name in table and table[name] is not cls:
            raise ValueError(f'{kind} {name!r} already registered ({table[name].__name__})')
        table[name] = cls
        cls.registry_name = name
        return cls
    return deco


def register_backbone(name: str) -> Callable[[Type], Type]:
    """Class decorator: register a backbone under ``name``."""
    return _register(_BACKBONES, 'backbone', name)


def register_head(name: str) -> Callable[[Type], Type]:
    """Class decorator: register an action head under ``name``."""
    return _register(_HEADS, 'head', name)


def _load_builtin() -> None:
    from . import backbones, heads  # noqa: F401  (import registers the built-ins)


def make_backbone(cfg):
    """Instantiate ``cfg.backbone.name`` for ``cfg: VLAConfig``; KeyError lists known names."""
    _load_builtin()
    name = cfg.backbone.name
    if name not in _BACKBONES:
        raise KeyError(f'unknown backbone {name!r}; available: {available_backbones()}')
    return _BACKBONES[name](cfg)


def make_head(cfg, in_dim: int):
    """Instantiate ``cfg.head.name`` taking a (B, in_dim) feature; KeyError lists known names."""
    _load_builtin()
    name = cfg.head.name
    if name not in _HEADS:
        raise KeyError(f'unknown head {name!r}; available: {available_heads()}')
    return _HEADS[name](cfg, in_dim)


def available_backbones() -> List[str]:
    _load_builtin()
    return sorted(_BACKBONES)


def available_heads() -> List[str]:
    _load_builtin()
    return sorted(_HEADS)
