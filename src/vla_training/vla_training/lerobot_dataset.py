"""LeRobotDataset v3.0 interop: :class:`~vla_training.bag_dataset.Episode` streams <-> LeRobot directories.

ROS-free and LeRobot-free: parquet through pyarrow, mp4 through PyAV, PNG through Pillow. The layout is
the one LeRobot 0.4.4's own writer produces (``LeRobotDataset.create`` / ``add_frame`` /
``save_episode`` / ``finalize`` in ``lerobot/datasets/lerobot_dataset.py``; paths and defaults in
``lerobot/datasets/utils.py``), checked against files LeRobot 0.4.4 wrote and loaded back by
``LeRobotDataset`` itself (``lerobot_side.py load``, ``test/test_lerobot_dataset.py``)::

    root/
      meta/info.json                       codebase_version "v3.0", fps, features (dtype/shape/names; a
                                           video feature carries its "info" block), totals, splits,
                                           chunks_size 1000, data_files_size_in_mb 100,
                                           video_files_size_in_mb 200, data_path / video_path templates
      meta/stats.json                      dataset stats (per-episode stats aggregated episode by episode)
      meta/tasks.parquet                   task strings (pandas index) -> task_index
      meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length,
                                           data/chunk_index, data/file_index, dataset_from_index,
                                           dataset_to_index, videos/<key>/{chunk_index, file_index,
                                           from_timestamp, to_timestamp}, stats/<feature>/<stat>,
                                           meta/episodes/{chunk_index, file_index}
      data/chunk-000/file-000.parquet      one row per frame: [observation.images.<cam> (images mode:
                                           {bytes: PNG, path}),] observation.state, action, timestamp,
                                           frame_index, episode_index, index, task_index; one row
                                           group per episode; snappy; the ``huggingface`` schema
                                           metadata ``datasets`` reads
      videos/observation.images.<cam>/chunk-000/file-000.mp4   (video mode) the episodes back to back

Files roll over (``file-001``, ..., ``chunk-001`` after ``chunks_size`` files) at the sizes LeRobot
uses, by LeRobot's rules (``_save_episode_data``, ``_save_episode_video``,
``LeRobotDatasetMetadata._save_episode_metadata``). Videos: each episode is encoded on its own, as
``encode_video_frames`` does (PyAV, libsvtav1, yuv420p, ``g=2``, ``crf=30``, ``preset=12``: every
episode starts on a key frame, a key frame every 2 frames), then its packets are appended to the
camera's current mp4 with the timestamps shifted by the episodes before it, which is what
``concatenate_video_files`` (ffmpeg's concat demuxer, stream copy, ``movflags=faststart``) produces.
Feature mapping: camera ``c`` of :meth:`Episode.cameras` -> ``observation.images.c`` (``uint8 (H, W,
3)``), ``joint_positions`` -> ``observation.state`` and ``actions`` -> ``action`` (``float32 (J,)``,
names = ``joint_names``), the instruction -> ``task``; ``timestamp = frame_index / fps`` (LeRobot's
convention, ``add_frame``). Additions LeRobot ignores: ``info["vla"]`` holds ``repo_id`` and per
episode the source and the real start time (s since the epoch), which :func:`read_lerobot` adds back
to the stamps.

What survives a round trip (:func:`export_lerobot` then :func:`read_lerobot`): states, actions,
instructions, joint names, fps bit-exact in both modes; images bit-exact in images mode (PNG);
video mode is lossy: AV1 at crf 30 in yuv420p (4:2:0 chroma), measured on the MuJoCo sim's 96x96
front and wrist cameras at 32.9-35.0 dB PSNR per camera and episode (mean |error| ~2.2 of 255;
LeRobot 0.4.4's own encoder on the same frames: 32.9-35.0 dB), and LeRobot's decoders (torchcodec,
pyav) return the same pixels as :func:`read_lerobot`. Stamps: the real start time plus the ``float32``
``frame_index / fps`` (within 1e-6 s). Statistics equal LeRobot's bit for bit, under NumPy 1.26 too.
The SVT-AV1 encoder logs its settings to stderr for every episode; ``SVT_LOG=1`` silences it.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .bag_dataset import Episode

__all__ = [
    'CODEBASE_VERSION',
    'LeRobotFormatError',
    'default_camera_key',
    'export_lerobot',
    'is_lerobot_dataset',
    'main',
    'read_lerobot',
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

# ----------------------------------------------------------------------------- LeRobot 0.4.4 constants
# lerobot/datasets/lerobot_dataset.py CODEBASE_VERSION; lerobot/datasets/utils.py DEFAULT_*
CODEBASE_VERSION = 'v3.0'
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
INFO_PATH = 'meta/info.json'
STATS_PATH = 'meta/stats.json'
TASKS_PATH = 'meta/tasks.parquet'
EPISODES_DIR = 'meta/episodes'
CHUNK_FILE_PATTERN = 'chunk-{chunk_index:03d}/file-{file_index:03d}'
DEFAULT_EPISODES_PATH = EPISODES_DIR + '/' + CHUNK_FILE_PATTERN + '.parquet'
DEFAULT_DATA_PATH = 'data/' + CHUNK_FILE_PATTERN + '.parquet'
DEFAULT_VIDEO_PATH = 'videos/{video_key}/' + CHUNK_FILE_PATTERN + '.mp4'
DEFAULT_FEATURES = {
    'timestamp': {'dtype': 'float32', 'shape': (1,), 'names': None},
    'frame_index': {'dtype': 'int64', 'shape': (1,), 'names': None},
    'episode_index': {'dtype': 'int64', 'shape': (1,), 'names': None},
    'index': {'dtype': 'int64', 'shape': (1,), 'names': None},
    'task_index': {'dtype': 'int64', 'shape': (1,), 'names': None},
}
STATE_KEY, ACTION_KEY, IMAGES_PREFIX = 'observation.state', 'action', 'observation.images.'
METADATA_BUFFER_SIZE = 10           # LeRobotDatasetMetadata(metadata_buffer_size=10)
PNG_COMPRESS_LEVEL = 6              # LeRobotDataset.add_frame: 6 for "image" features
DEFAULT_QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)   # compute_stats.DEFAULT_QUANTILES
TOLERANCE_S = 1e-4                  # LeRobotDataset(tolerance_s=1e-4)
VIDEO_CODECS = ('libsvtav1', 'h264', 'hevc')          # video_utils.VALID_VIDEO_CODECS, software encoders
_MIB = 1024 ** 2


class LeRobotFormatError(ValueError):
    """A directory that is not a readable LeRobotDataset v3.0 (one line: the file and the field)."""


def default_camera_key(camera: str) -> str:
    """``'front'`` -> ``'observation.images.front'`` (LeRobot's ``hw_to_dataset_features`` naming)."""
    return f'{IMAGES_PREFIX}{camera}'


# ============================================================================= statistics
# A port of lerobot/datasets/compute_stats.py (LeRobot 0.4.4, Apache-2.0) restricted to the cases
# LeRobotDataset.save_episode uses: vectors (axis 0) and images (axis (0, 2, 3), sampled with
# sample_indices / auto_downsample_height_width). Same dtypes in, same numbers out: that includes
# RunningQuantileStats.update squaring the uint8 pixels in uint8 (``batch**2`` wraps), which makes
# LeRobot's image "std" near 0; reproduced so that our stats equal those LeRobot writes.
def _weak(v: np.generic, x: float):
    """The Python float ``x`` as NumPy >= 2 combines it with the scalar ``v`` (NEP 50: it takes a
    floating scalar's dtype). LeRobot 0.4.4 runs on NumPy 2; NumPy 1.x would promote a float32 ``v``
    to float64 and so give other histogram edges."""
    return v.dtype.type(x) if np.issubdtype(v.dtype, np.floating) else x


def _linspace(start: np.generic, stop: np.generic, num: int) -> np.ndarray:
    """``np.linspace(start, stop, num)`` of two scalars as NumPy 2.x evaluates it: in their common
    inexact dtype (float32 for a float32 feature), where NumPy 1.x evaluates in float64 (same steps as
    numpy/_core/function_base.py linspace, so both NumPy versions give LeRobot's edges)."""
    dt = np.result_type(start, stop)
    if not np.issubdtype(dt, np.inexact):
        dt = np.dtype(np.float64)
    start, stop = np.asarray(start, dtype=dt), np.asarray(stop, dtype=dt)
    div = num - 1
    delta = np.subtract(stop, start, dtype=dt.type)
    y = np.arange(0, num, dtype=dt)
    step = delta / dt.type(div)
    if step == 0:           # denormal handling, gh-5437
        y /= dt.type(div)
        y *= delta
    else:
        y *= step
    y += start
    y[-1] = stop
    return y


class _RunningQuantileStats:
    """compute_stats.RunningQuantileStats (one ``update`` per episode, 5000 histogram bins)."""

    def __init__(self, num_quantile_bins: int = 5000):
        self._count = 0
        self._num_quantile_bins = num_quantile_bins
        self._quantile_keys = [f'q{int(q * 100):02d}' for q in DEFAULT_QUANTILES]

    def update(self, batch: np.ndarray) -> None:
        batch = batch.reshape(-1, batch.shape[-1])
        num_elements, vector_length = batch.shape
        if self._count == 0:
            self._mean = np.mean(batch, axis=0)
            self._mean_of_squares = np.mean(batch ** 2, axis=0)
            self._min = np.min(batch, axis=0)
            self._max = np.max(batch, axis=0)
            self._histograms = [np.zeros(self._num_quantile_bins) for _ in range(vector_length)]
            self._bin_edges = [_linspace(self._min[i] - _weak(self._min[i], 1e-10),
                                         self._max[i] + _weak(self._max[i], 1e-10), self._num_quantile_bins + 1)
                               for i in range(vector_length)]
        else:  # pragma: no cover - one batch per feature and episode, as in save_episode
            raise RuntimeError('one update per statistics object')
        self._count += num_elements
        batch_mean = np.mean(batch, axis=0)
        batch_mean_of_squares = np.mean(batch ** 2, axis=0)
        self._mean += (batch_mean - self._mean) * (num_elements / self._count)
        self._mean_of_squares += (batch_mean_of_squares - self._mean_of_squares) * (num_elements / self._count)
        for i in range(batch.shape[1]):
            hist, _ = np.histogram(batch[:, i], bins=self._bin_edges[i])
            self._histograms[i] += hist

    def get_statistics(self) -> Dict[str, np.ndarray]:
        variance = self._mean_of_squares - self._mean ** 2
        stats = {'min': self._min.copy(), 'max': self._max.copy(), 'mean': self._mean.copy(),
                 'std': np.sqrt(np.maximum(0, variance)), 'count': np.array([self._count])}
        for key, q in zip(self._quantile_keys, DEFAULT_QUANTILES):
            target = q * self._count
            stats[key] = np.array([self._quantile(h, e, target) for h, e in zip(self._histograms, self._bin_edges)])
        return stats

    @staticmethod
    def _quantile(hist: np.ndarray, edges: np.ndarray, target_count: float) -> float:
        cumsum = np.cumsum(hist)
        idx = np.searchsorted(cumsum, target_count)
        if idx == 0:
            return edges[0]
        if idx >= len(cumsum):
            return edges[-1]
        count_before = cumsum[idx - 1]
        count_in_bin = cumsum[idx] - count_before
        if count_in_bin == 0:
            return edges[idx]
        fraction = (target_count - count_before) / count_in_bin
        return edges[idx] + fraction * (edges[idx + 1] - edges[idx])


def _feature_stats(reshaped: np.ndarray, sample_count: int) -> Dict[str, np.ndarray]:
    """compute_stats.get_feature_stats after _prepare_array_for_stats: ``reshaped`` is ``(N, D)``."""
    if reshaped.shape[0] < 2:   # _compute_basic_stats
        stats = {'min': np.min(reshaped, axis=0), 'max': np.max(reshaped, axis=0),
                 'mean': np.mean(reshaped, axis=0), 'std': np.std(reshaped, axis=0),
                 'count': np.array([sample_count])}
        for q in DEFAULT_QUANTILES:
            stats[f'q{int(q * 100):02d}'] = stats['mean'].copy()
        return stats
    rs = _RunningQuantileStats()
    rs.update(reshaped)
    stats = rs.get_statistics()
    stats['count'] = np.array([sample_count])
    return stats


def _vector_stats(data: np.ndarray) -> Dict[str, np.ndarray]:
    """Stats of a ``(T,)`` or ``(T, D)`` feature as ``compute_episode_stats`` gives them: ``(1,)``
    or ``(D,)`` arrays (``keepdims = data.ndim == 1``), ``count = [T]``."""
    if data.ndim == 1:
        stats = _feature_stats(data.reshape(-1, 1), data.shape[0])
        return {k: v if k == 'count' else np.asarray(v).reshape(1) for k, v in stats.items()}
    return _feature_stats(data, data.shape[0])


def _sample_indices(data_len: int) -> List[int]:
    """compute_stats.sample_indices / estimate_num_samples (100..10000 frames, ``len**0.75``)."""
    min_num_samples, max_num_samples = 100, 10_000
    if data_len < min_num_samples:
        min_num_samples = data_len
    num_samples = max(min_num_samples, min(int(data_len ** 0.75), max_num_samples))
    return np.round(np.linspace(0, data_len - 1, num_samples)).astype(int).tolist()


def _image_stats(frames: np.ndarray) -> Dict[str, np.ndarray]:
    """Stats of ``uint8 (T, H, W, 3)`` frames as ``compute_episode_stats`` gives them for an image or
    video feature: sampled frames, strided down when ``max(H, W) >= 300``, per channel, ``/ 255``,
    shape ``(3, 1, 1)``; ``count`` = the number of sampled frames."""
    idx = _sample_indices(frames.shape[0])
    h, w = frames.shape[1:3]
    step = 1
    if max(w, h) >= 300:   # auto_downsample_height_width(target_size=150, max_size_threshold=300)
        step = int(w / 150) if w > h else int(h / 150)
    sampled = frames[idx][:, ::step, ::step, :]            # (N, h, w, C), uint8 like load_image_as_numpy
    reshaped = np.ascontiguousarray(sampled).reshape(-1, frames.shape[3])
    stats = _feature_stats(reshaped, len(idx))
    return {k: v if k == 'count' else np.asarray(v).reshape(-1, 1, 1) / 255.0 for k, v in stats.items()}


def _aggregate_feature_stats(stats_ft_list: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """compute_stats.aggregate_feature_stats."""
    means = np.stack([s['mean'] for s in stats_ft_list])
    variances = np.stack([s['std'] ** 2 for s in stats_ft_list])
    counts = np.stack([s['count'] for s in stats_ft_list])
    total_count = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    total_mean = (means * counts).sum(axis=0) / total_count
    delta_means = means - total_mean
    total_variance = ((variances + delta_means ** 2) * counts).sum(axis=0) / total_count
    out = {'min': np.min(np.stack([s['min'] for s in stats_ft_list]), axis=0),
           'max': np.max(np.stack([s['max'] for s in stats_ft_list]), axis=0),
           'mean': total_mean, 'std': np.sqrt(total_variance), 'count': total_count}
    for q_key in [k for k in stats_ft_list[0] if k.startswith('q') and k[1:].isdigit()]:
        if all(q_key in s for s in stats_ft_list):
            out[q_key] = (np.stack([s[q_key] for s in stats_ft_list]) * counts).sum(axis=0) / total_count
    return out


def _aggregate_stats(stats_list: List[Dict[str, Dict[str, np.ndarray]]]) -> Dict[str, Dict[str, np.ndarray]]:
    """compute_stats.aggregate_stats (keys in first-seen order instead of a set's)."""
    keys: List[str] = []
    for s in stats_list:
        keys.extend(k for k in s if k not in keys)
    return {k: _aggregate_feature_stats([s[k] for s in stats_list if k in s]) for k in keys}


def _to_json(value: Any) -> Any:
    """utils.serialize_dict for one value: arrays -> nested lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_json(data: dict, path: Path) -> None:
    """utils.write_json: indent 4, ``ensure_ascii=False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=4, ensure_ascii=False)


# ============================================================================= arrow schemas
def _pa():
    import pyarrow as pa
    return pa


def _hf_feature_json(ft: dict) -> dict:
    """The ``datasets`` (4.x) feature JSON that ``get_hf_features_from_features`` yields for a feature."""
    if ft['dtype'] == 'image':
        return {'_type': 'Image'}
    if tuple(ft['shape']) == (1,):
        return {'dtype': ft['dtype'], '_type': 'Value'}
    return {'feature': {'dtype': ft['dtype'], '_type': 'Value'}, 'length': int(ft['shape'][0]), '_type': 'List'}


def _data_schema(features: Dict[str, dict]):
    """Arrow schema of a data file: the non-video features in order, with the ``huggingface``
    metadata ``datasets`` writes (``Dataset.from_dict(..., features=hf_features)``)."""
    pa = _pa()
    fields, hf = [], {}
    for key, ft in features.items():
        if ft['dtype'] == 'video':
            continue
        if ft['dtype'] == 'image':
            typ = pa.struct([('bytes', pa.binary()), ('path', pa.string())])
        elif tuple(ft['shape']) == (1,):
            typ = pa.from_numpy_dtype(np.dtype(ft['dtype']))
        else:
            typ = pa.list_(pa.field('element', pa.from_numpy_dtype(np.dtype(ft['dtype']))), int(ft['shape'][0]))
        fields.append(pa.field(key, typ))
        hf[key] = _hf_feature_json(ft)
    meta = {b'huggingface': json.dumps({'info': {'features': hf}}).encode()}
    return pa.schema(fields, metadata=meta)


# The schema pandas writes for LeRobot's tasks DataFrame (``write_tasks``: ``tasks.to_parquet``, an
# index of task strings and an int64 ``task_index`` column), as pandas 3.1.2 (LeRobot 0.4.4's resolved
# dependency) writes it; ``pandas.read_parquet`` (``load_tasks``) restores the index from it.
_TASKS_PANDAS_META = {
    'index_columns': ['__index_level_0__'],
    'column_indexes': [{'name': None, 'field_name': None, 'pandas_type': 'unicode', 'numpy_type': 'str',
                        'metadata': {'encoding': 'UTF-8'}}],
    'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64', 'numpy_type': 'int64',
                 'metadata': None},
                {'name': None, 'field_name': '__index_level_0__', 'pandas_type': 'object', 'numpy_type': 'str',
                 'metadata': None}],
    'attributes': {}, 'creator': {'library': 'pyarrow', 'version': ''}, 'pandas_version': '3.1.2',
}


