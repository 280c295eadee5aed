"""Walking a parsed YAML (or JSON) tree, for the deployment files' tests."""

from collections.abc import Iterator


def strings(node: object) -> Iterator[str]:
    """Every string value in the tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
