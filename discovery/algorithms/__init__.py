"""Discovery algorithms, one module each, all with the signature of
:class:`discovery.algorithms.base.Algorithm`, registered by name in :data:`ALGORITHMS`."""

from __future__ import annotations

from discovery.algorithms import acdc, acdc_reference, eap, eap_ig, hybrid
from discovery.algorithms.base import Algorithm, AlgorithmConfig, AlgorithmResult
from discovery.catalog import METHODS

ALGORITHMS: dict[str, Algorithm] = {
    "acdc": acdc.run,
    "acdc-reference": acdc_reference.run,
    "eap": eap.run,
    "eap-ig": eap_ig.run,
    "eap-ig+acdc": hybrid.run,
}
assert tuple(ALGORITHMS) == METHODS, "discovery.catalog.METHODS must name every algorithm"


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(ALGORITHMS)}") from None


__all__ = ["ALGORITHMS", "AlgorithmConfig", "AlgorithmResult", "get_algorithm"]
