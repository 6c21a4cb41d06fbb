"""The AgentInstruct graph on the embedded model, for real (four short calls)."""

from __future__ import annotations

import pytest

from synthgraph.graphs.agentinstruct.graph import AgentInstructContext, graph

pytestmark = pytest.mark.integration
SEED = {
    "id": "bisect-doc",
    "text": (
        "The bisect module keeps a list in sorted order without sorting it again after each "
        "insertion. bisect_left(a, x) returns the position where x should be inserted to keep "
        "a sorted; insort(a, x) inserts x at that position."
    ),
    "source": "bisect.txt",
}


def test_one_seed_becomes_a_judged_instruction_or_a_rejection_with_its_reason() -> None:
    context = AgentInstructContext(refine_rounds=0, dedup="none", max_tokens=160)
    out = graph.invoke({"seeds": [SEED], "skills": ["open_domain_qa"]}, context=context)
    assert out["instructions"] or out["rejects"], "the run must end in a record or a reason"
    for rejected in out["rejects"]:
        assert (
            rejected["id"]
            and rejected["stage"] in {"transform", "create", "judge"}
            and rejected["error"]
        )
    for record in out["instructions"]:
        assert record["seed_id"] == "bisect-doc" and record["skill"] == "open_domain_qa"
        assert record["transformation"] in {"key_facts", "encyclopedia_entry"}
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in record["messages"])
        assert 1 <= record["judge"]["score"] <= 5 and record["judge"]["correct"] is True
