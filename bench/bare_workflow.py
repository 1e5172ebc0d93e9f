"""The floor: a bare Temporal workflow of N sequential no-op activities (for bench/overhead.py).

In a module of its own so the workflow sandbox can import it (it cannot import ``__main__``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(index: int) -> int:
    """Does nothing: the cost of one activity round trip."""
    return index


@workflow.defn(name="BenchBare")
class BareWorkflow:
    """N sequential no-op activities."""

    @workflow.run
    async def run(self, count: int) -> int:
        for index in range(count):
            await workflow.execute_activity(
                "bench_noop", index, start_to_close_timeout=timedelta(seconds=30)
            )
        return count
