"""CrewAI's ``asyncio.run`` per step does not walk the worker's own tasks (activities/loops.py)."""

from __future__ import annotations

from tests.helpers import run_python


def test_asyncio_run_beside_many_tasks_finds_only_its_own_and_still_cancels_them():
    code = """
        import asyncio, asyncio.futures
        from activities.loops import install

        walked = [0]
        get_loop = asyncio.futures._get_loop

        def counting(future):
            walked[0] += 1
            return get_loop(future)

        asyncio.futures._get_loop = counting

        def step():
            # What CrewAI does on a task's thread: a loop of its own, a task left behind.
            cancelled = []

            async def kickoff():
                async def left():
                    try:
                        await asyncio.sleep(100)
                    except asyncio.CancelledError:
                        cancelled.append(True)
                        raise

                asyncio.create_task(left())
                await asyncio.sleep(0)

            walked[0] = 0
            asyncio.run(kickoff())
            return walked[0], cancelled

        async def main():
            held = [asyncio.create_task(asyncio.sleep(100)) for _ in range(2000)]
            before = await asyncio.to_thread(step)
            assert install()
            after = await asyncio.to_thread(step)
            mine = len(asyncio.all_tasks())  # the worker's loop: answered as before
            for task in held:
                task.cancel()
            print(before[0] >= 2000, before[1], after[0] < 50, after[1], mine)

        asyncio.run(main())
    """
    assert run_python(code, timeout=60) == "True [True] True [True] 2001"
