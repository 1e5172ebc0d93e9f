"""A worker or API process settles its heap once it has started (kasal/heap.py)."""

from __future__ import annotations

from tests.helpers import run_python as _run


def test_settling_freezes_start_up_and_raises_the_young_threshold_once():
    out = _run(
        """
        import gc
        from kasal.heap import settle
        before = gc.get_threshold()
        first, again = settle(50_000), settle(90_000)
        young = gc.get_threshold() == (50_000,) + before[1:]
        print(first, again, gc.get_freeze_count() > 1000, young)
        """
    )
    assert out == "True False True True"


def test_pauses_are_counted_and_zero_leaves_the_collector_alone():
    out = _run(
        """
        import gc
        from prometheus_client import REGISTRY
        from kasal.heap import settle
        before = gc.get_threshold()
        assert settle(0) is False
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
        gc.collect()
        gc.collect()
        full = {"generation": "2"}
        seconds = REGISTRY.get_sample_value("kasal_gc_pause_seconds_sum", full)
        print(REGISTRY.get_sample_value("kasal_gc_pause_seconds_count", full), seconds > 0)
        """
    )
    assert out == "2.0 True"


def test_the_api_settles_its_heap_when_it_has_started(tmp_path):
    out = _run(
        f"""
        import asyncio, gc
        from api.main import create_app
        from kasal.settings import Settings

        async def main():
            settings = Settings(
                data_dir={str(tmp_path)!r}, temporal_address="127.0.0.1:1",
                gc_young_threshold=12_345,
            )
            app = create_app(settings)
            assert gc.get_freeze_count() == 0
            async with app.router.lifespan_context(app):
                print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)

        asyncio.run(main())
        """
    )
    assert out.splitlines()[-1] == "12345 True"


def test_a_quiet_process_collects_what_its_work_left_in_cycles_but_a_busy_one_is_not_paused():
    out = _run(
        """
        import asyncio, gc, time, weakref
        from kasal.heap import tidy_when_quiet

        class Node:
            pass

        def cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a)

        async def main():
            gc.disable()  # only the tidy collects here
            tidy = asyncio.create_task(tidy_when_quiet(every=0.1, quiet_for=0.3, after_cpu=0.3))
            left = cycle()
            began = time.monotonic()
            while time.monotonic() - began < 1.0:  # work: busy for a second
                sum(range(20_000))
                await asyncio.sleep(0)
            busy = left() is not None  # never collected while the process computes
            await asyncio.sleep(1.0)  # quiet long enough: it tidies
            tidied = left() is None
            second = cycle()
            await asyncio.sleep(1.0)  # still quiet, but no work since: not again
            untouched = second() is not None
            tidy.cancel()
            print(busy, tidied, untouched)

        asyncio.run(main())
        """
    )
    assert out == "True True True"
