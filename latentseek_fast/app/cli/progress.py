"""The commands' live output: ``run`` streams its answer, ``eval`` shows a progress bar."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class RunProgress:
    """``run``'s live output: the original answer as it is decoded, then one line per iteration."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __call__(self, event) -> None:
        # The engine imports torch; by the first event it is loaded (a dict look-up from then on).
        from ...engine import IterationDone, OriginalDone, OriginalToken

        out = self.stream
        if isinstance(event, OriginalToken):
            out.write(event.text)
            out.flush()
        elif isinstance(event, OriginalDone):
            out.write(
                f"\n--- original answer: reward {event.reward:+.3f}, {event.length} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s ---\n"
            )
            out.flush()
        elif isinstance(event, IterationDone):
            out.write(
                f"iteration {event.iteration}: reward {event.reward:+.3f}, {event.length} tokens, "
                f"{event.tokens_per_s:.1f} tokens/s\n"
            )
            out.flush()


class EvalProgress:
    """``eval``'s progress bar: problems done, decoded tokens per second, running accuracy."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="latentseek", unit="problem", disable=not enabled)
        self.t0 = time.perf_counter()
        self.tokens = self.done = self.original_ok = self.ok = 0

    def __call__(self, event) -> None:
        from ...engine import IterationDone, OriginalDone  # as in RunProgress

        if isinstance(event, OriginalDone):
            self.tokens += event.length
        elif isinstance(event, IterationDone):
            self.tokens += event.tokens
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
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()
