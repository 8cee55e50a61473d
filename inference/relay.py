"""What a customer receives of a router's answer, and what it is billed for.

Routers may honour neither `stop` nor `max_tokens`, and may report any count at all. So the
portal cuts the answer itself (at a stop sequence, or once max_tokens were relayed), counts
what it relays, and checks the router's counts before anyone is billed from them:
  - a router's count is believed only as a non-negative integer within what was asked
    (max_tokens) and what the model allows (its context length); beyond that it is clamped,
    and the record marked estimated;
  - when the portal cut the answer, the router's completion count is scaled to the part that
    was delivered;
  - with no usable count, the delivered text is estimated (inference.tokens), the same way
    whether or not the answer was streamed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from inference.stops import StopScanner
from inference.tokens import estimate_tokens, prefix_within

log = logging.getLogger(__name__)

# A router streams one token per event. No real token is longer than this many characters,
# so a longer piece is a router sending several at once: it is counted by the estimate.
TOKEN_CHARS_MAX = 16


def piece_tokens(piece: str) -> int:
    return 1 if len(piece) <= TOKEN_CHARS_MAX else estimate_tokens(piece)


def router_count(value) -> int | None:
    """A count as a router reports it, if it is one at all (an int, not a bool, not < 0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class Relay:
    """One answer on its way to the customer: fed the router's pieces, it returns what to
    send now, holding back what could be the start of a stop sequence."""

    def __init__(self, *, stops: list[str], max_tokens: int):
        self.max_tokens = max_tokens
        self.scanner = StopScanner(stops)
        self.tokens = 0  # relayed so far, by the router's events (or the estimate)
        self.over = False  # the router sent past max_tokens: the answer was cut there
        self.received: list[str] = []  # what the router sent, up to the cut
        self.delivered: list[str] = []  # what the customer got

    @property
    def stopped(self) -> bool:
        return self.scanner.stopped

    @property
    def done(self) -> bool:
        """Nothing more the router sends can reach the customer."""
        return self.over or self.stopped

    def feed(self, piece: str) -> str:
        """A streamed piece (one event)."""
        if self.over or not piece:
            return ""
        tokens = piece_tokens(piece)
        room = self.max_tokens - self.tokens
        if tokens > room:
            piece = piece[: len(piece) * room // tokens]
            tokens, self.over = room, True
        self.tokens += tokens
        return self._pass(piece)

    def feed_answer(self, text: str, completion_tokens: object) -> str:
        """A whole answer at once (a JSON body). The router's count, if it is plausible (no
        more tokens than the text has bytes), says where max_tokens falls; else the estimate."""
        count = router_count(completion_tokens)
        if count is not None and count <= len(text.encode()):
            if count > self.max_tokens:
                text = text[: math.ceil(len(text) * self.max_tokens / count)]
                self.over = True
        elif estimate_tokens(text) > self.max_tokens:
            text = prefix_within(text, self.max_tokens)
            self.over = True
        self.tokens = min(self.max_tokens, estimate_tokens(text))
        return self._pass(text) + self.flush()

    def _pass(self, piece: str) -> str:
        self.received.append(piece)
        if self.stopped:
            return ""
        out = self.scanner.feed(piece)
        if out:
            self.delivered.append(out)
        return out

    def flush(self) -> str:
        out = self.scanner.flush()
        if out:
            self.delivered.append(out)
        return out

    def finish_reason(self, router_finish: str | None) -> str:
        if self.stopped:
            return "stop"
        if self.over:
            return "length"
        return router_finish or "stop"

    @property
    def cut(self) -> bool:
        """The customer got less than the router sent."""
        return self.over or self.stopped

    def text(self) -> str:
        return "".join(self.delivered)


@dataclass(frozen=True, slots=True)
class Bill:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool


def bill(
    relay: Relay,
    *,
    prompt_reported,
    completion_reported,
    prompt_estimate: int,
    context_length: int,
    router_id: int | None,
) -> Bill:
    """The counts to record for what `relay` delivered (see the module's docstring)."""
    prompt = router_count(prompt_reported)
    completion = router_count(completion_reported)
    reported = prompt is not None and completion is not None
    if prompt is None or completion is None:  # not reported
        if (prompt_reported, completion_reported) != (None, None):
            _log_bad_usage("unusable", router_id, prompt_reported, completion_reported, relay)
        # A count without its pair cannot be checked against the other: estimate both.
        prompt, completion = prompt_estimate, estimate_tokens(relay.text())
    elif relay.cut:
        received = estimate_tokens("".join(relay.received))
        share = estimate_tokens(relay.text()) / received if received else 0.0
        completion = math.ceil(completion * share)
    bounded = Bill(
        prompt_tokens=min(prompt, context_length),
        completion_tokens=min(completion, relay.max_tokens),
        estimated=not reported or relay.cut,
    )
    if (bounded.prompt_tokens, bounded.completion_tokens) != (prompt, completion):
        if reported:
            _log_bad_usage("out of bounds", router_id, prompt, completion, relay)
        bounded = replace(bounded, estimated=True)
    return bounded


def _log_bad_usage(what: str, router_id, prompt, completion, relay: Relay) -> None:
    log.warning(
        "router reported usage %s: billed within bounds, marked estimated",
        what,
        extra={
            "router_id": router_id,
            "reported_prompt_tokens": repr(prompt)[:40],
            "reported_completion_tokens": repr(completion)[:40],
            "max_tokens": relay.max_tokens,
        },
    )
