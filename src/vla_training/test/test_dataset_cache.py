"""The on-disk dataset cache and the loader on bags the MuJoCo Franka recorded.

The cache of a bag set equals the in-RAM episodes sample for sample (raw and JPEG bags, several
cameras, an observation history, delta actions, end padding); JPEG frames stay the bag's bytes;
only changed bags (or a changed data option) are rebuilt; a bad bag stops the build with its name and
leaves every finished entry valid and nothing half-written; the sampler's steps are a function of
(seed, step), the same for N processes x B as for 1 x N*B; workers load the same batches.
"""
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault('MUJOCO_GL', 'egl')

from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from vla_policy.models import VLAConfig, WordTokenizer  # noqa: E402
from vla_training.bag_dataset import BagError, BagTopics, EncodedFrames, read_episode  # noqa: E402
from vla_training.dataset import CacheSource, ChunkDataset, EpisodeSource, StepBatchSampler, collate  # noqa: E402
from vla_training.dataset_cache import CacheEntry, CacheSpec, build_cache  # noqa: E402
from vla_training.record import RecordConfig, record_demos  # noqa: E402
from vla_training.train import _Data, build_arrays, compute_stats  # noqa: E402

torch.set_num_threads(1)
RAW = {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}
JPEG = {k: v + '/compressed' for k, v in RAW.items()}


def _spec(cams, **kw):
    return CacheSpec(embodiment='franka_panda', topics=BagTopics.from_dict({'images': cams}).as_dict(), **kw)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    raw = record_demos(RecordConfig(episodes=3, output=str(root / 'raw'), workers=1, tasks=('reach', 'pick'),
                                    image_size=48), progress=False)
    jpeg = record_demos(RecordConfig(episodes=2, output=str(root / 'jpeg'), workers=1, tasks=('reach',),
                                     image_size=48, image_format='jpeg', seed=10), progress=False)
    return {'raw': raw, 'jpeg': jpeg}


def _cfg(n_obs=2, chunk=4, cameras=('front', 'wrist')):
    return VLAConfig.from_dict({
        'backbone': {'name': 'film_cnn', 'image_size': 32, 'channels': [8, 8]},
        'chunk': {'n_obs_steps': n_obs, 'chunk_size': chunk, 'n_action_steps': 2},
        'camera_names': list(cameras), 'delta_action_dims': [0, 1, 2, 3, 4, 5, 6], 'binary_action_dims': [7]})


def _reference(episodes, cfg):
    """The in-RAM samples (build_arrays + _Data) of ``episodes`` and their stats / tokenizer."""
    stats = compute_stats(episodes, cfg)
    tok = WordTokenizer.build([s for e in episodes for s in e.instructions], cfg.max_tokens)
    arr = build_arrays(episodes, cfg)
    data = _Data(arr, np.arange(len(arr['obs_index'])), stats, tok, cfg, torch.device('cpu'))
    return data, stats, tok


@pytest.mark.parametrize('kind', ['raw', 'jpeg'])
def test_cache_equals_in_ram_episodes_sample_for_sample(bags, kind, tmp_path):
    images = RAW if kind == 'raw' else JPEG
    episodes = [read_episode(b, FRANKA_PANDA, BagTopics.from_dict({'images': images})) for b in bags[kind]]
    cache = build_cache(bags[kind], _spec(images), tmp_path / 'cache')
    assert cache.built == len(bags[kind]) and cache.reused == 0
    cfg = _cfg()
    ref, stats, tok = _reference(episodes, cfg)
    # the statistics from the cache's low-dim arrays are the in-RAM ones
    st2 = compute_stats(cache.lowdim_views(), cfg)
    for k in stats:
        for a, b in zip(stats[k].to_dict().values(), st2[k].to_dict().values()):
            np.testing.assert_array_equal(a, b)
    ids = np.arange(len(episodes))
    for ds in (ChunkDataset(CacheSource(cache, cfg.camera_names, 32), ids, cfg, stats, tok),
               ChunkDataset(EpisodeSource(episodes, cfg.camera_names, 32), ids, cfg, stats, tok)):
        assert len(ds) == len(ref) == sum(len(e) for e in episodes)
        for s in range(0, len(ds), 16):
            keys = list(range(s, min(s + 16, len(ds))))
            got = collate(ds.__getitems__(keys))
            want = ref.batch(torch.tensor(keys))
            assert set(got) == set(want)
            torch.testing.assert_close(got['images'].float() / 255.0, want['images'], rtol=0, atol=0)
            for k in ('token_ids', 'attention_mask', 'actions', 'action_is_pad', 'state'):
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    # the episode read back from the cache is the episode read from the bag
    back = cache.entries[0].to_episode()
    for c, v in episodes[0].cameras().items():
        np.testing.assert_array_equal(back.camera_images[c], np.asarray(v))
    np.testing.assert_array_equal(back.actions, episodes[0].actions)
    assert back.instructions == episodes[0].instructions and back.rate_hz == episodes[0].rate_hz