def _write_tasks(tasks: List[str], path: Path) -> None:
    import pyarrow.parquet as pq
    pa = _pa()
    meta = dict(_TASKS_PANDAS_META, creator={'library': 'pyarrow', 'version': pa.__version__})
    schema = pa.schema([pa.field('task_index', pa.int64()), pa.field('__index_level_0__', pa.large_string())],
                       metadata={b'pandas': json.dumps(meta).encode()})
    table = pa.table({'task_index': pa.array(range(len(tasks)), pa.int64()),
                      '__index_level_0__': pa.array(tasks, pa.large_string())}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression='snappy')


def _update_chunk_file_indices(chunk_idx: int, file_idx: int, chunks_size: int) -> Tuple[int, int]:
    """utils.update_chunk_file_indices."""
    if file_idx == chunks_size - 1:
        return chunk_idx + 1, 0
    return chunk_idx, file_idx + 1


# ============================================================================= video
def _codec_options(vcodec: str, g: Optional[int], crf: Optional[int], preset: Optional[int],
                   encoder_threads: Optional[int]) -> Dict[str, str]:
    """video_utils._get_codec_options (software encoders) plus ``encode_video_frames``' threads."""
    options: Dict[str, str] = {}
    if g is not None:
        options['g'] = str(g)
    if crf is not None:
        options['crf'] = str(crf)
    if vcodec == 'libsvtav1':
        options['preset'] = str(preset) if preset is not None else '12'
    if encoder_threads is not None:
        if vcodec == 'libsvtav1':
            options['svtav1-params'] = f'lp={encoder_threads}'
        else:
            options['threads'] = str(encoder_threads)
    return options


