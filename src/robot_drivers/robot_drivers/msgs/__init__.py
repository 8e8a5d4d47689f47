"""Message definitions of machine stacks that are not part of ROS 2 itself (ROS-free).

Unitree (``unitree_hg``, ``unitree_api``, from unitree_ros2) and the OPERA excavator interface
(``com3_msgs``, from pwri-opera com3_ros) are not installed on most machines. Each module here holds
the public ``.msg`` texts (``MSG_DEFINITIONS``, with their sources) so that :func:`register_all` can
add them to the rosbags Jazzy type store: conversions, bags and tests then build and read these
messages with real CDR, without the vendor packages. On a ROS 2 machine the node imports the real
generated classes (:func:`robot_drivers.conversions.message_class`).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict

__all__ = ['MODULES', 'definitions', 'register_all']

#: Modules of this package that define ``MSG_DEFINITIONS``.
MODULES = ('unitree', 'com3')

_REGISTERED: set = set()


def definitions() -> Dict[str, str]:
    """``{'pkg/msg/Name': msg text}`` of every module in :data:`MODULES` that is present."""
    out: Dict[str, str] = {}
    for mod in MODULES:
        try:
            m = importlib.import_module(f'robot_drivers.msgs.{mod}')
        except ModuleNotFoundError as exc:
            if exc.name != f'robot_drivers.msgs.{mod}':
                raise
            continue
        out.update(getattr(m, 'MSG_DEFINITIONS'))
    return out


def register_all(store: Any = None) -> Any:
    """Register every definition in the rosbags type store ``store`` (default: the Jazzy store of
    :func:`robot_drivers.conversions.typestore`). Idempotent. Returns the store.

    Raises:
        ValueError: a definition does not parse (the type is named).
    """
    from rosbags.typesys import get_types_from_msg
    if store is None:
        from robot_drivers.conversions import typestore
        store = typestore()
    key = id(store)
    defs = definitions()
    missing = {n: t for n, t in defs.items() if n not in store.types}
    if not missing and key in _REGISTERED:
        return store
    types: Dict[str, Any] = {}
    for name, text in missing.items():
        try:
            types.update(get_types_from_msg(text, name))
        except Exception as exc:  # rosbags raises its own TypesysError
            raise ValueError(f'message definition {name} does not parse: {exc}') from None
    if types:
        store.register(types)
    _REGISTERED.add(key)
    return store
