"""Which namespaces' pools an operator serves (`--namespace`), applied by its handlers over one
cluster-wide watch."""

from __future__ import annotations

import pytest

from headway.operator.config import OperatorConfig


@pytest.mark.parametrize(
    ("patterns", "namespace", "served"),
    [
        ((), "anything", True),
        (("!demo-*",), "t-1234", True),
        (("!demo-*",), "demo-abc", False),
        (("team-*",), "team-a", True),
        (("team-*",), "other", False),
        (("team-*", "!team-secret"), "team-secret", False),
        (("team-*", "!team-secret"), "team-a", True),
        (("prod", "staging"), "staging", True),
        (("prod", "staging"), "prod-2", False),
    ],
)
def test_namespace_patterns_include_then_exclude(patterns: tuple[str, ...], namespace: str, served: bool) -> None:
    assert OperatorConfig(namespaces=patterns).serves(namespace) is served
