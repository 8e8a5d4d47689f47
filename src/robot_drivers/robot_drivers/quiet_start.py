"""Imported first by every node module: Ctrl-C while a node is still starting exits quietly.

``ros2 launch`` that shuts down at start-up (a required node failed, Ctrl-C) sends SIGINT to every
process it started, some of which are still importing numpy, rclpy or torch. Python's default
handler raises ``KeyboardInterrupt`` there, which prints a traceback that buries the one line
saying why the launch ended. Until :func:`robot_drivers.spin_node.run_node` takes over (it restores
Python's default handler before ``rclpy.init``), SIGINT ends the process with status 0, as a
node stopped by Ctrl-C does. No ROS import here: it must come before the heavy imports.
"""
import signal
import sys


def _exit_quietly(signum, frame):  # noqa: ARG001 - signal handler signature
    sys.exit(0)


signal.signal(signal.SIGINT, _exit_quietly)
