"""Training targets: commands and joint states at the kept ticks -> actions and action chunks (ROS-free).

The third stage of :func:`vla_training.bag_dataset.read_episode`.

* **From a command** (``trajectory_msgs/JointTrajectory``): the action at tick ``t`` is point 0 of
  the command in force, i.e. the positions the command asked the joints to reach
  ``time_from_start`` later (for velocity DOFs the velocities it asked for), reordered to the
  embodiment's joint order. A machine's *native* command message (a ``Float64MultiArray`` of a
  forward controller, an excavator's ``com3_msgs/JointCmd`` ...) is read back through the output
  adapter of the group that publishes it (:meth:`robot_drivers.adapters.OutputAdapter.decode`).
* **From the joint state** (joints the command does not carry, e.g. a gripper on its own action
  server, or every joint when no command was recorded): the measured position in the latest joint
  state stamped ``<= t + period``, i.e. where the joint got to one period later. For a position-
  controlled arm that tracks its command within a period this is the command, delayed by the
  tracking lag (the usual choice for kinesthetic / leader-follower demonstrations, e.g. ALOHA).
* **Chunks**: :func:`chunk_targets` stacks ``actions[t : t + H]`` for action-chunk heads.

Shapes: ``A`` = embodiment joints, ``T`` = kept ticks, ``H`` = chunk size.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from robot_drivers import conversions

__all__ = ['command_actions', 'fill_from_state', 'check_finite', 'chunk_targets', 'TargetError']


class TargetError(ValueError):
    """A command or joint state cannot give the training target; the text names topic and joint."""


def command_actions(commands: Mapping[int, Any], use: np.ndarray, joint_names: Sequence[str], *,
                    from_state: Sequence[str] = (), source: str = 'command',
                    velocity_joints: Sequence[str] = (), decode: Optional[Any] = None) -> np.ndarray:
    """Point-0 action values of the selected commands, in embodiment order.

    Args:
        commands: ``{index: JointTrajectory}`` (rclpy or rosbags message), or native messages with ``decode``.
        use: ``(T,)`` which command each tick uses.
        joint_names: ``(A,)`` embodiment joint order.
        from_state: joints allowed to be absent from the command (filled later, NaN here).
        source: text naming the bag and topic, for errors.
        velocity_joints: joints commanded by velocity: their value is the point's ``velocities`` entry.
        decode: ``msg -> {joint: value}`` for a native command message (an output adapter's decode).

    Returns:
        ``float64 (T, A)``, NaN in the columns of absent ``from_state`` joints.

    Raises:
        TargetError: a command that is malformed (no points, length mismatch) or lacks an
            embodiment joint not in ``from_state``.
    """
    names = list(joint_names)
    vel_set = set(velocity_joints)
    cache: Dict[int, np.ndarray] = {}

    def row_of(s: int) -> np.ndarray:
        if s not in cache:
            try:
                if decode is not None:
                    values = decode(commands[s])
                    jn = list(values)
                else:
                    jn, pos, vel, _ = conversions.trajectory_fields(commands[s], source=source)
                    values = {}
                    for i, n in enumerate(jn):
                        arr = vel if n in vel_set else pos
                        if arr is None:
                            raise ValueError(f'{source}: command has no {"velocities" if n in vel_set else "positions"} '
                                             f'for joint {n!r}')
                        values[n] = float(arr[0, i])
            except ValueError as exc:
                raise TargetError(str(exc)) from exc
            row = np.full(len(names), np.nan)
            for a, n in enumerate(names):
                if n in values:
                    row[a] = values[n]
                elif n not in from_state:
                    raise TargetError(f'{source}: command lacks embodiment joint {n!r} (command joints {jn}); '
                                      f'pass action_from_state=[{n!r}] if it is commanded on another interface')
            cache[s] = row
        return cache[s]

    return np.stack([row_of(int(s)) for s in use])  # (T, A)


def fill_from_state(actions: Optional[np.ndarray], future_state: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Actions with ``columns`` taken from ``future_state (T, A)`` (the state one period later).

    ``actions=None`` (no command recorded) means every column comes from the state.
    """
    if actions is None:
        return np.asarray(future_state, dtype=np.float64).copy()
    out = np.array(actions, dtype=np.float64, copy=True)
    cols = list(columns)
    if cols:
        out[:, cols] = np.asarray(future_state)[:, cols]
    return out


def check_finite(actions: np.ndarray, joint_names: Sequence[str], source: str) -> None:
    """Raise :class:`TargetError` naming the joints whose actions are NaN/inf."""
    if not np.all(np.isfinite(actions)):
        bad = sorted({joint_names[a] for a in np.nonzero(~np.isfinite(actions))[1]})
        raise TargetError(f'{source}: non-finite commanded values for joints {bad}')


def chunk_targets(actions: np.ndarray, chunk_size: int, *, stamps: Optional[np.ndarray] = None,
                  period_s: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Action-chunk targets ``actions[t : t + H]`` for every tick, padded at the end.

    Padding repeats the last real action and is flagged in ``is_pad`` (LeRobot's ``action_is_pad``).
    With ``stamps (T,)`` and ``period_s``, a chunk also stops at a gap (consecutive stamps more than
    1.5 periods apart, i.e. dropped ticks) so a target never belongs to a later stretch of the episode.

    Args:
        actions: ``(T, A)``.
        chunk_size: ``H >= 1``.

    Returns:
        ``targets (T, H, A)`` (same dtype as ``actions``), ``is_pad (T, H)`` bool.

    Raises:
        ValueError: ``actions`` not 2-D or empty, ``chunk_size < 1``, ``stamps`` of the wrong length,
            or ``stamps`` given without a positive ``period_s``.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f'actions must be (T, A) with T >= 1, got shape {actions.shape}')
    h = int(chunk_size)
    if h < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    t = actions.shape[0]
    seg_end = np.full(t, t - 1, dtype=np.int64)  # (T,) last index of each tick's contiguous stretch
    if stamps is not None:
        stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
        if stamps.shape[0] != t:
            raise ValueError(f'stamps has {stamps.shape[0]} entries for {t} actions')
        if period_s is None or not period_s > 0:
            raise ValueError(f'period_s must be > 0 when stamps are given, got {period_s}')
        gap_after = np.flatnonzero(np.diff(stamps) > 1.5 * period_s)  # indices i with a gap between i, i+1
        ends = np.concatenate([gap_after, [t - 1]])
        seg_end = ends[np.searchsorted(ends, np.arange(t), side='left')]
    want = np.arange(t)[:, None] + np.arange(h)[None, :]  # (T, H)
    is_pad = want > seg_end[:, None]  # (T, H)
    idx = np.minimum(want, seg_end[:, None])  # (T, H)
    return actions[idx], is_pad  # (T, H, A), (T, H)
