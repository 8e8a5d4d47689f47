"""Meta-World (Farama ``metaworld==3.1.1``) on our topics: expert demonstrations as rosbag2, and a policy-server client
that evaluates a served policy with the published protocol. Runs in Meta-World's OWN venv.

``metaworld`` 3.1.1 pins ``mujoco==3.3.0`` and fails under the workspace's mujoco 4 (``could not broadcast
input array from shape (11,) into shape (12,)`` at ``gym.make``), so this module runs in a separate venv
(``make bench-metaworld`` builds ``.venv-metaworld``: metaworld, packaging, rosbags, websockets,
msgpack) with ``src/robot_drivers``, ``src/vla_policy`` and ``src/vla_training`` on ``PYTHONPATH``; it
imports only their torch-free modules (message conversions, the bag writer, ``RemotePolicy``). The
policy runs in the workspace, served by ``policy_server`` over websockets: the split LeRobot and
openpi use for LIBERO.

    .venv-metaworld/bin/python -m vla_training.metaworld_env record --tasks mt10 --episodes 50 --output demos/
    .venv-metaworld/bin/python -m vla_training.metaworld_env evaluate --endpoint ws://127.0.0.1:8765 --tasks mt10

**Protocol** (LeRobot's Meta-World wrapper, ``lerobot/envs/metaworld.py`` at huggingface/lerobot
7427f318, which SmolVLA's Meta-World numbers come from, and ``lerobot_eval.py``):

* env: ``metaworld.MT1(task, seed=42)``, ``set_task(train_tasks[0])``, then ``_freeze_rand_vec =
  False`` and ``seeded_rand_vec = True`` so ``env.seed(s); env.reset()`` draws a reproducible layout
  per seed (``reset(seed=...)`` is ignored by 3.1.1);
* camera ``corner2`` moved to ``cam_pos = [0.75, 0.075, 0.7]`` and the frame flipped on both axes;
* state ``obs[:4]`` (hand xyz, gripper opening), action ``Box(-1, 1, (4,))``;
* an episode ends at the first step with ``info['success']`` (success) or after 500 steps (the
  env's ``max_path_length``; failure); 10 episodes per task with seeds 1000 + k (``EvalPipelineConfig
  .seed = 1000``; the Meta-World docs' 10 episodes per task);
* the instruction of each task is the text of LeRobot's ``metaworld_config.json`` (the
  ``lerobot/metaworld_mt50`` dataset's task strings), :data:`TASK_DESCRIPTIONS`;
* MT10 / MT50 task lists from ``metaworld/env_dict.py``; difficulty groups (easy 28, medium 11, hard 6,
  very hard 5) as TinyVLA's Table I and SmolVLA's Table 2 use them (from Seo et al. 2022).

**What differs from LeRobot** (kept the same for training and evaluation): frames are rendered at
``image_size`` (128 by default, LeRobot 480) without shadows, reflections and multisampling (MuJoCo's
shadow map and 4x MSAA cost ~90 ms a frame in software rendering, ~10 ms without); the goal marker
is moved to the new goal before the first frame (3.1.1 moves it only in ``step()``, so LeRobot's
first frame shows the previous episode's goal).

**Topics of a demonstration bag** (one per episode, the names ``policy_node`` deploys with):
``/camera/image_raw`` (``sensor_msgs/Image`` rgb8, ``corner2_camera_optical_frame``), ``/joint_states``
(``ee_x, ee_y, ee_z, gripper``: hand position m, gripper opening), ``/vla/instruction`` (latched),
``/vla/joint_trajectory`` (the commanded action in the ``sawyer_metaworld`` embodiment's units: hand
velocity m/s = 0.8 x the env action, gripper effort), stamped at env time, 80 Hz.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ['TASK_DESCRIPTIONS', 'MT10', 'MT50', 'DIFFICULTY', 'MetaWorldEnv', 'record_task', 'evaluate_tasks',
           'resolve_tasks', 'main', 'MAX_STEPS', 'EVAL_SEED', 'EVAL_EPISODES']

log = logging.getLogger('vla_training.metaworld_env')

MAX_STEPS = 500                       # SawyerXYZEnv.max_path_length
EVAL_SEED = 1000                      # lerobot EvalPipelineConfig.seed
EVAL_EPISODES = 10                    # Meta-World docs / SmolVLA: 10 trials per task
LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)
STAMP_OFFSET = 1_800_000_000.0        # header stamps = env time + this (a zero stamp means "unset")

# Verbatim from huggingface/lerobot src/lerobot/envs/metaworld_config.json TASK_DESCRIPTIONS (Apache-2.0).
TASK_DESCRIPTIONS = {
    'assembly-v3': 'Pick up a nut and place it onto a peg',
    'basketball-v3': 'Dunk the basketball into the basket',
    'bin-picking-v3': 'Grasp the puck from one bin and place it into another bin',
    'box-close-v3': 'Grasp the cover and close the box with it',
    'button-press-topdown-v3': 'Press a button from the top',
    'button-press-topdown-wall-v3': 'Bypass a wall and press a button from the top',
    'button-press-v3': 'Press a button',
    'button-press-wall-v3': 'Bypass a wall and press a button',
    'coffee-button-v3': 'Push a button on the coffee machine',
    'coffee-pull-v3': 'Pull a mug from a coffee machine',
    'coffee-push-v3': 'Push a mug under a coffee machine',
    'dial-turn-v3': 'Rotate a dial 180 degrees',
    'disassemble-v3': 'Pick a nut out of a peg',
    'door-close-v3': 'Close a door with a revolving joint',
    'door-lock-v3': 'Lock the door by rotating the lock clockwise',
    'door-open-v3': 'Open a door with a revolving joint',
    'door-unlock-v3': 'Unlock the door by rotating the lock counter-clockwise',
    'hand-insert-v3': 'Insert the gripper into a hole',
    'drawer-close-v3': 'Push and close a drawer',
    'drawer-open-v3': 'Open a drawer',
    'faucet-open-v3': 'Rotate the faucet counter-clockwise',
    'faucet-close-v3': 'Rotate the faucet clockwise',
    'hammer-v3': 'Hammer a screw on the wall',
    'handle-press-side-v3': 'Press a handle down sideways',
    'handle-press-v3': 'Press a handle down',
    'handle-pull-side-v3': 'Pull a handle up sideways',
    'handle-pull-v3': 'Pull a handle up',
    'lever-pull-v3': 'Pull a lever down 90 degrees',
    'peg-insert-side-v3': 'Insert a peg sideways',
    'pick-place-wall-v3': 'Pick a puck, bypass a wall and place the puck',
    'pick-out-of-hole-v3': 'Pick up a puck from a hole',
    'reach-v3': 'Reach a goal position',
    'push-back-v3': 'Push the puck to a goal',
    'push-v3': 'Push the puck to a goal',
    'pick-place-v3': 'Pick and place a puck to a goal',
    'plate-slide-v3': 'Slide a plate into a cabinet',
    'plate-slide-side-v3': 'Slide a plate into a cabinet sideways',
    'plate-slide-back-v3': 'Get a plate from the cabinet',
    'plate-slide-back-side-v3': 'Get a plate from the cabinet sideways',
    'peg-unplug-side-v3': 'Unplug a peg sideways',
    'soccer-v3': 'Kick a soccer into the goal',
    'stick-push-v3': 'Grasp a stick and push a box using the stick',
    'stick-pull-v3': 'Grasp a stick and pull a box with the stick',
    'push-wall-v3': 'Bypass a wall and push a puck to a goal',
    'reach-wall-v3': 'Bypass a wall and reach a goal',
    'shelf-place-v3': 'Pick and place a puck onto a shelf',
    'sweep-into-v3': 'Sweep a puck into a hole',
    'sweep-v3': 'Sweep a puck off the table',
    'window-open-v3': 'Push and open a window',
    'window-close-v3': 'Push and close a window',
}
#: metaworld/env_dict.py MT10_V3 (order as there).
MT10 = ('reach-v3', 'push-v3', 'pick-place-v3', 'door-open-v3', 'drawer-open-v3', 'drawer-close-v3',
        'button-press-topdown-v3', 'peg-insert-side-v3', 'window-open-v3', 'window-close-v3')
MT50 = tuple(sorted(TASK_DESCRIPTIONS))
_GROUPS = {
    'easy': ('button-press', 'button-press-topdown', 'button-press-topdown-wall', 'button-press-wall', 'coffee-button',
             'dial-turn', 'door-close', 'door-lock', 'door-open', 'door-unlock', 'drawer-close', 'drawer-open',
             'faucet-close', 'faucet-open', 'handle-press', 'handle-press-side', 'handle-pull', 'handle-pull-side',
             'lever-pull', 'plate-slide', 'plate-slide-back', 'plate-slide-back-side', 'plate-slide-side', 'reach',
             'reach-wall', 'window-close', 'window-open', 'peg-unplug-side'),
    'medium': ('basketball', 'bin-picking', 'box-close', 'coffee-pull', 'coffee-push', 'hammer', 'peg-insert-side',
               'push-wall', 'soccer', 'sweep', 'sweep-into'),
    'hard': ('assembly', 'hand-insert', 'pick-out-of-hole', 'pick-place', 'push', 'push-back'),
    'very_hard': ('shelf-place', 'disassemble', 'stick-pull', 'stick-push', 'pick-place-wall'),
}
#: task -> difficulty group (easy / medium / hard / very_hard), TinyVLA Table I / SmolVLA Table 2.
DIFFICULTY = {f'{t}-v3': g for g, ts in _GROUPS.items() for t in ts}


def resolve_tasks(spec: str) -> List[str]:
    """``mt10``, ``mt50``, a difficulty group, or comma-separated task names -> task list.

    Raises:
        ValueError: an unknown task name (the valid names are listed).
    """
    if spec in ('mt10', 'MT10'):
        return list(MT10)
    if spec in ('mt50', 'MT50'):
        return list(MT50)
    if spec in _GROUPS:
        return [f'{t}-v3' for t in _GROUPS[spec]]
    out = [t.strip() for t in spec.split(',') if t.strip()]
    bad = [t for t in out if t not in TASK_DESCRIPTIONS]
    if bad or not out:
        raise ValueError(f'unknown Meta-World task(s) {bad or spec!r}; give mt10, mt50, a group {list(_GROUPS)} or '
                         f'names from {sorted(TASK_DESCRIPTIONS)}')
    return out


class MetaWorldEnv:
    """One Meta-World task with LeRobot's observations: ``reset(seed)`` / ``step(action)`` ->
    ``{'image': uint8 (S, S, 3), 'state': float32 (4,)}``, ``success``.

    Raises:
        ValueError: an unknown task.
    """

    def __init__(self, task: str, image_size: int = 128, benchmark_seed: int = 42) -> None:
        os.environ.setdefault('MUJOCO_GL', 'egl')
        import warnings
        warnings.filterwarnings('ignore', message='Constant\\(s\\) may be too high')
        import metaworld
        import mujoco
        resolve_tasks(task)
        self.task, self.instruction, self.size = task, TASK_DESCRIPTIONS[task], int(image_size)
        self._mj = mujoco
        mt1 = metaworld.MT1(task, seed=benchmark_seed)
        self.env = mt1.train_classes[task](render_mode='rgb_array', camera_name='corner2', width=self.size,
                                           height=self.size)
        self.env.set_task(mt1.train_tasks[0])
        self.env.model.cam_pos[2] = LEROBOT_CORNER2_POS          # camera 2 = corner2, as LeRobot
        self.env.model.vis.quality.offsamples = 0                # no MSAA (software rendering cost)
        self.env.reset()
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self.raw_obs = None
        self._scene_ready = False
        from robot_drivers.machines.sawyer_metaworld import METAWORLD_EE_SPEED
        self.ee_speed = METAWORLD_EE_SPEED

    def _image(self) -> np.ndarray:
        if not self._scene_ready:
            viewer = self.env.mujoco_renderer._get_viewer('rgb_array')
            viewer.scn.flags[self._mj.mjtRndFlag.mjRND_SHADOW] = 0
            viewer.scn.flags[self._mj.mjtRndFlag.mjRND_REFLECTION] = 0
            self._scene_ready = True
        return np.ascontiguousarray(np.flip(self.env.render(), (0, 1)))

    def observe(self) -> Dict[str, np.ndarray]:
        return {'image': self._image(), 'state': np.asarray(self.raw_obs[:4], np.float32)}

    def reset(self, seed: int) -> Dict[str, np.ndarray]:
        self.env.seed(int(seed))
        self.raw_obs, _ = self.env.reset()
        for site in self.env._target_site_config:             # the goal marker at the new goal, before frame 0
            self.env._set_pos_site(*site)
        self._mj.mj_forward(self.env.model, self.env.data)
        return self.observe()

    def step(self, action: np.ndarray):
        """``action``: Meta-World's (4,) in [-1, 1]. Returns ``(observation, success)``."""
        self.raw_obs, _, _, _, info = self.env.step(np.clip(np.asarray(action, np.float32), -1.0, 1.0))
        return self.observe(), bool(info['success'])

    def to_env_action(self, command: np.ndarray) -> np.ndarray:
        """Embodiment command (ee velocity m/s, gripper effort) -> Meta-World action (4,) in [-1, 1]."""
        c = np.asarray(command, np.float64)
        return np.clip(np.concatenate([c[:3] / self.ee_speed, c[3:4]]), -1.0, 1.0).astype(np.float32)

    def to_command(self, action: np.ndarray) -> np.ndarray:
        """Meta-World action -> embodiment command (the inverse of :meth:`to_env_action` on [-1, 1])."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        return np.concatenate([a[:3] * self.ee_speed, a[3:4]])

    def close(self) -> None:
        self.env.close()


# ----------------------------------------------------------------------------- demonstrations
def _write_episode(env: MetaWorldEnv, expert, seed: int, path: Path, max_steps: int) -> Dict[str, Any]:
    from robot_drivers import conversions as conv
    from robot_drivers.bag_writer import EpisodeBagWriter
    from robot_drivers.machines.sawyer_metaworld import METAWORLD_COMMAND_TOPIC, METAWORLD_DT, SAWYER_METAWORLD
    types = conv.rosbags_types()
    obs = env.reset(seed)
    qos = {'/camera/image_raw': 'sensor', '/joint_states': 'sensor', '/vla/instruction': 'latched',
           METAWORLD_COMMAND_TOPIC: 'reliable'}
    success, steps = False, 0
    with EpisodeBagWriter(str(path), qos=qos) as w:
        for topic, kind in (('/camera/image_raw', 'sensor_msgs/msg/Image'), ('/joint_states', 'sensor_msgs/msg/JointState'),
                            ('/vla/instruction', 'std_msgs/msg/String'), (METAWORLD_COMMAND_TOPIC,
                                                                          'trajectory_msgs/msg/JointTrajectory')):
            w.add_topic(topic, kind)
        w.write('/vla/instruction', conv.string_msg(env.instruction, types), STAMP_OFFSET)
        for k in range(max_steps):
            now = STAMP_OFFSET + k * METAWORLD_DT
            w.write('/camera/image_raw', conv.numpy_to_image(obs['image'], now, types,
                                                             frame_id='corner2_camera_optical_frame'), now)
            w.write('/joint_states', conv.arrays_to_joint_state(SAWYER_METAWORLD.joint_names, obs['state'], now, types), now)
            action = np.clip(np.asarray(expert.get_action(env.raw_obs), np.float64), -1.0, 1.0)
            w.write(METAWORLD_COMMAND_TOPIC, conv.action_trajectory(SAWYER_METAWORLD, env.to_command(action), now, types,
                                                                    dt=METAWORLD_DT), now)
            obs, success = env.step(action)
            steps = k + 1
            if success:
                break
    return {'seed': seed, 'steps': steps, 'success': success}


def record_task(task: str, episodes: int, seed: int, output: str, image_size: int = 128,
                max_steps: int = MAX_STEPS, only_successes: bool = True) -> List[Dict[str, Any]]:
    """Record ``episodes`` scripted-expert demonstrations of ``task`` (seeds ``seed``, ``seed + 1``, ...;
    with ``only_successes`` a failed seed is discarded and the next one tried) as rosbag2 under
    ``output/<task>/episode_<seed>``. Returns one dict per kept episode.

    Raises:
        FileExistsError: a bag that exists already.
    """
    import shutil
    from metaworld.policies import ENV_POLICY_MAP
    env = MetaWorldEnv(task, image_size)
    expert = ENV_POLICY_MAP[task]()
    out, kept, s = Path(output) / task, [], seed
    out.mkdir(parents=True, exist_ok=True)
    while len(kept) < episodes:
        path = out / f'episode_{s:06d}'
        if path.exists():
            raise FileExistsError(f'bag {path} already exists; choose another --output or remove it')
        r = _write_episode(env, expert, s, path, max_steps)
        if r['success'] or not only_successes:
            kept.append(dict(r, task=task, bag=str(path)))
        else:
            shutil.rmtree(path)
        s += 1
        if s - seed > 4 * episodes + 20:
            raise RuntimeError(f'{task}: the expert succeeded on {len(kept)} of {s - seed} seeds')
    env.close()
    return kept


# ----------------------------------------------------------------------------- evaluation
def _history(obs: Dict[str, np.ndarray], camera: str, instruction: str, stamp: float):
    from vla_policy.contracts import Observation
    return Observation(images={camera: obs['image']}, joint_positions=obs['state'], instruction=instruction, stamp=stamp)


def evaluate_tasks(endpoint: str, tasks: Sequence[str], episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED,
                   image_size: int = 128, max_steps: int = MAX_STEPS, token: Optional[str] = None,
                   timeout_s: float = 30.0) -> Dict[str, Any]:
    """Closed-loop success of the policy served at ``endpoint`` on ``tasks`` (episode ``k`` of every task:
    seed ``seed + k``). Each chunk from the server is executed for the served ``n_action_steps`` env
    steps (open loop), then the policy is asked again with the newest ``n_obs_steps`` observations.

    Returns:
        ``{'tasks': {task: success rate}, 'episodes': [...], 'metadata': server metadata, 'seconds': s}``.

    Raises:
        vla_policy.contracts.PolicyUnavailable: the server is not reachable.
        ValueError: a served policy for another embodiment or camera count.
    """
    from robot_drivers.machines.sawyer_metaworld import METAWORLD_DT
    from vla_policy.remote import RemotePolicy
    policy = RemotePolicy(endpoint, token=token, timeout_s=timeout_s)
    meta = policy.connect()
    if meta.get('embodiment') != 'sawyer_metaworld':
        raise ValueError(f'the policy at {endpoint} serves embodiment {meta.get("embodiment")!r}, not sawyer_metaworld')
    cams = list(meta.get('camera_names') or [])
    if len(cams) != 1:
        raise ValueError(f'the policy at {endpoint} reads cameras {cams}; the Meta-World harness renders one')
    n_obs, n_act = int(meta.get('n_obs_steps') or 1), int(meta.get('n_action_steps') or 1)
    t0 = time.time()
    rows: List[Dict[str, Any]] = []
    rates: Dict[str, float] = {}
    for task in tasks:
        env = MetaWorldEnv(task, image_size)
        wins = 0
        for k in range(episodes):
            te = time.time()
            obs = env.reset(seed + k)
            policy.reset()
            hist = [_history(obs, cams[0], env.instruction, STAMP_OFFSET)] * n_obs
            success, steps, calls, plan = False, 0, 0, []
            while steps < max_steps and not success:
                if not plan:
                    chunk = policy.infer(hist[-n_obs:])
                    calls += 1
                    plan = list(np.asarray(chunk.actions)[:n_act])
                obs, success = env.step(env.to_env_action(plan.pop(0)))
                steps += 1
                hist.append(_history(obs, cams[0], env.instruction, STAMP_OFFSET + steps * METAWORLD_DT))
                hist = hist[-n_obs:]
            wins += success
            rows.append({'task': task, 'seed': seed + k, 'success': success, 'steps': steps, 'inferences': calls,
                         'seconds': time.time() - te})
        env.close()
        rates[task] = wins / episodes
        log.info('%s: %d / %d', task, wins, episodes)
    return {'tasks': rates, 'episodes': rows, 'metadata': meta, 'seconds': time.time() - t0}


# ----------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='metaworld_env', description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('record', help='scripted-expert demonstrations as rosbag2')
    r.add_argument('--tasks', default='mt10')
    r.add_argument('--episodes', type=cli.positive_int, default=50, help='per task')
    r.add_argument('--seed', type=cli.non_negative_int, default=0)
    r.add_argument('--output', required=True)
    r.add_argument('--image-size', type=cli.positive_int, default=128)
    r.add_argument('--max-steps', type=cli.positive_int, default=MAX_STEPS)
    e = sub.add_parser('evaluate', help='closed-loop success of a served policy')
    e.add_argument('--endpoint', required=True, help='ws://host:port of policy_server')
    e.add_argument('--tasks', default='mt10')
    e.add_argument('--episodes', type=cli.positive_int, default=EVAL_EPISODES, help='per task')
    e.add_argument('--seed', type=cli.non_negative_int, default=EVAL_SEED)
    e.add_argument('--image-size', type=cli.positive_int, default=128)
    e.add_argument('--max-steps', type=cli.positive_int, default=MAX_STEPS)
    e.add_argument('--output', default=None, help='write the result JSON here')
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    def body() -> int:
        tasks = resolve_tasks(a.tasks)
        if a.cmd == 'record':
            rows = [x for t in tasks for x in record_task(t, a.episodes, a.seed, a.output, a.image_size, a.max_steps)]
            print(json.dumps({'episodes': len(rows), 'tasks': tasks, 'steps': sum(x['steps'] for x in rows)}))
            return 0
        res = evaluate_tasks(a.endpoint, tasks, a.episodes, a.seed, a.image_size, a.max_steps,
                             token=os.environ.get('VLA_POLICY_TOKEN'))
        text = json.dumps(res, indent=1, default=str)
        if a.output:
            tmp = f'{a.output}.tmp'
            Path(tmp).write_text(text)
            os.replace(tmp, a.output)
        print(json.dumps({'tasks': res['tasks'], 'seconds': res['seconds']}))
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
