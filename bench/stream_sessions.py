"""Concurrent dashboard sessions without a browser: Streamlit's own websocket protocol, as its frontend speaks it.

A browser tab opens ``/_stcore/stream`` (subprotocol ``streamlit``) and sends one ``BackMsg`` asking for a script
run of a page with its query string; the server answers with ``ForwardMsg`` deltas until ``script_finished``.
Doing just that from Python measures what the server takes per session (script run, queries, figures,
serialisation, websocket) with no rendering on the same cores, which is how real users reach it: each with their
own browser on their own machine. The messages are Streamlit's published protobufs (``streamlit.proto``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

DONE = (ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY,)


def rerun_request(url: str) -> bytes:
    """The first message a browser sends for ``url`` (``http://host:port/page?query``)."""
    parts = urlsplit(url)
    message = BackMsg()
    rerun = message.rerun_script
    rerun.query_string = parts.query
    rerun.page_name = parts.path.strip("/")
    rerun.context_info.timezone = "UTC"
    rerun.context_info.locale = "en-US"
    rerun.context_info.url = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return message.SerializeToString()


async def load(url: str, timeout_s: float) -> tuple[float, int]:
    """Seconds from opening the websocket until the page's script run finished, and the bytes received."""
    parts = urlsplit(url)
    started = time.perf_counter()
    received = 0
    async with websockets.connect(f"ws://{parts.netloc}/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=None, open_timeout=timeout_s) as socket:
        await socket.send(rerun_request(url))
        async with asyncio.timeout(timeout_s):
            async for frame in socket:
                received += len(frame)
                message = ForwardMsg()
                message.ParseFromString(frame)
                if message.WhichOneof("type") == "script_finished" and message.script_finished in DONE:
                    return time.perf_counter() - started, received
    raise RuntimeError(f"{url}: the connection closed before the script finished")


async def _round(url: str, sessions: int, timeout_s: float) -> list[tuple[float, int]]:
    return list(await asyncio.gather(*(load(url, timeout_s) for _ in range(sessions))))


def concurrent_loads(url: str, sessions: int, rounds: int, timeout_s: float = 120) -> list[tuple[float, int]]:
    """``sessions`` sessions open ``url`` at once, ``rounds`` times; (seconds, bytes) of every load."""
    found: list[tuple[float, int]] = []
    # A thread of its own: the caller may be inside Playwright's event loop, where asyncio.run is refused.
    with ThreadPoolExecutor(1) as thread:
        for _ in range(rounds):
            found += thread.submit(asyncio.run, _round(url, sessions, timeout_s)).result()
    return found