def test_jpeg_frames_stay_the_bags_bytes_at_recorded_size(bags, tmp_path):
    bag = bags['jpeg'][0]
    ep = read_episode(bag, FRANKA_PANDA, BagTopics.from_dict({'images': JPEG}), decode_images=False)
    assert isinstance(ep.camera_images['front'], EncodedFrames) and ep.camera_images['front'].fmt == 'jpeg'
    entry = build_cache([bag], _spec(JPEG), tmp_path / 'c').entries[0]
    info = entry.meta['cameras']['front']
    assert info['storage'] == 'encoded' and (info['height'], info['width']) == (48, 48)
    idx = entry.lowdim()['frame_index']['front']
    for t in (0, 5, len(idx) - 1):
        assert entry.frame_bytes('front', int(idx[t])) == ep.camera_images['front'].data[t]
        assert entry.frame_bytes('front', int(idx[t]))[:2] == b'\xff\xd8'          # a JPEG, never re-encoded
    raw_size = entry.length * 48 * 48 * 3
    assert (entry.path / 'cam.front.bin').stat().st_size < raw_size / 3
    # png storage of raw frames is lossless and smaller than raw
    raw_bag = bags['raw'][0]
    e_raw = build_cache([raw_bag], _spec(RAW), tmp_path / 'r').entries[0]
    e_png = build_cache([raw_bag], _spec(RAW, images='png'), tmp_path / 'r').entries[0]
    assert e_png.path != e_raw.path and e_png.meta['cameras']['front']['format'] == 'png'
    np.testing.assert_array_equal(e_png.to_episode().camera_images['wrist'], e_raw.to_episode().camera_images['wrist'])
    assert e_png.nbytes < e_raw.nbytes / 2


def test_only_changed_bags_and_changed_options_rebuild(bags, tmp_path):
    work = tmp_path / 'bags'
    paths = []
    for b in bags['raw']:
        shutil.copytree(b, work / b.name)
        paths.append(work / b.name)
    root = tmp_path / 'cache'
    first = build_cache(paths, _spec(RAW), root)
    assert (first.built, first.reused) == (3, 0)
    again = build_cache(paths, _spec(RAW), root)
    assert (again.built, again.reused) == (0, 3)
    assert [e.path for e in again.entries] == [e.path for e in first.entries]
    # a bag without the configured topics is named (the jpeg bags publish <topic>/compressed)
    shutil.rmtree(paths[1])
    shutil.copytree(bags['jpeg'][0], paths[1])
    with pytest.raises(BagError, match=r"episode_000001: camera 'front' image topic /camera/image_raw is not in the bag"):
        build_cache(paths, _spec(RAW), root)
    shutil.rmtree(paths[1])
    shutil.copytree(bags['raw'][1], paths[1])
    os.utime(paths[1] / 'metadata.yaml', None)                         # same bytes, new mtime: same key
    changed = build_cache(paths, _spec(RAW), root)
    assert (changed.built, changed.reused) == (0, 3)
    # a changed data option (grid rate) gives new keys for every bag
    slower = build_cache(paths, _spec(RAW, rate_hz=5.0), root)
    assert (slower.built, slower.reused) == (3, 0)
    assert {e.path for e in slower.entries}.isdisjoint({e.path for e in first.entries})
    assert slower.entries[0].length < first.entries[0].length


def test_a_changed_bag_alone_is_rebuilt(bags, tmp_path):
    work = tmp_path / 'bags'
    paths = [Path(shutil.copytree(b, work / b.name)) for b in bags['raw'][:2]]
    root = tmp_path / 'cache'
    first = build_cache(paths, _spec(RAW), root)
    shutil.rmtree(paths[0])
    record_demos(RecordConfig(episodes=1, output=str(tmp_path / 'other'), workers=1, tasks=('reach',),
                              image_size=48, seed=77), progress=False)
    shutil.copytree(tmp_path / 'other' / 'episode_000077', paths[0])
    second = build_cache(paths, _spec(RAW), root)
    assert (second.built, second.reused) == (1, 1)
    assert second.entries[0].path != first.entries[0].path and second.entries[1].path == first.entries[1].path


