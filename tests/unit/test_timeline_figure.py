"""The timeline PNG (api/cli/timeline_figure.py) on a hand-built ``GET /v1/timelines/{id}`` dict:
it opens as an image of a sane size that is not blank, a change of one band cell changes the
pixels, data without induction or pairs still renders, and bad input is a ValueError."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from api.cli.timeline_figure import best_heads, component_order, membership, render_timeline

STEPS = (0, 10, 100, 1000)
#: (task, step) -> components besides embed and logits
MEMBERS = {("induction", 0): ("a0.h1",), ("induction", 10): ("a0.h1", "a1.h0"),
           ("induction", 100): ("a0.h0", "a1.h0"), ("induction", 1000): ("a0.h0", "a1.h0", "m1"),
           ("ioi", 0): ("a0.h2",), ("ioi", 10): ("a0.h2",), ("ioi", 100): ("a0.h1", "a0.h2"),
           ("ioi", 1000): ("a0.h1", "a0.h2")}


def timeline_dict(steps: tuple[int, ...] = STEPS) -> dict:
    """Two tasks x ``steps``: rows, induction diagnostics per step, one pair."""
    rows = [{"step": s, "task": t, "train_loss": 4.0 / (1 + s) ** 0.3, "accuracy": None, "metric": None,
             "metric_mean": None, "n_edges": 3 * len(MEMBERS[t, s]) + i, "n_nodes": len(MEMBERS[t, s]) + 2,
             "faithfulness_task": None, "faithfulness_search": None, "jaccard_edges": 0.5,
             "jaccard_nodes": 0.5, "nodes": sorted({"embed", "logits", *MEMBERS[t, s]}),
             "circuit_id": f"c-{t}-{s}"}
            for i, s in enumerate(steps) for t in ("induction", "ioi")]
    induction = [{"step": s, "heads": {"a0.h1": {"previous_token": 0.2 + 0.15 * i, "induction": 0.1},
                                        "a1.h0": {"previous_token": 0.1, "induction": 0.05 + 0.2 * i}},
                  "in_context_loss": -0.3 * i, "early_loss": 3.0, "late_loss": 3.0 - 0.3 * i}
                 for i, s in enumerate(steps)]
    overlap = [[s, round(len(set(MEMBERS["induction", s]) & set(MEMBERS["ioi", s]))
                         / len(set(MEMBERS["induction", s]) | set(MEMBERS["ioi", s])), 4)] for s in steps]
    return {"id": "tl-test", "version": 1, "run_dir": "/runs/induction-2l-seed0", "tasks": ["induction", "ioi"],
            "method": "acdc", "threshold": 0.01, "top_n": None, "n_prompts": 20, "seed": 0, "level": 0.8,
            "rows": rows, "stabilisation": {"induction": 100, "ioi": None}, "induction": induction,
            "in_context_change_point": 10,
            "pairs": [{"first": "induction", "second": "ioi", "overlap": overlap,
                       "first_to_second": {"a0.h1": {"first_at": 0, "moved_at": 100}}, "second_to_first": {}}]}


def _pixels(path: Path) -> np.ndarray:
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def test_renders_a_png_that_is_not_blank(tmp_path):
    out = render_timeline(timeline_dict(), tmp_path / "figs" / "t.png")
    assert out == tmp_path / "figs" / "t.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = _pixels(out)
    height, width = image.shape[:2]
    assert 1000 <= width <= 2000 and 500 <= height <= 2500
    assert image[..., :3].std() > 0.05  # drawn: a blank canvas has variance 0
    assert (image[..., :3].mean(axis=2) < 0.5).mean() > 0.005  # and carries dark ink (text, lines)


def test_a_membership_change_changes_the_image(tmp_path):
    data = timeline_dict()
    changed = copy.deepcopy(data)
    row = next(r for r in changed["rows"] if r["task"] == "induction" and r["step"] == 10)
    row["nodes"] = [n for n in row["nodes"] if n != "a1.h0"]  # one band cell emptied, nothing else
    a = _pixels(render_timeline(data, tmp_path / "a.png"))
    b = _pixels(render_timeline(changed, tmp_path / "b.png"))
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 0.2
    # the other task's band is the same in both: its figures are identical pixel for pixel
    same = [render_timeline(d, tmp_path / f"ioi{i}.png", task="ioi") for i, d in enumerate((data, changed))]
    assert np.array_equal(_pixels(same[0]), _pixels(same[1]))


def test_renders_without_induction_or_pairs(tmp_path):
    data = timeline_dict()
    data.update(induction=[], in_context_change_point=None, pairs=[])
    with_all = _pixels(render_timeline(timeline_dict(), tmp_path / "all.png"))
    bare = _pixels(render_timeline(data, tmp_path / "bare.png", task="ioi"))
    assert bare[..., :3].std() > 0.05
    assert bare.shape[0] < with_all.shape[0]  # no overlap panel: a shorter figure
    one_step = timeline_dict(steps=(0,))
    one_step["pairs"][0]["overlap"] = one_step["pairs"][0]["overlap"][:1]
    assert _pixels(render_timeline(one_step, tmp_path / "one.png"))[..., :3].std() > 0.05


def test_bad_input_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        render_timeline({**timeline_dict(), "rows": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"task 'sentiment' is not in this timeline; its tasks are induction, ioi"):
        render_timeline(timeline_dict(), tmp_path / "x.png", task="sentiment")
    assert not (tmp_path / "x.png").exists()


def test_helpers():
    data = timeline_dict()
    assert membership(data["rows"], "induction")[10] == {"a0.h1", "a1.h0"}  # embed and logits left out
    best, heads = best_heads(data["induction"], "induction")
    assert best == pytest.approx([0.1, 0.25, 0.45, 0.65]) and heads == ["a1.h0"]
    assert sorted(["m1", "a1.h0", "a0.h10", "a0.h2", "x", "a0.kv0"], key=component_order) == \
        ["a0.h2", "a0.h10", "a0.kv0", "a1.h0", "m1", "x"]  # m1: layer 1
