"""``ros2 run vla_training train``: rosbag2 recordings -> VLA checkpoint.

    ros2 run vla_training train --bags demos/ --config config/train_franka.yaml --output runs/film_cnn

The YAML has three sections that map 1:1 onto dataclasses: ``model`` -> ``VLAConfig`` (with
``backbone``, ``head``, ``chunk``), ``train`` -> ``TrainConfig``, ``data`` -> the bag reader
(``topics`` -> ``BagTopics``, ``rate_hz``, ``max_age_s``). Unknown keys are errors. Command-line
flags override single fields (``--steps``, ``--backbone``). The checkpoint is written to
``<output>/checkpoint`` (atomically), with ``train_log.jsonl`` and TensorBoard logs in ``<output>``.

A model preset (``--preset octo`` = ``config/models/octo.yaml``, or a path) overlays the model
architecture and its training recipe on the robot's YAML::

    ros2 run vla_training train --bags demos/ --config config/train_franka.yaml --preset octo

A preset has the sections ``model`` (only the architecture keys in :data:`PRESET_MODEL_KEYS`:
structure, backbone, head, chunk, ...) and ``train``; nested mappings are merged key by key, the
preset's value winning. The robot's keys (embodiment, action and state sizes, cameras, delta and
binary dims) and the ``data`` section stay the robot YAML's, so one preset serves every machine.
"""
from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ['DataConfig', 'PRESET_MODEL_KEYS', 'find_config', 'available_presets', 'load_preset', 'load_train_yaml',
           'check_names', 'run', 'main']

log = logging.getLogger('vla_training.train')


@dataclass
class DataConfig:
    """How bags become episodes (``vla_training.bag_dataset.read_episode`` arguments)."""

    topics: Dict[str, Any] = field(default_factory=dict)   # BagTopics fields ({} = defaults); images: {camera: topic}
    rate_hz: Optional[float] = None     # None = the embodiment's control rate
    max_age_s: Optional[float] = None   # None = two control periods
    action_from_state: List[str] = field(default_factory=list)  # joints whose action = next measured state;
    # `all`: no command topic recorded, every action is the next measured state
    workers: int = 2                    # processes decoding bags
    # On-disk dataset cache (vla_training.dataset_cache): bags decoded once, reused while neither
    # they nor these data options change; false = decode every bag into RAM for this run only.
    cache: bool = True
    cache_dir: Optional[str] = None     # None = $VLA_CACHE_DIR or ~/.cache/vla_ros2/datasets
    cache_images: str = 'keep'          # keep: as the bag stored them; png: raw frames PNG-compressed (lossless)
    # Robot parameter file (config/<robot>.yaml, relative to this YAML): topics = the deployed ones
    # (BagTopics.from_robot_config); excludes `topics`, so recording, training and deployment agree.
    robot_config: Optional[str] = None


def _with_robot_topics(data: DataConfig, yaml_path: Optional[str]) -> DataConfig:
    """``data`` with ``topics`` read from ``data.robot_config`` (resolved relative to ``yaml_path``), and
    ``action_from_state: all`` (no command recorded: every action is the next measured state) turned
    into ``topics.command = None``.

    Raises:
        ValueError: both ``topics`` and ``robot_config`` given, or a bad robot config.
        FileNotFoundError: the robot config does not exist.
    """
    if data.robot_config:
        if data.topics:
            raise ValueError(f'data: give either topics or robot_config ({data.robot_config}), not both: '
                             f'the robot config names the deployed topics')
        from vla_training.bag_reader import BagTopics
        rc = Path(data.robot_config)
        if not rc.is_absolute() and yaml_path:
            rc = Path(yaml_path).resolve().parent / rc
        data.robot_config = str(rc)
        data.topics = dict(BagTopics.from_robot_config(rc).as_dict())
    if data.action_from_state in ('all', ['all']):
        data.topics = dict(data.topics, command=None)
        data.action_from_state = []
    return data


