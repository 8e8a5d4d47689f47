"""The policy server: protocol replies, /healthz during a long inference, token on the handshake,
loopback-only without a token, and the console script serving a real checkpoint."""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy import msgpack_numpy
from vla_policy.checkpoint import save_checkpoint
from vla_policy.contracts import ActionChunk, Observation, PolicyUnavailable
from vla_policy.models import VLA, BackboneConfig, ChunkConfig, VLAConfig, WordTokenizer
from vla_policy.normalization import NormalizationStats
from vla_policy.policy import VLAPolicy
from vla_policy.policy_server import PolicyServer, is_loopback, main, policy_metadata, serve_policy
from vla_policy.remote import METADATA_KEYS, RemotePolicy

torch.set_num_threads(1)

INSTR = ['pick the red cube', 'reach the blue cube']
PKG = Path(__file__).resolve().parents[1]


def tiny_checkpoint(root):
    """A film_cnn checkpoint (random weights), as test_checkpoint makes."""
    tok = WordTokenizer.build(INSTR, max_len=8)
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=tok.vocab_size, image_size=32),
                    chunk=ChunkConfig(1, 6, 3), action_dim=8, state_dim=8, embodiment='franka_panda')
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    q = np.random.default_rng(0).uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper, size=(500, 8)).astype(np.float32)
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q)}
    return save_checkpoint(root / 'ckpt', model, cfg, stats, tok, {'note': 'test'})


def obs(rng, stamp=0.0):
    return Observation(images={'front': rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)},
                       joint_positions=rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper).astype(np.float32),
                       instruction=INSTR[1], stamp=stamp)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp('server'))


@pytest.fixture(scope='module')
def policy(ckpt):
    return VLAPolicy.from_checkpoint(ckpt)


def healthz(port, path='/healthz'):
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        conn.request('GET', path)
        r = conn.getresponse()
        return r.status, r.getheader('Content-Type'), r.read()
    finally:
        conn.close()


def raw_connect(url):
    import inspect
    from websockets.sync.client import connect
    no_proxy = {'proxy': None} if 'proxy' in inspect.signature(connect).parameters else {}  # websockets >= 15
    return connect(url, compression=None, open_timeout=10, **no_proxy)


class Gate:
    """A policy whose ``infer`` blocks until ``release`` is set (a long inference)."""

    def __init__(self, policy):
        self.policy, self.started, self.release = policy, threading.Event(), threading.Event()

    def metadata(self):
        return self.policy.metadata()

    def reset(self):
        pass

    def infer(self, history):
        self.started.set()
        assert self.release.wait(30)
        return self.policy.infer(history)


