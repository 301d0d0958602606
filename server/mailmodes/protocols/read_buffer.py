"""One buffer that every connection's transport reads into (asyncio.BufferedProtocol).

asyncio's plain read path (Protocol.data_received) allocates a new 256 KiB bytes object for each
recv and shrinks it to what came. Whether that is cheap depends on the C allocator's state: once
glibc serves such blocks with mmap (its threshold at 128 KiB, as a fresh process or
MALLOC_MMAP_THRESHOLD_ has it) every read costs an mmap, an mremap and a munmap, and SMTP took
half as many messages a second (smtp-source, 10 sessions: 4,800/s against 9,500/s; issue 22).
Reading into one buffer for the process and copying out only what came costs the same whatever
the allocator does. It is safe: asyncio calls get_buffer, reads (or decrypts) into it and calls
buffer_updated in one synchronous step, so no two connections ever see each other's bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_BUFFER = memoryview(bytearray(256 * 1024))


class SharedReadBuffer(asyncio.BufferedProtocol):
    """Mixed into a protocol that has data_received, ahead of asyncio.BufferedProtocol's place."""

    data_received: Callable[[bytes], None]  # the protocol's own (only declared here)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_BUFFER[:nbytes].tobytes())
