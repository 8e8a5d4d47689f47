"""ament_python package vla_training (colcon build; pip-only deps in requirements.txt)."""
from setuptools import find_packages, setup

package_name = 'vla_training'

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
    description='rosbag2 demonstrations to VLA checkpoints: record, train, evaluate, demo.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'train = vla_training.train_cli:main',
            'record = vla_training.record:main',
            'record_robot = vla_training.record_robot:main',
            'evaluate = vla_training.evaluate:main',
            'demo = vla_training.demo:main',
            'machine_demo = vla_training.machine_demo:main',
            'export_lerobot = vla_training.lerobot_dataset:main',
        ],
    },
)
