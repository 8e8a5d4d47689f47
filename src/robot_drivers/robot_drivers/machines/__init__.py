"""Every machine the workspace drives: importing this package registers their embodiments and
:class:`~robot_drivers.machine.Machine` definitions (one module per machine or family)."""
from robot_drivers.machines import franka  # noqa: F401
from robot_drivers.machines import so100, ur5e  # noqa: F401
from robot_drivers.machines import wheel_loader  # noqa: F401
from robot_drivers.machines import articulated_truck  # noqa: F401
from robot_drivers.machines import excavator  # noqa: F401
from robot_drivers.machines import humanoids  # noqa: F401
from robot_drivers.machines import sawyer_metaworld  # noqa: F401
