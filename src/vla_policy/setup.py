"""ament_python package vla_policy (colcon build; pip-only deps in requirements.txt).

The launch files and parameter files live in the workspace's top-level ``launch/`` and
``config/`` folders; ``launch`` and ``config`` in this package are symlinks to them, so they are
globbed here like package-local files and installed into ``share/vla_policy/{launch,config}``
(both ``colcon build`` and ``colcon build --symlink-install``). Paths like ``../../launch`` in
``data_files`` were not used: with ``--symlink-install`` colcon mirrors each data file at
``<build base>/vla_policy/<relative path>``, which for ``../..`` escapes the package's build
folder (with the default ``build/`` it happens to resolve to the source file itself; with
``--build-base out/b/build`` it creates ``out/b/launch`` and ``out/b/config``).
"""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = 'vla_policy'
here = os.path.dirname(os.path.abspath(__file__))


def _files(pattern):
    """Files matching ``pattern`` relative to this folder (setuptools wants relative data paths)."""
    found = sorted(os.path.relpath(p, here) for p in glob(os.path.join(here, pattern)))
    if not found:
        raise FileNotFoundError(f'{package_name}/setup.py: no files match {pattern!r} in {here}')
    return found


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'requirements.txt']),
        ('share/' + package_name + '/launch', _files('launch/*.launch.py')),
        ('share/' + package_name + '/config', _files('config/*.yaml')),
        # model presets (`train --preset <name>`)
        ('share/' + package_name + '/config/models', _files('config/models/*.yaml')),
        # Gazebo Sim world, robot xacro, ros2_control controllers and ros_gz_bridge config
        # (franka_gazebo.launch.py finds them in share/vla_policy/config/gazebo).
        ('share/' + package_name + '/config/gazebo', _files('config/gazebo/*')),
    ],
    install_requires=['setuptools', 'numpy'],
    zip_safe=True,
    maintainer='VLA stack maintainers',
    maintainer_email='maintainers@example.com',
    description='VLA policy models, ROS-free runtime and policy_node; Franka launch file and parameters.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'policy_node = vla_policy.policy_node:main',
            'policy_server = vla_policy.policy_server:main',
        ],
    },
)
