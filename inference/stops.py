"""Apply `stop` sequences in the portal: not every router honours them."""

from __future__ import annotations


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopScanner:
    """Streams text through, holding back just enough to never emit part of a stop sequence."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that ended the text

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        head, hit = cut_at_stop(self.pending, self.stops)
        if hit:
            self.matched = min((self.pending.find(s), s) for s in self.stops if s in self.pending)[
                1
            ]
            self.stopped = True
            self.pending = ""
            return head
        if len(self.pending) <= self.hold:
            return ""
        out, self.pending = (
            self.pending[: len(self.pending) - self.hold],
            self.pending[len(self.pending) - self.hold :],
        )
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return "" if self.stopped else out
