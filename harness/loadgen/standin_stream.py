"""The stand-in's token streams (harness.loadgen.standin): one ticker per token gap writes the due
tokens of every open stream, each token one write, as an engine iteration would."""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent.event import AsyncResult as Event

from harness.loadgen.http import sleep_at_priority

#: The last chunk of a chunked body: its own write (uvicorn sends it when the app's body ends).
END_CHUNK = b"0\r\n\r\n"


class Stream:
    """One streaming response in progress: the ticker writes its tokens as they fall due.

    Each token is one write (one HTTP chunk); after the last token each piece of `tail` (usage
    event, `[DONE]`, WarmServe's `#N`) is its own write, then the end chunk: the real servers write
    each yielded piece separately. A cut stream either closes the connection (`clean_cut` false)
    or ends it cleanly without the tail (WarmServe's failure mode)."""

    __slots__ = ("conn", "token", "last", "tail", "n_out", "next_i", "due", "cut_after", "clean_cut",
                 "done", "request_id", "received")

    def __init__(self, conn: Any, token: bytes, last: bytes, tail: tuple[bytes, ...], n_out: int,
                 received: float, cut_after: int | None, request_id: str, clean_cut: bool = False) -> None:
        self.conn, self.n_out, self.cut_after, self.clean_cut = conn, n_out, cut_after, clean_cut
        self.request_id, self.received = request_id, received
        # Pre-framed HTTP chunks: writing a token is one send, no formatting.
        self.token = b"%x\r\n%s\r\n" % (len(token), token)
        self.last = b"%x\r\n%s\r\n" % (len(last), last)
        self.tail = tuple(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in tail)
        self.next_i, self.due = 0, received + conn.b.ttft_s
        self.done = Event()

    def write_due(self, now: float) -> bool:
        """Write every token due by `now`; True when the stream has ended (or was cut)."""
        gap = self.conn.b.gap_s
        write = self.conn.write
        while self.due <= now:
            i = self.next_i
            if self.cut_after is not None and i == self.cut_after:
                if self.clean_cut:
                    write(END_CHUNK)
                self.done.set(self.clean_cut)
                return True
            last = i == self.n_out - 1
            written_s = time.perf_counter()
            write(self.last if last else self.token)
            if i == 0:  # logged after the write, so logging never delays the token
                self.conn.b.log_first_token(self.request_id, self.received, written_s)
            if last:
                for piece in self.tail:
                    write(piece)
                write(END_CHUNK)
                self.done.set(True)
                return True
            self.next_i, self.due = i + 1, self.due + gap
        return False


#: Longest stretch the ticker writes tokens before it lets other work of the loop run.
SLICE_S = 0.0005


class Ticker:
    """Writes due tokens of all open streams, like one engine iteration every `gap_s`.

    The first token of each stream is written by its own greenlet at exactly `ttft_s` after the
    request arrived (the TTFT the benchmark relies on); later tokens ride the shared tick, so the
    server needs one timer per tick rather than one per token. Priorities keep the timing the
    benchmark reads exact: a due first token runs before new requests are read, and both before
    the tick's batch of later tokens (which takes about a millisecond at 25k tokens/s).
    """

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.streams: list[Stream] = []
        self._greenlet = None

    def add(self, stream: Stream) -> None:
        delay = stream.due - time.perf_counter()
        if delay > 0:
            sleep_at_priority(delay, 1)
        try:
            finished = stream.write_due(time.perf_counter())
        except OSError:
            stream.done.set(False)
            return
        if finished:
            return
        self.streams.append(stream)
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while self.streams:
            sleep_at_priority(max(0.0005, self.gap_s), -1)
            now = time.perf_counter()
            keep = []
            slice_end = now + SLICE_S
            current, self.streams = self.streams, []  # add() appends to the new list meanwhile
            for stream in current:
                if time.perf_counter() > slice_end:
                    # let requests and first tokens that came meanwhile in before the rest
                    sleep_at_priority(0.0, -1)
                    slice_end = time.perf_counter() + SLICE_S
                try:
                    if not stream.write_due(now):
                        keep.append(stream)
                except OSError:
                    stream.done.set(False)
            self.streams = keep + self.streams
        self._greenlet = None


_TICKERS: dict[float, Ticker] = {}


def stream(conn: Any, token: bytes, last: bytes, tail: tuple[bytes, ...], n_out: int, received: float,
            cut_after: int | None, request_id: str, preamble: bytes = b"", clean_cut: bool = False) -> bool:
    """Stream `preamble` at once, then `n_out` tokens, then the tail; False if the stream was
    cut (close the socket)."""
    ticker = _TICKERS.setdefault(conn.b.gap_s, Ticker(conn.b.gap_s))
    conn.start_stream()
    if preamble:
        conn.chunk(preamble)
    stream = Stream(conn, token, last, tail, n_out, received, cut_after, request_id, clean_cut)
    ticker.add(stream)
    return bool(stream.done.get())
