"""RemotePolicy against a real policy server on loopback: same chunks as local inference, clear
errors, reconnection, and a runtime that holds while the server is gone and acts again when it returns."""
import numpy as np
import pytest
import torch

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy import msgpack_numpy
from vla_policy.checkpoint import save_checkpoint
from vla_policy.contracts import ChunkGuide, Observation, PolicyUnavailable
from vla_policy.models import VLA, BackboneConfig, ChunkConfig, HeadConfig, VLAConfig, WordTokenizer
from vla_policy.normalization import NormalizationStats
from vla_policy.policy import PROTOCOL_VERSION as POLICY_PROTOCOL_VERSION
from vla_policy.policy import VLAPolicy
from vla_policy.policy_server import serve_policy
from vla_policy.remote import METADATA_KEYS, PROTOCOL_VERSION, RemotePolicy, _split_endpoint
from vla_policy.runtime import PolicyRuntime, RuntimeConfig

torch.set_num_threads(1)

INSTR = ['pick the red cube', 'reach the blue cube']


def tiny_checkpoint(root, n_obs=2, head='mlp'):
    """A film_cnn checkpoint (random weights, stats from uniform joint samples), as test_checkpoint makes."""
    tok = WordTokenizer.build(INSTR, max_len=8)
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=tok.vocab_size, image_size=32),
                    head=HeadConfig(name=head, hidden=64), chunk=ChunkConfig(n_obs, 6, 3), action_dim=8,
                    state_dim=8, embodiment='franka_panda')
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    q = np.random.default_rng(0).uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper, size=(500, 8)).astype(np.float32)
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q)}
    return save_checkpoint(root / f'ckpt_{head}', model, cfg, stats, tok, {'note': 'test'})


def obs(rng, stamp, size=(48, 40), camera='front'):
    img = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
    q = rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper).astype(np.float32)
    return Observation(images={camera: img}, joint_positions=q, instruction=INSTR[0], stamp=stamp)


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
    return VLAPolicy.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp('remote')))


@pytest.fixture()
def server(policy):
    srv = serve_policy(policy)
    yield srv
    srv.stop()


def test_msgpack_numpy_round_trip_keeps_dtype_shape_and_bytes():
    rng = np.random.default_rng(1)
    msg = {'img': rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), 'q': rng.standard_normal(8).astype(np.float32),
           'strided': np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2], 'big_endian': np.arange(3, dtype='>i4'),
           'empty': np.zeros((0, 4), np.float32), 'scalar': np.float32(0.25), 'stamp': 1234.000000001,
           'nested': [{'t': 'x', 'n': None, 'b': True}]}
    back = msgpack_numpy.unpackb(msgpack_numpy.packb(msg))
    for k in ('img', 'q', 'strided', 'big_endian', 'empty'):
        assert back[k].dtype == msg[k].dtype and back[k].shape == msg[k].shape
        np.testing.assert_array_equal(back[k], msg[k])
    assert back['scalar'] == np.float32(0.25) and back['scalar'].dtype == np.float32
    assert back['stamp'] == msg['stamp'] and back['nested'] == msg['nested']
    assert not back['img'].flags.writeable                       # zero-copy view of the message
    writable = msgpack_numpy.unpackb(msgpack_numpy.packb(msg), writeable=True)
    writable['img'][0, 0, 0] ^= 1                                # a copy: may be modified
    with pytest.raises(TypeError, match='object'):
        msgpack_numpy.packb({'x': np.array([object()])})
    with pytest.raises(TypeError, match='structured'):
        msgpack_numpy.packb(np.zeros(2, dtype=[('a', 'f4')]))


def test_endpoint_forms_and_token_kept_out_of_messages():
    assert _split_endpoint('127.0.0.1:8765') == ('ws://127.0.0.1:8765/', 'ws://127.0.0.1:8765')
    uri, shown = _split_endpoint('ws://gpu-box:9000/?token=s3cret')
    assert 's3cret' in uri and 's3cret' not in shown and shown == 'ws://gpu-box:9000'
    for bad in ('http://host:1', 'ws://', 'ws://host:notaport'):
        with pytest.raises(ValueError, match='endpoint'):
            RemotePolicy(bad)
    with pytest.raises(ValueError, match='timeout_s'):
        RemotePolicy('ws://127.0.0.1:1', timeout_s=0)


