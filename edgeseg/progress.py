"""Progress of the tool's long steps (loading, fusing, exporting, parity, ...), for people.

    steps = Steps(console)                  # the CLI: Rich spinner + elapsed time on stderr
    with steps.step("loading fastvit_sa12.pth"):
        ...

On a terminal each running step shows a spinner and its elapsed time; when it ends one line
with its duration stays (a failed step leaves nothing: the error line says it). Off a terminal (logs, CI, tests) only the finished lines are printed.
Library callers get `NO_STEPS` (silent) unless they pass their own; a plain callable
`progress(message)` is accepted too and is called as each step starts.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator


class Steps:
    def __init__(self, console: Any = None, *, enabled: bool = True):
        self.console = console
        self.enabled = enabled and console is not None
        self._live = None  # one rich.progress.Progress while any step runs (nested steps share it)
        self._depth = 0

    def note(self, text: str) -> None:
        """A one-line remark between steps."""
        if self.enabled:
            from rich.markup import escape

            self.console.print(f"[dim]>> {escape(text)}[/]")

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        from rich.markup import escape

        t0 = time.perf_counter()
        task = None
        if self.console.is_terminal:
            if self._live is None:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=self.console, transient=True)
                self._live.start()
            task = self._live.add_task(escape(text), total=None)
        self._depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._depth -= 1
            if task is not None:
                self._live.remove_task(task)
            if self._depth == 0 and self._live is not None:
                self._live.stop()
                self._live = None
            if ok:  # a failure is reported once, by the error line
                self.console.print(f"[dim]>> {escape(text)}: done in {time.perf_counter() - t0:.1f} s[/]")


class _CallbackSteps(Steps):
    """Adapts the older `progress(message)` callbacks: called as each step starts."""

    def __init__(self, callback: Callable[[str], Any]):
        super().__init__(None, enabled=False)
        self.callback = callback

    def note(self, text: str) -> None:
        self.callback(text)

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.callback(text)
        yield


NO_STEPS = Steps(None, enabled=False)


def as_steps(progress: Steps | Callable[[str], Any] | None) -> Steps:
    if progress is None:
        return NO_STEPS
    if isinstance(progress, Steps):
        return progress
    return _CallbackSteps(progress)

