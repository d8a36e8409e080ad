"""Token bytes to text, as it becomes final: decoded incrementally, cut at a stop sequence."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["TextAssembler"]


class TextAssembler:
    """Token bytes to text: cut at a stop sequence, hold back what may still become one."""

    def __init__(self, stop: Sequence[str], strip_trailing_space: bool) -> None:
        self.text = ""
        self._stop = [s for s in stop if s]
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._strip = strip_trailing_space
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._sent = 0
        self._ready = 0
        self._stopped = False

    def add(self, piece: bytes) -> bool:
        """Append a token's bytes; True when a stop sequence has just ended the text."""
        checked = len(self.text)
        self.text += self._decoder.decode(piece)
        if not self._stop:
            self._ready = len(self.text)
        else:
            start = max(0, checked - self._longest_stop + 1)
            found = [i for s in self._stop if (i := self.text.find(s, start)) != -1]
            if found:
                self.text = self.text[: min(found)]
                self._ready = len(self.text)
                self._stopped = True
                return True
            self._ready = len(self.text) - self._stop_prefix_length()
        if self._strip:
            self._ready = min(self._ready, len(self.text.rstrip()))
        return False

    def _stop_prefix_length(self) -> int:
        """Length of the longest end of the text that could still grow into a stop sequence."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def take_ready(self) -> str:
        """The text that became final since the last call."""
        ready = self.text[self._sent : self._ready]
        self._sent = max(self._sent, self._ready)
        return ready

    def finish(self) -> None:
        """No more tokens: everything left is final."""
        if not self._stopped:
            self.text += self._decoder.decode(b"", final=True)
        if self._strip:
            self.text = self.text.rstrip()
        self._ready = len(self.text)
