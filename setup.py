"""ament_python package hybridvla_ros (see package.xml)."""
import os
import runpy
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hybridvla_ros"
# The node list is defined once, in hybridvla_ros/graph_nodes.py: plain data, read here without
# importing the package (colcon's build environment may lack rclpy, numpy, yaml).
graph_nodes = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGE, "graph_nodes.py"))

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
        "console_scripts": graph_nodes["console_scripts"]() + [f"hybridvla = {PACKAGE}.cli:main"],
    },
)
