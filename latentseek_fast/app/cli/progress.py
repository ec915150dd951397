"""The commands' live output: ``run`` streams its answer, ``eval`` shows a progress bar; both
show the verifier replies of a self-reward as they decode (``VerifyProgress``)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

# Without a terminal, ``run`` writes a progress line when a verifier reply finishes and at most
# this often in between (on a terminal one status line is rewritten at every event, ~2 s).
LOG_EVERY_SECONDS = 10.0


def verify_text(event) -> str:
    """What a ``VerifyProgress`` says: which answer is scored, replies done, tokens, tokens/s."""
    what = "the original answer" if event.answer == 0 else f"the answer of iteration {event.answer}"
    return (
        f"{what}: verifier replies {event.replies_done}/{event.replies_total}, "
        f"{event.tokens} tokens, {event.tokens_per_s:.1f} tokens/s"
    )


class RunProgress:
    """``run``'s live output: the original answer as it is decoded, then one line per iteration;
    while verifiers or a continuation decode, a status line (rewritten in place on a terminal)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.streaming = False  # the original answer's tokens end the current line
        self.status = False  # a status line is on the terminal's current line
        self.logged = (None, 0.0)  # (key, clock()) of the last status line logged
        self.clock = time.perf_counter

    def __call__(self, event) -> None:
        # The engine imports torch; by the first event it is loaded (a dict look-up from then on).
        from ...engine import DecodeProgress, IterationDone, OriginalDone, OriginalToken, VerifyProgress

        out = self.stream
        if isinstance(event, OriginalToken):
            out.write(event.text)
            self.streaming = True
        elif isinstance(event, VerifyProgress):
            self._status("scoring " + verify_text(event), (event.answer, event.replies_done))
        elif isinstance(event, DecodeProgress):
            self._status(
                f"decoding the answer of iteration {event.iteration}: {event.tokens} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s",
                (event.iteration, "decode"),
            )
        elif isinstance(event, OriginalDone):
            self._end_status()
            out.write(
                ("\n" if self.streaming else "")  # below the streamed answer (or the status lines)
                + f"--- original answer: reward {event.reward:+.3f}, {event.length} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s ---\n"
            )
            self.streaming = False
        elif isinstance(event, IterationDone):
            self._end_status()
            out.write(
                f"iteration {event.iteration}: reward {event.reward:+.3f}, {event.length} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s\n"
            )
        else:
            return
        out.flush()

    def _status(self, text: str, key) -> None:
        """Show ``text``: rewrite the terminal's status line, or (no terminal) log a line when
        ``key`` changed (replies done) or ``LOG_EVERY_SECONDS`` after the last line."""
        out = self.stream
        if self.streaming:  # the streamed answer keeps its line; the status goes below it
            out.write("\n")
            self.streaming = False
        if self.tty:
            out.write("\r" + text + "\x1b[K")
            self.status = True
            return
        now = self.clock()
        last_key, last = self.logged
        if key != last_key or now - last >= LOG_EVERY_SECONDS:
            out.write(text + "\n")
            self.logged = (key, now)

    def _end_status(self) -> None:
        """Clear the terminal's status line (the answer's reward line replaces it)."""
        if self.status:
            self.stream.write("\r\x1b[K")
            self.status = False
        self.logged = (None, 0.0)


class EvalProgress:
    """``eval``'s progress bar: problems done, decoded tokens per second, running accuracy."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="latentseek", unit="problem", disable=not enabled)
        self.t0 = time.perf_counter()
        self.tokens = self.done = self.original_ok = self.ok = 0
        self.verify: tuple[int, str] | None = None  # (problem index, text) of the latest VerifyProgress

    def __call__(self, event) -> None:
        from ...engine import IterationDone, OriginalDone, VerifyProgress  # as in RunProgress

        if isinstance(event, VerifyProgress):
            self.verify = (event.index, f"problem {event.index}, " + verify_text(event))
        elif isinstance(event, (OriginalDone, IterationDone)):
            self.tokens += event.length if isinstance(event, OriginalDone) else event.tokens
            if self.verify is not None and self.verify[0] == event.index:
                self.verify = None
        else:
            return
        self._show()

    def finished(self, row: dict) -> None:
        self.done += 1
        self.original_ok += bool(row["original_correct"])
        self.ok += bool(row["correct"])
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        secs = time.perf_counter() - self.t0
        post = {"tok/s": f"{self.tokens / secs:.1f}" if secs > 0 else "-"}
        if self.done:
            post["acc"] = f"{100 * self.original_ok / self.done:.0f}->{100 * self.ok / self.done:.0f}%"
        if self.verify is not None:
            post["verifying"] = self.verify[1]
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()