def _strict(cls, d: Optional[Dict[str, Any]], where: str):
    import dataclasses
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f'{where}: unknown key(s) {unknown}; known: {sorted(names)}')
    return cls(**d)


#: ``model`` keys a preset may set: the architecture. The rest of ``model`` describes the robot.
PRESET_MODEL_KEYS = ('structure', 'backbone', 'head', 'chunk', 'discrete', 'max_tokens')


def find_config(name: str) -> str:
    """``config/<name>``: the workspace's (above this file or the working directory), else the
    installed ``share/vla_policy/config/<name>`` of any prefix on ``AMENT_PREFIX_PATH``.

    Raises:
        FileNotFoundError: none of those exists (the places looked at are listed).
    """
    import os
    here = Path(__file__).resolve()
    places = [parent / 'config' / name for parent in here.parents]
    places.append(Path.cwd() / 'config' / name)
    for prefix in filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        places.append(Path(prefix) / 'share' / 'vla_policy' / 'config' / name)
    for cand in places:
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(f'config/{name} not found; looked in {[str(p) for p in places]}')


def available_presets() -> List[str]:
    """Names of the presets in ``config/models/`` (sorted); [] when that folder is not found."""
    try:
        folder = Path(find_config('models/film_cnn.yaml')).parent
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.glob('*.yaml'))


def _read_yaml(path: str) -> Dict[str, Any]:
    import yaml
    with open(path, encoding='utf-8') as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a mapping of sections')
    return raw


def load_preset(preset: str) -> Dict[str, Any]:
    """The ``{'model': {...}, 'train': {...}}`` of a preset: a name in ``config/models/`` or a YAML path.

    Raises:
        ValueError: unknown preset name (the available ones are listed), an unknown section, or a
            ``model`` key outside :data:`PRESET_MODEL_KEYS` (a robot key; named with the file).
    """
    path = preset
    if not (preset.endswith(('.yaml', '.yml')) or Path(preset).is_file()):
        try:
            path = find_config(f'models/{preset}.yaml')
        except FileNotFoundError:
            raise ValueError(f'unknown preset {preset!r}; available: {available_presets()}') from None
    if not Path(path).is_file():
        raise ValueError(f'preset file {path} does not exist; available presets: {available_presets()}')
    raw = _read_yaml(path)
    unknown = sorted(set(raw) - {'model', 'train'})
    if unknown:
        raise ValueError(f'{path}: unknown section(s) {unknown}; a preset has model and train')
    model = raw.get('model') or {}
    robot_keys = sorted(set(model) - set(PRESET_MODEL_KEYS))
    if robot_keys:
        raise ValueError(f'{path}: model key(s) {robot_keys} describe the robot, not the architecture; a preset '
                         f'may set {list(PRESET_MODEL_KEYS)}')
    return {'model': model, 'train': raw.get('train') or {}, 'path': path}


