"""``event-collector top http://HOST:PORT/metrics``: read a service's
Prometheus endpoint (served by :mod:`event_collector.prometheus`) into
:class:`Samples`.

The page is fetched with :mod:`urllib` and parsed with prometheus_client's
own parser (the ``prometheus`` extra, imported only when a page is parsed).
"""

from __future__ import annotations

import base64
import http.client
import importlib
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

from ._cli_common import CannotRun

__all__ = [
    "HTTP_SCHEMES",
    "MAX_BYTES",
    "PREFIX",
    "Samples",
    "ScrapeError",
    "parse",
    "require_prometheus",
    "scrape",
]

HTTP_SCHEMES = ("http://", "https://")
"""How the URL of a Prometheus endpoint may start."""

PREFIX = "event_collector_"
"""The prefix of event-collector's metric names."""

MAX_BYTES = 32 * 1024 * 1024
"""The largest page read: a metrics page is a few kilobytes per queue."""

_ACCEPT = "text/plain;version=0.0.4"

_Labels = frozenset[tuple[str, str]]


def require_prometheus() -> None:
    """Raise :class:`CannotRun` unless prometheus_client is installed."""
    try:
        importlib.import_module("prometheus_client.parser")
    except ImportError:
        raise CannotRun(
            "event-collector top needs prometheus_client to read an http:// "
            "endpoint, which is not installed.\nInstall it with the prometheus "
            'extra: pip install -e ".[cli,prometheus]" (from a checkout)'
        ) from None


class ScrapeError(Exception):
    """The endpoint could not be read, or what it served is not the
    Prometheus text format with event-collector's queue metrics."""


class Samples:
    """Every sample of one scrape: ``{sample name: {labels: value}}``."""

    __slots__ = ("_by_name",)

    def __init__(self, by_name: dict[str, dict[_Labels, float]]) -> None:
        self._by_name = by_name

    def queues(self) -> list[str]:
        """Every ``queue`` label value of event-collector's samples, sorted."""
        found = {
            value
            for name, series in self._by_name.items()
            if name.startswith(PREFIX)
            for labels in series
            for key, value in labels
            if key == "queue"
        }
        return sorted(found)

    def select(self, name: str, **labels: str) -> Iterator[tuple[_Labels, float]]:
        """The series of sample ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        for key, value in self._by_name.get(name, {}).items():
            if wanted <= key:
                yield key, value

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the series :meth:`select` gives, or ``None`` if it
        gives none."""
        found = [value for _, value in self.select(name, **labels)]
        return math.fsum(found) if found else None

    def label_values(self, name: str, label: str, **labels: str) -> set[str]:
        """The values of ``label`` among the series :meth:`select` gives."""
        return {
            value
            for key, _ in self.select(name, **labels)
            for k, value in key
            if k == label
        }

    def increase(self, before: Samples, name: str, **labels: str) -> float:
        """How much the counter ``name`` rose since ``before``, summed over
        the series :meth:`select` gives. A series that is new counts from
        zero; one that fell was reset (the service restarted) and counts
        from zero again."""
        old = dict(before.select(name, **labels))
        total = 0.0
        for key, value in self.select(name, **labels):
            previous = old.get(key, 0.0)
            total += value - previous if value >= previous else value
        return total


def parse(text: str) -> Samples:
    """The samples of an exposition page in the Prometheus text format.

    :raises ScrapeError: ``text`` is not in that format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    by_name: dict[str, dict[_Labels, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series = by_name.setdefault(sample.name, {})
                series[frozenset(sample.labels.items())] = float(sample.value)
    except Exception as exc:  # the parser's errors have no common class
        raise ScrapeError(f"not in the Prometheus text format ({exc})") from None
    return Samples(by_name)


def _request(url: str) -> urllib.request.Request:
    """A GET of ``url``, its user and password (if any) sent as basic auth
    rather than in the URL, which urllib would refuse."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": _ACCEPT}
    if parts.username is not None:
        secret = f"{urllib.parse.unquote(parts.username)}:"
        secret += urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode(
            "ascii"
        )
        host = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return urllib.request.Request(url, headers=headers)


def scrape(url: str, *, timeout: float = 5.0) -> Samples:
    """Fetch and parse the metrics page at ``url`` (``http://`` or
    ``https://``).

    :param timeout: seconds to wait for the connection and for each read.
    :raises ScrapeError: the endpoint cannot be reached, answers with an
        error, serves something else than the Prometheus text format, or
        has no event-collector queue on it.
    """
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:
            body: bytes = response.read(MAX_BYTES + 1)
            content_type = response.headers.get_content_type()
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the error page's connection
        raise ScrapeError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ScrapeError(str(exc.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ScrapeError(str(exc) or type(exc).__name__) from None
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"the page is larger than {MAX_BYTES} bytes")
    if content_type != "text/plain":
        raise ScrapeError(
            f"it serves {content_type}, not the Prometheus text format "
            "(text/plain); is it the metrics endpoint?"
        )
    try:
        text = body.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise ScrapeError(f"the page cannot be decoded ({exc})") from None
    samples = parse(text)
    if not samples.queues():
        raise ScrapeError(
            "it serves Prometheus metrics, but no event-collector queue (no "
            f"{PREFIX}* series with a queue label); is the queue instrumented "
            "with event_collector.prometheus.instrument?"
        )
    return samples