def test_protocol_replies_and_errors_over_a_raw_connection(policy):
    """The wire format itself: metadata first, a chunk with server timing, one-line errors that keep the
    connection open, reset acknowledged."""
    rng = np.random.default_rng(0)
    ob = obs(rng, 2.5)
    with serve_policy(policy) as srv, raw_connect(srv.url) as ws:
        meta = msgpack_numpy.unpackb(ws.recv(timeout=10))
        assert set(METADATA_KEYS) <= set(meta) and meta['checkpoint'] == policy.checkpoint

        def ask(msg):
            ws.send(msg if isinstance(msg, (bytes, str)) else msgpack_numpy.packb(msg))
            return msgpack_numpy.unpackb(ws.recv(timeout=10))

        hist = [{'images': ob.images, 'joint_positions': ob.joint_positions, 'instruction': ob.instruction,
                 'stamp': ob.stamp}]
        r = ask({'type': 'infer', 'id': 7, 'history': hist})
        assert r['id'] == 7 and r['stamp'] == 2.5 and r['dt'] == FRANKA_PANDA.dt
        assert r['joint_names'] == list(FRANKA_PANDA.joint_names)
        np.testing.assert_array_equal(r['actions'], policy.infer([ob]).actions)
        assert 0 < r['server_timing']['infer_ms'] <= r['server_timing']['total_ms']
        for msg, kind, text in (
                (b'\xc1', 'bad_request', 'not msgpack'),
                ('hello', 'bad_request', 'binary'),
                ({'type': 'fly'}, 'bad_request', "unknown message type 'fly'"),
                ({'type': 'infer', 'history': []}, 'bad_observation', 'non-empty list'),
                ({'type': 'infer', 'history': [dict(hist[0], joint_positions=['a'] * 8)]}, 'bad_observation',
                 r'history[0].joint_positions must be a 1-D float array'),
                ({'type': 'infer', 'history': [{'images': ob.images}]}, 'bad_observation',
                 'history[0] lacks joint_positions, instruction, stamp'),
                ({'type': 'infer', 'history': [dict(hist[0], stamp='now')]}, 'bad_observation',
                 'history[0].stamp must be a number'),
                ({'type': 'infer', 'history': hist, 'guide': {'actions': np.zeros((6, 8))}}, 'bad_request',
                 'guide lacks weights, inference_delay')):
            r = ask(msg)
            assert r['kind'] == kind and text in r['error'] and '\n' not in r['error'], (msg, r)
        r = ask({'type': 'reset', 'id': 8})
        assert r['ok'] is True and r['id'] == 8
        assert ask({'type': 'infer', 'history': hist})['actions'].shape == (6, 8)   # still the same connection
    assert srv.requests == 10 and srv.errors == 8


def test_policy_errors_become_error_replies_with_the_policy_message(policy):
    class Failing:
        def __init__(self):
            self.calls = 0

        def reset(self):
            pass

        def infer(self, history):
            self.calls += 1
            if self.calls == 1:
                raise ValueError('observation 0: joint 3 is outside its limits')
            if self.calls == 2:
                raise MemoryError('CUDA out of memory')
            return 'not a chunk'

    rng = np.random.default_rng(1)
    with serve_policy(Failing(), metadata={'camera_names': ['front']}) as srv:
        remote = RemotePolicy(srv.url, timeout_s=10.0)
        with pytest.raises(ValueError, match='joint 3 is outside its limits'):
            remote.infer([obs(rng)])
        with pytest.raises(PolicyUnavailable, match='failed: MemoryError: CUDA out of memory'):
            remote.infer([obs(rng)])
        with pytest.raises(PolicyUnavailable, match='not an ActionChunk'):
            remote.infer([obs(rng)])
        assert remote.metadata['joint_names'] is None and remote.metadata['camera_names'] == ['front']
        remote.close()


def test_metadata_built_from_the_config_when_the_policy_has_no_metadata(policy):
    class Plain:
        config, embodiment, checkpoint = policy.config, policy.embodiment, 'somewhere'

        def infer(self, history):
            return policy.infer(history)

        def reset(self):
            pass

    meta = policy_metadata(Plain())
    assert {k: meta[k] for k in METADATA_KEYS} == {k: policy.metadata()[k] for k in METADATA_KEYS
                                                  if k != 'checkpoint'} | {'checkpoint': 'somewhere'}
    with pytest.raises(ValueError, match='protocol_version 99'):
        policy_metadata(policy, {'protocol_version': 99})


def test_healthz_answers_during_a_long_inference(policy):
    gate = Gate(policy)
    rng = np.random.default_rng(2)
    with serve_policy(gate) as srv:
        status, ctype, body = healthz(srv.port)
        h = json.loads(body)
        assert status == 200 and ctype == 'application/json'
        assert h['status'] == 'ok' and h['requests'] == 0 and h['checkpoint'] == policy.checkpoint
        assert h['uptime_s'] >= 0
        remote = RemotePolicy(srv.url, timeout_s=30.0)
        result = {}
        caller = threading.Thread(target=lambda: result.setdefault('chunk', remote.infer([obs(rng)])))
        caller.start()
        assert gate.started.wait(30)
        status, _, body = healthz(srv.port)                 # the model is still "thinking"
        h = json.loads(body)
        assert status == 200 and h['inflight'] == 1 and h['clients'] == 1 and h['requests'] == 0
        gate.release.set()
        caller.join(30)
        assert isinstance(result['chunk'], ActionChunk)
        assert json.loads(healthz(srv.port)[2])['requests'] == 1
        remote.close()


def test_token_required_on_the_handshake(policy):
    with serve_policy(policy, token='s3cret') as srv:
        for remote in (RemotePolicy(srv.url, timeout_s=10.0), RemotePolicy(srv.url, token='wrong', timeout_s=10.0)):
            with pytest.raises(PolicyUnavailable, match='HTTP 401 .missing or wrong token'):
                remote.connect()
        for remote in (RemotePolicy(srv.url, token='s3cret', timeout_s=10.0),
                       RemotePolicy(srv.url + '/?token=s3cret', timeout_s=10.0)):
            assert remote.connect()['backbone'] == 'film_cnn'
            assert 's3cret' not in remote.url
            remote.close()
        assert healthz(srv.port)[0] == 200                   # the health route needs no token


def test_non_loopback_needs_a_token():
    assert is_loopback('127.0.0.1') and is_loopback('localhost') and is_loopback('::1')
    assert not is_loopback('0.0.0.0') and not is_loopback('') and not is_loopback('192.168.1.20')
    with pytest.raises(ValueError, match="binding '0.0.0.0' .not loopback. needs a token"):
        PolicyServer(object(), host='0.0.0.0')


def test_cli_refuses_non_loopback_without_token(capsys, monkeypatch, ckpt):
    monkeypatch.delenv('VLA_POLICY_TOKEN', raising=False)
    with pytest.raises(SystemExit) as info:
        main(['--checkpoint', str(ckpt), '--host', '0.0.0.0'])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert 'policy_server: error: --host 0.0.0.0 is not loopback: a token is required' in err
    assert main(['--checkpoint', str(ckpt / 'nope'), '--port', '0']) == 1   # missing checkpoint: one line
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'nope' in err


def test_cli_serves_a_checkpoint_and_a_killed_server_is_unavailable(policy, ckpt, tmp_path):
    """The console script end to end: it serves, the client matches local inference; SIGKILL mid-run makes
    the client raise PolicyUnavailable; Ctrl-C (SIGINT) and SIGTERM stop it cleanly, exit status 0."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [str(PKG), str(PKG.parent / 'robot_drivers'), os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, '-m', 'vla_policy.policy_server', '--checkpoint', str(ckpt), '--port', '0']
    rng = np.random.default_rng(3)
    hist = [obs(rng)]
    with serve_policy(policy) as other:                  # a port in use: one line, exit status 1
        busy = subprocess.run(cmd[:-1] + [str(other.port)], capture_output=True, text=True, env=env, timeout=60)
    assert busy.returncode == 1 and busy.stderr.count('\n') == 1, busy.stderr
    assert f'policy_server: error: cannot listen on 127.0.0.1:{other.port}' in busy.stderr
    for sig, expect, why in ((signal.SIGKILL, -signal.SIGKILL, 'lost the connection .no close frame'),
                             (signal.SIGINT, 0, 'closed the connection .code 1001, going away'),
                             (signal.SIGTERM, 0, 'closed the connection .code 1001, going away')):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline()
            assert 'serving' in line, line + proc.stderr.read()
            url = line.split(' on ')[1].split()[0]
            remote = RemotePolicy(url, timeout_s=30.0)
            np.testing.assert_array_equal(remote.infer(hist).actions, policy.infer(hist).actions)
            proc.send_signal(sig)
            assert proc.wait(30) == expect
            with pytest.raises(PolicyUnavailable, match=f'{url} {why}'):
                remote.infer(hist)
            remote.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
