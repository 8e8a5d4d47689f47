"""LeRobotDataset v3.0 export / import on real MuJoCo recordings, checked by LeRobot 0.4.4 itself.

Three reach demonstrations are recorded by ``record`` (front + wrist cameras, 96x96, 10 Hz) and read
from their bags; they are exported in both storage modes and read back. The LeRobot tests run
``lerobot_side.py`` in LeRobot's own venv (``VLA_LEROBOT_PYTHON``, else ``.venv-lerobot/bin/python``
at the repository root; ``make .venv-lerobot/.installed``) and are skipped without it.
"""
from __future__ import annotations

import dataclasses
import gc
import io
import json
import os
import shutil
import subprocess
import weakref
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from robot_drivers.embodiment import FRANKA_PANDA
from vla_training import lerobot_dataset as lds
from vla_training.bag_dataset import BagTopics, Episode, read_episode
from vla_training.lerobot_dataset import (LeRobotFormatError, export_lerobot, is_lerobot_dataset,
                                          read_lerobot)

TOPICS = BagTopics.from_dict({'images': {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}})
FPS = 10
# measured on these demos: 32.9-35.0 dB per camera and episode (AV1 crf 30, yuv420p), mean |error| ~2.2
MIN_PSNR_DB = 30.0
REPO = Path(__file__).resolve().parents[3]
SIDE = Path(lds.__file__).resolve().with_name('lerobot_side.py')


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float('inf') if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope='module')
def demos(tmp_path_factory):
    """Three recorded reach demos read back from their bags as Episodes (both cameras)."""
    from vla_training.record import RecordConfig, record_demos
    out = tmp_path_factory.mktemp('demos')
    paths = record_demos(RecordConfig(episodes=3, output=str(out), workers=1, tasks=('reach',)), progress=False)
    return [read_episode(p, FRANKA_PANDA, TOPICS) for p in paths]


@pytest.fixture(scope='module')
def exports(demos, tmp_path_factory):
    """{mode: dataset root} of the demos exported in images and video mode."""
    base = tmp_path_factory.mktemp('lerobot')
    return {mode: export_lerobot(iter(demos), base / mode, fps=FPS, use_videos=mode == 'video',
                                 robot_type=FRANKA_PANDA.name, repo_id='local/sim_reach')
            for mode in ('images', 'video')}


def _info(root: Path) -> dict:
    return json.loads((root / 'meta/info.json').read_text())


def _episodes_table(root: Path):
    return pq.read_table(root / 'meta/episodes/chunk-000/file-000.parquet')


def _assert_same_lowdim(orig, back, root):
    assert len(back) == len(orig)
    for i, (a, b) in enumerate(zip(orig, back)):
        assert b.source == f'{root}#episode_{i}'
        assert b.joint_positions.dtype == np.float32 and b.actions.dtype == np.float32
        np.testing.assert_array_equal(b.joint_positions, a.joint_positions)
        np.testing.assert_array_equal(b.actions, a.actions)
        assert b.instructions == a.instructions
        assert b.joint_names == a.joint_names == tuple(FRANKA_PANDA.joint_names)
        assert b.rate_hz == FPS
        assert list(b.camera_images) == ['front', 'wrist']
        assert b.images is b.camera_images['front']
        # stamps: real start time + float32 frame_index / fps
        np.testing.assert_allclose(b.stamps, a.stamps, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- round trips
def test_images_mode_round_trip_is_exact(demos, exports):
    root = exports['images']
    assert is_lerobot_dataset(root)
    info = _info(root)
    n = sum(len(e) for e in demos)
    assert info['codebase_version'] == 'v3.0' and info['fps'] == FPS and info['robot_type'] == 'franka_panda'
    assert (info['total_episodes'], info['total_frames'], info['total_tasks']) == \
        (3, n, len({e.instructions[0] for e in demos}))
    assert info['splits'] == {'train': '0:3'} and info['video_path'] is None
    assert (info['chunks_size'], info['data_files_size_in_mb'], info['video_files_size_in_mb']) == (1000, 100, 200)
    feats = info['features']
    assert list(feats) == ['observation.images.front', 'observation.images.wrist', 'observation.state', 'action',
                           'timestamp', 'frame_index', 'episode_index', 'index', 'task_index']
    assert feats['observation.images.front'] == {'dtype': 'image', 'shape': [96, 96, 3],
                                                 'names': ['height', 'width', 'channels']}
    assert feats['observation.state'] == {'dtype': 'float32', 'shape': [8], 'names': list(FRANKA_PANDA.joint_names)}
    assert feats['action']['names'] == list(FRANKA_PANDA.joint_names)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file()) == [
        'data/chunk-000/file-000.parquet', 'meta/episodes/chunk-000/file-000.parquet', 'meta/info.json',
        'meta/stats.json', 'meta/tasks.parquet']
    # the data file: PNGs embedded as LeRobot's embed_images leaves them, one row group per episode
    pf = pq.ParquetFile(root / 'data/chunk-000/file-000.parquet')
    assert [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)] == [len(e) for e in demos]
    assert b'huggingface' in pf.schema_arrow.metadata
    first = pf.read_row_group(0, columns=['observation.images.wrist']).column(0)[0].as_py()
    assert first['path'] == 'frame-000000.png' and first['bytes'][:8] == b'\x89PNG\r\n\x1a\n'
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(first['bytes']))),
                                  demos[0].camera_images['wrist'][0])

    back = list(read_lerobot(root))
    _assert_same_lowdim(demos, back, root)
    for a, b in zip(demos, back):
        for cam in ('front', 'wrist'):
            assert b.camera_images[cam].dtype == np.uint8
            np.testing.assert_array_equal(b.camera_images[cam], a.camera_images[cam])


