"""Reading a Prometheus registry back the way a scraper does, for the tests
of the Prometheus module."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Sample values by (name, labels)."""


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the registry, parsed back from the text format."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples
