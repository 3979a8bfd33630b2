"""Competition experiments: do task circuits share components, and when one prompt excites two of
them, do they compete for the output? The result type is :mod:`discovery.experiments.result`
(torch-free); conflict prompts are :mod:`discovery.experiments.conflicts` (torch-free) and
:mod:`discovery.experiments.conflict_batch` (their tensors)."""