def test_video_mode_round_trip_within_measured_psnr(demos, exports):
    import av
    root = exports['video']
    info = _info(root)
    assert info['video_path'] == 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
    assert info['features']['observation.images.wrist'] == {
        'dtype': 'video', 'shape': [96, 96, 3], 'names': ['height', 'width', 'channels'],
        'info': {'video.height': 96, 'video.width': 96, 'video.codec': 'av1', 'video.pix_fmt': 'yuv420p',
                 'video.is_depth_map': False, 'video.fps': FPS, 'video.channels': 3, 'has_audio': False}}
    lengths = [len(e) for e in demos]
    eps = _episodes_table(root).to_pylist()
    for cam in ('front', 'wrist'):
        key = f'observation.images.{cam}'
        # episodes back to back in one file: from/to timestamps contiguous, each T / fps long
        ends = np.cumsum(lengths) / FPS
        np.testing.assert_allclose([r[f'videos/{key}/to_timestamp'] for r in eps], ends)
        np.testing.assert_allclose([r[f'videos/{key}/from_timestamp'] for r in eps], np.r_[0.0, ends[:-1]])
        with av.open(str(root / f'videos/{key}/chunk-000/file-000.mp4')) as c:
            s = c.streams.video[0]
            packets = [p for p in c.demux(s) if p.size]
            assert s.codec_context.name in ('libdav1d', 'av1') and s.codec_context.pix_fmt == 'yuv420p'
            pts = np.array([p.pts for p in packets])
            key_frames = np.array([p.is_keyframe for p in packets])
        assert len(packets) == sum(lengths)
        np.testing.assert_array_equal(np.diff(pts), np.full(len(pts) - 1, pts[1] - pts[0]))   # 1/fps apart
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        assert key_frames[starts].all()                                # each episode opens on a key frame
        for s0, t in zip(starts, lengths):                             # GOP 2 within an episode
            assert key_frames[s0:s0 + t:2].all()

    back = list(read_lerobot(root))
    _assert_same_lowdim(demos, back, root)
    for a, b in zip(demos, back):
        for cam in ('front', 'wrist'):
            x, y = a.camera_images[cam], b.camera_images[cam]
            assert y.shape == x.shape and y.dtype == np.uint8
            assert psnr(x, y) > MIN_PSNR_DB, (b.source, cam, psnr(x, y))
            assert np.abs(x.astype(int) - y).mean() < 4.0


def test_episode_metadata_and_stats_as_lerobot_writes_them(demos, exports):
    root = exports['video']
    table = _episodes_table(root)
    cols = table.column_names
    assert cols[:7] == ['episode_index', 'tasks', 'length', 'data/chunk_index', 'data/file_index',
                        'dataset_from_index', 'dataset_to_index']
    assert cols[-2:] == ['meta/episodes/chunk_index', 'meta/episodes/file_index']
    for feat in ('observation.images.front', 'observation.state', 'action', 'timestamp', 'frame_index',
                 'episode_index', 'index', 'task_index'):
        for stat in ('min', 'max', 'mean', 'std', 'count', 'q01', 'q10', 'q50', 'q90', 'q99'):
            assert f'stats/{feat}/{stat}' in cols
    rows = table.to_pylist()
    lengths = [len(e) for e in demos]
    assert [r['length'] for r in rows] == lengths
    assert [r['dataset_from_index'] for r in rows] == list(np.r_[0, np.cumsum(lengths)[:-1]])
    assert [r['dataset_to_index'] for r in rows] == list(np.cumsum(lengths))
    assert [r['tasks'] for r in rows] == [[e.instructions[0]] for e in demos]
    assert np.array(rows[0]['stats/observation.images.front/mean']).shape == (3, 1, 1)
    np.testing.assert_allclose(rows[1]['stats/observation.state/min'], demos[1].joint_positions.min(0))
    np.testing.assert_allclose(rows[1]['stats/action/max'], demos[1].actions.max(0))
    assert rows[2]['stats/index/min'] == [sum(lengths[:2])]
    stats = json.loads((root / 'meta/stats.json').read_text())
    allstate = np.concatenate([e.joint_positions for e in demos])
    assert stats['observation.state']['count'] == [sum(lengths)]
    np.testing.assert_allclose(stats['observation.state']['mean'], allstate.mean(0), rtol=1e-5, atol=1e-6)
    # float32 mean of squares (as LeRobot): ~1e-5 absolute error on the near-constant finger joint
    np.testing.assert_allclose(stats['observation.state']['std'], allstate.std(0), rtol=1e-4, atol=2e-5)
    tasks = pq.read_table(root / 'meta/tasks.parquet')
    assert tasks.column('__index_level_0__').to_pylist() == list(dict.fromkeys(e.instructions[0] for e in demos))
    assert b'pandas' in tasks.schema.metadata
    # the stats equal in both modes (LeRobot computes image stats from the source frames)
    assert json.loads((exports['images'] / 'meta/stats.json').read_text()) == stats


def test_files_roll_over_by_size_and_chunk(demos, tmp_path):
    # each episode's PNGs (~180 kB) or mp4 (~15 kB) alone outgrows these: one file per episode, two per chunk
    kw = dict(fps=FPS, chunks_size=2, data_files_size_in_mb=0.25, video_files_size_in_mb=0.005)
    img = export_lerobot(demos, tmp_path / 'img', use_videos=False, **kw)
    vid = export_lerobot(demos, tmp_path / 'vid', use_videos=True, **kw)
    assert sorted(p.relative_to(img).as_posix() for p in (img / 'data').rglob('*.parquet')) == [
        'data/chunk-000/file-000.parquet', 'data/chunk-000/file-001.parquet', 'data/chunk-001/file-000.parquet']
    rows = _episodes_table(img).to_pylist()
    assert [(r['data/chunk_index'], r['data/file_index']) for r in rows] == [(0, 0), (0, 1), (1, 0)]
    vrows = _episodes_table(vid).to_pylist()
    for cam in ('front', 'wrist'):
        key = f'observation.images.{cam}'
        files = sorted(p.relative_to(vid / 'videos' / key).as_posix() for p in (vid / 'videos' / key).rglob('*.mp4'))
        assert files == ['chunk-000/file-000.mp4', 'chunk-000/file-001.mp4', 'chunk-001/file-000.mp4']
        assert [(r[f'videos/{key}/chunk_index'], r[f'videos/{key}/file_index']) for r in vrows] == \
            [(0, 0), (0, 1), (1, 0)]
        assert all(r[f'videos/{key}/from_timestamp'] == 0.0 for r in vrows)     # a new file starts at 0
    for a, b in zip(demos, read_lerobot(img)):
        np.testing.assert_array_equal(b.camera_images['wrist'], a.camera_images['wrist'])
        np.testing.assert_array_equal(b.actions, a.actions)
    for a, b in zip(demos, read_lerobot(vid, camera_names=['wrist'])):
        assert list(b.camera_images) == ['wrist'] and psnr(a.camera_images['wrist'], b.images) > MIN_PSNR_DB


def test_episodes_are_consumed_one_at_a_time(demos, tmp_path):
    refs = []

    def stream():
        for k, ep in enumerate(demos):
            gc.collect()
            # the writer may still hold the episode before this one (its loop variable), no older one
            assert all(r() is None for r in refs[:max(0, k - 1)]), k
            copy = dataclasses.replace(ep, camera_images={c: v.copy() for c, v in ep.camera_images.items()})
            refs.append(weakref.ref(copy))
            yield copy

    export_lerobot(stream(), tmp_path / 'ds', fps=FPS, use_videos=True)
    assert len(refs) == 3


# ----------------------------------------------------------------------------- errors
def _copy(root: Path, dst: Path) -> Path:
    shutil.copytree(root, dst)
    return dst


def _edit_info(root: Path, fn) -> None:
    info = _info(root)
    fn(info)
    (root / 'meta/info.json').write_text(json.dumps(info))


def test_read_errors_name_the_file_and_the_field(exports, tmp_path):
    v21 = _copy(exports['images'], tmp_path / 'v21')
    _edit_info(v21, lambda i: i.update(codebase_version='v2.1'))
    assert is_lerobot_dataset(v21)
    with pytest.raises(LeRobotFormatError, match=r"info\.json: codebase_version is 'v2\.1'.*v3\.0.*"
                                                 r"convert_dataset_v21_to_v30"):
        read_lerobot(v21)

    nofeat = _copy(exports['images'], tmp_path / 'nofeat')
    _edit_info(nofeat, lambda i: i['features'].pop('action'))
    with pytest.raises(LeRobotFormatError, match=r"info\.json: missing feature 'action'"):
        read_lerobot(nofeat)
    with pytest.raises(LeRobotFormatError, match=r"missing camera feature\(s\) \['observation\.images\.top'\]"):
        read_lerobot(exports['images'], camera_names=['top'])

    novid = _copy(exports['video'], tmp_path / 'novid')
    (novid / 'videos/observation.images.wrist/chunk-000/file-000.mp4').unlink()
    episodes = read_lerobot(novid)
    with pytest.raises(LeRobotFormatError, match=r'observation\.images\.wrist/chunk-000/file-000\.mp4: missing'):
        next(episodes)

    for mode in ('images', 'video'):
        bad = _copy(exports[mode], tmp_path / f'shape_{mode}')
        _edit_info(bad, lambda i: i['features']['observation.images.front'].update(shape=[64, 64, 3]))
        with pytest.raises(LeRobotFormatError, match=r'observation\.images\.front.*96x96.*64x64 \(shape mismatch\)'):
            next(read_lerobot(bad))

    nodata = _copy(exports['images'], tmp_path / 'nodata')
    (nodata / 'data/chunk-000/file-000.parquet').unlink()
    with pytest.raises(LeRobotFormatError, match=r'data/chunk-000/file-000\.parquet: missing'):
        next(read_lerobot(nodata))

    assert not is_lerobot_dataset(tmp_path / 'nothing')
    with pytest.raises(LeRobotFormatError, match=r'meta/info\.json: missing: not a LeRobot dataset'):
        read_lerobot(tmp_path)


def test_existing_root_needs_overwrite(demos, exports, tmp_path):
    root = _copy(exports['images'], tmp_path / 'ds')
    with pytest.raises(FileExistsError, match=r'ds exists and is not empty \(pass overwrite=True'):
        export_lerobot(demos[:1], root, fps=FPS, use_videos=False)
    assert _info(root)['total_episodes'] == 3
    export_lerobot(demos[:1], root, fps=FPS, use_videos=False, overwrite=True)
    assert _info(root)['total_episodes'] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds']     # nothing left beside it


def _bad(ep: Episode, **changes) -> Episode:
    return dataclasses.replace(ep, **changes)