def _encode_episode(frames: np.ndarray, path: Path, fps: int, vcodec: str, pix_fmt: str,
                    options: Dict[str, str]) -> None:
    """video_utils.encode_video_frames on in-memory ``uint8 (T, H, W, 3)`` RGB frames (LeRobot reads
    the same frames back from lossless PNGs and hands PyAV ``rgb24`` frames)."""
    import av
    with av.open(str(path), 'w') as out:
        stream = out.add_stream(vcodec, fps, options=options)
        stream.pix_fmt = pix_fmt
        stream.width = int(frames.shape[2])
        stream.height = int(frames.shape[1])
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _video_duration_s(path: Path) -> float:
    """video_utils.get_video_duration_in_s."""
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.duration is not None:
            return float(s.duration * s.time_base)
        return float(c.duration / av.time_base)


def _video_info(path: Path) -> dict:
    """video_utils.get_video_info (+ get_audio_info) of a written mp4."""
    import av
    with av.open(str(path), 'r') as c:
        s = c.streams.video[0]
        pix_fmt = s.codec_context.pix_fmt if s.codec_context.pix_fmt else s.pix_fmt
        if 'gray' in pix_fmt or 'depth' in pix_fmt or 'monochrome' in pix_fmt:
            channels = 1
        elif 'rgba' in pix_fmt or 'yuva' in pix_fmt:
            channels = 4
        else:
            channels = 3
        info = {'video.height': s.height, 'video.width': s.width, 'video.codec': s.codec_context.codec.canonical_name,
                'video.pix_fmt': pix_fmt, 'video.is_depth_map': False, 'video.fps': int(s.base_rate),
                'video.channels': channels}
        info['has_audio'] = len(c.streams.audio) > 0
    return info


def _stream_copy(out, template):
    """An output stream that takes ``template``'s packets as they are (``concatenate_video_files``:
    ``add_stream_from_template(template, opaque=True)``; no encoder is opened)."""
    if not hasattr(out, 'add_stream_from_template'):   # pragma: no cover - PyAV 12
        return out.add_stream(template=template)
    try:
        return out.add_stream_from_template(template=template, opaque=True)
    except TypeError:                                     # pragma: no cover - PyAV 13 (no ``opaque``)
        return out.add_stream_from_template(template=template)


class _VideoFile:
    """One camera's current mp4: episodes' packets appended with shifted timestamps (what
    ``concatenate_video_files`` makes of ``[latest_path, episode_path]``), rolled over as
    ``_save_episode_video`` does. LeRobot compares the concatenated file's size; here the size is the
    sum of the per-episode files' sizes (a few hundred bytes of per-file header more per episode)."""

    def __init__(self, root: Path, key: str, video_path: str, chunks_size: int, limit_mb: float):
        self.root, self.key, self.video_path = root, key, video_path
        self.chunks_size, self.limit_mb = chunks_size, limit_mb
        self.chunk_idx, self.file_idx = 0, 0
        self.out = None
        self.stream = None
        self.size_mb = 0.0
        self.to_timestamp = 0.0
        self.offset = 0            # in the stream's time base
        self.time_base: Optional[Fraction] = None
        self.first_path: Optional[Path] = None

    def _open(self) -> None:
        import av
        path = self.root / self.video_path.format(video_key=self.key, chunk_index=self.chunk_idx,
                                                  file_index=self.file_idx)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.first_path is None:
            self.first_path = path
        self.out = av.open(str(path), mode='w', options={'movflags': 'faststart'})
        self.stream = None
        self.size_mb = 0.0
        self.to_timestamp = 0.0
        self.offset = 0

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None

    def append(self, ep_path: Path) -> Dict[str, Any]:
        """Append one episode's mp4; returns its ``videos/<key>/...`` metadata columns."""
        import av
        ep_size_mb = ep_path.stat().st_size / _MIB
        ep_duration_s = _video_duration_s(ep_path)
        if self.out is None:
            self._open()
        elif self.size_mb + ep_size_mb >= self.limit_mb:
            self.close()
            self.chunk_idx, self.file_idx = _update_chunk_file_indices(self.chunk_idx, self.file_idx, self.chunks_size)
            self._open()
        from_timestamp = self.to_timestamp
        with av.open(str(ep_path)) as src:
            s_in = src.streams.video[0]
            if self.stream is None:
                self.stream = _stream_copy(self.out, s_in)
                self.stream.time_base = s_in.time_base
                self.time_base = s_in.time_base
            elif s_in.time_base != self.time_base:
                raise ValueError(f'{ep_path}: time base {s_in.time_base} differs from {self.time_base} '
                                 f'of the earlier episodes of {self.key}')
            for packet in src.demux(s_in):
                if packet.dts is None:       # demuxer flush packet (concatenate_video_files skips them)
                    continue
                packet.pts = packet.pts + self.offset if packet.pts is not None else None
                packet.dts = packet.dts + self.offset
                packet.stream = self.stream
                self.out.mux(packet)
            duration = s_in.duration if s_in.duration is not None else \
                int(round(ep_duration_s / float(s_in.time_base)))
        self.offset += int(duration)
        self.size_mb += ep_size_mb
        self.to_timestamp = from_timestamp + ep_duration_s
        return {f'videos/{self.key}/chunk_index': self.chunk_idx, f'videos/{self.key}/file_index': self.file_idx,
                f'videos/{self.key}/from_timestamp': from_timestamp,
                f'videos/{self.key}/to_timestamp': from_timestamp + ep_duration_s}


