"""A loopback TCP proxy for tests: forwards to a Redis port and can reset every connection through it at once."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Optional

from angora_rq.processes.redis_server import free_port


class ResettingProxy:
    """`127.0.0.1:<port>` -> `127.0.0.1:<target>`, run by an asyncio loop in a daemon thread.

    `reset()` aborts every open connection with an RST on both sides (SO_LINGER 0), the way a dropped NAT entry or
    a restarted load balancer looks to the client: a command in flight may or may not have reached Redis, and its
    reply is lost either way. An idle moment is the likely one for a reset at a random time, so `reset_on(marker)`
    aims: the next time a client sends bytes containing `marker` (b"EXEC": a transaction), its connection is
    reset, either before the bytes reach Redis (`deliver=False`) or just after (`deliver=True`: applied, reply lost).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.resets = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._aim: Optional[tuple[bytes, bool]] = None
        self.down = False  # set_down(True): every connection reset, new ones refused (an outage)
        self._muted: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()  # replies dropped
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.base_events.Server] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tcp-proxy", daemon=True)

    @property
    def url(self) -> str:
        """Redis URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "ResettingProxy":
        """Listen; return once connections are accepted."""
        self._thread.start()
        self._ready.wait(10)
        return self

    def reset(self) -> int:
        """Abort every connection open right now; return how many."""
        done = asyncio.run_coroutine_threadsafe(self._reset(), self._loop)
        n = done.result(10)
        self.resets += 1
        return n

    def set_down(self, down: bool) -> None:
        """Cut Redis off (reset what is open, refuse what comes) or let clients through again."""
        self.down = down
        if down:
            self.reset()

    def reset_on(self, marker: bytes, deliver: bool) -> None:
        """Reset the connection of the next client write that contains `marker` (see the class docstring)."""
        self._aim = (marker, deliver)

    def close(self) -> None:
        """Stop listening, abort every connection and end the thread."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if self.down:
            _abort(c_writer)
            return
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _abort(c_writer)
            return
        pair = (c_writer, u_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._requests(c_reader, u_writer, pair), self._replies(u_reader, c_writer, pair))
        finally:
            self._pairs.discard(pair)
            self._muted.discard(pair)
            _abort(c_writer)
            _abort(u_writer)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        """Client -> Redis, with the aimed reset."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                aim = self._aim
                hit = aim is not None and aim[0] in data
                if hit:
                    self._aim = None
                    self.resets += 1
                if not hit or aim[1]:  # type: ignore[index]
                    writer.write(data)
                    await writer.drain()
                if hit:
                    if aim[1]:  # type: ignore[index]
                        self._muted.add(pair)
                        await asyncio.sleep(0.01)  # Redis runs the command; its reply is dropped
                    _abort(pair[0])
                    _abort(pair[1])
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            _abort(writer)

    async def _replies(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        """Redis -> client, except for a connection about to be reset."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if pair not in self._muted:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            _abort(writer)

    async def _reset(self) -> int:
        pairs = list(self._pairs)
        for c_writer, u_writer in pairs:
            _abort(c_writer)
            _abort(u_writer)
        return len(pairs)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: SO_LINGER with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