def test_mismatched_or_bad_episodes_are_refused(demos, tmp_path):
    e0, e1 = demos[0], demos[1]
    front_only = {'front': e1.camera_images['front']}
    cases = [
        ([e0, _bad(e1, camera_images=front_only, images=front_only['front'])],
         r"episode 1 \(.*episode_000001\): cameras \['front'\] differ from the first episode's \['front', 'wrist'\]"),
        ([e0, _bad(e1, joint_names=tuple(reversed(e1.joint_names)))], r'episode 1 .*: joint_names .* differ'),
        ([e0, _bad(e1, camera_images={'front': e1.camera_images['front'][:, :64],
                                      'wrist': e1.camera_images['wrist']})],
         r"episode 1 .*: camera_images\['front'\] frames are \(64, 96, 3\), the first episode's \(96, 96, 3\)"),
        ([_bad(e0, actions=np.where(np.arange(len(e0))[:, None] == 5, np.nan, e0.actions).astype(np.float32))],
         r'episode 0 .*episode_000000\): actions is not finite \(as float32\) at frame 5, column 0'),
        ([_bad(e0, joint_positions=e0.joint_positions[:, :7])], r'episode 0 .*: actions have 8 columns, '
                                                                 r'joint_positions 7'),
        ([_bad(e0, rate_hz=15.0)], r'episode 0 .*: rate_hz is 15\.0 Hz, the dataset fps is 10'),
        ([_bad(e0, stamps=e0.stamps + (np.arange(len(e0)) >= 20) * 0.2)],
         r'episode 0 .*: stamps skip 2 ticks in 1 gaps .* allow_gaps=True'),
        ([_bad(e0, stamps=e0.stamps + (np.arange(len(e0)) >= 20) * 0.05)],
         r'episode 0 .*: stamps step 0\.150000 s after frame 19, not a multiple of 1/fps'),
        ([_bad(e0, camera_images={c: v.astype(np.float32) for c, v in e0.camera_images.items()})],
         r"episode 0 .*: camera_images\['front'\] must be uint8 \(T, H, W, 3\), got float32"),
        ([Episode(source='empty', stamps=np.zeros(0), images=np.zeros((0, 4, 4, 3), np.uint8),
                  joint_positions=np.zeros((0, 2), np.float32), actions=np.zeros((0, 2), np.float32),
                  instructions=[])], r'episode 0 \(empty\): empty \(0 frames\)'),
        ([], r'no episodes to export'),
    ]
    for k, (eps, pattern) in enumerate(cases):
        with pytest.raises(ValueError, match=pattern):
            export_lerobot(eps, tmp_path / f'ds{k}', fps=FPS, use_videos=False)
    assert list(tmp_path.iterdir()) == []                    # no root, no temporary directory
    with pytest.raises(ValueError, match=r'fps must be a positive integer'):
        export_lerobot([e0], tmp_path / 'x', fps=12.5)
    with pytest.raises(ValueError, match=r"vcodec must be one of \['libsvtav1', 'h264', 'hevc'\]"):
        export_lerobot([e0], tmp_path / 'x', fps=FPS, vcodec='mjpeg')
    # gaps written back to back on request
    gap = _bad(e0, stamps=e0.stamps + (np.arange(len(e0)) >= 20) * 0.2)
    back = next(read_lerobot(export_lerobot([gap], tmp_path / 'gap', fps=FPS, use_videos=False, allow_gaps=True)))
    np.testing.assert_allclose(np.diff(back.stamps), 1.0 / FPS, atol=1e-5)


