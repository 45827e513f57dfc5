"""The terminal: log lines on stderr and progress bars (only on a terminal)."""
from __future__ import annotations

import logging
import sys
from typing import Callable


def setup_logging(verbose: int) -> None:
    """Log lines ``camvideo: ...`` on stderr: warnings, ``-v`` info, ``-vv`` debug."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("camvideo: %(message)s"))
    root = logging.getLogger("camvideo")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def progress_bar(quiet: bool, unit: str = "frame") -> tuple[Callable[[int, int], None],
                                                              Callable[[], None]]:
    """A tqdm bar on a terminal (frames, fps, ETA); nothing when quiet or piped."""
    if quiet or not sys.stderr.isatty():
        return (lambda done, total: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close
