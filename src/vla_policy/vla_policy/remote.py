"""``RemotePolicy``: the Policy contract answered by a policy server over websockets (ROS-free, torch-free).

The client half of :mod:`vla_policy.policy_server` (protocol described there), in the shape of
openpi's ``WebsocketClientPolicy``, with what a control loop needs on top:

* synchronous calls (``websockets.sync.client``), one request in flight per client (a lock), so
  the runtime's inference worker can call it like a local model;
* it connects lazily, on the first call; every call has a deadline (``timeout_s`` for the
  connection, ``timeout_s`` again for the answer): a server that is down, refuses, or is too slow
  raises :class:`~vla_policy.contracts.PolicyUnavailable` with the reason in one line (the
  runtime then holds and says why), and the next call connects again (the server may be back);
* a request the server rejects (missing camera, wrong joint count, wrong dtype) raises
  ValueError with the server's message, naming the field; the connection stays usable;
* ``reset()`` never blocks on the network for long and never raises for a server that is down:
  it is sent at once when possible and otherwise rides on the next infer request;
* the metadata the server sent on connect is kept (``.metadata``); after a reconnect the server
  must still serve the same embodiment, joints, cameras, history length and ``dt``, else every
  call raises PolicyUnavailable naming what changed (acting on another robot's policy is unsafe).

Requires ``websockets >= 13`` (its ``websockets.asyncio`` server and ``websockets.sync`` client)
and ``msgpack >= 1.0``.
"""
from __future__ import annotations

import inspect
import threading
import time
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from . import msgpack_numpy
from .contracts import ActionChunk, ChunkGuide, Observation, PolicyUnavailable

__all__ = ['RemotePolicy', 'PROTOCOL_VERSION', 'METADATA_KEYS', 'require_websockets', 'MIN_WEBSOCKETS']

#: Version of the message layout; equals ``vla_policy.policy.PROTOCOL_VERSION`` (kept here so the
#: client does not import torch). A server with another version is refused on connect.
PROTOCOL_VERSION = 1

#: Keys every server's metadata carries (None when the policy cannot tell).
METADATA_KEYS = ('protocol_version', 'embodiment', 'joint_names', 'camera_names', 'n_obs_steps', 'n_action_steps',
                 'chunk_size', 'dt', 'supports_guidance', 'checkpoint', 'backbone', 'head')

#: Metadata that must not change across reconnects (what the runtime was configured for).
_STABLE_KEYS = ('embodiment', 'joint_names', 'camera_names', 'n_obs_steps', 'dt')

MIN_WEBSOCKETS = (13, 0)
MAX_REPLY_BYTES = 16 * 2 ** 20


def require_websockets() -> None:
    """Raise ModuleNotFoundError (``name='websockets'``) unless websockets >= 13 is importable.

    Ubuntu 22.04/24.04's python3-websockets (10.x) predates the ``websockets.asyncio`` /
    ``websockets.sync`` APIs used here; requirements.txt installs a newer one into the venv.
    """
    try:
        import websockets
        version = tuple(int(p) for p in websockets.__version__.split('.')[:2] if p.isdigit())
    except ImportError as exc:
        raise ModuleNotFoundError(str(exc), name='websockets') from exc
    if version < MIN_WEBSOCKETS:
        raise ModuleNotFoundError(
            f'websockets {websockets.__version__} at {websockets.__file__} is older than '
            f'{".".join(map(str, MIN_WEBSOCKETS))}', name='websockets')


def _split_endpoint(endpoint: str) -> Tuple[str, str]:
    """``(uri to connect to, uri to show)``: ``host:port`` gets ``ws://``; the shown one has no token.

    Raises:
        ValueError: not a ``ws://`` / ``wss://`` URL with a host.
    """
    text = str(endpoint).strip()
    if '://' not in text:
        text = 'ws://' + text
    parts = urlsplit(text)
    if parts.scheme not in ('ws', 'wss') or not parts.hostname:
        raise ValueError(f'policy endpoint {endpoint!r} is not a ws://host:port URL')
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f'policy endpoint {endpoint!r}: {exc}') from None
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != 'token']
    shown = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ''))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or '/', parts.query, '')), shown.rstrip('/')


