"""ament_python package robot_drivers (colcon build; pip-only deps in requirements.txt)."""
from setuptools import find_packages, setup

package_name = 'robot_drivers'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'requirements.txt']),
    ],
    install_requires=['setuptools', 'numpy'],
    zip_safe=True,
    maintainer='VLA stack maintainers',
    maintainer_email='maintainers@example.com',
    description='Embodiments, message conversions, safety filter, arm driver core and nodes (ROS-free core).',
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'arm_driver_node = robot_drivers.arm_driver_node:main',
            'sim_node = robot_drivers.sim_node:main',
            'machine_driver_node = robot_drivers.machine_driver_node:main',
        ],
    },
)