def _overlay(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``top`` merged in: nested mappings key by key, anything else replaced by ``top``'s."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_train_yaml(path: Optional[str], preset: Optional[str] = None):
    """``(VLAConfig, TrainConfig, DataConfig)`` from a YAML file (None = all defaults), with the model
    preset ``preset`` (name or path, see :func:`load_preset`) overlaid.

    Raises:
        FileNotFoundError: no such file. ValueError: unknown section or key (named with the file), an
            unknown preset, or a preset that does not fit the robot (e.g. a structure its backbone lacks).
    """
    from vla_policy.models.config import VLAConfig
    from vla_training.train import TrainConfig
    raw: Dict[str, Any] = {}
    if path:
        raw = _read_yaml(path)
    unknown = sorted(set(raw) - {'model', 'train', 'data'})
    if unknown:
        raise ValueError(f'{path}: unknown section(s) {unknown}; expected model, train, data')
    if preset:
        p = load_preset(preset)
        raw = dict(raw, model=_overlay(raw.get('model') or {}, p['model']),
                   train=_overlay(raw.get('train') or {}, p['train']))
    where = f'{path or "default config"} with preset {p["path"]}' if preset else path
    try:
        model = VLAConfig.from_dict(raw.get('model') or {})
        train = _strict(TrainConfig, raw.get('train'), 'train')
        data = _with_robot_topics(_strict(DataConfig, raw.get('data'), 'data'), path)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise ValueError(f'{where}: {exc}') from exc
    check_names(model, where or 'default config')
    return model, train, data


def check_names(model_cfg, where: str) -> None:
    """Fail before any bag is read when ``model_cfg`` names an unregistered backbone, head or embodiment,
    or predicts another number of action dims than the embodiment has.

    Raises:
        ValueError: ``<where>: model.backbone.name: unknown backbone 'x'; available: [...]`` (likewise
            ``model.head.name``, ``model.embodiment``).
    """
    from robot_drivers.embodiment import get_embodiment
    from vla_policy.models import available_backbones, available_heads
    heads = available_heads() + ['none']   # 'none': the one_step_discrete structure (LM head), VLAConfig checks
    for field_name, name, known in (('model.backbone.name', model_cfg.backbone.name, available_backbones()),
                                    ('model.head.name', model_cfg.head.name, heads)):
        if name not in known:
            raise ValueError(f'{where}: {field_name}: unknown {field_name.split(".")[1]} {name!r}; '
                             f'available: {known}')
    try:
        emb = get_embodiment(model_cfg.embodiment)
    except KeyError as exc:
        raise ValueError(f'{where}: model.embodiment: {exc.args[0]}') from None
    if emb.dof != model_cfg.action_dim:
        raise ValueError(f'{where}: model.action_dim is {model_cfg.action_dim} but embodiment {emb.name!r} has '
                         f'{emb.dof} action dims {list(emb.joint_names)}')


def _read_one(args):
    path, emb_name, topics, kw = args
    from robot_drivers.embodiment import get_embodiment
    from vla_training.bag_dataset import BagTopics, read_episode
    return read_episode(path, get_embodiment(emb_name), BagTopics.from_dict(topics), **kw)


def read_bags(bags: Sequence[str], model_cfg, data: DataConfig):
    """Episodes of every bag under ``bags`` (a bag dir, a dir of bags, or several), decoded in parallel."""
    import multiprocessing as mp
    from vla_training.bag_dataset import find_bags
    paths = find_bags(list(bags))
    kw = dict(rate_hz=data.rate_hz, image_size=None, max_age_s=data.max_age_s)
    if data.action_from_state:
        kw['action_from_state'] = tuple(data.action_from_state)
    jobs = [(str(p), model_cfg.embodiment, data.topics, kw) for p in paths]
    if data.workers > 1 and len(jobs) > 1:
        with mp.get_context('spawn').Pool(min(data.workers, len(jobs))) as pool:
            return pool.map(_read_one, jobs, chunksize=max(1, len(jobs) // (4 * data.workers)))
    return [_read_one(j) for j in jobs]


def cache_spec(model_cfg, data: DataConfig):
    """The :class:`vla_training.dataset_cache.CacheSpec` of a model's embodiment and ``data``."""
    from vla_training.bag_reader import BagTopics
    from vla_training.dataset_cache import CacheSpec
    return CacheSpec(embodiment=model_cfg.embodiment, topics=BagTopics.from_dict(data.topics).as_dict(),
                     rate_hz=data.rate_hz, max_age_s=data.max_age_s,
                     action_from_state=tuple(data.action_from_state), images=data.cache_images)


def load_data(bags: Sequence[str], model_cfg, data: DataConfig, progress: bool = False, device: str = 'cpu'):
    """The training data of ``bags``: a :class:`~vla_training.dataset_cache.DatasetCache` (built or
    reused; under torchrun each machine's local rank 0 builds, the others then find it), or, with
    ``data.cache`` false, the episodes in RAM. A LeRobotDataset v3 directory among ``bags`` is
    read with :func:`vla_training.lerobot_dataset.read_lerobot` and cached likewise."""
    from vla_training.bag_dataset import find_bags
    from vla_training.dataset_cache import DatasetCache, build_cache, build_cache_from_lerobot
    from vla_training.lerobot_dataset import is_lerobot_dataset
    lerobot = [b for b in bags if is_lerobot_dataset(b)]
    rosbags = [b for b in bags if b not in lerobot]
    if not data.cache:
        if lerobot:
            raise ValueError(f'data.cache: false cannot read the LeRobotDataset {lerobot[0]}; it is read through the cache')
        return read_bags(rosbags, model_cfg, data)
    import contextlib
    state = None
    if int(__import__('os').environ.get('WORLD_SIZE', '1')) > 1:
        from vla_training.train import process_state
        state = process_state(device)
    spec = cache_spec(model_cfg, data)
    bars: List[Any] = []

    def tick(done, total):      # a bar only once there is something to build
        if not bars:
            from tqdm.auto import tqdm
            bars.append(tqdm(desc='cache', unit='bag', total=total, dynamic_ncols=True))
        bars[0].n = done
        bars[0].refresh()

    with state.local_main_process_first() if state is not None else contextlib.nullcontext():
        parts = []
        if rosbags:
            parts.append(build_cache(find_bags(rosbags), spec, data.cache_dir, workers=data.workers,
                                     progress=tick if progress else None))
        for d in lerobot:
            parts.append(build_cache_from_lerobot(d, spec, data.cache_dir))
    for bar in bars:
        bar.close()
    if len(parts) == 1:
        return parts[0]
    return DatasetCache(root=parts[0].root, entries=[e for p in parts for e in p.entries],
                        built=sum(p.built for p in parts), reused=sum(p.reused for p in parts),
                        seconds=sum(p.seconds for p in parts))


def run(bags: Sequence[str], config: Optional[str] = None, output: Optional[str] = None,
        overrides: Optional[Dict[str, Any]] = None, progress: bool = True, data_workers: Optional[int] = None,
        preset: Optional[str] = None, resume: bool = False, data_overrides: Optional[Dict[str, Any]] = None):
    """Read ``bags``, train, return the ``TrainResult``; ``overrides``: ``{'steps': 500, 'backbone': 'hf_vlm'}``
    (TrainConfig fields); ``data_overrides``: DataConfig fields (``{'cache': False}``); ``preset``: a
    model preset overlaid on ``config`` (:func:`load_train_yaml`); ``resume``: continue from the run
    directory's training state (:func:`vla_training.train.train`)."""
    from vla_training.train import train
    model_cfg, train_cfg, data_cfg = load_train_yaml(config, preset)
    overrides = dict(overrides or {})
    if overrides.get('backbone'):
        model_cfg.backbone.name = overrides.pop('backbone')
        model_cfg = type(model_cfg).from_dict(model_cfg.to_dict())   # re-run the cross-field checks
        check_names(model_cfg, '--backbone')
    for k, v in overrides.items():
        if v is not None:
            setattr(train_cfg, k, v)
    if output:
        train_cfg.output_dir = output
    if data_workers is not None:
        data_cfg.workers = data_workers
    for k, v in (data_overrides or {}).items():
        if v is not None:
            setattr(data_cfg, k, v)
    try:   # re-run TrainConfig's checks with the overrides (e.g. steps below warmup_steps)
        train_cfg = type(train_cfg)(**vars(train_cfg))
    except ValueError as exc:
        given = ', '.join(f'{k}={v}' for k, v in overrides.items() if v is not None)
        raise ValueError(f'{config or "default config"}{f" with {given}" if given else ""}: train: {exc}') from exc
    t0 = time.time()
    data = load_data(bags, model_cfg, data_cfg, progress=progress, device=train_cfg.device)
    if isinstance(data, list):
        n, dropped, what = sum(len(e) for e in data), sum(e.dropped for e in data), 'in RAM'
    else:
        n = int(data.lengths.sum())
        dropped = sum(e.meta['dropped'] for e in data.entries)
        what = f'cache {data.root}: {data.built} built, {data.reused} reused'
    msg = (f'read {len(data)} episodes, {n} samples ({dropped} stale ticks dropped) in {time.time() - t0:.1f} s '
           f'({what})')
    log.info(msg)
    if progress:
        print(msg)
    return train(data, model_cfg, train_cfg, progress=progress, resume=resume)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``train`` console script; exit status 0, 1 (bad bag/config, one line on stderr) or 2 (usage).

    Errors are reported by :func:`robot_drivers.cli.run_main`: one line, the traceback with ``--debug``.
    """
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='train', description=__doc__.split('\n\n')[0])
    p.add_argument('--bags', nargs='+', required=True, help='rosbag2 directories, or directories holding them')
    p.add_argument('--config', default=None, help='YAML with model/train/data sections (config/train_franka.yaml)')
    p.add_argument('--preset', default=None,
                   help='model preset overlaid on --config: a name in config/models/ (film_cnn, octo, pi0, rt2, '
                        'groot, robovlms) or a YAML path')
    p.add_argument('--output', default=None, help='run directory (default: train.output_dir of the config)')
    p.add_argument('--steps', type=cli.positive_int, default=None)
    p.add_argument('--batch-size', type=cli.positive_int, default=None)
    p.add_argument('--backbone', default=None, help='backbone registry name, e.g. film_cnn or hf_vlm')
    p.add_argument('--device', default=None)
    p.add_argument('--resume', action='store_true',
                   help='continue from <output>/training_state (written every train.checkpoint_every steps)')
    p.add_argument('--cache-dir', default=None, help='dataset cache directory (default $VLA_CACHE_DIR or '
                                                      '~/.cache/vla_ros2/datasets)')
    p.add_argument('--no-cache', action='store_true', help='decode the bags into RAM for this run only')
    p.add_argument('--nproc-per-node', type=cli.positive_int, default=None,
                   help='train with N processes on this machine (torchrun --standalone; DDP, gloo on CPU, NCCL on GPU)')
    p.add_argument('--no-progress', action='store_true')
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if a.nproc_per_node and a.nproc_per_node > 1 and 'LOCAL_RANK' not in __import__('os').environ:
        return _torchrun(a.nproc_per_node, list(argv) if argv is not None else sys.argv[1:])

    def body() -> int:
        res = run(a.bags, a.config, a.output,
                  {'steps': a.steps, 'batch_size': a.batch_size, 'backbone': a.backbone, 'device': a.device},
                  progress=not a.no_progress, preset=a.preset, resume=a.resume,
                  data_overrides={'cache_dir': a.cache_dir, 'cache': False if a.no_cache else None})
        if int(__import__('os').environ.get('RANK', '0')) == 0:
            print(f'checkpoint: {res.checkpoint_dir}  (val loss {res.val_loss}, {res.seconds:.0f} s)')
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


def _torchrun(nproc: int, argv: List[str]) -> int:
    """Run this entry point under ``torchrun --standalone --nproc-per-node N`` (one machine)."""
    from torch.distributed.run import main as torchrun_main
    rest = [x for i, x in enumerate(argv) if not x.startswith('--nproc-per-node')
            and not (i > 0 and argv[i - 1] == '--nproc-per-node')]
    try:
        torchrun_main(['--standalone', f'--nproc-per-node={nproc}', '-m', 'vla_training.train_cli'] + rest)
    except Exception as exc:   # torch.distributed.elastic's ChildFailedError: each rank printed its error
        print(f'train: error: {nproc} processes under torchrun failed ({type(exc).__name__})', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
