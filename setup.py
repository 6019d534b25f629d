"""ament_python package hybridvla_ros (see package.xml)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hybridvla_ros"
NODES = [
    "sync_node", "inference_node", "action_buffer_node", "handoff_node", "safety_filter_node",
    "correction_recorder_node", "adaptation_node", "monitor_node", "sim_robot_node", "sim_operator_node",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="hybridvla_ros developers",
    maintainer_email="dev@example.com",
    description="Deploys a hybrid VLA policy on a robot with ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + [f"hybridvla = {PACKAGE}.cli:main"],
    },
)
