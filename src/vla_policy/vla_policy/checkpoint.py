"""Checkpoint directory = everything needed to run a trained policy, written atomically.

Layout (``dir/``)::

    model.safetensors   VLA state dict
    config.json         VLAConfig.to_dict()
    stats.safetensors   normalization stats, keys '<name>.q01|q99|mean|std' (e.g. 'action.q01')
    tokenizer.json      tokenizer (+ hf_tokenizer/ for pretrained HF tokenizers)
    meta.json           {'format': 1, 'created': unix time, 'torch': version, ...extra}

The files are written into a temporary directory next to ``dir`` and renamed into place; an
existing checkpoint is first renamed aside and deleted only after the new one is in place, so a
crash never leaves a half-written checkpoint under ``dir``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

from robot_drivers.atomic import atomic_directory

from .models.config import VLAConfig
from .models.tokenizer import Tokenizer, load_tokenizer
from .models.vla import VLA
from .normalization import NormalizationStats

__all__ = ['save_checkpoint', 'load_checkpoint', 'CHECKPOINT_FILES', 'FORMAT_VERSION']

FORMAT_VERSION = 1
CHECKPOINT_FILES = ('model.safetensors', 'config.json', 'stats.safetensors', 'tokenizer.json', 'meta.json')


def save_checkpoint(directory: Union[str, Path], model: VLA, config: VLAConfig,
                    stats: Dict[str, NormalizationStats], tokenizer: Tokenizer,
                    extra: Dict[str, Any] | None = None) -> Path:
    """Write a checkpoint to ``directory`` atomically (replacing an existing one). Returns the path.

    Raises:
        TypeError: ``extra`` is not JSON-serialisable.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    meta = {'format': FORMAT_VERSION, 'created': time.time(), 'torch': torch.__version__}
    meta.update(extra or {})
    meta_text = json.dumps(meta, indent=1)  # fail before touching the disk
    cfg_d = config.to_dict()
    if cfg_d['backbone'].get('hf_config') is None and getattr(model.config.backbone, 'hf_config', None):
        cfg_d['backbone']['hf_config'] = model.config.backbone.hf_config
    with atomic_directory(directory) as tmp:
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / 'model.safetensors'))
        (tmp / 'config.json').write_text(json.dumps(cfg_d, indent=1), encoding='utf-8')
        st = {f'{name}.{k}': torch.from_numpy(v.copy()) for name, s in stats.items()
              for k, v in s.to_dict().items()}
        save_file(st, str(tmp / 'stats.safetensors'), metadata={'names': json.dumps(sorted(stats))})
        tokenizer.save(tmp)
        (tmp / 'meta.json').write_text(meta_text, encoding='utf-8')
    return directory


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e})') from None


def load_checkpoint(directory: Union[str, Path], device: str = 'cpu'
                    ) -> Tuple[VLA, VLAConfig, Dict[str, NormalizationStats], Tokenizer, Dict[str, Any]]:
    """Load ``(model (eval mode), config, stats, tokenizer, meta)`` from ``directory``.

    Raises:
        FileNotFoundError: directory or one of :data:`CHECKPOINT_FILES` missing (named).
        ValueError: config invalid / unknown key; weights do not match the config (tensor name and
            both shapes named, or missing / unexpected tensor names).
        KeyError: config names an unknown backbone or head.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'checkpoint directory not found: {directory}')
    for f in CHECKPOINT_FILES:
        if not (directory / f).is_file():
            raise FileNotFoundError(f'checkpoint {directory} lacks {f}')
    meta = _read_json(directory / 'meta.json')
    try:
        cfg = VLAConfig.from_dict(_read_json(directory / 'config.json'))
    except (TypeError, ValueError) as e:
        raise ValueError(f'{directory / "config.json"}: {e}') from None
    tokenizer = load_tokenizer(directory)
    try:
        model = VLA(cfg)
    except KeyError as e:
        raise KeyError(f'{directory / "config.json"}: {e.args[0]}') from None
    sd = load_file(str(directory / 'model.safetensors'))
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f'{directory / "model.safetensors"} does not match config.json: '
                         f'missing tensors {missing[:10]}, unexpected tensors {unexpected[:10]}')
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError(f'{directory / "model.safetensors"}: tensor {k!r} has shape {tuple(sd[k].shape)} '
                             f'but config.json builds {tuple(v.shape)}')
    model.load_state_dict(sd, strict=True)
    model.to(device).eval()
    raw = load_file(str(directory / 'stats.safetensors'))
    groups: Dict[str, Dict[str, torch.Tensor]] = {}
    for k, v in raw.items():
        name, _, field = k.rpartition('.')
        groups.setdefault(name, {})[field] = v.numpy()
    stats = {n: NormalizationStats.from_dict(g, where=f'{directory / "stats.safetensors"} [{n}]')
             for n, g in groups.items()}
    return model, cfg, stats, tokenizer, meta
