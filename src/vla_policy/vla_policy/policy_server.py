"""Serve a policy over websockets + msgpack: the remote half of :class:`vla_policy.remote.RemotePolicy`.

The protocol has openpi's shape (``openpi.serving.websocket_policy_server``): the server sends the
policy's metadata as the first message of every connection, then answers each request with one
reply, in order. All messages are binary msgpack with numpy arrays (:mod:`vla_policy.msgpack_numpy`).

Requests (client -> server):

* ``{'type': 'infer', 'id': n, 'history': [obs, ...], 'guide': g or None, 'reset': bool}``:
  ``obs = {'images': {camera: uint8 (H, W, 3)}, 'joint_positions': (J,) float, 'instruction': str,
  'stamp': float s, 'joint_velocities': (J,) float (optional)}``, oldest first;
  ``g = {'actions': (H, A), 'weights': (H,), 'inference_delay': int, 'max_guidance_weight': float}``
  asks for ``policy.infer_guided`` (real-time chunking); ``reset`` calls ``policy.reset()`` first.
* ``{'type': 'reset', 'id': n}``: ``policy.reset()``.

Replies (server -> client), carrying the request's ``id``:

* infer: ``{'actions': float32 (H, A), 'joint_names': [...], 'dt': s, 'stamp': s, 'info': {str: float},
  'server_timing': {'infer_ms', 'total_ms'}}``; ``infer_ms`` is the policy call alone, ``total_ms``
  from the request's arrival to the reply's fields being ready (decode + checks + waiting for the
  worker + infer; not the encoding and sending of the reply);
* reset: ``{'type': 'reset', 'ok': True, 'server_timing': {...}}``;
* an error: ``{'error': '<one line naming the field>', 'kind': k}``, the connection stays open.
  ``k`` is ``'bad_observation'`` (a malformed history, or the policy raised ValueError on it),
  ``'bad_request'`` (not msgpack, unknown type, malformed guide), ``'unsupported'`` (a guide for a
  policy without guidance), ``'internal'`` (the policy failed otherwise: a bug, out of memory).

HTTP ``GET /healthz`` answers ``200`` with JSON ``{status, checkpoint, uptime_s, requests, errors,
inflight, clients, protocol_version}`` (no token needed), also while a long inference runs: the
model runs in one worker thread, off the event loop, so calls from all clients are serialised and
the loop keeps answering.

Binding: loopback (``127.0.0.1``) by default. Any other host requires a token, checked on the
websocket handshake (``Authorization: Bearer <token>`` or ``?token=<token>`` in the URL; a
missing or wrong one gets HTTP 401). The token is a shared secret over plain ``ws://``: on an
untrusted network put the server behind TLS (a reverse proxy, an SSH tunnel).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hmac
import http
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import msgpack_numpy
from .contracts import ActionChunk, ChunkGuide, Observation, PolicyUnavailable
from .remote import METADATA_KEYS, PROTOCOL_VERSION, require_websockets

__all__ = ['PolicyServer', 'serve_policy', 'policy_metadata', 'is_loopback', 'TOKEN_ENV', 'DEFAULT_PORT',
           'main']

log = logging.getLogger(__name__)

TOKEN_ENV = 'VLA_POLICY_TOKEN'
DEFAULT_PORT = 8765                 # openpi's default port for its policy server is 8000; ours is 8765
MAX_MESSAGE_BYTES = 64 * 2 ** 20    # a history of a few 640x480 RGB frames is ~1-5 MB; 64 MiB bounds abuse


def is_loopback(host: Optional[str]) -> bool:
    """True when ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ``::1``).

    ``''``/None (all interfaces), ``0.0.0.0`` and any other name or address are not loopback.
    """
    if not host:
        return False
    if host.strip().lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


def _metadata_from_attributes(policy: Any) -> Dict[str, Any]:
    """Metadata of a policy without ``metadata()``: from a ``config`` (VLAConfig-like) and
    ``embodiment`` where it has them, else None for what it cannot tell."""
    cfg = getattr(policy, 'config', None)
    emb = getattr(policy, 'embodiment', None)
    chunk = getattr(cfg, 'chunk', None)

    def get(obj, name, cast=lambda v: v):
        value = getattr(obj, name, None) if obj is not None else None
        return cast(value) if value is not None else None

    return {'protocol_version': PROTOCOL_VERSION,
            'embodiment': get(cfg, 'embodiment', str) or get(emb, 'name', str),
            'joint_names': get(emb, 'joint_names', list),
            'camera_names': get(cfg, 'camera_names', list),
            'n_obs_steps': get(chunk, 'n_obs_steps', int), 'n_action_steps': get(chunk, 'n_action_steps', int),
            'chunk_size': get(chunk, 'chunk_size', int), 'dt': get(emb, 'dt', float),
            'supports_guidance': bool(getattr(policy, 'supports_guidance', False)),
            'checkpoint': get(policy, 'checkpoint', str),
            'backbone': get(getattr(cfg, 'backbone', None), 'name', str),
            'head': get(getattr(cfg, 'head', None), 'name', str)}


def policy_metadata(policy: Any, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The metadata the server sends on connect: ``policy.metadata()`` when the policy has it (a
    :class:`~vla_policy.policy.VLAPolicy` does), else built from its attributes; then ``extra``
    on top. Every key of :data:`vla_policy.remote.METADATA_KEYS` is present (None when unknown).

    Raises:
        ValueError: the policy reports a protocol_version other than this server's, or the
            metadata cannot be sent as msgpack (names the problem).
    """
    meta_fn = getattr(policy, 'metadata', None)
    meta = dict(meta_fn()) if callable(meta_fn) else _metadata_from_attributes(policy)
    meta.update(extra or {})
    meta.setdefault('protocol_version', PROTOCOL_VERSION)
    if meta['protocol_version'] != PROTOCOL_VERSION:
        raise ValueError(f"policy metadata has protocol_version {meta['protocol_version']}, this server speaks "
                         f'{PROTOCOL_VERSION}')
    for key in METADATA_KEYS:
        meta.setdefault(key, None)
    try:
        msgpack_numpy.packb(meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'policy metadata cannot be sent: {exc}') from exc
    return meta


