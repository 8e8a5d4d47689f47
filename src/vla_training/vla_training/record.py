"""Record scripted demonstrations in the MuJoCo scene as rosbag2 (one bag per episode).

``ros2 run vla_training record --episodes 200 --output demos/`` writes ``demos/episode_000000/``
... each a rosbag2 directory (MCAP by default, ``--storage sqlite3`` too) with the topics a real
Franka setup has: ``/camera/image_raw`` (the front camera) and ``/wrist_camera/image_raw`` (the
hand camera; sensor_msgs/Image rgb8, frames ``camera_optical_frame`` /
``wrist_camera_optical_frame``), ``/joint_states``,
``/vla/instruction`` (latched), ``/arm_controller/joint_trajectory``; header stamps = sim time.
``--image-format jpeg`` (or ``png``) records ``sensor_msgs/CompressedImage`` on
``/camera/image_raw/compressed`` and ``/wrist_camera/image_raw/compressed`` instead, as
``image_transport``'s compressed transport does on a real robot.
Episodes are split over worker processes (one MuJoCo renderer each). A bag appears under its
final name only once complete (the writer renames a temp directory).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['RecordConfig', 'record_episode', 'record_demos', 'main']

log = logging.getLogger('vla_training.record')

_QOS = {  # topic -> profile name understood by EpisodeBagWriter (as `ros2 bag record` saw them)
    '/camera/image_raw': 'sensor',
    '/wrist_camera/image_raw': 'sensor',
    '/joint_states': 'sensor',
    '/vla/instruction': 'latched',
    '/arm_controller/joint_trajectory': 'reliable',
    '/camera/image_raw/compressed': 'sensor',
    '/wrist_camera/image_raw/compressed': 'sensor',
}


@dataclass
class RecordConfig:
    episodes: int = 200
    output: str = 'demos'
    seed: int = 0               # episode i uses sim seed `seed + i`; evaluation uses other seeds
    tasks: Tuple[str, ...] = ('reach', 'pick')
    storage: str = 'mcap'
    workers: int = 2            # one per core on the 2-core reference machine
    image_size: int = 96
    # DART noise on the executed arm targets (rad, see rollout.run_episode); 0 = clean demos.
    # 0.03 rad moves the TCP by ~2 cm: the size of the misses a cloned policy makes near the cube.
    action_noise: float = 0.03
    # sim cameras written to every bag (front: /camera/image_raw, wrist: /wrist_camera/image_raw);
    # the front camera is always recorded
    cameras: Tuple[str, ...] = ('front', 'wrist')
    # raw: sensor_msgs/Image rgb8 on /camera/image_raw ...; jpeg / png: sensor_msgs/CompressedImage on
    # /camera/image_raw/compressed ... (what image_transport's compressed transport records)
    image_format: str = 'raw'
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        from robot_drivers.sim.franka_cubes import CAMERAS
        self.cameras = tuple(self.cameras)
        if 'front' not in self.cameras or any(c not in CAMERAS for c in self.cameras):
            raise ValueError(f'cameras must include front and name only the scene cameras {list(CAMERAS)}, '
                             f'got {list(self.cameras)}')
        if self.episodes < 1:
            raise ValueError(f'episodes must be >= 1, got {self.episodes}')
        from vla_training.rollout import Topics
        Topics(image_format=self.image_format, jpeg_quality=self.jpeg_quality)   # checks both
        if self.storage not in ('mcap', 'sqlite3'):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {self.storage!r}")


def _task_for(seed: int, tasks: Sequence[str]):
    from vla_training.experts import sample_task
    return sample_task(np.random.default_rng(seed + 7_919), tuple(tasks))


def record_episode(sim, seed: int, path: pathlib.Path, tasks: Sequence[str], storage: str = 'mcap',
                   action_noise: float = 0.0, cameras: Sequence[str] = ('front', 'wrist'),
                   image_format: str = 'raw', jpeg_quality: int = 90):
    """Run the scripted expert for one seeded episode and write it to the bag ``path``
    (``cameras``: the sim cameras recorded, each on its topic of :class:`~vla_training.rollout.Topics`;
    ``image_format``: ``raw``, ``jpeg`` or ``png``, see :attr:`~vla_training.rollout.Topics.image_format`).

    Returns the :class:`~vla_training.rollout.EpisodeResult`. Raises FileExistsError if ``path`` exists.
    """
    from vla_training.bag_writer import EpisodeBagWriter
    from vla_training.experts import ScriptedExpert
    from vla_training.rollout import ExpertController, Topics, run_episode

    task = _task_for(seed, tasks)
    if path.exists():
        raise FileExistsError(f'bag {path} already exists; choose another --output or remove it')
    holder = {}

    def reset_hook():
        holder['expert'].reset()

    expert = ScriptedExpert(sim, task)
    holder['expert'] = expert
    with EpisodeBagWriter(str(path), storage=storage, qos=_QOS) as writer:
        added = set()

        def on_message(topic, msgtype, msg, t):
            if topic not in added:
                writer.add_topic(topic, msgtype)
                added.add(topic)
            writer.write(topic, msg, t)

        topics = Topics(image_format=image_format, jpeg_quality=jpeg_quality,
                        **({} if 'wrist' in cameras else {'wrist_image': None}))
        result = run_episode(sim, task, seed, ExpertController(expert), on_message=on_message,
                             reset_hook=reset_hook, action_noise=action_noise, topics=topics)
    return result


def _worker(args) -> List[Tuple[int, str, bool]]:
    seeds, out, tasks, storage, image_size, action_noise, cameras, image_format, jpeg_quality = args
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from robot_drivers.sim.franka_cubes import FrankaCubeSim, SimConfig
    sim = FrankaCubeSim(SimConfig(image_size=image_size))
    done = []
    for s in seeds:
        r = record_episode(sim, s, pathlib.Path(out) / f'episode_{s:06d}', tasks, storage, action_noise, cameras,
                           image_format, jpeg_quality)
        done.append((s, r.task.instruction, r.success))
    sim.close()
    return done


def record_demos(cfg: RecordConfig, progress: bool = True) -> List[pathlib.Path]:
    """Record ``cfg.episodes`` demonstrations; returns the bag paths (sorted)."""
    out = pathlib.Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    shards = [seeds[i::cfg.workers] for i in range(cfg.workers)]
    t0 = time.time()
    jobs = [(s, str(out), tuple(cfg.tasks), cfg.storage, cfg.image_size, cfg.action_noise, cfg.cameras,
             cfg.image_format, cfg.jpeg_quality) for s in shards if s]
    if len(jobs) == 1:
        results = [_worker(jobs[0])]
    else:
        ctx = mp.get_context('spawn')
        with ctx.Pool(len(jobs)) as pool:
            results = pool.map(_worker, jobs)
    flat = sorted(x for r in results for x in r)
    failed = [s for s, _, ok in flat if not ok]
    log.info('recorded %d episodes in %.1f s (%d where the expert failed)', len(flat), time.time() - t0, len(failed))
    if progress:
        print(f'recorded {len(flat)} demonstrations to {out} in {time.time() - t0:.1f} s; '
              f'expert success {1 - len(failed) / len(flat):.0%}')
    return [out / f'episode_{s:06d}' for s, _, _ in flat]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``record`` console script; exit status 0, 1 (one line on stderr, e.g. a bag that exists) or 2 (usage)."""
    from robot_drivers import cli
    from vla_training.experts import TASK_KINDS
    p = cli.ArgumentParser(prog='record', description=__doc__.split('\n\n')[0])
    p.add_argument('--episodes', type=cli.positive_int, default=200)
    p.add_argument('--output', default='demos', help='directory to hold one rosbag2 per episode')
    p.add_argument('--seed', type=cli.non_negative_int, default=0)
    p.add_argument('--tasks', type=cli.comma_list(TASK_KINDS), default=('reach', 'pick'),
                   help='comma-separated: ' + ','.join(TASK_KINDS))
    p.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    p.add_argument('--workers', type=cli.positive_int, default=2)
    p.add_argument('--image-size', type=cli.positive_int, default=96)
    p.add_argument('--action-noise', type=float, default=0.03,
                   help='DART noise on executed arm targets, rad (the recorded command stays clean)')
    p.add_argument('--cameras', type=cli.comma_list(('front', 'wrist')), default=('front', 'wrist'),
                   help='sim cameras to record, comma-separated (front is required): front,wrist')
    p.add_argument('--image-format', default='raw', choices=['raw', 'jpeg', 'png'],
                   help='raw: sensor_msgs/Image; jpeg/png: sensor_msgs/CompressedImage on <camera topic>/compressed')
    p.add_argument('--jpeg-quality', type=cli.positive_int, default=90)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    def body() -> int:
        cfg = RecordConfig(a.episodes, a.output, a.seed, a.tasks, a.storage, a.workers, a.image_size,
                           a.action_noise, a.cameras, a.image_format, a.jpeg_quality)
        record_demos(cfg)
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
