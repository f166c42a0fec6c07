"""Cancelling an e-mail send in flight stops it: the agent must be able to shut down."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from coffee_telemetry.agent.notify.config import EmailConfig
from coffee_telemetry.agent.notify.email import EmailChannel
from tests.agent.notify.test_email import message


async def test_a_send_waiting_on_a_silent_server_is_cancelled() -> None:
    at_data = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []
    release = asyncio.Event()

    async def silent_after_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        # A relay that takes the message and then never answers it.
        writer.write(b"220 relay ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250 relay\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                writer.write(b"250 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
            elif line == b".\r\n":
                at_data.set()
                await release.wait()
                return
            await writer.drain()

    server = await asyncio.start_server(silent_after_data, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = EmailConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "sender": "alertas@coop.example",
            "timeout_s": 60,
        }
    )
    try:
        task = asyncio.create_task(EmailChannel(cfg).send(message()))
        await asyncio.wait_for(at_data.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    finally:
        release.set()
        server.close()
        for writer in writers:  # the relay's side of the connection, left hanging
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        with contextlib.suppress(Exception):
            await server.wait_closed()