# ---------------------------------------------------------------------------- request decoding
class _BadRequest(ValueError):
    """A request the server rejects; ``kind`` goes into the error reply."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _numeric_vector(value: Any, where: str, n: Optional[int], names: Optional[Sequence[str]]) -> np.ndarray:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value) if isinstance(value, list) else None
    if arr is None or arr.dtype.kind not in 'fiu' or arr.ndim != 1:
        got = f'{arr.dtype} {arr.shape}' if arr is not None else type(value).__name__
        raise _BadRequest('bad_observation', f'{where} must be a 1-D float array, got {got}')
    if n is not None and arr.shape[0] != n:
        raise _BadRequest('bad_observation', f'{where} has {arr.shape[0]} values, the policy expects {n}'
                          + (f' ({", ".join(names)})' if names else ''))
    return arr


def decode_observation(d: Any, i: int, cameras: Optional[Sequence[str]] = None,
                       joint_names: Optional[Sequence[str]] = None) -> Observation:
    """``history[i]`` of an infer request -> :class:`Observation`, checked against the policy's
    ``cameras`` and ``joint_names`` (when known).

    Raises:
        ValueError (``kind`` ``'bad_observation'``): naming the field, e.g.
            ``history[0].images lacks camera 'front' (has ['wrist'])``.
    """
    where = f'history[{i}]'
    if not isinstance(d, dict):
        raise _BadRequest('bad_observation', f'{where} must be a map, got {type(d).__name__}')
    missing = [k for k in ('images', 'joint_positions', 'instruction', 'stamp') if k not in d]
    if missing:
        raise _BadRequest('bad_observation', f'{where} lacks {", ".join(missing)}')
    images = d['images']
    if not isinstance(images, dict):
        raise _BadRequest('bad_observation', f'{where}.images must be a map camera -> image, got '
                          f'{type(images).__name__}')
    for cam in cameras or ():
        if cam not in images:
            raise _BadRequest('bad_observation', f'{where}.images lacks camera {cam!r} (has {sorted(images)})')
    for cam, img in images.items():
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
            got = f'{img.dtype} {img.shape}' if isinstance(img, np.ndarray) else type(img).__name__
            raise _BadRequest('bad_observation', f'{where}.images[{cam!r}] must be uint8 (H, W, 3) RGB, got {got}')
    n = len(joint_names) if joint_names else None
    q = _numeric_vector(d['joint_positions'], f'{where}.joint_positions', n, joint_names)
    qd = d.get('joint_velocities')
    if qd is not None:
        qd = _numeric_vector(qd, f'{where}.joint_velocities', q.shape[0], joint_names)
    if not isinstance(d['instruction'], str):
        raise _BadRequest('bad_observation', f'{where}.instruction must be a string, got '
                          f'{type(d["instruction"]).__name__}')
    stamp = d['stamp']
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        raise _BadRequest('bad_observation', f'{where}.stamp must be a number (s), got {type(stamp).__name__}')
    try:
        return Observation(images=images, joint_positions=q, instruction=d['instruction'], stamp=float(stamp),
                           joint_velocities=qd)
    except ValueError as exc:
        raise _BadRequest('bad_observation', f'{where}: {exc}') from exc


def decode_guide(g: Any) -> ChunkGuide:
    """The ``guide`` of an infer request -> :class:`ChunkGuide` (ValueError ``'bad_request'`` naming the field)."""
    if not isinstance(g, dict):
        raise _BadRequest('bad_request', f'guide must be a map, got {type(g).__name__}')
    missing = [k for k in ('actions', 'weights', 'inference_delay') if k not in g]
    if missing:
        raise _BadRequest('bad_request', f'guide lacks {", ".join(missing)}')
    try:
        return ChunkGuide(actions=np.array(g['actions'], np.float32), weights=np.array(g['weights'], np.float32),
                          inference_delay=int(g['inference_delay']),
                          max_guidance_weight=float(g.get('max_guidance_weight', 10.0)))
    except (TypeError, ValueError) as exc:
        raise _BadRequest('bad_request', f'guide: {exc}') from exc


def _one_line(text: str) -> str:
    return '; '.join(ln.strip() for ln in str(text).splitlines() if ln.strip()) or 'error'


def encode_chunk(chunk: ActionChunk) -> Dict[str, Any]:
    """An :class:`ActionChunk` as the reply's fields."""
    return {'actions': np.ascontiguousarray(chunk.actions, dtype=np.float32), 'joint_names': list(chunk.joint_names),
            'dt': float(chunk.dt), 'stamp': float(chunk.stamp),
            'info': {str(k): float(v) for k, v in (chunk.info or {}).items()}}


