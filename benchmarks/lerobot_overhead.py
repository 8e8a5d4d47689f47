"""LeRobot's per-observation cost outside the model, measured in LeRobot's own venv.

    .venv-lerobot/bin/python benchmarks/lerobot_overhead.py [--obs OBS.npz] [--iters 500]

Runs inside a LeRobot 0.4.4 environment (``make bench-runtime LEROBOT=1`` builds ``.venv-lerobot``);
``benchmarks/runtime_bench.py`` calls it and merges the JSON it prints (last line of stdout).

What is timed is what ``lerobot.utils.control_utils.predict_action`` does around
``policy.select_action`` for one observation, under ``torch.inference_mode()`` with one torch thread:

1. ``prepare_observation_for_inference`` (numpy -> torch, image ``/255`` and HWC -> CHW, batch dim);
2. the ACT policy preprocessor from ``make_pre_post_processors`` (rename, add batch dim, device,
   mean/std normaliser for the image, state and action);
3. the ACT policy postprocessor on one action ``(1, A)`` (unnormaliser, device), as LeRobot runs it
   on every action ``select_action`` returns.

4. ``record_loop_ms``: everything ``lerobot_record.record_loop`` does per tick around the policy
   (default robot processors, ``build_dataset_frame``, ``predict_action``, ``make_robot_action``);
5. ``async_server_ms``: LeRobot's async inference server per observation
   (``PolicyServer._predict_action_chunk`` less the model: ``raw_observation_to_observation``,
   which resizes the image to the policy's input size, the preprocessor, the postprocessor once per
   action of the chunk, ``TimedAction`` list), for each policy input size in
   ``--policy-image-sizes`` and chunk length in ``--chunk-sizes`` (keys ``'S/N'``).

The policy is ACT configured for one ``observation.images.front`` image of the observation's size,
an ``A``-D ``observation.state`` and an ``A``-D ``action`` (``pretrained_backbone_weights=None``:
no download); only its processors are built, the model never runs. The observation (image and
state) and the state/action statistics come from ``--obs`` (written by ``runtime_bench.py``, so
both stacks see the same observation); without it, a random 224x224 image and an 8-D state.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def main() -> int:  # noqa: C901 - one linear measurement script
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--obs', default=None, help='npz with image (H,W,3) uint8, state (A,), '
                   'state_mean/state_std/action_mean/action_std (A,)')
    p.add_argument('--iters', type=int, default=500)
    p.add_argument('--chunk-sizes', default='8,50',
                   help='actions per chunk for the async inference server path (comma-separated)')
    p.add_argument('--policy-image-sizes', default='224,96',
                   help='policy input sizes the async server path resizes to (comma-separated)')
    a = p.parse_args()

    import torch
    torch.set_num_threads(1)
    import lerobot
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.datasets.utils import build_dataset_frame, hw_to_dataset_features
    from lerobot.policies.utils import make_robot_action, prepare_observation_for_inference
    from lerobot.processor import make_default_processors
    from lerobot.utils.constants import ACTION, OBS_STR
    from lerobot.utils.control_utils import predict_action
    from lerobot.async_inference.helpers import TimedAction, raw_observation_to_observation

    if a.obs:
        d = np.load(a.obs)
        image, state = d['image'], d['state'].astype(np.float32)
        st = {k: d[k].astype(np.float32) for k in ('state_mean', 'state_std', 'action_mean', 'action_std')}
    else:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        state = rng.uniform(-1, 1, 8).astype(np.float32)
        st = {'state_mean': np.zeros(8, np.float32), 'state_std': np.ones(8, np.float32),
              'action_mean': np.zeros(8, np.float32), 'action_std': np.ones(8, np.float32)}
    h, w, _ = image.shape
    dim = state.shape[0]
    cfg = ACTConfig(
        input_features={'observation.images.front': PolicyFeature(type=FeatureType.VISUAL, shape=(3, h, w)),
                        'observation.state': PolicyFeature(type=FeatureType.STATE, shape=(dim,))},
        output_features={'action': PolicyFeature(type=FeatureType.ACTION, shape=(dim,))},
        pretrained_backbone_weights=None, device='cpu')
    imagenet_mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    imagenet_std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    stats = {
        'observation.images.front': {'mean': imagenet_mean, 'std': imagenet_std},
        'observation.state': {'mean': torch.from_numpy(st['state_mean']), 'std': torch.from_numpy(st['state_std'])},
        'action': {'mean': torch.from_numpy(st['action_mean']), 'std': torch.from_numpy(st['action_std'])},
    }
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    device = torch.device('cpu')
    action = torch.linspace(-0.5, 0.5, dim).reshape(1, dim)   # what select_action returns per tick
    task = 'pick up the red cube'

    class StubPolicy:
        """Stands in for ACT: ``select_action`` returns a fixed (1, A) action (no model)."""

        def select_action(self, batch):
            return action

    stub = StubPolicy()
    # the record loop (lerobot_record.record_loop) around the policy, with LeRobot's default
    # (identity) robot processors and the dataset features of an A-joint robot with one camera
    joints = [f'joint{i + 1}.pos' for i in range(dim)]
    features = {**hw_to_dataset_features({**{j: float for j in joints}, 'front': (h, w, 3)}, OBS_STR),
                **hw_to_dataset_features({j: float for j in joints}, ACTION)}
    _, robot_action_processor, robot_observation_processor = make_default_processors()
    raw_obs = {**{j: float(v) for j, v in zip(joints, state)}, 'front': image}

    def record_loop_tick():
        obs_processed = robot_observation_processor(raw_obs)
        frame = build_dataset_frame(features, obs_processed, prefix=OBS_STR)
        values = predict_action(frame, stub, device, pre, post, False, task=task, robot_type='')
        act = make_robot_action(values, features)
        return robot_action_processor((act, raw_obs))

    # async inference: PolicyServer._predict_action_chunk (lerobot/async_inference/policy_server.py)
    # with the model call replaced by a fixed (1, chunk, A) tensor; the same steps, in the same
    # order, written out here because importing the server needs grpc (lerobot[async])
    env_dt = 1.0 / 30.0

    def make_async(size: int, n_chunk: int):
        acfg = ACTConfig(
            input_features={'observation.images.front': PolicyFeature(type=FeatureType.VISUAL, shape=(3, size, size)),
                            'observation.state': PolicyFeature(type=FeatureType.STATE, shape=(dim,))},
            output_features={'action': PolicyFeature(type=FeatureType.ACTION, shape=(dim,))},
            pretrained_backbone_weights=None, device='cpu')
        apre, apost = make_pre_post_processors(acfg, dataset_stats=stats)
        image_features = acfg.image_features
        model_out = torch.linspace(-0.5, 0.5, n_chunk * dim).reshape(1, n_chunk, dim)

        def run(t_0: float, i_0: int):
            observation = raw_observation_to_observation({**raw_obs, 'task': task}, features, image_features)
            observation = apre(observation)
            action_tensor = model_out[:, :n_chunk, :]
            _, chunk_size, _ = action_tensor.shape
            processed = [apost(action_tensor[:, i, :]) for i in range(chunk_size)]
            action_tensor = torch.stack(processed, dim=1).squeeze(0).detach().cpu()
            out = [TimedAction(timestamp=t_0 + i * env_dt, timestep=i_0 + i, action=act)
                   for i, act in enumerate(list(action_tensor))]
            assert observation['observation.images.front'].shape == (1, 3, size, size)
            assert len(out) == n_chunk and out[0].action.shape == (dim,)
            return out
        return run

    async_cases = {f'{size}/{n}': make_async(size, n) for size in map(int, a.policy_image_sizes.split(','))
                   for n in map(int, a.chunk_sizes.split(','))}
    t_async = {k: [] for k in async_cases}

    pc = time.perf_counter_ns
    t_prep, t_pre, t_post, t_predict, t_loop = [], [], [], [], []
    for i in range(a.iters + 50):
        with torch.inference_mode():
            t0 = pc()
            obs = prepare_observation_for_inference({'observation.images.front': image, 'observation.state': state},
                                                    device, task, '')
            t1 = pc()
            batch = pre(obs)
            t2 = pc()
            out = post(action)
            t3 = pc()
        frame = {'observation.images.front': image, 'observation.state': state}
        t4 = pc()
        predict_action(frame, stub, device, pre, post, False, task=task, robot_type='')
        t5 = pc()
        sent = record_loop_tick()
        t6 = pc()
        t_case = {}
        with torch.no_grad():
            for k, run in async_cases.items():
                t_a = pc()
                run(1.0 + i / 30.0, i)
                t_case[k] = pc() - t_a
        if i >= 50:
            t_prep.append(t1 - t0)
            t_pre.append(t2 - t1)
            t_post.append(t3 - t2)
            t_predict.append(t5 - t4)
            t_loop.append(t6 - t5)
            for k, v in t_case.items():
                t_async[k].append(v)
    assert batch['observation.images.front'].shape == (1, 3, h, w), batch['observation.images.front'].shape
    assert out.shape == (1, dim), out.shape
    assert sorted(sent) == sorted(joints), sorted(sent)
    ms = lambda v: np.asarray(v, np.float64) * 1e-6  # noqa: E731
    prep, pre_, post_, predict, loop = ms(t_prep), ms(t_pre), ms(t_post), ms(t_predict), ms(t_loop)

    pp = pre_ + post_
    res = {
        'lerobot_version': getattr(lerobot, '__version__', None), 'torch': torch.__version__,
        'python': platform.python_version(), 'policy': 'act', 'image_hw': [h, w], 'state_dim': dim,
        'iters': a.iters, 'torch_threads': torch.get_num_threads(), 'load_avg': list(os.getloadavg()),
        'prepare_ms': float(np.median(prep)), 'preprocessor_ms': float(np.median(pre_)),
        'postprocessor_ms': float(np.median(post_)),
        'pre_post_ms': float(np.median(pp)), 'pre_post_p99_ms': float(np.percentile(pp, 99)),
        'predict_action_ms': float(np.median(predict)), 'predict_action_p99_ms': float(np.percentile(predict, 99)),
        'record_loop_ms': float(np.median(loop)), 'record_loop_p99_ms': float(np.percentile(loop, 99)),
        # key 'S/N': policy input S x S, N actions per chunk
        'async_server_ms': {k: float(np.median(ms(v))) for k, v in t_async.items()},
        'async_server_p99_ms': {k: float(np.percentile(ms(v), 99)) for k, v in t_async.items()},
    }
    print(json.dumps(res))
    return 0


if __name__ == '__main__':
    sys.exit(main())