def test_remote_infer_equals_local_infer_bit_for_bit(policy, server):
    rng = np.random.default_rng(2)
    remote = RemotePolicy(server.url, timeout_s=10.0)
    try:
        assert not remote.connected                              # lazy: nothing happens before a call
        for t in range(3):
            hist = [obs(rng, 0.1 * t), obs(rng, 0.1 * t + 0.1)]
            got, want = remote.infer(hist), policy.infer(hist)
            assert got.actions.dtype == np.float32 and got.actions.shape == want.actions.shape == (6, 8)
            np.testing.assert_array_equal(got.actions, want.actions)
            assert got.joint_names == want.joint_names and got.dt == want.dt and got.stamp == want.stamp
            got.actions[0, 0] += 1.0                              # the client's chunk is its own, writable
        assert remote.connects == 1                               # one connection for all calls
        assert set(remote.last_timing) == {'infer_ms', 'total_ms', 'round_trip_ms'}
        t = remote.last_timing
        assert 0 < t['infer_ms'] <= t['total_ms'] <= t['round_trip_ms']
    finally:
        remote.close()


def test_metadata_on_connect(policy, server):
    remote = RemotePolicy(server.url, timeout_s=10.0)
    meta = remote.connect()
    remote.close()
    assert PROTOCOL_VERSION == POLICY_PROTOCOL_VERSION == meta['protocol_version']
    assert set(METADATA_KEYS) <= set(meta)
    assert meta == dict(policy.metadata(), protocol_version=PROTOCOL_VERSION)
    assert meta['joint_names'] == list(FRANKA_PANDA.joint_names) and meta['camera_names'] == ['front']
    assert (meta['n_obs_steps'], meta['chunk_size'], meta['n_action_steps']) == (2, 6, 3)
    assert meta['backbone'] == 'film_cnn' and meta['supports_guidance'] is False
    assert remote.supports_guidance is False and remote.camera == 'front'


def test_bad_observation_names_the_field_and_the_connection_survives(policy, server):
    rng = np.random.default_rng(3)
    remote = RemotePolicy(server.url, timeout_s=10.0)
    good = [obs(rng, 0.0), obs(rng, 0.1)]
    wrong_camera = [obs(rng, 0.0, camera='wrist')]
    short_q = obs(rng, 0.0)
    short_q.joint_positions = short_q.joint_positions[:7]
    float_img = obs(rng, 0.0)
    float_img.images['front'] = float_img.images['front'].astype(np.float32)
    try:
        remote.infer(good)
        for hist, field in ((wrong_camera, r"history\[0\].images lacks camera 'front'"),
                            ([short_q], r'history\[0\].joint_positions has 7 values, the policy expects 8'),
                            ([float_img],
                             r"history\[0\].images\['front'\] must be uint8 \(H, W, 3\) RGB, got float32")):
            with pytest.raises(ValueError, match=field) as info:
                remote.infer(hist)
            assert server.url in str(info.value) and not isinstance(info.value, PolicyUnavailable)
        np.testing.assert_array_equal(remote.infer(good).actions, policy.infer(good).actions)
        assert remote.connects == 1                               # the same connection throughout
        with pytest.raises(ValueError, match='does not support guidance'):
            remote.infer_guided(good, ChunkGuide(np.zeros((6, 8), np.float32), np.ones(6, np.float32), 2))
    finally:
        remote.close()
    assert server.errors == 4


def test_guided_inference_and_reset_reach_the_server(tmp_path):
    """RTC through the server: a seeded flow policy served remotely samples exactly what the same
    checkpoint samples locally, guide included, and reset() re-seeds the server's noise."""
    path = tiny_checkpoint(tmp_path, n_obs=1, head='flow')
    served, local = VLAPolicy.from_checkpoint(path, seed=3), VLAPolicy.from_checkpoint(path, seed=3)
    rng = np.random.default_rng(7)
    hist = [obs(rng, 4.0)]
    guide = ChunkGuide(actions=policy_rows(local, hist), weights=np.array([1, 1, 0.6, 0.3, 0, 0], np.float32),
                       inference_delay=2, max_guidance_weight=5.0)
    with serve_policy(served) as srv:
        remote = RemotePolicy(srv.url, timeout_s=30.0)
        try:
            assert remote.supports_guidance is True
            for _ in range(2):                                   # the second pass follows a forwarded reset()
                remote.reset()
                local.reset()
                got, want = remote.infer_guided(hist, guide), local.infer_guided(hist, guide)
                np.testing.assert_array_equal(got.actions, want.actions)
                assert got.info == want.info and got.info['rtc_guided_rows'] == 4.0
                np.testing.assert_array_equal(remote.infer(hist).actions, local.infer(hist).actions)
        finally:
            remote.close()