# ============================================================================= writing
@dataclass
class _Spec:
    """The first episode's layout; every later episode must match it."""
    cameras: Tuple[str, ...]
    image_shapes: Dict[str, Tuple[int, int, int]]
    joint_names: Tuple[str, ...]
    dim: int


def _episode_arrays(ep: Episode, i: int, fps: int, spec: Optional[_Spec], allow_gaps: bool
                    ) -> Tuple[_Spec, Dict[str, np.ndarray], np.ndarray, np.ndarray, List[str]]:
    """Validate one episode; returns (spec, {camera: uint8 (T, H, W, 3)}, state, action, tasks)."""
    src = f'episode {i} ({getattr(ep, "source", "?")})'
    t = len(ep)
    if t == 0:
        raise ValueError(f'{src}: empty (0 frames)')
    if ep.rate_hz is not None and abs(float(ep.rate_hz) - fps) > 1e-9 * fps:
        raise ValueError(f'{src}: rate_hz is {ep.rate_hz} Hz, the dataset fps is {fps}')
    # np.asarray decodes frames kept encoded (bag_dataset.EncodedFrames) once, here
    cams = {c: np.asarray(img) for c, img in ep.cameras().items()}
    for cam, arr in cams.items():
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
            raise ValueError(f'{src}: camera_images[{cam!r}] must be uint8 (T, H, W, 3), '
                             f'got {arr.dtype} {arr.shape}')
    state = np.asarray(ep.joint_positions)
    action = np.asarray(ep.actions)
    for name, arr in (('joint_positions', state), ('actions', action)):
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f'{src}: {name} must be a real (T, J) array, got {arr.dtype} {arr.shape}')
    if action.shape[1] != state.shape[1]:
        raise ValueError(f'{src}: actions have {action.shape[1]} columns, joint_positions {state.shape[1]}')
    names = tuple(ep.joint_names)
    if names and len(names) != state.shape[1]:
        raise ValueError(f'{src}: joint_names has {len(names)} names for {state.shape[1]} columns')
    state32, action32 = state.astype(np.float32), action.astype(np.float32)
    for name, arr in (('joint_positions', state32), ('actions', action32)):
        bad = ~np.isfinite(arr)
        if bad.any():
            row, col = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(f'{src}: {name} is not finite (as float32) at frame {row}, column {col}')
    tasks = list(ep.instructions)
    for k, task in enumerate(tasks):
        if not isinstance(task, str):
            raise ValueError(f'{src}: instructions[{k}] is {type(task).__name__}, not str')
    stamps = np.asarray(ep.stamps, dtype=np.float64)
    if not np.isfinite(stamps).all():
        raise ValueError(f'{src}: stamps are not finite')
    if t > 1:
        d = np.diff(stamps)
        k = np.round(d * fps)
        off_grid = (k < 1) | (np.abs(d - k / fps) > TOLERANCE_S)
        if off_grid.any():
            j = int(np.nonzero(off_grid)[0][0])
            raise ValueError(f'{src}: stamps step {d[j]:.6f} s after frame {j}, not a multiple of 1/fps = '
                             f'{1.0 / fps:.6f} s (LeRobot tolerance {TOLERANCE_S} s)')
        gaps = int((k > 1).sum())
        if gaps and not allow_gaps:
            raise ValueError(f'{src}: stamps skip {int((k - 1).sum())} ticks in {gaps} gaps (dropped={ep.dropped}); '
                             f'LeRobot puts frames 1/fps apart: pass allow_gaps=True to write them back to back')
        if gaps:
            log.warning('%s: %d gaps in the stamps written back to back (timestamp = frame_index / fps)', src, gaps)
    shapes = {c: tuple(int(v) for v in np.shape(img)[1:]) for c, img in cams.items()}
    if spec is None:
        spec = _Spec(cameras=tuple(cams), image_shapes=shapes, joint_names=names, dim=int(state.shape[1]))
    else:
        if set(cams) != set(spec.cameras):
            raise ValueError(f'{src}: cameras {list(cams)} differ from the first episode\'s {list(spec.cameras)}')
        for c in spec.cameras:
            if shapes[c] != spec.image_shapes[c]:
                raise ValueError(f'{src}: camera_images[{c!r}] frames are {shapes[c]}, the first episode\'s '
                                 f'{spec.image_shapes[c]} (H, W, C)')
        if names != spec.joint_names:
            raise ValueError(f'{src}: joint_names {list(names)} differ from the first episode\'s '
                             f'{list(spec.joint_names)}')
        if state.shape[1] != spec.dim:
            raise ValueError(f'{src}: joint_positions have {state.shape[1]} columns, the first episode {spec.dim}')
    return spec, cams, state32, action32, tasks


