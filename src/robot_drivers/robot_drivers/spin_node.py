"""``run_node(factory)``: the ``main()`` of every node in the workspace (Humble and Jazzy).

``rclpy.init()`` ... ``rclpy.shutdown()`` (not the newer context-manager form, which Humble lacks),
Ctrl-C and external shutdown end the spin quietly, and the node is always destroyed.
"""
from __future__ import annotations

from typing import Callable, Optional

import rclpy

try:  # rclpy >= Humble
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        pass

__all__ = ['run_node']


def run_node(factory: Callable[[], 'rclpy.node.Node'], args: Optional[list] = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