def policy_rows(policy, hist):
    """Absolute rows (H, A) to guide towards: the policy's own unguided sample, shifted by 0.05 rad."""
    policy.reset()
    return policy.infer(hist).actions + np.float32(0.05)


def test_unreachable_server_is_policy_unavailable_and_reconnects_when_back(policy):
    rng = np.random.default_rng(4)
    hist = [obs(rng, 0.0)]
    counting = _Blocking(policy)
    counting.release.set()
    srv = serve_policy(counting)
    port, url = srv.port, srv.url
    remote = RemotePolicy(url, timeout_s=5.0)
    try:
        remote.infer(hist)
        srv.stop()
        with pytest.raises(PolicyUnavailable, match='closed the connection .code 1001, going away'):
            remote.infer(hist)                                    # the live connection ended
        with pytest.raises(PolicyUnavailable, match=f'{url} is unreachable: connection refused'):
            remote.infer(hist)                                    # nobody listens any more
        remote.reset()                                            # never raises; carried by the next infer
        assert counting.resets == 0
        srv = serve_policy(counting, port=port)
        np.testing.assert_array_equal(remote.infer(hist).actions, policy.infer(hist).actions)
        assert remote.connects == 2 and counting.resets == 1   # the reset rode on that request
    finally:
        remote.close()
        srv.stop()


class _Blocking:
    """Wraps a policy; ``infer`` waits for ``release`` (a model slower than the client's deadline)."""

    def __init__(self, policy):
        import threading
        self.policy, self.release, self.started = policy, threading.Event(), threading.Event()
        self.resets = 0

    def metadata(self):
        return self.policy.metadata()

    def reset(self):
        self.resets += 1

    def infer(self, history):
        self.started.set()
        self.release.wait(30)
        return self.policy.infer(history)


def test_no_answer_within_timeout_is_policy_unavailable_then_recovers(policy):
    slow = _Blocking(policy)
    rng = np.random.default_rng(5)
    hist = [obs(rng, 0.0)]
    with serve_policy(slow) as srv:
        remote = RemotePolicy(srv.url, timeout_s=0.3)
        try:
            with pytest.raises(PolicyUnavailable, match=r'did not answer within 0.3 s'):
                remote.infer(hist)
            assert slow.started.is_set() and not remote.connected
            slow.release.set()
            np.testing.assert_array_equal(remote.infer(hist).actions, policy.infer(hist).actions)
            remote.reset()                                        # idle and connected: forwarded now
            assert slow.resets == 1
        finally:
            remote.close()


def _feed(rt, rng, now):
    rt.on_image(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), now)
    rt.on_joint_state(rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper), now)


def test_runtime_holds_while_the_server_is_gone_and_acts_when_it_returns(policy):
    """A server killed mid-run: the runtime publishes nothing and says why (a 'refusing' event
    naming the server); restarted on the same port, commands flow again after an 'acting' event."""
    rng = np.random.default_rng(6)
    srv = serve_policy(policy)
    port, url = srv.port, srv.url
    remote = RemotePolicy(url, timeout_s=5.0)
    rt = PolicyRuntime(remote, FRANKA_PANDA, RuntimeConfig(n_obs_steps=2, n_action_steps=3))
    dt = FRANKA_PANDA.dt
    tick = [0]

    def run(n):
        """``n`` control ticks with fresh inputs; the commands produced."""
        out = []
        for _ in range(n):
            now = tick[0] * dt
            tick[0] += 1
            _feed(rt, rng, now)
            cmd = rt.step(now)
            if cmd is not None:
                out.append(cmd)
        return out

    try:
        rt.on_instruction(INSTR[0])
        assert run(6), 'no command while the server is up'
        rt.take_events()
        srv.stop()
        run(8)                                   # rows already planned may still be executed
        assert run(12) == [], 'a command while the server is down'
        refusing = [e for e in rt.take_events() if e.kind == 'refusing']
        assert refusing and url in refusing[0].detail
        srv = serve_policy(policy, port=port)
        back = run(12)
        assert back and all(np.all(np.isfinite(c.positions)) for c in back)
        assert 'acting' in [e.kind for e in rt.take_events()]
    finally:
        close = getattr(rt, 'close', None)
        if close is not None:
            close()
        remote.close()
        srv.stop()
