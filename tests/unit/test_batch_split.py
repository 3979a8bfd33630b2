"""Batches split to fit a memory budget (``max_batch_memory``): EAP-IG's ``steps * B`` rows run
in chunks whose gradients add up to the unsplit ones, fast ACDC runs fewer variants per pass with
the same decisions, and an out-of-memory chunk is halved and retried."""

from __future__ import annotations

import pytest
import torch

from discovery.algorithms import AlgorithmConfig, attribution, get_algorithm
from discovery.algorithms import acdc as acdc_module
from discovery.discover import DiscoveryRequest, build_problem, task_data
from discovery.memory import available_memory, batch_budget, bytes_per_row, halving, rows_that_fit
from discovery.models import load_model

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["multitask", "multitask-llama"])
def problem_of(request):
    model = load_model(request.param, device="cpu")
    data = task_data("ioi", model, 8, 0)
    return lambda metric="logit_diff": build_problem(model, data, metric=metric, ablation="corrupt")


def _count_rows(monkeypatch) -> list[int]:
    """Rows of every chunk that attribution runs (it still runs them)."""
    seen, inner = [], attribution._row_gradients

    def counted(problem, rows, prompts):
        seen.append(len(prompts))
        return inner(problem, rows, prompts)

    monkeypatch.setattr(attribution, "_row_gradients", counted)
    return seen


def test_input_gradients_in_chunks_equal_the_unsplit_pass(problem_of, monkeypatch):
    problem = problem_of()
    mix = torch.randn(5 * len(problem.batch), *problem.clean.shape[2:])  # 5 steps x 8 prompts
    whole = attribution.input_gradients(problem, mix, 5)  # the old signature still works
    seen = _count_rows(monkeypatch)
    split = attribution.input_gradients(problem, mix, 5, max_rows=7)
    assert seen == [7] * 5 + [5]  # 40 rows in 6 chunks
    assert split.shape == whole.shape == (problem.graph.n_inputs, *problem.clean.shape[1:])
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_tiny_budget_splits_eap_and_keeps_its_scores(problem_of, method, monkeypatch):
    default = get_algorithm(method)(problem_of(), AlgorithmConfig(threshold=0.05), None)
    problem = problem_of()
    row = bytes_per_row(problem, backward=True)
    seen = _count_rows(monkeypatch)
    tight = get_algorithm(method)(problem, AlgorithmConfig(threshold=0.05, max_batch_memory=3 * row), None)
    assert len(seen) >= 3 and max(seen) == 3  # 8 (EAP) or 40 (EAP-IG) rows, 3 at a time
    torch.testing.assert_close(tight.scores, default.scores, atol=1e-5, rtol=1e-4, equal_nan=True)
    assert torch.equal(tight.mask, default.mask)


def test_out_of_memory_halves_the_chunk_and_retries(problem_of, monkeypatch):
    problem = problem_of()
    mix = torch.randn(2 * len(problem.batch), *problem.clean.shape[2:])
    whole = attribution.input_gradients(problem, mix, 2)
    seen, inner = [], attribution._row_gradients

    def small_device(problem, rows, prompts):  # pretends more than 4 rows do not fit
        seen.append(len(prompts))
        if len(prompts) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return inner(problem, rows, prompts)

    monkeypatch.setattr(attribution, "_row_gradients", small_device)
    split = attribution.input_gradients(problem, mix, 2, max_rows=16)
    assert seen[:2] == [16, 8] and set(seen[2:]) == {4}
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


def test_out_of_memory_at_one_row_says_what_to_do():
    def never(rows):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError, match="one prompt row.*bfloat16"):
        halving(never, 8)


def test_tiny_budget_gives_acdc_shorter_chains_and_the_same_circuit(problem_of, monkeypatch):
    config = AlgorithmConfig(threshold=0.02)
    default = get_algorithm("acdc")(problem_of("kl"), config, None)
    problem = problem_of("kl")
    assert acdc_module.max_chain(problem, config) == acdc_module.MAX_CHAIN  # plenty of memory here
    variant = bytes_per_row(problem, backward=False) * len(problem.batch)
    tight = AlgorithmConfig(threshold=0.02, max_batch_memory=2 * variant)
    assert acdc_module.max_chain(problem, tight) == 2
    sizes, inner = [], problem.run_variants
    problem.run_variants = lambda receiver, columns: sizes.append(len(columns)) or inner(receiver, columns)
    result = get_algorithm("acdc")(problem, tight, None)
    assert sizes and max(sizes) == 2
    assert torch.equal(result.mask, default.mask)


def test_budget_defaults_to_half_the_available_memory():
    cpu = torch.device("cpu")
    free = available_memory(cpu)
    assert free > 0 and abs(batch_budget(None, cpu) - free / 2) < 0.05 * free  # memory moves
    assert batch_budget(12345, cpu) == 12345
    assert rows_that_fit(10, 100, 40) == 1 and rows_that_fit(10**9, 100, 40) == 40
    assert rows_that_fit(1000, 100, 40) == 10


def test_the_budget_travels_from_the_request_and_is_checked():
    request = DiscoveryRequest(model="multitask", task="ioi", max_batch_memory=2**30)
    assert request.config().max_batch_memory == 2**30
    assert DiscoveryRequest(model="multitask", task="ioi").config().max_batch_memory is None
    with pytest.raises(ValueError, match="max_batch_memory must be >= 1"):
        AlgorithmConfig(max_batch_memory=0)
