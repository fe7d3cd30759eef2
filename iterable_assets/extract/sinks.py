"""Where a response body goes as it streams (the client writes each attempt afresh)."""

from pathlib import Path
from typing import Protocol


class Sink(Protocol):
    """Where a response body goes as it streams: started afresh on every attempt."""

    def reset(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class TextFile:
    """A sink for a body: a file, written whole on each attempt."""

    def __init__(self, path: Path):
        self.path = path
        self._out = None

    def reset(self) -> None:
        self.close()
        self._out = open(self.path, "wb")

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
