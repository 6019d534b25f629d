"""Parameter schemas: one frozen dataclass per node, validated at start-up.

Each node's schema lives in a module of the node's name (``params/safety_filter.py`` for
``safety_filter_node``). Fields carry their description and bounds in ``field`` metadata;
:func:`from_params` checks presence, type and bounds generically and the class's
``__post_init__`` checks what spans several fields. Without a code generator this gives
what generate_parameter_library gives a C++ node: a bad parameter file stops the node at
start with a message that names the parameter.

Keys no schema declares are errors too, never silent defaults (:mod:`.check`: a key in a
node's own section must be one of its fields, a key in ``/**`` a field of some node);
:mod:`.registry` maps each node of the graph to its schema.
"""
from hybridvla_ros.params.base import (
    ParameterError,
    from_params,
    load_node_params,
    param,
)

__all__ = ["ParameterError", "from_params", "load_node_params", "param"]