def _png(frame: np.ndarray) -> bytes:
    """image_writer.write_image for an "image" feature: PIL PNG, ``compress_level=6``."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format='PNG', compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _check_root(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise FileExistsError(f'{root} exists and is not a directory')
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f'{root} exists and is not empty (pass overwrite=True to replace it)')


def export_lerobot(episodes: Iterable[Episode], root: PathLike, *, fps: Union[int, float],
                   repo_id: str = 'local/vla_demos', robot_type: Optional[str] = None, use_videos: bool = True,
                   vcodec: str = 'libsvtav1', pix_fmt: str = 'yuv420p', g: Optional[int] = 2,
                   crf: Optional[int] = 30, preset: Optional[int] = None, encoder_threads: Optional[int] = None,
                   camera_key: Callable[[str], str] = default_camera_key,
                   chunks_size: int = DEFAULT_CHUNK_SIZE, data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                   video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB, allow_gaps: bool = False,
                   overwrite: bool = False) -> Path:
    """Write episodes as a LeRobotDataset v3.0 directory, laid out as LeRobot 0.4.4 writes it.

    The episodes are consumed one at a time (memory: one episode, its encoded video and a buffer of
    10 episodes' metadata rows, as ``LeRobotDatasetMetadata``). The dataset is built in a temporary
    directory beside ``root`` and renamed to ``root`` once complete; on any error that directory is
    removed and ``root`` is left as it was.

    Args:
        episodes: :class:`Episode` objects; the first one fixes the cameras (``Episode.cameras()``, in
            that order; each ``uint8 (T, H, W, 3)`` RGB), the joint names and ``J``.
        root: the dataset directory to create (``LeRobotDataset(repo_id, root=root)`` loads it).
        fps: frames per second, an integer (``info["fps"]``, ``video.fps``); every episode's
            ``rate_hz`` (when set) must equal it and its stamps must lie on the ``1 / fps`` grid.
        repo_id: kept in ``info["vla"]["repo_id"]`` (LeRobot's files do not hold the repo id).
        robot_type: ``info["robot_type"]`` (e.g. the embodiment name), ``None`` as LeRobot's default.
        use_videos: True: cameras are ``video`` features (mp4 per camera); False: ``image`` features,
            PNG bytes embedded in the data parquet (``embed_images``), lossless.
        vcodec, pix_fmt, g, crf, preset, encoder_threads: the encoder settings of
            ``video_utils.encode_video_frames`` (defaults: libsvtav1, yuv420p, GOP 2, crf 30,
            SVT-AV1 preset 12, the codec's own threading). ``vcodec`` is one of ``libsvtav1``,
            ``h264``, ``hevc`` and must be an encoder in this PyAV build.
        camera_key: camera name -> feature key (default ``observation.images.<cam>``); no ``/``.
        chunks_size, data_files_size_in_mb, video_files_size_in_mb: LeRobot's file rollover settings
            (``create_empty_dataset_info`` defaults 1000 files per chunk, 100 MB, 200 MB).
        allow_gaps: an episode with dropped ticks (stamps more than ``1 / fps`` apart) is an error
            unless True; then its frames are written back to back, as LeRobot numbers frames.
        overwrite: replace an existing non-empty ``root``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: no episodes; bad ``fps`` or settings; an episode that is empty, has non-finite
            state / action / stamps, stamps off the ``1 / fps`` grid or with gaps (see
            ``allow_gaps``), ``rate_hz`` other than ``fps``, non-``uint8 (T, H, W, 3)`` images, or
            cameras / image shapes / joint names / ``J`` different from the first episode's (the
            message names the episode index, its ``source`` and the field).
        FileExistsError: ``root`` exists and is not empty, without ``overwrite``.
    """
    root = Path(root)
    fps_f = float(fps)
    if not math.isfinite(fps_f) or fps_f <= 0 or fps_f != int(fps_f):
        raise ValueError(f'fps must be a positive integer (LeRobot info.json "fps"), got {fps!r}')
    fps = int(fps_f)
    if use_videos:
        import av
        if vcodec not in VIDEO_CODECS:
            raise ValueError(f'vcodec must be one of {list(VIDEO_CODECS)}, got {vcodec!r}')
        try:
            av.codec.Codec(vcodec, 'w')
        except Exception as exc:
            raise ValueError(f'vcodec {vcodec!r}: no such encoder in this PyAV build ({exc})') from exc
        if vcodec in ('libsvtav1', 'hevc') and pix_fmt == 'yuv444p':
            raise ValueError(f'pix_fmt yuv444p is not supported by {vcodec} (LeRobot switches to yuv420p)')
    for name, v in (('chunks_size', chunks_size), ('data_files_size_in_mb', data_files_size_in_mb),
                    ('video_files_size_in_mb', video_files_size_in_mb)):
        if not v > 0:
            raise ValueError(f'{name} must be > 0, got {v}')
    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f'repo_id must be a non-empty string, got {repo_id!r}')
    _check_root(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        _Writer(tmp, fps=fps, robot_type=robot_type, use_videos=use_videos, repo_id=repo_id,
                camera_key=camera_key, chunks_size=int(chunks_size), data_mb=data_files_size_in_mb,
                video_mb=video_files_size_in_mb, allow_gaps=allow_gaps,
                video_options=_codec_options(vcodec, g, crf, preset, encoder_threads) if use_videos else {},
                vcodec=vcodec, pix_fmt=pix_fmt).write(episodes)
        _check_root(root, overwrite)           # nobody created it meanwhile
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{root.name}.old-', dir=root.parent))
            os.rename(root, old / 'dataset')
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


class _Writer:
    """The state ``LeRobotDataset`` / ``LeRobotDatasetMetadata`` keep while recording."""

    def __init__(self, root: Path, *, fps: int, robot_type: Optional[str], use_videos: bool, repo_id: str,
                 camera_key: Callable[[str], str], chunks_size: int, data_mb: float, video_mb: float,
                 allow_gaps: bool, video_options: Dict[str, str], vcodec: str, pix_fmt: str):
        self.root, self.fps, self.robot_type, self.use_videos = root, fps, robot_type, use_videos
        self.repo_id, self.camera_key, self.chunks_size = repo_id, camera_key, chunks_size
        self.data_mb, self.video_mb, self.allow_gaps = data_mb, video_mb, allow_gaps
        self.video_options, self.vcodec, self.pix_fmt = video_options, vcodec, pix_fmt
        self.spec: Optional[_Spec] = None
        self.features: Dict[str, dict] = {}
        self.keys: Dict[str, str] = {}                  # camera -> feature key
        self.tasks: Dict[str, int] = {}
        self.stats: Optional[Dict[str, Dict[str, np.ndarray]]] = None
        self.total_frames = 0
        self.sources: List[str] = []
        self.starts: List[float] = []
        # data parquet (LeRobotDataset._save_episode_data)
        self.data_writer = None
        self.data_chunk, self.data_file = 0, 0
        self.data_path: Optional[Path] = None
        self.file_start_frame = 0
        # episodes parquet (LeRobotDatasetMetadata._save_episode_metadata)
        self.meta_writer = None
        self.meta_buffer: List[dict] = []
        self.latest_meta: Optional[dict] = None
        self.videos: Dict[str, _VideoFile] = {}
        self.schema = None

    # ------------------------------------------------------------------ schema
    def _init_features(self, spec: _Spec) -> None:
        keys = {}
        for cam in spec.cameras:
            key = self.camera_key(cam)
            if not isinstance(key, str) or not key or '/' in key:
                raise ValueError(f'camera_key({cam!r}) gave {key!r}: a feature key is a non-empty string without "/"')
            if key in keys.values() or key in (STATE_KEY, ACTION_KEY) or key in DEFAULT_FEATURES:
                raise ValueError(f'camera_key({cam!r}) gave {key!r}, which another feature already uses')
            keys[cam] = key
        self.keys = keys
        names = list(spec.joint_names) if spec.joint_names else None
        feats: Dict[str, dict] = {}
        for cam, key in keys.items():
            h, w, c = spec.image_shapes[cam]
            feats[key] = {'dtype': 'video' if self.use_videos else 'image', 'shape': [h, w, c],
                          'names': ['height', 'width', 'channels']}
        feats[STATE_KEY] = {'dtype': 'float32', 'shape': [spec.dim], 'names': names}
        feats[ACTION_KEY] = {'dtype': 'float32', 'shape': [spec.dim], 'names': None if names is None else list(names)}
        for k, ft in DEFAULT_FEATURES.items():
            feats[k] = {'dtype': ft['dtype'], 'shape': list(ft['shape']), 'names': None}
        self.features = feats
        self.schema = _data_schema(feats)
        if self.use_videos:
            self.videos = {key: _VideoFile(self.root, key, DEFAULT_VIDEO_PATH, self.chunks_size, self.video_mb)
                           for key in keys.values()}

    # ------------------------------------------------------------------ one episode
    def add(self, ep: Episode, index: int) -> None:
        spec, cams, state, action, tasks = _episode_arrays(ep, index, self.fps, self.spec, self.allow_gaps)
        if self.spec is None:
            self.spec = spec
            self._init_features(spec)
        t = len(tasks)
        episode_tasks = list(dict.fromkeys(tasks))
        for task in episode_tasks:
            self.tasks.setdefault(task, len(self.tasks))
        task_index = np.array([self.tasks[s] for s in tasks], dtype=np.int64)
        frame_index = np.arange(t, dtype=np.int64)
        timestamp = frame_index / self.fps                       # float64, as add_frame's frame_index / fps
        global_index = np.arange(self.total_frames, self.total_frames + t, dtype=np.int64)
        episode_index = np.full((t,), index, dtype=np.int64)

        # per-episode stats (compute_episode_stats over the features, in features order)
        ep_stats: Dict[str, Dict[str, np.ndarray]] = {}
        for cam, key in self.keys.items():
            ep_stats[key] = _image_stats(cams[cam])
        ep_stats[STATE_KEY] = _vector_stats(state)
        ep_stats[ACTION_KEY] = _vector_stats(action)
        for key, arr in (('timestamp', timestamp), ('frame_index', frame_index), ('episode_index', episode_index),
                         ('index', global_index), ('task_index', task_index)):
            ep_stats[key] = _vector_stats(arr)

        meta = self._save_data(index, cams, state, action, timestamp, frame_index, episode_index, global_index,
                               task_index)
        for cam, key in self.keys.items():
            if self.use_videos:
                meta.update(self._save_video(key, cams[cam], index))
        row = {'episode_index': index, 'tasks': episode_tasks, 'length': t}
        row.update(meta)
        for key, st in ep_stats.items():
            for name, v in st.items():
                row[f'stats/{key}/{name}'] = v
        self._save_meta(row)
        self.stats = ep_stats if self.stats is None else _aggregate_stats([self.stats, ep_stats])
        self.total_frames += t
        self.sources.append(str(getattr(ep, 'source', '')))
        self.starts.append(float(np.asarray(ep.stamps, dtype=np.float64)[0]))

    def _save_data(self, index, cams, state, action, timestamp, frame_index, episode_index, global_index,
                   task_index) -> dict:
        import pyarrow.parquet as pq
        pa = _pa()
        t = len(frame_index)
        if self.data_writer is not None:
            latest_mb = self.data_path.stat().st_size / _MIB
            frames_in_file = int(global_index[0]) - self.file_start_frame
            per_frame = latest_mb / frames_in_file if frames_in_file > 0 else 0
            if latest_mb + per_frame * t >= self.data_mb:
                self.data_chunk, self.data_file = _update_chunk_file_indices(self.data_chunk, self.data_file,
                                                                             self.chunks_size)
                self.data_writer.close()
                self.data_writer = None
                self.file_start_frame = int(global_index[0])
        cols: Dict[str, Any] = {}
        for cam, key in self.keys.items():
            if not self.use_videos:
                cells = [{'bytes': _png(f), 'path': f'frame-{i:06d}.png'} for i, f in enumerate(cams[cam])]
                cols[key] = pa.array(cells, type=self.schema.field(key).type)
        for key, arr in ((STATE_KEY, state), (ACTION_KEY, action)):
            typ = self.schema.field(key).type
            cols[key] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), type=typ)
        cols['timestamp'] = pa.array(timestamp.astype(np.float32), pa.float32())
        for key, arr in (('frame_index', frame_index), ('episode_index', episode_index), ('index', global_index),
                         ('task_index', task_index)):
            cols[key] = pa.array(arr, pa.int64())
        table = pa.table(cols, schema=self.schema)
        if self.data_writer is None:
            self.data_path = self.root / DEFAULT_DATA_PATH.format(chunk_index=self.data_chunk,
                                                                  file_index=self.data_file)
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            self.data_writer = pq.ParquetWriter(self.data_path, schema=table.schema, compression='snappy',
                                                use_dictionary=True)
        self.data_writer.write_table(table)
        return {'data/chunk_index': self.data_chunk, 'data/file_index': self.data_file,
                'dataset_from_index': int(global_index[0]), 'dataset_to_index': int(global_index[0]) + t}

    def _save_video(self, key: str, frames: np.ndarray, index: int) -> dict:
        ep_dir = Path(tempfile.mkdtemp(dir=self.root))
        try:
            ep_path = ep_dir / f'{key}_{index:03d}.mp4'
            try:
                _encode_episode(frames, ep_path, self.fps, self.vcodec, self.pix_fmt, self.video_options)
            except Exception as exc:
                raise ValueError(f'episode {index}: encoding {key} ({frames.shape[2]}x{frames.shape[1]}) with '
                                 f'{self.vcodec} {self.pix_fmt} failed: {exc}') from exc
            return self.videos[key].append(ep_path)
        finally:
            shutil.rmtree(ep_dir, ignore_errors=True)

    def _save_meta(self, row: dict) -> None:
        num_frames = row['length']
        if self.latest_meta is None:
            chunk, fidx = 0, 0
        else:
            chunk, fidx = self.latest_meta['meta/episodes/chunk_index'], self.latest_meta['meta/episodes/file_index']
            latest_path = Path(self.meta_writer.where) if self.meta_writer is not None else \
                self.root / DEFAULT_EPISODES_PATH.format(chunk_index=chunk, file_index=fidx)
            if latest_path.exists():
                latest_mb = latest_path.stat().st_size / _MIB
                latest_num = self.latest_meta['episode_index']       # (sic) LeRobot divides by this
                per = latest_mb / latest_num if latest_num > 0 else 0.0
                if latest_mb + per * num_frames >= self.data_mb:
                    self._flush_meta()
                    chunk, fidx = _update_chunk_file_indices(chunk, fidx, self.chunks_size)
                    self._close_meta()
        row['meta/episodes/chunk_index'] = chunk
        row['meta/episodes/file_index'] = fidx
        self.meta_buffer.append(row)
        self.latest_meta = row
        if len(self.meta_buffer) >= METADATA_BUFFER_SIZE:
            self._flush_meta()

    def _flush_meta(self) -> None:
        import pyarrow.parquet as pq
        pa = _pa()
        if not self.meta_buffer:
            return
        combined: Dict[str, list] = {}
        for row in self.meta_buffer:
            for k, v in row.items():
                combined.setdefault(k, []).append(v.tolist() if isinstance(v, np.ndarray) else v)
        table = pa.Table.from_pydict(combined)
        if self.meta_writer is None:
            first = self.meta_buffer[0]
            path = self.root / DEFAULT_EPISODES_PATH.format(chunk_index=first['meta/episodes/chunk_index'],
                                                            file_index=first['meta/episodes/file_index'])
            path.parent.mkdir(parents=True, exist_ok=True)
            self.meta_writer = pq.ParquetWriter(path, schema=table.schema, compression='snappy', use_dictionary=True)
        self.meta_writer.write_table(table)
        self.meta_buffer.clear()

    def _close_meta(self) -> None:
        self._flush_meta()
        if self.meta_writer is not None:
            self.meta_writer.close()
            self.meta_writer = None

    # ------------------------------------------------------------------ all
    def write(self, episodes: Iterable[Episode]) -> None:
        n = 0
        try:
            for ep in episodes:
                self.add(ep, n)
                n += 1
        finally:
            if self.data_writer is not None:
                self.data_writer.close()
                self.data_writer = None
            for v in self.videos.values():
                v.close()
        if n == 0:
            raise ValueError('no episodes to export')
        self._close_meta()
        _write_tasks(list(self.tasks), self.root / TASKS_PATH)
        _write_json(_to_json(self.stats), self.root / STATS_PATH)
        if self.use_videos:
            for key, v in self.videos.items():
                self.features[key]['info'] = _video_info(v.first_path)
        info = {
            'codebase_version': CODEBASE_VERSION, 'robot_type': self.robot_type, 'total_episodes': n,
            'total_frames': self.total_frames, 'total_tasks': len(self.tasks), 'chunks_size': self.chunks_size,
            'data_files_size_in_mb': self.data_mb, 'video_files_size_in_mb': self.video_mb, 'fps': self.fps,
            'splits': {'train': f'0:{n}'}, 'data_path': DEFAULT_DATA_PATH,
            'video_path': DEFAULT_VIDEO_PATH if self.use_videos else None, 'features': self.features,
            'vla': {'repo_id': self.repo_id, 'episode_source': self.sources, 'episode_start_time_s': self.starts},
        }
        _write_json(info, self.root / INFO_PATH)
        log.info('LeRobot v3.0 dataset: %d episodes, %d frames, %d tasks (%s)', n, self.total_frames,
                 len(self.tasks), 'video' if self.use_videos else 'images')


# ============================================================================= reading
def is_lerobot_dataset(path: PathLike) -> bool:
    """True when ``path`` is a directory with a ``meta/info.json`` that names a ``codebase_version``
    (any LeRobot version: :func:`read_lerobot` then says whether it can read it)."""
    info = Path(path) / INFO_PATH
    if not info.is_file():
        return False
    try:
        with open(info, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and 'codebase_version' in data


def _err(path: Path, msg: str) -> LeRobotFormatError:
    return LeRobotFormatError(f'{path}: {msg}')


def _load_info(root: Path) -> dict:
    path = root / INFO_PATH
    if not root.is_dir():
        raise LeRobotFormatError(f'{root}: not a directory')
    if not path.is_file():
        raise _err(path, 'missing: not a LeRobot dataset')
    try:
        with open(path, encoding='utf-8') as f:
            info = json.load(f)
    except ValueError as exc:
        raise _err(path, f'not valid JSON ({exc})') from exc
    if not isinstance(info, dict):
        raise _err(path, 'not a JSON object')
    version = info.get('codebase_version')
    if version != CODEBASE_VERSION:
        raise _err(path, f'codebase_version is {version!r}; this reader takes LeRobotDataset {CODEBASE_VERSION} '
                         f'only: convert a v2.1 dataset with LeRobot\'s `python -m '
                         f'lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<id> --root=<dir> '
                         f'--push-to-hub=false`')
    for key in ('fps', 'features', 'data_path'):
        if key not in info:
            raise _err(path, f'no "{key}"')
    if not isinstance(info['features'], dict):
        raise _err(path, '"features" is not an object')
    return info


def _image_hw(path: Path, key: str, ft: dict) -> Tuple[int, int]:
    shape = tuple(ft.get('shape') or ())
    names = ft.get('names') or []
    if len(shape) != 3:
        raise _err(path, f'feature {key!r}: shape {list(shape)} is not 3-D')
    if len(names) == 3 and names[0] in ('channel', 'channels'):
        c, h, w = shape
    else:
        h, w, c = shape
    if c != 3:
        raise _err(path, f'feature {key!r}: {c} channels, only RGB (3) is read')
    return int(h), int(w)


def _names(path: Path, key: str, ft: dict) -> Tuple[str, ...]:
    names = ft.get('names')
    if names is None:
        return ()
    if isinstance(names, dict):        # older LeRobot datasets: {"motors": [...]}
        lists = [v for v in names.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise _err(path, f'feature {key!r}: names {names!r} is not one list')
        names = lists[0]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _err(path, f'feature {key!r}: names {names!r} is not a list of strings')
    return tuple(names)


def _read_tasks(root: Path) -> Dict[int, str]:
    import pyarrow.parquet as pq
    path = root / TASKS_PATH
    if not path.is_file():
        raise _err(path, 'missing (the tasks table)')
    table = pq.read_table(path)
    cols = table.column_names
    if 'task_index' not in cols:
        raise _err(path, f'no task_index column (columns {cols})')
    task_col = None
    if 'task' in cols:
        task_col = 'task'
    else:
        meta = table.schema.metadata or {}
        if b'pandas' in meta:
            idx = json.loads(meta[b'pandas']).get('index_columns') or []
            if idx and isinstance(idx[0], str) and idx[0] in cols:
                task_col = idx[0]
        if task_col is None and '__index_level_0__' in cols:
            task_col = '__index_level_0__'
    if task_col is None:
        raise _err(path, f'no task string column (index or "task"; columns {cols})')
    return dict(zip(table.column('task_index').to_pylist(), table.column(task_col).to_pylist()))


def _read_episodes_meta(root: Path, needed: Sequence[str]) -> List[dict]:
    import pyarrow.parquet as pq
    files = sorted((root / EPISODES_DIR).glob('*/*.parquet'))
    if not files:
        raise _err(root / EPISODES_DIR, 'no episodes parquet file (meta/episodes/chunk-*/file-*.parquet)')
    rows: List[dict] = []
    for f in files:
        names = pq.read_schema(f).names
        missing = [c for c in needed if c not in names]
        if missing:
            raise _err(f, f'missing column(s) {missing}')
        rows.extend(pq.read_table(f, columns=list(needed)).to_pylist())
    rows.sort(key=lambda r: r['episode_index'])
    for i, r in enumerate(rows):
        if r['episode_index'] != i:
            raise _err(root / EPISODES_DIR, f'episode_index {r["episode_index"]} where {i} was expected')
    return rows


class _DataFiles:
    """Reads one episode's rows from a data parquet, one row group range at a time (cached)."""

    def __init__(self, root: Path, data_path: str, columns: List[str], episodes: List[dict]):
        self.root, self.data_path, self.columns = root, data_path, columns
        self.file_start: Dict[Tuple[int, int], int] = {}
        for r in episodes:
            k = (r['data/chunk_index'], r['data/file_index'])
            self.file_start[k] = min(self.file_start.get(k, r['dataset_from_index']), r['dataset_from_index'])
        self._pf_key = None
        self._pf = None
        self._cache: Tuple[Optional[Tuple[int, int]], Any] = (None, None)

    def path(self, r: dict) -> Path:
        return self.root / self.data_path.format(chunk_index=r['data/chunk_index'], file_index=r['data/file_index'])

    def rows(self, r: dict):
        import pyarrow.parquet as pq
        key = (r['data/chunk_index'], r['data/file_index'])
        path = self.path(r)
        if self._pf_key != key:
            if not path.is_file():
                raise _err(path, f'missing (data file of episode {r["episode_index"]})')
            self._pf = pq.ParquetFile(path)
            self._pf_key = key
            self._cache = (None, None)
            names = self._pf.schema_arrow.names
            missing = [c for c in self.columns if c not in names]
            if missing:
                raise _err(path, f'missing column(s) {missing}')
        md = self._pf.metadata
        lo = r['dataset_from_index'] - self.file_start[key]
        hi = r['dataset_to_index'] - self.file_start[key]
        starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
        if hi > starts[-1]:
            raise _err(path, f'episode {r["episode_index"]}: rows {lo}:{hi} beyond the file\'s {starts[-1]} rows')
        g0 = int(np.searchsorted(starts, lo, side='right') - 1)
        g1 = int(np.searchsorted(starts, hi, side='left'))
        if self._cache[0] != (g0, g1):
            self._cache = ((g0, g1), self._pf.read_row_groups(list(range(g0, g1)), columns=self.columns))
        return self._cache[1].slice(lo - int(starts[g0]), hi - lo), path


def _fixed_list(table, key: str, dim: int, path: Path, ep: int) -> np.ndarray:
    import pyarrow.compute as pc
    col = table.column(key).combine_chunks()
    if col.null_count:
        raise _err(path, f'episode {ep}: {key} has null rows')
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != dim).any():
        raise _err(path, f'episode {ep}: {key} rows of length {sorted(set(lengths.tolist()))}, '
                         f'info.json says shape [{dim}]')
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return values.reshape(len(col), dim).astype(np.float32)


class _VideoReader:
    """Decodes the frames of one episode from a camera's mp4 (seek to the key frame at or before
    ``from_timestamp``, decode forward), matching frames to ``from_timestamp + timestamp`` within
    LeRobot's ``tolerance_s`` (``decode_video_frames``)."""

    def __init__(self):
        self.path: Optional[Path] = None
        self.container = None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
            self.path = None

    def read(self, path: Path, from_ts: float, ts: np.ndarray, hw: Tuple[int, int], ep: int, key: str) -> np.ndarray:
        import av
        if self.path != path:
            self.close()
            if not path.is_file():
                raise _err(path, f'missing (video of {key}, episode {ep})')
            self.container = av.open(str(path))
            self.path = path
        stream = self.container.streams.video[0]
        query = from_ts + ts.astype(np.float64)
        first, last = float(query.min()), float(query.max())
        self.container.seek(max(0, int(math.floor((first - TOLERANCE_S) / float(stream.time_base)))),
                            stream=stream, backward=True, any_frame=False)
        times: List[float] = []
        frames: List[np.ndarray] = []
        for frame in self.container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if t < first - TOLERANCE_S:
                continue
            if t > last + TOLERANCE_S:
                break
            times.append(t)
            frames.append(frame.to_ndarray(format='rgb24'))
            if t >= last - TOLERANCE_S:
                break
        out = np.empty((len(query), hw[0], hw[1], 3), dtype=np.uint8)
        tarr = np.asarray(times)
        for i, q in enumerate(query):
            j = int(np.argmin(np.abs(tarr - q))) if len(tarr) else -1
            if j < 0 or abs(tarr[j] - q) >= TOLERANCE_S:
                raise _err(path, f'episode {ep}: no frame of {key} at {q:.4f} s (from_timestamp {from_ts:.4f} + '
                                 f'timestamp {float(ts[i]):.4f}) within {TOLERANCE_S} s')
            f = frames[j]
            if f.shape[:2] != hw:
                raise _err(path, f'{key}: frames are {f.shape[0]}x{f.shape[1]} (HxW), info.json says '
                                 f'{hw[0]}x{hw[1]} (shape mismatch)')
            out[i] = f
        return out


def read_lerobot(root: PathLike, *, camera_names: Optional[Sequence[str]] = None) -> Iterator[Episode]:
    """Read a LeRobotDataset v3.0 directory (ours or LeRobot's, video or image storage) as episodes.

    The metadata is checked when this is called; the episodes then come one at a time (memory: one
    episode and the data row groups holding it). For episode ``i``: ``source = f'{root}#episode_{i}'``,
    ``stamps`` = the ``timestamp`` column (float64 s) plus the episode's real start time where
    ``info["vla"]`` has it (our exports) and 0 otherwise; ``rate_hz = fps``;
    ``camera_images`` = ``{name: uint8 (T, H, W, 3)}`` by the part of the feature key after
    ``observation.images.`` (the whole key for other image/video keys), ``images`` = the first;
    ``joint_positions`` = ``observation.state``, ``actions`` = ``action`` (``float32 (T, J)``);
    ``instructions`` from ``meta/tasks.parquet``; ``joint_names`` from the state feature's names.

    Args:
        root: the dataset directory (holding ``meta/info.json``).
        camera_names: cameras to read, in this order (default: every image / video feature in
            ``info.json`` order).

    Raises:
        LeRobotFormatError (a ValueError), one line naming the file and the field: not a directory or
            no ``meta/info.json``; ``codebase_version`` other than v3.0 (e.g. v2.1: use LeRobot's
            converter); a missing feature (``observation.state``, ``action``, a camera) or names /
            shapes that disagree (action vs state); missing or malformed tasks / episodes / data /
            video files or columns; rows or decoded frames whose shape differs from ``info.json``;
            no video frame within ``tolerance_s`` of a timestamp; stamps not strictly increasing.
    """
    root = Path(root)
    info = _load_info(root)
    info_path = root / INFO_PATH
    feats = info['features']
    fps = info['fps']
    if not isinstance(fps, (int, float)) or not fps > 0:
        raise _err(info_path, f'fps {fps!r} is not a positive number')
    for key in (STATE_KEY, ACTION_KEY):
        if key not in feats:
            raise _err(info_path, f'missing feature {key!r} (features: {list(feats)})')
        if len(tuple(feats[key].get('shape') or ())) != 1:
            raise _err(info_path, f'feature {key!r}: shape {feats[key].get("shape")} is not 1-D')
    dim = int(feats[STATE_KEY]['shape'][0])
    if int(feats[ACTION_KEY]['shape'][0]) != dim:
        raise _err(info_path, f'feature {ACTION_KEY!r} has shape {feats[ACTION_KEY]["shape"]}, {STATE_KEY!r} '
                              f'{feats[STATE_KEY]["shape"]}: an Episode needs one joint order for both')
    joint_names = _names(info_path, STATE_KEY, feats[STATE_KEY])
    action_names = _names(info_path, ACTION_KEY, feats[ACTION_KEY])
    if joint_names and len(joint_names) != dim:
        raise _err(info_path, f'feature {STATE_KEY!r}: {len(joint_names)} names for shape [{dim}]')
    if joint_names and action_names and action_names != joint_names:
        raise _err(info_path, f'feature {ACTION_KEY!r}: names {list(action_names)} differ from {STATE_KEY!r} names '
                              f'{list(joint_names)}: an Episode needs one joint order for both')
    cams_all = {(k[len(IMAGES_PREFIX):] if k.startswith(IMAGES_PREFIX) else k): k
                for k, ft in feats.items() if isinstance(ft, dict) and ft.get('dtype') in ('image', 'video')}
    if camera_names is None:
        cams = dict(cams_all)
    else:
        unknown = [c for c in camera_names if c not in cams_all]
        if unknown:
            raise _err(info_path, f'missing camera feature(s) {[default_camera_key(c) for c in unknown]} '
                                  f'(cameras: {list(cams_all)})')
        cams = {c: cams_all[c] for c in camera_names}
    if not cams:
        raise _err(info_path, 'no image or video feature: an Episode needs at least one camera')
    hw = {c: _image_hw(info_path, k, feats[k]) for c, k in cams.items()}
    video_keys = [k for k in cams.values() if feats[k]['dtype'] == 'video']
    if video_keys and not info.get('video_path'):
        raise _err(info_path, f'video features {video_keys} but no "video_path"')
    needed = ['episode_index', 'length', 'dataset_from_index', 'dataset_to_index', 'data/chunk_index',
              'data/file_index']
    for k in video_keys:
        needed += [f'videos/{k}/chunk_index', f'videos/{k}/file_index', f'videos/{k}/from_timestamp']
    episodes = _read_episodes_meta(root, needed)
    tasks = _read_tasks(root)
    image_keys = [k for k in cams.values() if feats[k]['dtype'] == 'image']
    columns = image_keys + [STATE_KEY, ACTION_KEY, 'timestamp', 'frame_index', 'episode_index', 'task_index']
    data = _DataFiles(root, info['data_path'], columns, episodes)
    vla = info.get('vla') if isinstance(info.get('vla'), dict) else {}
    starts = vla.get('episode_start_time_s')
    if starts is not None and not (isinstance(starts, list) and len(starts) == len(episodes)):
        log.warning('%s: vla.episode_start_time_s does not list the %d episodes (episodes added by another '
                    'writer?): stamps start at 0', info_path, len(episodes))
    if not (isinstance(starts, list) and len(starts) == len(episodes)):
        starts = None
    return _iter_episodes(root, info, episodes, tasks, data, cams, hw, dim, joint_names, starts)


def _iter_episodes(root: Path, info: dict, episodes: List[dict], tasks: Dict[int, str], data: _DataFiles,
                   cams: Dict[str, str], hw: Dict[str, Tuple[int, int]], dim: int,
                   joint_names: Tuple[str, ...], starts: Optional[List[float]]) -> Iterator[Episode]:
    from PIL import Image
    feats = info['features']
    readers = {k: _VideoReader() for c, k in cams.items() if feats[k]['dtype'] == 'video'}
    try:
        for r in episodes:
            i = r['episode_index']
            table, path = data.rows(r)
            t = r['length']
            if table.num_rows != t or t != r['dataset_to_index'] - r['dataset_from_index']:
                raise _err(path, f'episode {i}: {table.num_rows} rows, meta/episodes length {t}')
            if t == 0:
                raise _err(path, f'episode {i}: no rows')
            ep_col = table.column('episode_index').to_numpy()
            if (ep_col != i).any():
                raise _err(path, f'episode {i}: rows {r["dataset_from_index"]}:{r["dataset_to_index"]} hold '
                                 f'episode_index {sorted(set(ep_col.tolist()))}')
            state = _fixed_list(table, STATE_KEY, dim, path, i)
            action = _fixed_list(table, ACTION_KEY, dim, path, i)
            ts = table.column('timestamp').to_numpy().astype(np.float64)
            task_idx = table.column('task_index').to_pylist()
            missing = sorted(set(task_idx) - set(tasks))
            if missing:
                raise _err(root / TASKS_PATH, f'no task for task_index {missing} (episode {i})')
            instructions = [tasks[k] for k in task_idx]
            camera_images: Dict[str, np.ndarray] = {}
            for cam, key in cams.items():
                if feats[key]['dtype'] == 'video':
                    vpath = root / info['video_path'].format(video_key=key, chunk_index=r[f'videos/{key}/chunk_index'],
                                                             file_index=r[f'videos/{key}/file_index'])
                    camera_images[cam] = readers[key].read(vpath, float(r[f'videos/{key}/from_timestamp']), ts,
                                                           hw[cam], i, key)
                    continue
                out = np.empty((t,) + hw[cam] + (3,), dtype=np.uint8)
                for j, cell in enumerate(table.column(key).to_pylist()):
                    if cell is None or cell.get('bytes') is None:
                        raise _err(path, f'episode {i}: {key} frame {j} has no embedded image bytes')
                    img = np.asarray(Image.open(io.BytesIO(cell['bytes'])).convert('RGB'))
                    if img.shape[:2] != hw[cam]:
                        raise _err(path, f'episode {i}: {key} frame {j} is {img.shape[0]}x{img.shape[1]} (HxW), '
                                         f'info.json says {hw[cam][0]}x{hw[cam][1]} (shape mismatch)')
                    out[j] = img
                camera_images[cam] = out
            stamps = ts + (float(starts[i]) if starts is not None else 0.0)
            if t > 1 and not (np.diff(stamps) > 0).all():
                raise _err(path, f'episode {i}: timestamp is not strictly increasing')
            yield Episode(source=f'{root}#episode_{i}', stamps=stamps, images=next(iter(camera_images.values())),
                          joint_positions=state, actions=action, instructions=instructions,
                          joint_names=joint_names, rate_hz=float(info['fps']), camera_images=camera_images)
    finally:
        for rd in readers.values():
            rd.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``export_lerobot`` console script: bags (through the dataset cache) -> a LeRobotDataset v3 directory.

        ros2 run vla_training export_lerobot --bags demos/ --config config/train_franka_2cam.yaml --output lerobot/

    Topics, embodiment and cameras come from the training YAML, as ``train`` reads them; ``--fps``
    defaults to the grid rate (``data.rate_hz`` or the embodiment's control rate). Exit status 0, 1 (one
    line on stderr naming the bag / file), 2 (usage).
    """
    import logging
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='export_lerobot', description=main.__doc__.split('\n\n')[0])
    p.add_argument('--bags', nargs='+', required=True, help='rosbag2 directories, or directories holding them')
    p.add_argument('--config', default=None, help='training YAML (topics, embodiment); default config')
    p.add_argument('--output', required=True, help='the new LeRobotDataset directory')
    p.add_argument('--fps', type=cli.positive_int, default=None)
    p.add_argument('--images', action='store_true', help='PNG images in the parquet files instead of AV1 video')
    p.add_argument('--repo-id', default='local/vla_demos')
    p.add_argument('--cache-dir', default=None)
    p.add_argument('--overwrite', action='store_true')
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    def body() -> int:
        from robot_drivers.embodiment import get_embodiment
        from vla_training import train_cli
        model_cfg, _, data = train_cli.load_train_yaml(a.config)
        if a.cache_dir:
            data.cache_dir = a.cache_dir
        data.cache = True
        cache = train_cli.load_data(a.bags, model_cfg, data)
        fps = a.fps or int(round(data.rate_hz or get_embodiment(model_cfg.embodiment).control_rate_hz))
        root = export_lerobot(cache.episodes(), a.output, fps=fps, repo_id=a.repo_id, robot_type=model_cfg.embodiment,
                              use_videos=not a.images, overwrite=a.overwrite)
        print(f'{root}: {len(cache)} episodes, {int(cache.lengths.sum())} frames at {fps} fps')
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    import sys
    sys.exit(main())
