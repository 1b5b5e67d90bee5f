"""Declare every node parameter once, from the typed config, and read them back.

Each field of :class:`~xview_localizer.pipeline.config.NodeConfig` and
:class:`~xview_localizer.pipeline.config.LocalizerConfig` becomes one flat, read-only ROS parameter with
a :class:`ParameterDescriptor` carrying the field's description and, for numbers, a
``FloatingPointRange`` / ``IntegerRange`` (none where NaN means "unset"); enumerations list
their choices in ``additional_constraints``. Values given with ``--params-file`` or ``-p``
override the defaults at declaration. Doubles given as integers in YAML are accepted.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node

from ..pipeline.config import NodeConfig, ParamSpec, node_config_from_flat, parameter_specs

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS ParameterDescriptor of one parameter (description, type, range, choices)."""
    d = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type], description=spec.description,
                            read_only=True)
    if spec.type is float:
        # Let YAML integers through for doubles (``transform_tolerance_s: 1``); checked in the config.
        d.dynamic_typing = True
    if spec.range is not None and not spec.allow_nan:
        lo, hi = spec.range
        if spec.type is int:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        elif spec.type is float:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    if spec.range is not None and spec.allow_nan:
        d.additional_constraints = f"NaN (unset) or in [{spec.range[0]}, {spec.range[1]}]"
    if spec.choices is not None:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    return d


def declare_parameters(node: Node) -> None:
    """Declare every parameter of :func:`parameter_specs` on ``node`` (once, at start-up)."""
    for spec in parameter_specs():
        node.declare_parameter(spec.name, spec.default, descriptor_for(spec))


def read_config(node: Node) -> NodeConfig:
    """Read the declared parameters back into a validated :class:`NodeConfig`.

    Raises:
        ConfigError: a value outside its range or inconsistent with another.
    """
    values: dict[str, Any] = {}
    for spec in parameter_specs():
        value = node.get_parameter(spec.name).value
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[spec.name] = value
    return node_config_from_flat(values)


_TYPE_NAMES = {bool: "bool", int: "int", float: "double", str: "string"}


def _default_text(spec: ParamSpec) -> str:
    if spec.type is bool:
        return "true" if spec.default else "false"
    if spec.type is float and math.isnan(spec.default):
        return "NaN (unset)"
    if spec.type is str:
        return repr(spec.default)
    return str(spec.default)


def parameter_help(width: int = 100) -> str:
    """Every parameter of :func:`parameter_specs` for ``localizer_node --help``: name, type,
    default, range or choices, and the description (generated from the typed config)."""
    lines = []
    owner = None
    for spec in parameter_specs():
        if spec.owner is not owner:
            owner = spec.owner
            title = ("node (frames, topics, TF, tiles, matcher)" if owner is NodeConfig
                     else "localizer core (patch, prior, gating, covariance)")
            lines += ["", f"Parameters of the {title}:"]
        facts = [_TYPE_NAMES[spec.type], f"default {_default_text(spec)}"]
        if spec.range is not None:
            lo, hi = (str(v) if spec.type is int else f"{v:g}" for v in spec.range)
            facts.append(f"range [{lo}, {hi}]" + (" or NaN" if spec.allow_nan else ""))
        if spec.choices is not None:
            facts.append("one of " + ", ".join(spec.choices))
        lines.append(f"  {spec.name} ({'; '.join(facts)})")
        lines += textwrap.wrap(spec.description, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)
