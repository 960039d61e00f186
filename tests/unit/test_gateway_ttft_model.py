"""The TTFT a pool would give a request now, learned from the gateway's own answers per load level: the
knee where an engine's queueing starts, a curve that never falls with load, and the wait already seen."""

from __future__ import annotations

import pytest

from headway.gateway.endpoints import Endpoint
from headway.gateway.pools import TtftModel


def endpoint(in_flight: int, waiting_since: list[float] = ()) -> Endpoint:
    e = Endpoint("http://127.0.0.1:9000")
    e.scraped_at, e.in_flight = 1e12, in_flight
    e.unanswered = {i: t for i, t in enumerate(waiting_since)}
    return e


def test_it_knows_nothing_before_an_answer() -> None:
    assert TtftModel().predict([endpoint(0)], now=1e12, stale_after_s=2) is None


def test_it_learns_the_knee_and_extends_the_last_slope() -> None:
    m = TtftModel(smoothing=1.0)
    for load, ttft in ((0, 0.1), (1, 0.1), (2, 0.1), (3, 0.1), (4, 0.35), (5, 0.6)):
        m.observe(ttft, load)
    assert m.at(2) == pytest.approx(0.1)
    assert m.at(4) == pytest.approx(0.35)
    assert m.at(7) == pytest.approx(1.1)  # 0.6 + 0.25 per request past the highest level seen


def test_the_curve_never_falls_with_load() -> None:
    m = TtftModel(smoothing=1.0)
    m.observe(0.5, 2)
    m.observe(0.2, 6)  # a lucky answer at a higher load
    assert m.at(6) == pytest.approx(0.5)
    assert m.at(0) == pytest.approx(0.5)  # below the lowest level seen: its value


def test_the_prediction_takes_the_least_loaded_endpoint_and_the_wait_already_seen() -> None:
    m = TtftModel(smoothing=1.0)
    for load, ttft in ((0, 0.1), (4, 0.9)):
        m.observe(ttft, load)
    now = 1e12
    assert m.predict([endpoint(4), endpoint(0)], now, 2) == pytest.approx(0.1)
    stuck = endpoint(0, waiting_since=[now - 3.0, now - 1.0])
    assert m.predict([stuck], now, 2) == pytest.approx(3.0)  # the oldest unanswered has waited 3 s