def test_a_bad_bag_is_named_and_nothing_half_written_remains(bags, tmp_path):
    work = tmp_path / 'bags'
    good = Path(shutil.copytree(bags['raw'][0], work / 'a_good'))
    bad = Path(shutil.copytree(bags['raw'][1], work / 'b_bad'))
    f = next(bad.glob('*.mcap'))
    with open(f, 'r+b') as fh:
        fh.truncate(f.stat().st_size // 2)
    root = tmp_path / 'cache'
    with pytest.raises(BagError, match='b_bad'):
        build_cache([good, bad], _spec(RAW), root)
    entries = list((root / 'entries').iterdir())
    assert len(entries) == 1 and (entries[0] / 'meta.json').is_file()      # the good bag's, complete
    assert not [p for p in (root / 'entries').iterdir() if p.name.startswith('.')]
    CacheEntry(entries[0]).to_episode()


def test_loader_memory_does_not_hold_frames(bags, tmp_path):
    cache = build_cache(bags['raw'], _spec(RAW), tmp_path / 'cache')
    cfg = _cfg()
    episodes = [e for e in cache.lowdim_views()]
    stats = compute_stats(episodes, cfg)
    tok = WordTokenizer.build([s for e in episodes for s in e.instructions], cfg.max_tokens)
    ds = ChunkDataset(CacheSource(cache, cfg.camera_names, 32), np.arange(3), cfg, stats, tok, lowdim_lru=2)
    for i in range(len(ds)):
        ds[i]
    assert len(ds._lru) == 2                         # low-dim arrays of at most lowdim_lru episodes
    frame_bytes = sum(e.nbytes for e in cache.entries)
    # what a worker process receives: paths, lengths, stats, the tokenizer - no frames
    assert len(pickle.dumps(ds)) < min(frame_bytes / 20, 200_000), (len(pickle.dumps(ds)), frame_bytes)


def test_sampler_is_a_function_of_the_step_and_shards_the_global_batch():
    one = StepBatchSampler(50, 8, steps=20, seed=3)
    two = [StepBatchSampler(50, 4, steps=20, seed=3, world_size=2, rank=r) for r in range(2)]
    accum = StepBatchSampler(50, 4, steps=20, seed=3, grad_accum=2)
    b1, b2, ba = list(one), [list(s) for s in two], list(accum)
    for s in range(20):
        assert b1[s] == b2[0][s] + b2[1][s]           # 2 processes x 4 = 1 process x 8, sample by sample
        assert b1[s] == ba[2 * s] + ba[2 * s + 1]      # 2 micro-batches of 4 = one batch of 8
    resumed = list(StepBatchSampler(50, 8, steps=20, seed=3, start_step=7))
    assert resumed == b1[7:]
    stream = [i for b in b1 for i, _ in b]
    for e in range(3):                                 # each epoch is a permutation of every sample
        assert sorted(stream[50 * e:50 * (e + 1)]) == list(range(50))
    assert stream[:50] != sorted(stream[:50])
    assert [p for b in b1 for _, p in b] == list(range(160))


def test_batches_mix_episodes_and_workers_load_the_same_batches(bags, tmp_path):
    cache = build_cache(bags['raw'], _spec(RAW), tmp_path / 'cache')
    cfg = _cfg(n_obs=1)
    views = cache.lowdim_views()
    stats = compute_stats(views, cfg)
    tok = WordTokenizer.build([s for e in views for s in e.instructions], cfg.max_tokens)
    ds = ChunkDataset(CacheSource(cache, cfg.camera_names, 32), np.arange(3), cfg, stats, tok, augment_shift=4, seed=1)
    sampler = StepBatchSampler(len(ds), 16, steps=6, seed=0)
    first = list(sampler)[0]
    assert len({ds.locate(i)[0] for i, _ in first}) == 3
    loads = []
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
        loads.append(list(dl))
    for a, b in zip(*loads):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # the shift moves the images (seeded by the stream position, not by a process RNG)
    plain = collate(ds.__getitems__([i for i, _ in first]))
    assert not torch.equal(plain['images'], loads[0][0]['images'])
    assert torch.equal(plain['actions'], loads[0][0]['actions'])
