"""CrewAI's ``asyncio.run`` per step does not walk the worker's own tasks, and its
``asyncio.to_thread`` calls run on reused threads (activities/loops.py)."""

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


def test_loops_share_reused_threads_for_to_thread_and_still_wait_for_their_calls_at_the_end():
    code = """
        import asyncio, threading, time
        from activities.loops import install

        started = [0]
        start = threading.Thread.start

        def counting_start(self):
            started[0] += 1
            start(self)

        threading.Thread.start = counting_start

        def step(finished):
            # A CrewAI step: a loop of its own, its flow methods in asyncio.to_thread, one
            # still running when the step's coroutine is done (a timed-out wait, say).
            def slow():
                time.sleep(0.3)
                finished.append(True)

            async def kickoff():
                names = await asyncio.gather(
                    *(asyncio.to_thread(lambda: threading.current_thread().name) for _ in range(3))
                )
                try:
                    await asyncio.wait_for(asyncio.to_thread(slow), 0.01)
                except asyncio.TimeoutError:
                    pass
                return names

            return asyncio.run(kickoff())

        assert install()
        names, waited = set(), []
        for _ in range(20):
            finished = []
            names.update(step(finished))
            waited.append(len(finished))  # asyncio.run returned only after slow() ended

        loop = asyncio.new_event_loop()
        loop.run_until_complete(loop.shutdown_default_executor())
        try:
            loop.run_in_executor(None, print)
            refused = False
        except RuntimeError:
            refused = True
        loop.close()
        print(all(n.startswith("kasal-step") for n in names), waited == [1] * 20,
              started[0] <= 4, refused)
    """
    assert run_python(code, timeout=60) == "True True True True"