def test_failure_mid_export_leaves_nothing(demos, tmp_path):
    def stream():
        yield demos[0]
        yield demos[1]
        raise RuntimeError('bag 3 is corrupt')

    for mode in (False, True):
        with pytest.raises(RuntimeError, match='bag 3 is corrupt'):
            export_lerobot(stream(), tmp_path / 'ds', fps=FPS, use_videos=mode)
        assert list(tmp_path.iterdir()) == []
    # a bad third episode while replacing an existing dataset: the old one stays as it was
    old = export_lerobot(demos[:1], tmp_path / 'ds', fps=FPS, use_videos=False)
    bad = _bad(demos[2], joint_names=('a',) * 8)
    with pytest.raises(ValueError, match=r'episode 2 .*joint_names'):
        export_lerobot([demos[0], demos[1], bad], old, fps=FPS, use_videos=True, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds'] and _info(old)['total_episodes'] == 1


# ----------------------------------------------------------------------------- LeRobot 0.4.4 itself
def _lerobot_python() -> Path:
    env = os.environ.get('VLA_LEROBOT_PYTHON')
    py = Path(env) if env else REPO / '.venv-lerobot' / 'bin' / 'python'
    if not py.exists():
        pytest.skip(f'LeRobot venv absent: no {py} (set VLA_LEROBOT_PYTHON or run '
                    f'`make .venv-lerobot/.installed` at {REPO})')
    return py


def _side(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    env.update(OMP_NUM_THREADS='1', SVT_LOG='1')
    proc = subprocess.run([str(_lerobot_python()), str(SIDE), *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, f'lerobot_side.py {args[0]} failed:\n{proc.stderr[-4000:]}'
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


@pytest.mark.parametrize('mode', ['images', 'video'])
def test_lerobot_loads_our_export(mode, demos, exports, tmp_path):
    root = exports[mode]
    dump = tmp_path / 'dump.npz'
    out = _side('load', '--root', str(root), '--dump', str(dump))
    n = sum(len(e) for e in demos)
    assert out['lerobot_version'] == '0.4.4' and out['codebase_version'] == 'v3.0'
    assert (out['num_episodes'], out['num_frames'], out['fps']) == (3, n, FPS)
    keys = ['observation.images.front', 'observation.images.wrist']
    assert out['camera_keys'] == keys
    assert out[('video' if mode == 'video' else 'image') + '_keys'] == keys
    assert out['features'] == _info(root)['features']
    d = np.load(dump)
    np.testing.assert_array_equal(d['state'], np.concatenate([e.joint_positions for e in demos]))
    np.testing.assert_array_equal(d['action'], np.concatenate([e.actions for e in demos]))
    np.testing.assert_array_equal(d['episode_index'], np.concatenate([np.full(len(e), i) for i, e in enumerate(demos)]))
    np.testing.assert_array_equal(d['frame_index'], np.concatenate([np.arange(len(e)) for e in demos]))
    np.testing.assert_array_equal(d['index'], np.arange(n))
    assert list(d['task']) == [s for e in demos for s in e.instructions]
    assert list(d['image_keys']) == keys
    ours = list(read_lerobot(root))
    for j, cam in enumerate(('front', 'wrist')):
        lerobot_frames = d[f'image_{j}']
        orig = np.concatenate([e.camera_images[cam] for e in demos])
        if mode == 'images':
            np.testing.assert_array_equal(lerobot_frames, orig)
        else:
            # LeRobot's decoder (torchcodec or pyav) and ours decode the same AV1 stream
            ours_frames = np.concatenate([e.camera_images[cam] for e in ours])
            assert psnr(lerobot_frames, ours_frames) > 45.0, out['video_backend']
            assert psnr(lerobot_frames, orig) > MIN_PSNR_DB


@pytest.mark.parametrize('mode', ['images', 'video'])
def test_lerobot_writer_lays_out_what_we_write(mode, demos, exports, tmp_path):
    """LeRobot's own writer (create / add_frame / save_episode / finalize) on the same frames gives the
    same info.json, stats.json, episodes and tasks tables and the same data columns; read_lerobot reads it."""
    ours = exports[mode]
    theirs = tmp_path / 'lerobot'
    out = _side('create', '--from', str(exports['images']), '--out', str(theirs), '--mode', mode)
    assert out['num_frames'] == sum(len(e) for e in demos)
    info_ours = _info(ours)
    assert info_ours.pop('vla')['episode_source'] == [str(e.source) for e in demos]
    assert info_ours == _info(theirs)
    assert json.loads((ours / 'meta/stats.json').read_text()) == json.loads((theirs / 'meta/stats.json').read_text())
    for rel in ('meta/episodes/chunk-000/file-000.parquet', 'meta/tasks.parquet'):
        a, b = pq.read_table(ours / rel), pq.read_table(theirs / rel)
        assert a.schema.equals(b.schema) and a.equals(b), rel
        meta_a, meta_b = ({k: json.loads(v) for k, v in (t.schema.metadata or {}).items()} for t in (a, b))
        for m in (meta_a, meta_b):
            m.get(b'pandas', {}).pop('creator', None)       # the writing pyarrow's version
        assert meta_a == meta_b, rel
    rel = 'data/chunk-000/file-000.parquet'
    a, b = pq.read_table(ours / rel), pq.read_table(theirs / rel)
    assert a.schema.remove_metadata().equals(b.schema.remove_metadata())
    hf_a, hf_b = (json.loads(t.schema.metadata[b'huggingface']) for t in (a, b))
    assert hf_a['info'] == hf_b['info']          # LeRobot's also holds a random "fingerprint"
    for col in a.column_names:
        if not col.startswith('observation.images.'):
            assert a.column(col).equals(b.column(col)), col
    back = list(read_lerobot(theirs))
    for e, b_ in zip(demos, back):
        np.testing.assert_array_equal(b_.actions, e.actions)
        assert b_.instructions == e.instructions and b_.joint_names == e.joint_names
        for cam in ('front', 'wrist'):
            if mode == 'images':
                np.testing.assert_array_equal(b_.camera_images[cam], e.camera_images[cam])
            else:
                assert psnr(b_.camera_images[cam], e.camera_images[cam]) > MIN_PSNR_DB


@pytest.mark.parametrize('mode', ['images', 'video'])
def test_train_reads_a_lerobot_dataset_through_the_cache(mode, demos, exports, tmp_path, capsys):
    """``train --bags <LeRobotDataset v3 dir>``: the same entry point, the same cache, a checkpoint."""
    from vla_training import train_cli
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text((REPO / 'config' / 'train_franka_2cam.yaml').read_text().replace(
        'robot_config: franka.yaml', f'robot_config: {REPO / "config" / "franka.yaml"}').replace(
        'warmup_steps: 100', 'warmup_steps: 1'))
    cache = tmp_path / 'cache'
    args = ['--bags', str(exports[mode]), '--config', str(cfg), '--output', str(tmp_path / 'run'), '--steps', '3',
            '--batch-size', '4', '--cache-dir', str(cache), '--no-progress']
    assert train_cli.main(args) == 0
    assert (tmp_path / 'run' / 'checkpoint' / 'model.safetensors').is_file()
    m, _, d = train_cli.load_train_yaml(str(cfg))
    data = train_cli.load_data([str(exports[mode])], m, d.__class__(**dict(vars(d), cache_dir=str(cache))))
    assert (data.built, data.reused) == (0, 3)             # the second read reuses the entries
    for orig, entry in zip(demos, data.entries):
        back = entry.to_episode()
        np.testing.assert_array_equal(back.actions, orig.actions)
        np.testing.assert_array_equal(back.joint_positions, orig.joint_positions)
        assert back.instructions == orig.instructions and list(back.camera_images) == ['front', 'wrist']
        if mode == 'images':
            for c in ('front', 'wrist'):
                np.testing.assert_array_equal(back.camera_images[c], orig.camera_images[c])


def test_export_cli_writes_a_dataset_read_back_exactly(tmp_path, capsys):
    """``export_lerobot --bags ... --images``: bags -> cache -> LeRobotDataset v3, low-dim and frames exact."""
    from vla_training.record import RecordConfig, record_demos
    bags = record_demos(RecordConfig(episodes=2, output=str(tmp_path / 'bags'), workers=1, tasks=('reach',)),
                        progress=False)
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text((REPO / 'config' / 'train_franka_2cam.yaml').read_text().replace(
        'robot_config: franka.yaml', f'robot_config: {REPO / "config" / "franka.yaml"}'))
    out = tmp_path / 'lerobot'
    assert lds.main(['--bags', str(tmp_path / 'bags'), '--config', str(cfg), '--output', str(out), '--images',
                     '--cache-dir', str(tmp_path / 'cache')]) == 0
    assert '2 episodes' in capsys.readouterr().out
    back = list(read_lerobot(out))
    for b, p in zip(back, bags):
        e = read_episode(p, FRANKA_PANDA, TOPICS)
        np.testing.assert_array_equal(b.actions, e.actions)
        np.testing.assert_array_equal(b.camera_images['wrist'], e.camera_images['wrist'])
    assert _info(out)['fps'] == 10
    # an existing dataset is not overwritten: one line naming it
    assert lds.main(['--bags', str(tmp_path / 'bags'), '--config', str(cfg), '--output', str(out), '--images',
                     '--cache-dir', str(tmp_path / 'cache')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0], err
