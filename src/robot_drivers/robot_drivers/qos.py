"""QoS profiles of the stack's topics as plain data (ROS-free); nodes turn them into ``rclpy`` profiles.

The values follow the ROS 2 conventions (``rclpy.qos.qos_profile_sensor_data`` and the
"latched" transient-local pattern from the ROS 2 QoS design article, docs.ros.org
"Quality of Service settings"):

* :data:`SENSOR_DATA`: camera images and joint states; best effort, keep last 5, volatile. A late
  sample is worthless, and a reliable subscriber on a best-effort publisher would get nothing.
* :data:`COMMANDS`: trajectories and other commands; reliable, keep last 10, volatile. Matches the
  default QoS that ros2_control's ``joint_trajectory_controller`` subscribes with.
* :data:`LATCHED`: state a late joiner must see (emergency stop, the instruction); reliable,
  transient local, depth 1.
* :data:`INSTRUCTION_VOLATILE`: the second subscription on the instruction topic, for plain
  publishers such as ``ros2 topic pub`` (reliable, volatile). A transient-local subscription
  rejects volatile publishers (incompatible DURABILITY), so ``policy_node`` subscribes with both
  this and :data:`LATCHED` (ROS 2 QoS compatibility table, docs.ros.org "Quality of Service
  settings"); depth 10 is ``ros2 topic pub``'s default.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ['QosSpec', 'SENSOR_DATA', 'COMMANDS', 'LATCHED', 'INSTRUCTION_VOLATILE']


@dataclass(frozen=True)
class QosSpec:
    """A QoS profile as data.

    Attributes:
        reliability: ``'reliable'`` or ``'best_effort'``.
        durability: ``'volatile'`` or ``'transient_local'``.
        depth: history depth (keep-last), >= 1.

    Raises:
        ValueError: an unknown policy name or depth < 1.
    """

    reliability: str
    durability: str
    depth: int

    def __post_init__(self) -> None:
        if self.reliability not in ('reliable', 'best_effort'):
            raise ValueError(f"QosSpec.reliability must be 'reliable' or 'best_effort', got {self.reliability!r}")
        if self.durability not in ('volatile', 'transient_local'):
            raise ValueError(f"QosSpec.durability must be 'volatile' or 'transient_local', got {self.durability!r}")
        if int(self.depth) < 1:
            raise ValueError(f'QosSpec.depth must be >= 1, got {self.depth}')

    @property
    def history(self) -> str:
        """Always ``'keep_last'``: every topic here keeps a bounded history of ``depth`` samples."""
        return 'keep_last'


SENSOR_DATA = QosSpec(reliability='best_effort', durability='volatile', depth=5)
COMMANDS = QosSpec(reliability='reliable', durability='volatile', depth=10)
LATCHED = QosSpec(reliability='reliable', durability='transient_local', depth=1)
INSTRUCTION_VOLATILE = QosSpec(reliability='reliable', durability='volatile', depth=10)
