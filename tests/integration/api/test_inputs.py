"""Out-of-range input gets a 4xx naming the field, never a 500: huge offsets, non-finite numbers,
over-long names and ids, and a 422 never echoes a huge input back whole."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/circuits?offset=99999999999999999999999", "offset"),
    ("/v1/circuits?offset=-1", "offset"),
    ("/v1/circuits?min_faithfulness=NaN", "min_faithfulness"),
    ("/v1/circuits?max_faithfulness=-Infinity", "max_faithfulness"),
    ("/v1/circuits?model=" + "m" * 500, "model"),
    ("/v1/circuits/" + "c" * 500, "circuit_id"),
    ("/v1/models/" + "m" * 500 + "/overlap", "model"),
    ("/v1/compare?ids=" + ",".join(["x" * 60] * 30), "ids"),
])
def test_out_of_range_reads_are_refused_with_the_field(reader, path, field):
    response = reader.get(path)
    assert response.status_code == 422, response.text
    assert field in [str(part) for e in response.json()["detail"] for part in e["loc"]]


@pytest.mark.parametrize("threshold", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_thresholds_are_refused(writer, threshold):
    body = '{"model": "multitask", "task": "ioi", "threshold": ' + threshold + '}'
    response = writer.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert ["body", "threshold"] in [e["loc"] for e in response.json()["detail"]]


def test_a_refused_input_is_not_echoed_whole(writer):
    response = writer.post("/v1/jobs", json={"model": "m" * 3000, "task": "ioi"})
    assert response.status_code == 422
    assert len(response.content) < 2000
    assert "at most 200 characters" in response.text
