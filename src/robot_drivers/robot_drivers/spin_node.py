"""``run_node(factory)``: the ``main()`` of every node in the workspace (Humble and Jazzy).

``rclpy.init()`` ... ``rclpy.shutdown()`` (not the newer context-manager form, which Humble lacks),
Ctrl-C and external shutdown end the spin quietly (exit status 0), and the node is always destroyed.

A node that cannot start -- its constructor raises one of :data:`robot_drivers.cli.USER_ERRORS`
(a parameter value, a missing checkpoint) or an rclpy parameter / name error -- prints one line on
stderr, ``policy_node: error: parameter checkpoint is empty: ...``, shuts rclpy down and exits with
status 1, so a launch file's ``on_exit=Shutdown()`` ends the launch instead of leaving the other
nodes waiting. The traceback is printed too with ``--ros-args --log-level debug`` or ``VLA_DEBUG=1``.
Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence, Tuple, Type

import rclpy
import rclpy.exceptions

from robot_drivers import cli

try:  # rclpy >= Humble
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        pass

__all__ = ['run_node', 'log_edge', 'ROS_USER_ERRORS']

#: rclpy's errors for a bad ``-p name:=value`` or an invalid topic/node name (Humble and Jazzy).
ROS_USER_ERRORS: Tuple[Type[BaseException], ...] = tuple(
    t for t in (getattr(rclpy.exceptions, n, None) for n in ('ParameterException', 'NameValidationException'))
    if isinstance(t, type))


def _node_name(factory: Callable, argv: Sequence[str]) -> str:
    """The default ``node_name`` of a Node subclass factory, else the executable's name."""
    try:
        p = inspect.signature(factory).parameters.get('node_name')
        if p is not None and isinstance(p.default, str) and p.default:
            return p.default
    except (TypeError, ValueError):  # builtins / callables without a signature
        pass
    return os.path.basename(argv[0]) if argv and argv[0] else 'node'


def log_edge(logger, event) -> None:
    """One ``/rosout`` line for a safety edge (:class:`robot_drivers.safety.SafetyEvent`) at its
    severity (``'error'``, ``'warning'``, else info).

    One call site per severity: rclpy keys a logger call on its source line and raises 'Logger
    severity cannot be changed between calls' when one line logs at two severities.
    """
    text = str(event)
    if event.severity == 'error':
        logger.error(text)
    elif event.severity == 'warning':
        logger.warning(text)
    else:
        logger.info(text)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT while the node is destroyed, then restore the previous handler.

    Ctrl-C in the terminal of ``ros2 launch`` reaches each node twice: the terminal sends SIGINT to
    the whole foreground process group, and launch sends its own SIGINT to every process. The first
    ends the spin; the second would otherwise interrupt the clean-up (e.g. freeing the MuJoCo
    renderer) with a ``KeyboardInterrupt`` traceback and a "process has died" exit status.
    Signal handlers can only be changed from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def run_node(factory: Callable[[], 'rclpy.node.Node'], args: Optional[list] = None) -> None:
    """Create the node with ``factory()`` and spin it until Ctrl-C or shutdown.

    ``args``: command line for ``rclpy.init`` (None = ``sys.argv``).

    Raises:
        SystemExit: status 1 when ``factory()`` raises a user error (one line on stderr, see the
            module docstring); any other exception propagates after rclpy is shut down.
    """
    argv = list(sys.argv if args is None else args)
    # Python's Ctrl-C behaviour again (robot_drivers.quiet_start exited quietly during the imports);
    # rclpy.init chains its own handler to it.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    node = None
    status = cli.EXIT_OK
    try:
        rclpy.init(args=args)
        try:
            node = factory()
        except Exception as exc:  # noqa: BLE001 - classified by report_error; others re-raised
            if not rclpy.ok():
                # Ctrl-C (or a launch shutting down) while the node was being constructed: rclpy's
                # signal handler shut the context down under the constructor, which then fails with
                # "the given context is not valid". That is a stop, not an error of the node.
                return
            debug = cli.ros_args_request_debug(argv) or cli.debug_from_env()
            code = cli.report_error(_node_name(factory, argv), exc, debug, extra=ROS_USER_ERRORS)
            if code is None:
                raise
            status = code
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        with _sigint_ignored():
            if node is not None:
                node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
    if status != cli.EXIT_OK:
        sys.exit(status)
