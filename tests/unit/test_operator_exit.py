"""The operator's exit: kopf's watch streams raising while asyncio closes them is one warning, not a
traceback; any other error at exit keeps asyncio's full report.

The fault is kopf's and appears only in a race at shutdown, so a stand-in generator named like kopf's
watcher (`infinite_watch`) raises the same error on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from headway.operator.cli import _quiet_watch_close


async def infinite_watch() -> AsyncIterator[int]:  # stand-in for kopf's, named the same
    try:
        while True:
            yield 1
    finally:
        raise RuntimeError("generator didn't stop after athrow()")


async def some_other_stream() -> AsyncIterator[int]:
    try:
        while True:
            yield 1
    finally:
        raise RuntimeError("a real bug")


def test_a_watch_stream_closing_at_exit_is_one_warning_and_other_errors_keep_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(_quiet_watch_close)
        streams = (infinite_watch(), some_other_stream())
        for s in streams:
            await anext(s)
        main.streams = streams  # type: ignore[attr-defined]  # left suspended, as kopf leaves its own

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    quiet = [r for r in caplog.records if r.name == "headway.operator"]
    assert len(quiet) == 1 and "watch stream" in quiet[0].getMessage() and quiet[0].exc_info is None
    loud = [r for r in caplog.records if r.name == "asyncio"]
    assert len(loud) == 1 and "a real bug" in repr(loud[0].exc_info)