# ---------------------------------------------------------------------------- the server
class PolicyServer:
    """A websocket policy server on its own thread and event loop (see the module docstring).

    Args:
        policy: an object with ``infer(history) -> ActionChunk`` and ``reset()``; optionally
            ``supports_guidance`` + ``infer_guided(history, guide)`` and ``metadata()``.
        host: address to bind; loopback by default. Anything else requires ``token``.
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        token: shared secret clients must present (None: no check, loopback only).
        metadata: extra/overriding metadata keys (see :func:`policy_metadata`).

    Raises:
        ValueError: a non-loopback ``host`` without a token, an empty token, bad metadata.

    Attributes:
        requests: infer requests answered (with a chunk or an error); ``errors``: of them, errors.
    """

    def __init__(self, policy: Any, host: str = '127.0.0.1', port: int = 0, token: Optional[str] = None,
                 metadata: Optional[Dict[str, Any]] = None, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        require_websockets()
        if token is not None and not str(token).strip():
            raise ValueError('policy server token is empty')
        if not is_loopback(host) and token is None:
            raise ValueError(f'policy server: binding {host or "all interfaces"!r} (not loopback) needs a token '
                             f'(--token or {TOKEN_ENV}); without one, bind 127.0.0.1')
        if not 0 <= int(port) <= 65535:
            raise ValueError(f'policy server port {port} outside 0..65535')
        self.policy = policy
        self.host = host
        self.port = int(port)
        self.token = None if token is None else str(token).strip()
        self.metadata = policy_metadata(policy, metadata)
        self.max_message_bytes = int(max_message_bytes)
        self.requests = 0
        self.errors = 0
        self.inflight = 0
        self.clients = 0
        self._started = time.monotonic()
        self._worker: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_event: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: Optional[BaseException] = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """``ws://host:port`` (without the token)."""
        host = self.host or '0.0.0.0'
        host = f'[{host}]' if ':' in host else host
        return f'ws://{host}:{self.port}'

    @property
    def health_url(self) -> str:
        return self.url.replace('ws://', 'http://', 1) + '/healthz'

    def start(self) -> 'PolicyServer':
        """Bind and serve on a background thread; returns once listening.

        Raises:
            OSError: the address cannot be bound (port in use, unknown host).
        """
        if self._thread is not None:
            raise RuntimeError('PolicyServer already started')
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy-infer')
        self._thread = threading.Thread(target=self._run, name=f'policy-server-{self.port}', daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening socket and every connection (clients see the connection end), stop
        the thread. Idempotent. An inference still running is abandoned after ``timeout`` s."""
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None and not self._done.is_set():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self._worker is not None:
            self._worker.shutdown(wait=False)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the server has stopped (or ``timeout`` s); True when stopped."""
        return self._done.wait(timeout)

    def __enter__(self) -> 'PolicyServer':
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def health(self) -> Dict[str, Any]:
        """What ``GET /healthz`` returns."""
        return {'status': 'ok', 'checkpoint': self.metadata.get('checkpoint'),
                'uptime_s': round(time.monotonic() - self._started, 3), 'requests': self.requests,
                'errors': self.errors, 'inflight': self.inflight, 'clients': self.clients,
                'protocol_version': PROTOCOL_VERSION}

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to start() (bind errors) or logged
            if not self._ready.is_set():
                self._error = exc
            else:
                log.error('policy server stopped: %s', exc)
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()
                self._done.set()
                self._ready.set()

    async def _main(self) -> None:
        from websockets.asyncio.server import serve
        self._stop_event = asyncio.Event()
        server = await serve(self._handler, self.host, self.port, process_request=self._process_request,
                             compression=None, max_size=self.max_message_bytes)
        self.port = int(server.sockets[0].getsockname()[1])
        self._started = time.monotonic()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except asyncio.TimeoutError:  # a handler waits on a long inference: abandoned
                pass

    # ------------------------------------------------------------------ HTTP: health and token
    def _token_ok(self, request: Any) -> bool:
        given: List[str] = []
        for value in request.headers.get_all('Authorization'):
            scheme, _, cred = value.strip().partition(' ')
            if scheme.lower() == 'bearer':
                given.append(cred.strip())
        given += parse_qs(urlsplit(request.path).query).get('token', [])
        want = self.token.encode()
        return any(hmac.compare_digest(g.encode(), want) for g in given)

    def _process_request(self, connection: Any, request: Any) -> Any:
        if urlsplit(request.path).path == '/healthz':
            response = connection.respond(http.HTTPStatus.OK, json.dumps(self.health()) + '\n')
            del response.headers['Content-Type']
            response.headers['Content-Type'] = 'application/json'
            return response
        if self.token is not None and not self._token_ok(request):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                      'missing or wrong token: send "Authorization: Bearer <token>" or ?token=\n')
        return None

    # ------------------------------------------------------------------ websocket
    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        self.clients += 1
        log.info('client %s connected', ws.remote_address)
        try:
            await ws.send(msgpack_numpy.packb(self.metadata))
            async for raw in ws:
                reply = await self._answer(raw)
                await ws.send(msgpack_numpy.packb(reply))
        except ConnectionClosed:
            pass
        finally:
            self.clients -= 1
            log.info('client %s disconnected', ws.remote_address)

    async def _answer(self, raw: Any) -> Dict[str, Any]:
        t0 = time.perf_counter()
        rid = None
        try:
            if isinstance(raw, str):
                raise _BadRequest('bad_request', 'expected a binary msgpack message, got text')
            try:
                msg = msgpack_numpy.unpackb(raw)
            except (ValueError, TypeError) as exc:
                raise _BadRequest('bad_request', f'message is not msgpack: {exc}') from exc
            if not isinstance(msg, dict):
                raise _BadRequest('bad_request', f'message must be a map, got {type(msg).__name__}')
            rid = msg.get('id')
            kind = msg.get('type')
            loop = asyncio.get_running_loop()
            if kind == 'infer':
                history, guide = self._decode_infer(msg)
                self.inflight += 1
                try:
                    reply, infer_s = await loop.run_in_executor(self._worker, self._infer, history, guide,
                                                                bool(msg.get('reset', False)))
                finally:
                    self.inflight -= 1
                reply = encode_chunk(reply)
            elif kind == 'reset':
                self.inflight += 1
                try:
                    _, infer_s = await loop.run_in_executor(self._worker, self._reset)
                finally:
                    self.inflight -= 1
                reply = {'type': 'reset', 'ok': True}
            else:
                raise _BadRequest('bad_request', f"unknown message type {kind!r} (expected 'infer' or 'reset')")
            reply['server_timing'] = {'infer_ms': infer_s * 1e3, 'total_ms': (time.perf_counter() - t0) * 1e3}
            if kind == 'infer':
                self.requests += 1
        except _BadRequest as exc:
            reply = self._error_reply(exc.kind, str(exc))
        except PolicyUnavailable as exc:   # e.g. a server that relays to another server
            reply = self._error_reply('internal', str(exc))
        except ValueError as exc:          # the policy's word for "this input is wrong"
            reply = self._error_reply('bad_observation', str(exc))
        except Exception as exc:  # noqa: BLE001 - the client gets one line; the log keeps the traceback
            log.exception('policy call failed')
            reply = self._error_reply('internal', f'{type(exc).__name__}: {exc}')
        reply['id'] = rid
        return reply

    def _error_reply(self, kind: str, message: str) -> Dict[str, Any]:
        self.requests += 1
        self.errors += 1
        return {'error': _one_line(message), 'kind': kind}

    def _decode_infer(self, msg: Dict[str, Any]) -> Tuple[List[Observation], Optional[ChunkGuide]]:
        hist = msg.get('history')
        if not isinstance(hist, list) or not hist:
            raise _BadRequest('bad_observation', 'history must be a non-empty list of observations, got '
                              + (f'{len(hist)} items' if isinstance(hist, list) else type(hist).__name__))
        cams, joints = self.metadata.get('camera_names'), self.metadata.get('joint_names')
        history = [decode_observation(d, i, cams, joints) for i, d in enumerate(hist)]
        guide = None
        if msg.get('guide') is not None:
            guide = decode_guide(msg['guide'])
            if not (getattr(self.policy, 'supports_guidance', False) and hasattr(self.policy, 'infer_guided')):
                raise _BadRequest('unsupported', 'this policy does not support guidance (real-time chunking needs '
                                  f"a sampling head; head: {self.metadata.get('head')!r})")
        return history, guide

    def _infer(self, history: List[Observation], guide: Optional[ChunkGuide], reset: bool
               ) -> Tuple[ActionChunk, float]:
        if reset:
            self.policy.reset()
        t = time.perf_counter()
        chunk = self.policy.infer(history) if guide is None else self.policy.infer_guided(history, guide)
        dt = time.perf_counter() - t
        if not isinstance(chunk, ActionChunk):
            raise TypeError(f'policy returned {type(chunk).__name__}, not an ActionChunk')
        return chunk, dt

    def _reset(self) -> Tuple[None, float]:
        t = time.perf_counter()
        self.policy.reset()
        return None, time.perf_counter() - t


def serve_policy(policy: Any, host: str = '127.0.0.1', port: int = 0, token: Optional[str] = None,
                 metadata: Optional[Dict[str, Any]] = None) -> PolicyServer:
    """Start a :class:`PolicyServer` on a background thread and return it (``.port``, ``.url``,
    ``.stop()``; also a context manager). For tests and in-process use.

    Raises:
        ValueError: non-loopback ``host`` without ``token``. OSError: the port cannot be bound.
    """
    return PolicyServer(policy, host=host, port=port, token=token, metadata=metadata).start()


# ---------------------------------------------------------------------------- CLI
def _strip_ros_args(argv: Sequence[str]) -> List[str]:
    """Drop a ``--ros-args ... [--]`` section (``ros2 run`` / launch may append one)."""
    out, skip = [], False
    for tok in argv:
        if tok == '--ros-args':
            skip = True
        elif skip and tok == '--':
            skip = False
        elif not skip:
            out.append(tok)
    return out


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a port 0..65535, got {text!r}') from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f'expected a port 0..65535, got {text!r}')
    return value


def main(argv: Optional[Sequence[str]] = None, *, on_ready: Optional[Callable[[PolicyServer], None]] = None) -> int:
    """``policy_server`` console script: serve a checkpoint until Ctrl-C / SIGTERM.

    Exit status: 0 (stopped by Ctrl-C or SIGTERM once serving: a clean stop, as a node's under
    ``ros2 launch``), 1 (one line: checkpoint missing/invalid, port in use), 2 (usage, e.g. a
    non-loopback ``--host`` without a token), 130 (Ctrl-C while still loading the checkpoint).
    """
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='policy_server', description='Serve a VLA checkpoint over websockets + msgpack '
                           '(metadata on connect, infer, reset; GET /healthz).')
    p.add_argument('--checkpoint', required=True, help='checkpoint directory (save_checkpoint layout)')
    p.add_argument('--host', default='127.0.0.1', help='address to bind (default loopback; others need a token)')
    p.add_argument('--port', type=_port, default=DEFAULT_PORT, help=f'TCP port (default {DEFAULT_PORT}; 0 = any)')
    p.add_argument('--token', default=None, help=f'shared secret clients must send (default: ${TOKEN_ENV})')
    p.add_argument('--device', default='cpu', help="torch device, e.g. 'cpu', 'cuda', 'cuda:1'")
    p.add_argument('--seed', type=int, default=None, help='noise seed of a sampling head (reproducible episodes)')
    a = p.parse_args(_strip_ros_args(sys.argv[1:] if argv is None else argv))
    token = a.token if a.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and not token.strip():
        p.error('--token is empty')
    if not is_loopback(a.host) and token is None:
        p.error(f'--host {a.host} is not loopback: a token is required (--token or {TOKEN_ENV})')

    def body() -> int:
        require_websockets()
        from .policy import VLAPolicy
        policy = VLAPolicy.from_checkpoint(a.checkpoint, device=a.device, seed=a.seed)
        logging.basicConfig(level=logging.INFO, format='policy_server: %(message)s', stream=sys.stderr)
        logging.getLogger('websockets').setLevel(logging.WARNING)
        server = PolicyServer(policy, host=a.host, port=a.port, token=token)
        stopped = threading.Event()
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set()) if in_main else None
        try:
            try:
                server.start()
            except OSError as exc:  # port in use, unknown host: the user's to fix
                raise ValueError(f'cannot listen on {a.host}:{a.port}: {exc.strerror or exc}') from exc
            m = server.metadata
            print(f"policy_server: serving {a.checkpoint} ({m.get('backbone')}/{m.get('head')}, "
                  f"{m.get('embodiment')}) on {server.url} (health: {server.health_url})"
                  + (' with a token' if token else ''), flush=True)
            if on_ready is not None:
                on_ready(server)
            try:
                while not stopped.wait(0.2) and not server.wait(0):
                    pass
            except KeyboardInterrupt:   # Ctrl-C / launch's SIGINT: a clean stop, as for a node
                pass
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            server.stop()
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
