"""The experiment report (api.cli.report) from a hand-built Experiment, and ``circuits compete``'s
argument checks, which run before any request (no server: an unreachable --api proves it)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli import report
from discovery.experiments.result import (
    AblationCell,
    ComponentRole,
    ComponentSets,
    ConflictSummary,
    ControlStats,
    CrossFaithfulness,
    DosePoint,
    DoseResponse,
    Experiment,
    ExperimentProvenance,
    PairSummary,
    Verdict,
    set_names,
)

ROOT = Path(__file__).resolve().parents[2]
A, B = "ioi", "induction"
PAIR = f"{A}|{B}"
NOWHERE = "http://127.0.0.1:9"  # discard port: any request would fail with "cannot reach"


def verdict(state: str = "supported", p: float | None = 0.0476, detail: str = "") -> Verdict:
    return Verdict(claim="ablating the set hurts the task more than random sets", state=state,
                   statistic="empirical p vs 20 random sets", value=1.234, p_value=p,
                   control="20 random sets of the same size and kind", detail=detail)


def control(pool: str = "outside circuits", distinct: int = 20) -> ControlStats:
    return ControlStats(n=20, distinct=distinct, pool=pool, pool_size=9, mean=0.0421, std=0.0137,
                        z=7.77, p_value=0.0476)


def cells() -> tuple[AblationCell, ...]:
    out = []
    faith = {A: 0.123, B: 0.912, f"{A}&{B}": 0.456, f"{A}-{B}": 0.789, f"{B}-{A}": None}
    for name in set_names(A, B):
        for task in (A, B):
            empty = name == f"{B}-{A}"  # an empty set: no control possible, inconclusive
            out.append(AblationCell(
                pair=PAIR, set_name=name, kind="nodes", task=task, size=0 if empty else 3,
                metric=1.5, full=2.5, empty=0.1, faithfulness=faith[name], top1=0.66, effect=1.0,
                control=None if empty else control("outside set" if name == A else "outside circuits",
                                                   distinct=4 if name == B else 20),
                verdict=verdict("inconclusive", None, "the set is empty") if empty else verdict()))
    return tuple(out)


def experiment() -> Experiment:
    role = ComponentRole(
        pair=PAIR, name="a1.h0", kind="attention", membership=f"{A}&{B}", role="competitive",
        favours=B, effects={A: 0.321, B: 0.654}, effect_controls={A: control(), B: None},
        dla_mean=-0.987, dla_t=-4.56, dla_p=0.0021, conflict_shift=0.111, conflict_control=None,
        verdict=verdict())
    cooperative = ComponentRole(
        pair=PAIR, name="m0", kind="mlp", membership=f"{A}&{B}", role="cooperative", favours=None,
        effects={A: 0.5, B: 0.4}, effect_controls={A: control(), B: control()}, dla_mean=0.01,
        dla_t=None, dla_p=None, conflict_shift=0.0, conflict_control=control(), verdict=verdict())
    points = tuple(DosePoint(alpha=a, metrics={A: 1.0 + a, B: 2.0 - a / 4}, win_rate=min(1.0, 0.2 * a),
                             logit_diff=a - 1) for a in (0.0, 0.5, 1.0, 2.0, 4.0))
    return Experiment(
        id="exp-1234", model="multitask", tasks=(A, B), circuits={A: "c-ioi-0001", B: "c-ind-0002"},
        ablation="corrupt", seed=0, n_controls=20, alphas=(0.0, 0.5, 1.0, 2.0, 4.0), n_prompts=50,
        sets=(ComponentSets(pair=PAIR, nodes={A: ("a1.h0", "m0", "a0.h1"), B: ("a1.h0", "m0", "a1.h1"),
                                              f"{A}&{B}": ("a1.h0", "m0"), f"{A}-{B}": ("a0.h1",),
                                              f"{B}-{A}": ("a1.h1",)},
                            edges={A: ("embed->a0.h1<q>",), B: (), f"{A}&{B}": (), f"{A}-{B}": (),
                                   f"{B}-{A}": ()}, node_jaccard=0.5, edge_jaccard=0.0),),
        ablations=cells(),
        cross=(CrossFaithfulness(circuit_task=A, eval_task=B, metric="logit_diff", value=0.777,
                                 full=2.5, empty=0.1, faithfulness=0.283, top1=0.41),),
        conflicts=(ConflictSummary(pair=PAIR, source="builtin:ioi-induction", n_prompts=50,
                                   win_rate={A: 0.62, B: 0.38}, top1_rate={A: 0.55, B: 0.3, "other": 0.15},
                                   logit_diff_mean=0.876, logit_diff_std=0.345, ablation="mean"),),
        components=(role, cooperative),
        dose=(DoseResponse(pair=PAIR, scaled_task=A, components=("a0.h1",), points=points,
                           verdict=Verdict("amplifying ioi's unique components raises its win rate",
                                           "inconclusive", "Spearman rho (alpha, win rate)", 0.4,
                                           p_value=0.31, detail="too few alphas for a trend")),),
        pairs=(PairSummary(pair=PAIR, circuits=("c-ioi-0001", "c-ind-0002"),
                           competes=verdict("supported", 0.0123), cooperates=verdict("not supported", 0.6),
                           competition=0.2468, cooperation=0.1357),),
        provenance=ExperimentProvenance(device="cpu", timings={"controls": 1.5}, forward_passes=4321,
                                        created_at="2026-01-01T00:00:00Z"),
    )


def test_headline_tables_carry_every_number():
    text = report.headline(experiment())
    for number in ("0.123", "0.912", "0.456", "0.789", "0.042 ± 0.014", "7.770", "0.048",  # matrix
                   "0.777", "0.283",  # cross-task faithfulness
                   "0.620", "0.380", "0.876", "0.345",  # conflicts
                   "-0.987", "-4.560", "0.002", "0.321", "0.654",  # components
                   "0.247", "0.136", "0.012"):  # pair summary
        assert number in text, number
    assert "outside set" in text and "competitive" in text and "cooperative" in text
    assert "inconclusive" in text and "the set is empty" in text
    dose = next(s for s in report.sections(experiment()) if "dose-response" in s.title)
    assert [r[0] for r in dose.rows] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert dose.rows[-1] == (4.0, 5.0, 1.0, 0.8, 3.0)  # alpha, ioi metric, induction metric, win, diff
    assert any("Spearman rho" in n and "inconclusive" in n for n in dose.notes)
    matrix = next(s for s in report.sections(experiment()) if "ablation matrix" in s.title)
    empty = [r for r in matrix.rows if r[0] == f"{B}-{A}"]
    assert len(empty) == 2 and all(r[7] is None and r[-1] == "inconclusive" for r in empty)


def test_markdown_has_every_section_and_the_caveats():
    md = report.markdown(experiment(), image="experiment-exp-1234.png")
    for title in ("# Competition experiment", "## pair summary", "component sets", "ablation matrix",
                  "components and their roles", "dose-response", "cross-task faithfulness",
                  "conflict prompts", "## What this shows", "## What it does not show", "## Provenance"):
        assert title in md, title
    assert "](experiment-exp-1234.png)" in md and "| 0.123 |" in md
    shows, nots = report.findings(experiment())
    assert any("supported" in s and "0.0123" in s for s in shows)
    assert any("1 competitive, 1 cooperative" in s for s in shows)
    assert any(f"no control possible for {B}-{A}" in n for n in nots)
    assert any("drew from outside the set because few components lie outside the circuits" in n
               for n in nots)
    assert any("only 4 distinct random sets" in n for n in nots)
    assert any(n.startswith("Inconclusive") and "too few alphas" in n for n in nots)
    empty_set = [n for n in nots if n.startswith("Inconclusive") and "the set is empty" in n]
    assert len(empty_set) == 1 and f"{B}-{A} on {A}" in empty_set[0] and f"{B}-{A} on {B}" in empty_set[0]


def test_png_and_files_round_trip(tmp_path):
    exp = report.as_experiment(json.loads(experiment().to_json()))  # the CLI's path: API JSON in
    assert exp == experiment()
    written = report.write_report(exp, tmp_path / "out")
    png = written["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert 600 <= width <= 3000 and 300 <= height <= 3000, (width, height)
    assert Experiment.from_json(written["json"].read_text()) == exp
    assert written["md"].name == "experiment-exp-1234.md" and "## What this shows" in written["md"].read_text()


def test_a_bare_experiment_still_renders(tmp_path):
    bare = Experiment(id="bare", model="m", tasks=(A, B), circuits={}, ablation="zero", seed=1,
                      n_controls=20, alphas=(1.0,), n_prompts=5)
    assert "experiment bare" in report.headline(bare)
    assert "## What it does not show" in report.markdown(bare)
    assert report.draw(bare, tmp_path / "bare.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not an experiment JSON"):
        report.as_experiment({"id": "x"})


def test_three_tasks_draw_a_row_per_pair(tmp_path):
    """Pairs without data get a placeholder panel; the figure grows a row per pair."""
    from dataclasses import replace

    exp = replace(experiment(), tasks=(A, B, "successor"))
    assert len(exp.pair_keys) == 3
    png = report.draw(exp, tmp_path / "three.png").read_bytes()
    two = report.draw(experiment(), tmp_path / "two.png").read_bytes()
    assert struct.unpack(">I", png[20:24])[0] > 2 * struct.unpack(">I", two[20:24])[0]
    assert "successor" not in report.headline(exp).split("pair summary")[1]  # no tables invented


def test_experiments_show_without_an_api_is_one_clear_line():
    done = subprocess.run([sys.executable, "-m", "api.cli", "experiments", "show", "nope", "--api", NOWHERE],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "cannot reach the API at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def compete(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", "compete", "--model", "multitask",
                           "--api", NOWHERE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def conflict_file(tmp_path: Path, content: object) -> str:
    path = tmp_path / "conflicts.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


GOOD = [{"prompt": "Mary and John went to the store . John gave a drink to", "answers": {A: "Mary", B: "John"}}]


@pytest.mark.parametrize(("args", "message"), [
    (["--tasks", "ioi"], "--tasks: give two or more tasks"),
    (["--tasks", "ioi,ioi"], "--tasks: each task once"),
    (["--tasks", "ioi,induction", "--alphas", ",".join(str(i) for i in range(13))],
     "--alphas: at most 12 values (got 13)"),
    (["--tasks", "ioi,induction", "--alphas", "0,x"], "--alphas: comma-separated numbers"),
    (["--tasks", "ioi,induction", "--circuits", "only-one"], "--circuits: one stored circuit id per task"),
    (["--tasks", "ioi,induction", "--n-controls", "5"], "--n-controls: at least 20"),
    (["--tasks", "ioi,induction", "--conflicts", "/no/such.json"], "no such file"),
    # checked as the API checks the spec (workers.experimentspec), the flag named
    (["--tasks", "ioi,nope"], "--tasks: tasks[1]: unknown task 'nope'"),
    (["--tasks", "ioi,induction", "--alphas", "0,2,4"], "--alphas: the alphas must include 1"),
    (["--tasks", "ioi,induction", "--n-prompts", "1"], "--n-prompts: "),
])
def test_compete_refuses_bad_arguments_before_any_request(args, message):
    done = compete(*args)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "cannot reach" not in done.stderr


@pytest.mark.parametrize(("content", "tasks", "message"), [
    ("{not json", "ioi,induction", "not JSON (line 1"),
    (GOOD, "ioi,induction,successor", "a plain list fits a two-task experiment"),
    ({"ioi|greater_than": GOOD}, "ioi,induction", "key 'ioi|greater_than' is not a pair of --tasks"),
    ([], "ioi,induction", "conflicts: empty"),
    ([{"prompt": GOOD[0]["prompt"], "answers": {A: "Mary"}}], "ioi,induction", "conflicts[0].answers"),
    ([{**GOOD[0], "prompt": "Mary xyzzy John"}], "ioi,induction", "conflicts[0].prompt"),
    ([{**GOOD[0], "answers": {A: "Mary", B: "Mary"}}], "ioi,induction", "conflicts[0].answers"),
])
def test_compete_refuses_a_bad_conflicts_file(tmp_path, content, tasks, message):
    done = compete("--tasks", tasks, "--conflicts", conflict_file(tmp_path, content))
    assert done.returncode != 0
    assert message in done.stderr and "--conflicts" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "cannot reach" not in done.stderr


def test_a_good_conflicts_file_passes_to_the_request(tmp_path):
    """Valid arguments get as far as the API: here an unreachable one, one clear line."""
    done = compete("--tasks", "ioi,induction", "--conflicts",
                   conflict_file(tmp_path, {"induction|ioi": GOOD}))
    assert done.returncode != 0 and "cannot reach the API at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
