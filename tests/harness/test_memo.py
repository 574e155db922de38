"""harness.core.memo: a result is reused only for inputs of the same content, and every caller gets its own copy."""

from __future__ import annotations

from typing import Any

from harness.core.memo import content_memo


def test_the_same_content_is_computed_once_and_a_change_is_computed_again() -> None:
    calls: list[Any] = []

    @content_memo(size=2)
    def rows(children: list[dict[str, Any]], split: dict[str, Any] | None) -> list[dict[str, Any]]:
        calls.append(children)
        return [{"id": c["id"], "n": len(children)} for c in children]

    first = rows([{"id": "a", "p": 0.5}], {"eval_groups": [[0, 3]]})
    again = rows([{"id": "a", "p": 0.5}], {"eval_groups": [[0, 3]]})  # equal content, other objects
    assert first == again == [{"id": "a", "n": 1}] and len(calls) == 1
    again[0]["n"] = 99  # a caller's copy is its own
    assert rows([{"id": "a", "p": 0.5}], {"eval_groups": [[0, 3]]})[0]["n"] == 1 and len(calls) == 1
    assert rows([{"id": "a", "p": 0.50001}], {"eval_groups": [[0, 3]]}) == first and len(calls) == 2
    rows([{"id": "a", "p": 0.5}], None)
    rows([{"id": "b"}], None)  # three entries since the first: it has left the memo (size 2)
    rows([{"id": "a", "p": 0.5}], {"eval_groups": [[0, 3]]})
    assert len(calls) == 5


def test_inputs_without_a_content_key_are_computed_every_time() -> None:
    calls = []

    @content_memo()
    def f(x: Any) -> int:
        calls.append(x)
        return 1

    mixed = {1: "a", "b": 2}  # keys that do not sort
    assert f(mixed) == f(mixed) == 1 and len(calls) == 2
