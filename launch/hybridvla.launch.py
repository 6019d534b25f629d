"""ros2 launch hybridvla_ros hybridvla.launch.py embodiment:=franka sim:=true

Thin on purpose: the node list comes from hybridvla_ros.launch_description, which our
own runner (`hybridvla run`) uses too and which the tests cover. Node deaths: every node
but the safety filter is respawned (after a delay); the safety filter's exit shuts the
launch down, so no command reaches the robot unchecked.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from hybridvla_ros.launch_description import describe_graph, validate_graph


def _nodes(context, *args, **kwargs):
    embodiment = LaunchConfiguration("embodiment").perform(context)
    sim = LaunchConfiguration("sim").perform(context).lower() in ("1", "true", "yes")
    checkpoint = LaunchConfiguration("checkpoint_path").perform(context) or None
    params_file = LaunchConfiguration("params_file").perform(context) or None
    specs = describe_graph(embodiment, sim=sim, checkpoint_path=checkpoint, params_file=params_file)
    validate_graph(specs)
    actions = []
    for s in specs:
        node = Node(**s.launch_arguments())
        actions.append(node)
        if s.ends_graph:
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node,
                on_exit=[Shutdown(reason=f"{s.name} exited: the graph does not run without it")])))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("embodiment", default_value="franka",
                              description="franka | aloha | hello | leap"),
        DeclareLaunchArgument("sim", default_value="false", description="start the simulated robot"),
        DeclareLaunchArgument("checkpoint_path", default_value="", description="policy checkpoint directory"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="use this parameter file instead of config/<embodiment>.yaml"),
        OpaqueFunction(function=_nodes),
    ])
