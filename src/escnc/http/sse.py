"""Server-Sent Events from the event bus, shared by RESTCONF's streams and the
dashboard: a consumer per client, filtered by NACM, bounded like a NETCONF subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.responses import StreamingResponse

from escnc.rpc.events import event_filter
from escnc.rpc.request import RequestSession

if TYPE_CHECKING:
    from escnc.events.filtering import BodyPredicate
    from escnc.events.log import StoredEvent
    from escnc.http.context import HttpContext

HEARTBEAT = 15.0
MAX_QUEUED = 1024

# One event as an SSE message (complete, ending with a blank line), or None to skip it.
Render = Callable[["StoredEvent"], "bytes | None"]


def data_lines(event: StoredEvent) -> bytes:
    """RESTCONF's form: one ``data:`` line per line of the ``<notification>``."""
    lines = event.notification.decode().splitlines() or [""]
    return ("".join(f"data: {line}\n" for line in lines) + "\n").encode()


def event_stream(ctx: HttpContext, user: str, stream: str, start_seq: int | None,
                 render: Render = data_lines,
                 content: BodyPredicate | None = None) -> StreamingResponse:
    """The SSE response of ``stream`` for ``user`` from ``start_seq`` (None: new events
    only). Events NACM does not let ``user`` read, or ``content`` rejects, are not delivered."""
    services = ctx.services
    bus = services.events
    session = RequestSession(services, ctx.session_ids.next(), user)
    accept = event_filter(services, session, content)
    loop = asyncio.get_running_loop()
    # bounded by the consumer: it waits while MAX_QUEUED events are queued for a slow
    # client, and ends the stream (b"") once the client falls subscriber_max_lag behind
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def deliver(event: StoredEvent) -> None:
        message = render(event)
        if message:
            loop.call_soon_threadsafe(queue.put_nowait, message)

    def ended(_reason: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, b"")

    consumer = bus.consume(
        deliver, stream=stream, start_seq=start_seq, accept=accept,
        max_lag=services.settings.subscriber_max_lag, backlog=queue.qsize,
        max_backlog=MAX_QUEUED, on_end=ended, name=f"sse-{session.session_id}",
    )

    async def events() -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if not data:
                    return  # the consumer ended (too far behind, or closed)
                yield data
        finally:
            consumer.close()
            session.end()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
