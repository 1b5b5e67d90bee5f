"""Placeholder entry point until the node issue lands: exits with a clear message."""

import sys


def main(argv=None) -> int:
    print("localizer_node: the ROS node is not implemented yet (see issue 7)", file=sys.stderr)
    return 1
