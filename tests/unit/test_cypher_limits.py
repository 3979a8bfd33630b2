"""The read-only Cypher path's checks that need no server: parameters Bolt cannot carry, the plan
policy (operators and the procedure allow-list), the memory limits written into neo4j.conf, and
the JSON body the API sends without decoding rows. The same paths against a real server:
tests/integration/graphstore/test_readonly.py and tests/integration/faults/test_cypher_faults.py."""

from __future__ import annotations

import json
import math

import pytest

from api.ops.neo4j_local import Neo4jLocal, mebibytes, transaction_memory
from graphstore.readonly import (
    ALLOWED_PROCEDURES,
    MAX_PARAM_DEPTH,
    MAX_PARAMS,
    CypherError,
    _check_plan,
    _plan_facts,
    check_params,
    plain,
)
from graphstore.sandbox import RawResult


@pytest.mark.parametrize(("params", "where"), [
    ({"x": 2**63}, "$x = 9223372036854775808"),
    ({"x": -(2**63) - 1}, "$x = -9223372036854775809"),
    ({"seed": [1, {"deep": 2**100}]}, "$seed[1].deep"),
    ({"t": math.nan}, "$t is nan"),
    ({"t": [math.inf]}, "$t[0] is inf"),
    ({"m": {1: "a"}}, "$m has a key 1"),
])
def test_values_bolt_cannot_carry_name_the_parameter(params, where):
    with pytest.raises(CypherError) as info:
        check_params(params)
    assert info.value.kind == "parameter" and where in info.value.message


def test_parameter_limits():
    check_params({"lo": -(2**63), "hi": 2**63 - 1, "f": 1e308, "s": "x", "b": True, "n": None})
    deep: object = 1
    for _ in range(MAX_PARAM_DEPTH):
        deep = [deep]
    with pytest.raises(CypherError, match="nested more than"):
        check_params({"deep": deep})
    with pytest.raises(CypherError, match=f"at most {MAX_PARAMS}"):
        check_params({f"p{i}": i for i in range(MAX_PARAMS + 1)})
    with pytest.raises(CypherError, match="cannot take") as info:
        check_params({"o": object()})
    assert info.value.kind == "invalid"


def _plan(operator: str, details: str = "", *children: dict) -> dict:
    return {"operatorType": f"{operator}@neo4j", "args": {"Details": details},
            "children": list(children)}


def test_plan_facts_find_procedures_anywhere_in_the_plan():
    plan = _plan("ProduceResults", "x", _plan("Union", "", _plan(
        "ProcedureCall", "db.labels() :: (label :: STRING)"), _plan(
        "Apply", "", _plan("ProcedureCall", "db.stats.retrieve($autostring_0) :: (data :: MAP)"))))
    operators, procedures = _plan_facts(plan)
    assert {"ProduceResults", "Union", "ProcedureCall", "Apply"} == operators
    assert procedures == {"db.labels", "db.stats.retrieve"}


@pytest.mark.parametrize(("operators", "procedures", "text"), [
    ({"ProcedureCall"}, {"db.stats.retrieve"}, "db.stats.retrieve is not allowed"),
    ({"ProcedureCall"}, {"dbms.listConnections"}, "dbms.listConnections is not allowed"),
    ({"ShowTransactions"}, set(), "ShowTransactions"),
    ({"ShowDatabase"}, set(), "ShowDatabase"),
    ({"TerminateTransactions"}, set(), "TerminateTransactions"),
    ({"LoadCSV"}, set(), "LoadCSV"),
])
def test_plan_policy_denies_by_default(operators, procedures, text):
    with pytest.raises(CypherError) as info:
        _check_plan("r", operators, procedures)
    assert info.value.kind == "refused" and text in info.value.message


def test_plan_policy_allows_reads_and_schema_procedures():
    _check_plan("r", {"ProduceResults", "NodeByLabelScan", "ProcedureCall"}, set(ALLOWED_PROCEDURES))
    _check_plan("r", {"ShowIndexes"}, set())
    with pytest.raises(CypherError) as info:
        _check_plan("rw", {"Create"}, set())
    assert info.value.kind == "write"


def test_plain_makes_strict_json():
    assert plain([math.nan, math.inf, -math.inf, 1.5]) == ["NaN", "Infinity", "-Infinity", 1.5]
    json.dumps(plain({"a": [math.nan]}), allow_nan=False)


@pytest.mark.parametrize(("heap", "per_tx", "total"), [
    ("256m", 128, 179), ("512m", 256, 358), ("1g", 256, 716), ("4g", 1024, 2867),
])
def test_transaction_memory_is_sized_from_the_heap(heap, per_tx, total):
    assert transaction_memory(heap) == (per_tx, total)
    assert per_tx <= mebibytes(heap) // 2 and total < mebibytes(heap)


def test_neo4j_conf_bounds_query_memory(tmp_path):
    conf = Neo4jLocal(home=tmp_path, password="x", heap="512m").write_config() / "neo4j.conf"
    lines = set(conf.read_text().splitlines())
    assert {"db.memory.transaction.max=256m", "dbms.memory.transaction.total.max=358m",
            "db.transaction.timeout=120s"} <= lines
    assert not any(line.startswith("dbms.transaction.timeout") for line in lines)  # 4.x name


def test_raw_rows_become_the_api_body_unchanged():
    raw = RawResult(("a", "b"), (b'[1,"x"]', b'[2,{"k":[1]}]'), "bytes")
    body = json.loads(raw.json_body(row_cap=5, byte_cap=10))
    assert body == {"columns": ["a", "b"], "rows": [[1, "x"], [2, {"k": [1]}]], "truncated": True,
                    "truncated_by": "bytes", "row_cap": 5, "byte_cap": 10}
    assert raw.decoded().rows == ((1, "x"), (2, {"k": [1]}))
    empty = json.loads(RawResult(("a",), (), None).json_body())
    assert empty["rows"] == [] and empty["truncated"] is False
