"""Which asyncio tasks belong to which run. Every task created while a run executes (LangGraph's
own background work, such as its checkpoint writes, and any task a graph starts) carries the
run's id in its context. A run that is stopped mid-way (cancelled, timed out) may leave such
tasks behind: LangGraph's exit would have awaited them, but a cancel can land during that exit.
Its executor waits for them before reading the thread's state and recording the end, so the
state it records is the one the run left, and nothing of the run still writes once the thread's
next run begins."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentd_run", default=None)


class RunTasks:
    def __init__(self) -> None:
        self._tasks: dict[str, set[asyncio.Task[Any]]] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap the loop's task factory, so that every new task is checked for a run id."""
        previous = loop.get_task_factory()

        def factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
        ) -> asyncio.Task[Any]:
            if previous is not None:
                task = previous(loop, coro, **kwargs)
            else:
                task = asyncio.Task(coro, loop=loop, **kwargs)
            context = kwargs.get("context")
            run_id = context.get(_RUN) if context is not None else _RUN.get()
            if run_id is not None:
                self._track(run_id, task)  # type: ignore[arg-type]
            return task  # type: ignore[return-value]

        loop.set_task_factory(factory)  # type: ignore[arg-type]

    def start(self, run_id: str, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start ``coro`` as the root task of ``run_id``: what it creates is the run's too."""
        context = contextvars.copy_context()
        context.run(_RUN.set, run_id)
        task = asyncio.get_running_loop().create_task(coro, name=name, context=context)
        self._track(run_id, task)  # also when the loop's factory was never installed
        return task

    async def wait(self, run_id: str, grace: float) -> int:
        """Wait up to ``grace`` seconds for the run's tasks; returns how many still run."""
        pending = {t for t in self._tasks.get(run_id, ()) if not t.done()}
        if not pending:
            return 0
        _, late = await asyncio.wait(pending, timeout=grace)
        return len(late)

    def _track(self, run_id: str, task: asyncio.Task[Any]) -> None:
        tasks = self._tasks.setdefault(run_id, set())
        tasks.add(task)
        task.add_done_callback(lambda t: self._forget(run_id, t))

    def _forget(self, run_id: str, task: asyncio.Task[Any]) -> None:
        tasks = self._tasks.get(run_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[run_id]
