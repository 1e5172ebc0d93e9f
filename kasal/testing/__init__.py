"""Tools for testing crews and measuring Kasal on one machine (like ``temporalio.testing``).

- :mod:`kasal.testing.llm_stub`: a local OpenAI-compatible HTTP server with scripted
  behaviour and a request log, so the real provider path runs with no network.
- :mod:`kasal.testing.worker_process`: ``kasal worker`` as a real OS process (to SIGKILL it).
- :mod:`kasal.testing.specs`: small crew-spec builders.

Used by Kasal's own tests and benchmarks; nothing here is imported by a worker or the API.
"""
