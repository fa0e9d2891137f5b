"""A TCP proxy between one simulated host and Redis that can cut, stall or slow that host's traffic.

Run as its own process (`python tests/chaos_proxy.py TARGET_PORT`): it prints its port, then reads commands on
stdin, one per line, and answers `ok` once each is in force:

    pass            forward everything (the default)
    latency MS      hold every chunk MS milliseconds before forwarding it, each direction in order
    stall SECONDS   hold everything for SECONDS, then deliver it all (a Redis or network stall: nothing lost)
    blackhole       drop every byte both ways and forward nothing new; connections stay open (a partition)
    heal            forward again; connections that lost bytes are reset (RST), so clients reconnect cleanly
    reset           reset every connection now

`ChaosProxy` starts and drives one from a test.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Optional


class Proxy:
    """The proxy's state and its connection pumps (one asyncio loop)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.latency = 0.0
        self.stall_until = 0.0
        self.pairs: dict[tuple[asyncio.StreamWriter, asyncio.StreamWriter], bool] = {}  # -> lost bytes

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            abort(c_writer)
            return
        pair = (c_writer, u_writer)
        self.pairs[pair] = False
        try:
            await asyncio.gather(self.pump(c_reader, u_writer, pair), self.pump(u_reader, c_writer, pair))
        finally:
            self.pairs.pop(pair, None)
            abort(c_writer)
            abort(u_writer)

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                while self.stall_until > time.monotonic():
                    await asyncio.sleep(self.stall_until - time.monotonic())
                if self.mode == "blackhole":
                    if pair in self.pairs:
                        self.pairs[pair] = True
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            abort(writer)

    def command(self, line: str) -> None:
        verb, _, arg = line.strip().partition(" ")
        if verb == "pass":
            self.mode, self.latency, self.stall_until = "pass", 0.0, 0.0
        elif verb == "latency":
            self.latency = float(arg) / 1000
        elif verb == "stall":
            self.stall_until = time.monotonic() + float(arg)
        elif verb == "blackhole":
            self.mode = "blackhole"
        elif verb == "heal":
            self.mode = "pass"
            for pair, damaged in list(self.pairs.items()):
                if damaged:
                    abort(pair[0])
                    abort(pair[1])
        elif verb == "reset":
            for pair in list(self.pairs):
                abort(pair[0])
                abort(pair[1])
        else:
            raise ValueError(f"unknown command {line!r}")


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def main(target_port: int) -> None:
    proxy = Proxy(target_port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode()
        if not line:
            return  # the test went away
        try:
            proxy.command(line)
            print("ok", flush=True)
        except ValueError as e:
            print(f"error {e}", flush=True)


class ChaosProxy:
    """A chaos_proxy.py process in front of the Redis on `target_port`."""

    def __init__(self, target_port: int, log: Optional[Path] = None) -> None:
        err: IO[bytes] | int = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, __file__, str(target_port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def url(self, db: int = 0) -> str:
        """A Redis URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def send(self, command: str) -> None:
        """Put a command in force (see the module docstring)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"chaos proxy: {command!r} -> {answer!r}")

    def close(self) -> None:
        """Stop the proxy (every connection through it drops)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