def encode_observation(ob: Observation, cameras: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """An :class:`Observation` as a request's ``history`` item (``cameras``: send only these when present)."""
    images = ob.images if not cameras else {c: ob.images[c] for c in cameras if c in ob.images} or ob.images
    d = {'images': dict(images), 'joint_positions': np.asarray(ob.joint_positions), 'instruction': ob.instruction,
         'stamp': float(ob.stamp)}
    if ob.joint_velocities is not None:
        d['joint_velocities'] = np.asarray(ob.joint_velocities)
    return d


class RemotePolicy:
    """A :class:`~vla_policy.contracts.Policy` whose model runs in a policy server.

    Args:
        endpoint: ``ws://host:port`` (``host:port`` also accepted; ``?token=...`` allowed).
        token: shared secret, sent as ``Authorization: Bearer <token>``.
        timeout_s: deadline (s) for connecting, and for each answer once the request is sent.

    Raises:
        ValueError: a malformed endpoint or a timeout <= 0. ModuleNotFoundError: websockets < 13.

    Attributes:
        url: the endpoint without its token (used in every message).
        last_timing: ``{'infer_ms', 'total_ms'}`` (the server's) and ``'round_trip_ms'`` (this
            side: send to reply decoded) of the last successful call; ``{}`` before one.
        connects: successful connections so far (1 + reconnects).
    """

    def __init__(self, endpoint: str, *, token: Optional[str] = None, timeout_s: float = 1.0) -> None:
        require_websockets()
        if not timeout_s > 0:
            raise ValueError(f'RemotePolicy timeout_s must be > 0, got {timeout_s}')
        self._uri, self.url = _split_endpoint(endpoint)
        self.token = token if token else None
        self.timeout_s = float(timeout_s)
        self._ws: Any = None
        self._metadata: Optional[Dict[str, Any]] = None
        self._first_metadata: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._resets_asked = 0        # reset() calls so far
        self._resets_done = 0         # of them, the number the server has acknowledged
        self._next_id = 0
        self.last_timing: Dict[str, float] = {}
        self.connects = 0

    def __repr__(self) -> str:
        return f'RemotePolicy({self.url!r}, timeout_s={self.timeout_s})'

    # ------------------------------------------------------------------ connection
    def _unavailable(self, why: str) -> PolicyUnavailable:
        return PolicyUnavailable(f'policy server {self.url} {why}')

    def _connect_locked(self) -> Any:
        if self._ws is not None:
            return self._ws
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect
        kwargs: Dict[str, Any] = dict(compression=None, max_size=MAX_REPLY_BYTES, open_timeout=self.timeout_s,
                                      close_timeout=self.timeout_s)
        if self.token:
            kwargs['additional_headers'] = {'Authorization': f'Bearer {self.token}'}
        params = _connect_param_names()
        if 'proxy' in params:    # websockets >= 15 would route through $http_proxy / $all_proxy
            kwargs['proxy'] = None
        if 'legacy' in params:   # websockets >= 17: a plain connection, no reconnecting iterator
            kwargs['legacy'] = True
        try:
            ws = connect(self._uri, **kwargs)
        except InvalidStatus as exc:
            code = exc.response.status_code
            hint = ' (missing or wrong token)' if code == 401 else ''
            raise self._unavailable(f'refused the connection: HTTP {code}{hint}') from None
        except InvalidURI as exc:
            raise ValueError(f'policy endpoint {self.url}: {exc}') from None
        except (TimeoutError, OSError) as exc:
            raise self._unavailable(self._os_reason(exc)) from None
        except InvalidHandshake as exc:
            raise self._unavailable(f'failed the websocket handshake: {exc}') from None
        try:
            meta = msgpack_numpy.unpackb(ws.recv(timeout=self.timeout_s), writeable=True)
        except TimeoutError:
            ws.close()
            raise self._unavailable(f'sent no metadata within {self.timeout_s:g} s') from None
        except Exception as exc:  # noqa: BLE001 - closed mid-handshake, not msgpack
            ws.close()
            raise self._unavailable(f'sent no usable metadata ({type(exc).__name__}: {exc})') from None
        try:
            self._check_metadata(meta)
        except PolicyUnavailable:
            ws.close()
            raise
        self._ws, self._metadata = ws, meta
        if self._first_metadata is None:
            self._first_metadata = meta
        self.connects += 1
        return ws

    def _check_metadata(self, meta: Any) -> None:
        if not isinstance(meta, dict):
            raise self._unavailable(f'sent metadata of type {type(meta).__name__}, expected a map')
        version = meta.get('protocol_version')
        if version != PROTOCOL_VERSION:
            raise self._unavailable(f'speaks protocol {version}, this client {PROTOCOL_VERSION}')
        first = self._first_metadata
        if first is not None:
            changed = [k for k in _STABLE_KEYS if meta.get(k) != first.get(k)]
            if changed:
                raise self._unavailable('now serves a different policy: ' + ', '.join(
                    f'{k} {first.get(k)!r} -> {meta.get(k)!r}' for k in changed))

    def _os_reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f'did not answer within {self.timeout_s:g} s'
        if isinstance(exc, ConnectionRefusedError):
            return 'is unreachable: connection refused'
        return f'is unreachable: {getattr(exc, "strerror", None) or exc}'

    def _drop_locked(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - already broken; nothing to report
                pass

    def connect(self) -> Dict[str, Any]:
        """Connect now (if not connected) and return the server's metadata (a copy).

        Raises:
            PolicyUnavailable: unreachable, refused (HTTP 401: token), too slow, other protocol.
        """
        with self._lock:
            self._connect_locked()
            return dict(self._metadata)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def metadata(self) -> Dict[str, Any]:
        """The server's metadata (keys :data:`METADATA_KEYS` and more); connects if none was received yet.

        Raises:
            PolicyUnavailable: not received yet and the server cannot be reached.
        """
        if self._metadata is None:
            self.connect()
        return self._metadata

    @property
    def supports_guidance(self) -> bool:
        """From the metadata (connects if needed; PolicyUnavailable when that fails)."""
        return bool(self.metadata.get('supports_guidance'))

    @property
    def cameras(self) -> Tuple[str, ...]:
        """Every camera the served model reads, in its order (``camera_names`` of the metadata).

        Raises:
            ValueError: the server's metadata names no camera.
        """
        cams = self.metadata.get('camera_names') or []
        if not cams:
            raise ValueError(f'policy server {self.url} did not say which cameras its policy reads')
        return tuple(str(c) for c in cams)

    @property
    def camera(self) -> str:
        """The first camera the served model reads (:attr:`cameras` ``[0]``; for one-camera callers)."""
        return self.cameras[0]

    # ------------------------------------------------------------------ calls
    def _call_locked(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        ws = self._connect_locked()
        from websockets.exceptions import ConnectionClosed
        self._next_id += 1
        msg['id'] = self._next_id
        t0 = time.perf_counter()
        try:
            ws.send(msgpack_numpy.packb(msg))
            while True:
                left = self.timeout_s - (time.perf_counter() - t0)
                if left <= 0:
                    raise TimeoutError
                raw = ws.recv(timeout=left)
                reply = msgpack_numpy.unpackb(raw, writeable=True)
                if isinstance(reply, dict) and reply.get('id') == msg['id']:
                    break                          # anything else is a stale reply: skip it
        except ConnectionClosed as exc:
            self._drop_locked()
            raise self._unavailable(_closed_reason(exc)) from None
        except (TimeoutError, OSError) as exc:
            self._drop_locked()   # a late answer must not be taken for the next request's
            raise self._unavailable(self._os_reason(exc)) from None
        except (ValueError, TypeError) as exc:   # a reply that is not msgpack
            self._drop_locked()
            raise self._unavailable(f'sent an unreadable reply ({exc})') from None
        rtt = (time.perf_counter() - t0) * 1e3
        if 'error' in reply:
            kind, text = reply.get('kind'), reply['error']
            if kind in ('internal', 'unavailable'):
                raise self._unavailable(f'failed: {text}')
            raise ValueError(f'policy server {self.url} rejected the request ({kind}): {text}')
        timing = reply.get('server_timing') or {}
        self.last_timing = {'infer_ms': float(timing.get('infer_ms', float('nan'))),
                            'total_ms': float(timing.get('total_ms', float('nan'))), 'round_trip_ms': rtt}
        return reply

    def _infer(self, history: Sequence[Observation], guide: Optional[ChunkGuide]) -> ActionChunk:
        history = list(history)
        if not history:
            raise ValueError('RemotePolicy.infer needs at least one Observation')
        with self._lock:
            self._connect_locked()
            cams = self._metadata.get('camera_names')
            msg: Dict[str, Any] = {'type': 'infer', 'history': [encode_observation(o, cams) for o in history]}
            if guide is not None:
                msg['guide'] = {'actions': guide.actions, 'weights': guide.weights,
                                'inference_delay': int(guide.inference_delay),
                                'max_guidance_weight': float(guide.max_guidance_weight)}
            asked = self._resets_asked
            if asked != self._resets_done:
                msg['reset'] = True
            reply = self._call_locked(msg)
            self._resets_done = asked
        try:
            return ActionChunk(actions=reply['actions'], joint_names=tuple(reply['joint_names']), dt=float(reply['dt']),
                               stamp=float(reply['stamp']), info=dict(reply.get('info') or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unavailable(f'sent a malformed chunk ({type(exc).__name__}: {exc})') from None

    def infer(self, history: Sequence[Observation]) -> ActionChunk:
        """ActionChunk (H, A) for the newest observation of ``history`` (oldest first), computed by the server.

        Raises:
            PolicyUnavailable: not reachable, connection lost, no answer within ``timeout_s``,
                or the policy failed on the server (reconnects on the next call).
            ValueError: the server rejected the observation (message names the field).
        """
        return self._infer(history, None)

    def infer_guided(self, history: Sequence[Observation], guide: ChunkGuide) -> ActionChunk:
        """Real-time chunking on the server (``policy.infer_guided``); errors as :meth:`infer`,
        ValueError also when the served policy does not support guidance."""
        return self._infer(history, guide)

    def reset(self) -> None:
        """Forward ``reset`` to the server: now if connected and idle (bounded by ``timeout_s``),
        else with the next infer request. Never raises for an unreachable server."""
        self._resets_asked += 1
        if not self._lock.acquire(blocking=False):
            return                               # a call is in flight: the next request carries it
        try:
            if self._ws is None:
                return
            asked = self._resets_asked
            try:
                self._call_locked({'type': 'reset'})
                self._resets_done = asked
            except (PolicyUnavailable, ValueError):
                pass                             # dropped; the next infer carries the reset
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the connection (idempotent; a later call connects again)."""
        with self._lock:
            self._drop_locked()

    def __enter__(self) -> 'RemotePolicy':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _closed_reason(exc: Any) -> str:
    """One line for a ``ConnectionClosed``: the close code and its name, or that none came."""
    rcvd = getattr(exc, 'rcvd', None)
    if rcvd is None:
        return 'lost the connection (no close frame: the server process ended or the network failed)'
    try:
        from websockets.frames import CloseCode
        name = CloseCode(rcvd.code).name.lower().replace('_', ' ')
    except (ImportError, ValueError):
        name = 'unknown code'
    return f'closed the connection (code {rcvd.code}, {name}' + (f': {rcvd.reason})' if rcvd.reason else ')')


_connect_params: Optional[frozenset] = None


def _connect_param_names() -> frozenset:
    global _connect_params
    if _connect_params is None:
        from websockets.sync.client import connect
        _connect_params = frozenset(inspect.signature(connect).parameters)
    return _connect_params
