"""Step budgets and the progress display.

Training runs in rounds of ``round_steps`` optimizer steps (at most one
epoch), each followed by a global step; stage budgets count rounds, so the
number of optimizer steps is bounded however many cells there are. On data
with at most ``round_steps`` minibatches per epoch a round is an epoch, or
``min_round_steps`` steps (several epochs) on data with fewer minibatches.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from contextlib import suppress
from dataclasses import dataclass

from .._messages import counted

__all__ = ["Progress", "Schedule", "live_bars"]

log = logging.getLogger("scgpcl")


@dataclass(frozen=True)
class Schedule:
    """Steps per round and rounds per stage for one dataset."""

    steps_per_epoch: int
    steps_per_round: int
    pretrain_rounds: int
    warmup_rounds: int
    finetune_rounds: int

    @classmethod
    def build(cls, steps_per_epoch: int, cfg) -> Schedule:
        """From the loader's epoch length and a :class:`~scgpcl.TrainConfig`."""
        # small data: at least min_round_steps per round, which may be several epochs
        per_round = steps_per_epoch if cfg.round_steps == 0 else min(
            cfg.round_steps, max(steps_per_epoch, cfg.min_round_steps))
        return cls(steps_per_epoch, per_round, cfg.pretrain_rounds, cfg.warmup_rounds, cfg.finetune_rounds)

    @property
    def max_pretrain_steps(self) -> int:
        """Optimizer steps of pre-training if it never stops early."""
        return self.pretrain_rounds * self.steps_per_round

    @property
    def max_finetune_steps(self) -> int:
        """Optimizer steps of fine-tuning if it never stops early."""
        return self.finetune_rounds * self.steps_per_round

    def describe(self) -> str:
        """One line for the log."""
        ratio = self.steps_per_round / self.steps_per_epoch
        unit = "one epoch" if ratio == 1 else (f"{ratio:.2g} of an epoch" if ratio < 1 else f"{ratio:.2g} epochs")
        steps = f"{self.steps_per_round} step{'s' if self.steps_per_round != 1 else ''}"
        return (f"rounds of {steps} ({unit}); at most {self.max_pretrain_steps} pre-training "
                f"steps (warm-up {self.warmup_rounds * self.steps_per_round}) and {self.max_finetune_steps} "
                "fine-tuning steps")


#: a few words for each ``StageResult.stop_kind`` (``_loop.py``): the progress bars and the training-curve figures say them
STOP_LABELS = {"converged": "converged", "max_epochs": "max epochs", "max_rounds": "max rounds",
               "patience": "no ARI gain", "emptied": "before a cluster emptied"}


#: the stop kinds a stage's bar names when it stopped early (a budget spent needs no word)
_EARLY_STOPS = ("converged", "patience", "emptied")

#: progress bars not closed yet: an interrupted stage leaves its bar open (see :meth:`Progress.close_open`)
_OPEN_BARS: weakref.WeakSet = weakref.WeakSet()


def live_bars() -> bool:
    """Whether progress bars can be redrawn in place: standard error is a terminal, or a notebook shows them.

    Elsewhere (a batch job's log file, a pipe) a bar is one line of carriage-return redraws growing for the whole
    stage, so :class:`Progress` writes a line per round instead.
    """
    from tqdm.auto import tqdm  # imports tqdm.notebook when a notebook can show its widgets

    notebook = sys.modules.get("tqdm.notebook")
    if notebook is not None and issubclass(tqdm, notebook.tqdm):
        return True
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


class Progress:
    """One progress bar per stage, counted in optimizer steps, with the time left.

    The bar's total is the stage's step budget; a stage that stops early
    (convergence) closes it there. With ``enabled=False`` nothing is shown.
    Where bars cannot be redrawn in place (:func:`live_bars`: a log file), a
    line per round says the time, the round, the steps and the losses.
    """

    def __init__(self, total_steps: int, desc: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self.lines = enabled and not live_bars()
        self.desc, self.total, self.n = desc, total_steps, 0
        self.bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not enabled or self.lines, leave=True,
                        dynamic_ncols=True)
        self.t0 = time.perf_counter()
        _OPEN_BARS.add(self)

    def _line(self, text: str) -> None:
        """One line of a log-file progress display, with the clock time."""
        stream = sys.stderr
        if stream is not None:
            stream.write(f"{time.strftime('%H:%M:%S')} {self.desc}: {text}\n")
            stream.flush()

    @classmethod
    def close_open(cls) -> None:
        """Close the bars of stages that ended by an exception, so a message printed next starts on its own line."""
        for bar in list(_OPEN_BARS):
            bar.close()

    def step(self, n: int = 1) -> None:
        """``n`` more steps done."""
        self.n += n
        self.bar.update(n)

    def round_done(self, record: dict) -> None:
        """Show a round's numbers next to the bar (or on a line of their own in a log file)."""
        shown = {k: f"{v:.3g}" for k, v in record.items() if k not in ("round", "steps")}
        if self.lines:
            elapsed = time.perf_counter() - self.t0
            left = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            numbers = ", ".join(f"{k} {v}" for k, v in shown.items())
            # "about": the rounds so far extrapolated to the budget (warm-up rounds are cheaper; a stage can stop early)
            self._line(f"round {record.get('round')}, step {self.n} of at most {self.total}"
                       f"{', ' + numbers if numbers else ''}; {_clock(elapsed)}, about {_clock(left)} left")
        self.bar.set_postfix({"round": record.get("round"), **shown}, refresh=False)

    def close(self, stop_kind: str | None = None) -> float:
        """Close the bar; the stage's seconds.

        ``stop_kind`` (the ``StageResult``'s): the stage ended by a stop rule, not by an exception. A
        stage that stopped early ends its bar complete at the steps it ran, saying why; left part-way, the bar
        looked like a failure (a notebook paints such a bar red).
        """
        _OPEN_BARS.discard(self)
        if self.lines and stop_kind is not None:
            words = STOP_LABELS[stop_kind] if stop_kind == "converged" else (
                f"stopped: {STOP_LABELS[stop_kind]}" if stop_kind in _EARLY_STOPS else "the budget spent")
            self._line(f"{counted(self.n, 'step')} in {_clock(time.perf_counter() - self.t0)} ({words})")
        if stop_kind is not None and not self.bar.disable:
            if self.bar.total and self.bar.n < self.bar.total:
                self.bar.total = self.bar.n
                widgets = getattr(self.bar, "container", None)  # tqdm.notebook: its widget keeps its own maximum
                with suppress(Exception):
                    widgets.children[1].max = self.bar.n
            if stop_kind in _EARLY_STOPS:
                words = STOP_LABELS[stop_kind] if stop_kind == "converged" else f"stopped: {STOP_LABELS[stop_kind]}"
                shown = str(self.bar.postfix or "")
                self.bar.set_postfix_str(f"{shown}, {words}" if shown else words, refresh=False)
            self.bar.refresh()
        self.bar.close()
        return time.perf_counter() - self.t0
