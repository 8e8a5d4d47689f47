#!/usr/bin/env bash
# Entrypoint of the images: ROS 2 and the workspace overlay sourced, then the command.
# The console scripts carry the venv's python in their shebang (scripts/setup_ros_workspace.sh), so
# `ros2 run` / `ros2 launch` need no venv activation; the venv is on PATH for `python`, `pytest`, `make`.
set -e
# shellcheck disable=SC1090,SC1091
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck disable=SC1091
source /ws/install/setup.bash
export PATH="/ws/.venv/bin:${PATH}"
exec "$@"
