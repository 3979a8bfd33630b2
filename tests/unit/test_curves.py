"""Faithfulness curves and MIB's CPR / CMD (issue 15): the integrals against their definition on
toy curves, the ladder's checks, and a measured curve on the shipped multitask model whose end
points are known (every edge kept is the full model: faithfulness 1)."""

from __future__ import annotations

import pytest

from discovery.curves import MIB_FRACTIONS, check_fractions, cmd, cpr, faithfulness_curve, kept_edges


def _trapezoid(xs, ys):
    """The definition, written out: sum of (x_{i+1} - x_i) * (y_i + y_{i+1}) / 2, x scaled to end at 1."""
    xs = [x / xs[-1] for x in xs]
    return sum((b - a) * (ya + yb) / 2 for a, b, ya, yb in zip(xs, xs[1:], ys, ys[1:], strict=False))


@pytest.mark.parametrize("curve", [
    lambda x: 1.0,  # a perfect circuit at every size
    lambda x: x,  # recovers in proportion to its size
    lambda x: min(1.0, 10 * x),  # saturates at 10% of the edges
    lambda x: 1.3 - x,  # overshoots (faithfulness above 1 counts against CMD)
])
def test_cpr_and_cmd_are_the_trapezoid_areas_of_their_definition(curve):
    ys = [curve(x) for x in MIB_FRACTIONS]
    assert cpr(MIB_FRACTIONS, ys) == pytest.approx(_trapezoid(MIB_FRACTIONS, ys))
    assert cmd(MIB_FRACTIONS, ys) == pytest.approx(_trapezoid(MIB_FRACTIONS, [abs(1 - y) for y in ys]))


def test_known_values():
    ones = [1.0] * len(MIB_FRACTIONS)
    assert cpr(MIB_FRACTIONS, ones) == pytest.approx(0.999) and cmd(MIB_FRACTIONS, ones) == 0.0
    # the trapezoid rule is exact for a linear curve: the integral of x from 0.001 to 1
    assert cpr(MIB_FRACTIONS, list(MIB_FRACTIONS)) == pytest.approx((1 - 0.001 ** 2) / 2)
    assert cpr([0.5, 1.0], [0.0, 1.0]) == pytest.approx(0.25)  # x scaled so the last point is 1
    assert cpr([0.25, 0.5], [0.0, 1.0]) == pytest.approx(0.25)


def test_bad_ladders_name_the_point():
    with pytest.raises(ValueError, match=r"fractions\[1\] = 0.1: must be larger"):
        check_fractions([0.2, 0.1])
    with pytest.raises(ValueError, match=r"fractions\[0\] = 0.0: each must be in \(0, 1\]"):
        check_fractions([0.0, 1.0])
    with pytest.raises(ValueError, match="at least two points"):
        check_fractions([1.0])
    with pytest.raises(ValueError, match="values: 2 for 3 fractions"):
        cpr([0.1, 0.5, 1.0], [0.2, 0.3])
    assert kept_edges(1000, 0.001) == 1 and kept_edges(10, 0.001) == 1 and kept_edges(1000, 1.0) == 1000


@pytest.mark.slow
def test_a_measured_curve_of_eap_scores_rises_to_the_full_model():
    import torch

    from discovery.discover import DiscoveryRequest, build_problem, discover
    from discovery.models import load_model
    from discovery.tasks import get_task

    torch.set_num_threads(1)
    model = load_model("multitask")
    scores = discover(DiscoveryRequest(model="multitask", task="ioi", method="eap", top_n=20, n_prompts=20),
                      model=model).edge_scores
    problem = build_problem(model, get_task("ioi").generate(20, seed=0), metric="logit_diff", ablation="corrupt")
    n = int(problem.graph.edge_valid().sum())
    assert len(scores) == n  # EAP scores every edge
    curve = faithfulness_curve(problem, scores)  # MIB's ten points
    f = [p.faithfulness for p in curve.points]
    assert [p.n_edges for p in curve.points] == [kept_edges(n, x) for x in MIB_FRACTIONS]
    assert f[-1] == pytest.approx(1.0, abs=1e-5)  # every edge: the full model
    assert curve.full == pytest.approx(curve.points[-1].metric, abs=1e-4)
    # measured here: 0.27 at 1% of the edges, 0.93 at 20%: EAP's top edges carry the task
    assert 0.1 < f[3] < f[7] and f[7] > 0.6
    assert curve.cpr == pytest.approx(cpr(MIB_FRACTIONS, f)) and curve.cmd == pytest.approx(cmd(MIB_FRACTIONS, f))
    assert curve.cpr > 0.7 and curve.cmd < 0.3
