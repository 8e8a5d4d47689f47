"""How every command of the workspace reports errors (ROS-free; used by the CLIs and ``run_node``).

The project's own errors -- bad input the user can fix: a missing bag, a truncated MCAP, a config key
or backbone name that does not exist, ``--steps`` below the warm-up, a missing checkpoint -- end the
command with **one line on stderr** and a non-zero exit status::

    train: error: bag /data/nope: path does not exist

The full traceback is printed as well (before that line) only when asked for: ``--debug`` on any
command line, the environment variable ``VLA_DEBUG=1``, or for a node ``--ros-args --log-level debug``.
Anything else (an exception type not in :data:`USER_ERRORS`) is a bug and keeps Python's traceback.

Exit status (the same for every console script and node):

==========  ================================================================================
``0``       success
``1``       :data:`EXIT_FAILURE`: the command line was well-formed but what it names does not work
            (:data:`USER_ERRORS`: bag, config file, checkpoint, parameter value; torch missing)
``2``       :data:`EXIT_USAGE`: the command line itself is malformed (argparse: unknown option, a
            value of the wrong type or out of range), the convention of argparse and POSIX utilities
``130``     :data:`EXIT_INTERRUPTED`: Ctrl-C (128 + SIGINT, the shell's convention), no traceback;
            a *node* stopped by Ctrl-C or a launch shutdown exits ``0`` instead (that is how
            ``ros2 launch`` tells a clean stop from a crash: "process has finished cleanly")
==========  ================================================================================
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Iterable, Mapping, Optional, TextIO, Tuple, Type

__all__ = ['EXIT_OK', 'EXIT_FAILURE', 'EXIT_USAGE', 'EXIT_INTERRUPTED', 'DEBUG_ENV', 'USER_ERRORS',
           'OWN_PACKAGES', 'ArgumentParser', 'debug_from_env', 'ros_args_request_debug', 'is_user_error',
           'error_message', 'format_error', 'report_error', 'run_main', 'positive_int', 'non_negative_int',
           'positive_float', 'comma_list']

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEBUG_ENV = 'VLA_DEBUG'

#: The workspace's packages: a ``ModuleNotFoundError`` naming one of them is a bug (traceback), one
#: naming anything else (torch, yaml, mujoco ...) means the interpreter lacks a dependency.
OWN_PACKAGES = ('robot_drivers', 'vla_policy', 'vla_training')


def _user_errors() -> Tuple[Type[BaseException], ...]:
    # ValueError covers the project's own classes (vla_training.bag_dataset.BagError,
    # robot_drivers.safety.CommandRejected, config/checkpoint validation, json decoding) and KeyError
    # the registries (unknown backbone/head/embodiment). OSError subclasses: named files and dirs.
    errors: Tuple[Type[BaseException], ...] = (
        ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
        PermissionError)
    try:  # a malformed YAML config; yaml is optional for this module
        import yaml
        errors += (yaml.YAMLError,)
    except ImportError:  # pragma: no cover - yaml ships with ROS and requirements.txt
        pass
    return errors


#: Exception types reported as one line (plus :class:`ModuleNotFoundError` of a third-party module).
USER_ERRORS: Tuple[Type[BaseException], ...] = _user_errors()


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``--debug`` and one-line usage errors (exit :data:`EXIT_USAGE`).

    argparse prints the whole usage block before ``prog: error: ...``; here the error is the one
    line ``prog: error: <message> (see 'prog --help')``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument('--debug', action='store_true',
                          help=f'print the full traceback of an error (also: {DEBUG_ENV}=1)')

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f'{self.prog}: error: {_one_line(message)} (see \'{self.prog} --help\')\n')


def debug_from_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when ``VLA_DEBUG`` is set to anything but ``''``, ``0``, ``false``, ``no`` or ``off``."""
    env = os.environ if environ is None else environ
    return env.get(DEBUG_ENV, '').strip().lower() not in ('', '0', 'false', 'no', 'off')


