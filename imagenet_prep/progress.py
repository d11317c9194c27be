"""Progress of a long step: a tqdm bar on a terminal; in a log file, one line every few percent."""
from __future__ import annotations

import sys
import time
from typing import Optional

from .console import human, log


class Progress:
    """Counts `done` of `total` `unit`s (unit "B": sizes are shown in KiB, MiB, ...).

    On a terminal a tqdm bar is drawn; when stderr is not a terminal (a cluster job's log), a line
    is logged every `step` percent and at the end, so logs are not flooded.
    """

    def __init__(self, what: str, total: int, unit: str, step: int = 5) -> None:
        self.what, self.total, self.unit, self.step = what, max(total, 1), unit, step
        self.t0 = time.monotonic()
        self.next_pct, self.done, self.logged = step, 0, -1
        self.bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:                 # not installed: log lines on the terminal too
                return
            self.bar = tqdm(total=self.total, desc=what, unit=unit, leave=False, disable=None,
                            unit_scale=unit == "B", unit_divisor=1024, file=sys.stderr)

    def rate(self, nbytes: int) -> str:
        return "%.1f MiB/s" % (nbytes / max(time.monotonic() - self.t0, 1e-6) / (1 << 20))

    def _amount(self, n: int) -> str:
        return human(n) if self.unit == "B" else "%d" % n

    def update(self, done: int, note: str = "") -> None:
        """`done` units so far (not an increment); `note`: more to show, e.g. images and speed."""
        self.done = done
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            return
        pct = 100 * done // self.total
        if pct >= self.next_pct:
            self._log(note)
            self.next_pct = (pct // self.step + 1) * self.step

    def _log(self, note: str) -> None:
        log.info("%s: %s/%s%s (%d%%)%s", self.what, self._amount(self.done),
                 self._amount(self.total), "" if self.unit == "B" else " " + self.unit,
                 100 * self.done // self.total, ", " + note if note else "")
        self.logged = self.done

    def close(self, note: Optional[str] = None) -> None:
        """The last line: in a log, unless the last one said the same."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.logged != self.done:
            self._log(note or "")