def ros_args_request_debug(argv: Optional[Iterable[str]]) -> bool:
    """True when a ``--ros-args`` section of ``argv`` sets the log level to debug.

    Accepts ``--log-level debug`` and the per-logger form ``--log-level <name>:=debug`` (any case),
    as rcl parses them (``--log-level`` only counts inside ``--ros-args ... [--]``).
    """
    in_ros = False
    args = list(argv or ())
    for i, tok in enumerate(args):
        if tok == '--ros-args':
            in_ros = True
        elif tok == '--':
            in_ros = False
        elif in_ros and tok == '--log-level' and i + 1 < len(args):
            level = args[i + 1].rsplit(':=', 1)[-1]
            if level.strip().lower() == 'debug':
                return True
    return False


def _missing_dependency(exc: BaseException) -> Optional[str]:
    """Top-level name of a third-party module ``exc`` failed to import, else None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split('.')[0]
    return None if top in OWN_PACKAGES else top


def is_user_error(exc: BaseException) -> bool:
    """True for an exception reported as one line: :data:`USER_ERRORS` or a missing dependency."""
    return isinstance(exc, USER_ERRORS) or _missing_dependency(exc) is not None


def _one_line(text: str) -> str:
    parts = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return '; '.join(parts)


def error_message(exc: BaseException) -> str:
    """The message of ``exc`` on one line, keeping its detail (file, topic, field).

    ``KeyError('x')`` gives ``x`` (not ``'x'``); an ``OSError`` from ``open()`` gives
    ``No such file or directory: <file>``; a multi-line message (YAML parser, rclpy name validation)
    is joined with ``'; '``; a missing third-party module names the interpreter that lacks it.
    """
    dep = _missing_dependency(exc)
    if dep is not None and str(exc).startswith('No module named'):
        return (f'{dep} is not importable by {sys.executable}: install requirements.txt into that Python '
                'and build the workspace with it (see README, "On a ROS 2 machine")')
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        msg = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        msg = f'{exc.strerror}: {exc.filename}'
        if exc.filename2 is not None:
            msg += f' -> {exc.filename2}'
    else:
        msg = str(exc)
    msg = _one_line(msg)
    return msg or type(exc).__name__


def format_error(prog: str, exc: BaseException) -> str:
    """``'<prog>: error: <message>'`` (one line, no trailing newline)."""
    return f'{prog}: error: {error_message(exc)}'


def report_error(prog: str, exc: BaseException, debug: bool = False,
                 extra: Tuple[Type[BaseException], ...] = (), stream: Optional[TextIO] = None) -> Optional[int]:
    """Report ``exc`` if it is a user error (:func:`is_user_error` or one of ``extra``).

    Writes the traceback (only if ``debug``) and then the one line of :func:`format_error` to
    ``stream`` (default ``sys.stderr``) and returns :data:`EXIT_FAILURE`; returns None, writing
    nothing, for any other exception (the caller re-raises it: a bug keeps its traceback).
    """
    if not (is_user_error(exc) or isinstance(exc, extra)):
        return None
    out = sys.stderr if stream is None else stream
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=out)
    print(format_error(prog, exc), file=out, flush=True)
    return EXIT_FAILURE


def run_main(prog: str, body: Callable[[], Optional[int]], debug: bool = False) -> int:
    """Run a command's ``body`` and turn errors into an exit status (see the module docstring).

    Returns ``body()``'s status (None = 0), :data:`EXIT_FAILURE` after one line for a user error,
    :data:`EXIT_INTERRUPTED` on Ctrl-C; any other exception propagates with its traceback.
    ``debug`` (``--debug``) or ``VLA_DEBUG=1`` adds the traceback to the one line.
    """
    try:
        rc = body()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised
        code = report_error(prog, exc, debug or debug_from_env())
        if code is None:
            raise
        return code
    return EXIT_OK if rc is None else int(rc)


def _number(text: str, kind: Callable, test: Callable, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
    if not test(value):
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1 (else a one-line usage error naming the value)."""
    return _number(text, int, lambda v: v >= 1, 'an integer >= 1')


def non_negative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, 'an integer >= 0')


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    import math
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, 'a number > 0')



def comma_list(choices: Iterable[str]) -> Callable[[str], Tuple[str, ...]]:
    """argparse ``type=`` for ``a,b``: a non-empty tuple of names, each one of ``choices``."""
    known = tuple(choices)

    def parse(text: str) -> Tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(',') if t.strip())
        bad = [t for t in items if t not in known]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f'expected a comma-separated list of {", ".join(known)}; got {text!r}'
                + (f' ({", ".join(map(repr, bad))} unknown)' if bad else ''))
        return items
    return parse
