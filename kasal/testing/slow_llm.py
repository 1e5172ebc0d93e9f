"""An OpenAI-compatible chat server that answers after a fixed delay, for load benchmarks.

Unlike :mod:`kasal.testing.llm_stub` (threads, scripted behaviour, a request log), this one
is asynchronous, so it holds thousands of delayed requests at once, as a real provider's
queue would. Every answer is a CrewAI final answer; ``GET /stats`` counts the requests and
the connections they came on.

    python -m kasal.testing.slow_llm --port 8099 --latency 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request


def create_app(latency: float) -> FastAPI:
    """The server's app: ``POST /v1/chat/completions`` and ``GET /stats``."""
    app = FastAPI()
    stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "connections": 0}
    clients: set[tuple[str, int]] = set()

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any], request: Request) -> dict[str, Any]:
        if request.client is not None:  # callers' connections seen so far
            clients.add((request.client.host, request.client.port))
            stats["connections"] = len(clients)
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(latency)
        finally:
            stats["in_flight"] -= 1
        prompt = str(body.get("messages", [{}])[-1].get("content", ""))[-60:]
        text = f"Thought: I now know the final answer\nFinal Answer: done ({len(prompt)})"
        return {
            "id": f"chatcmpl-{stats['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "slow"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        }

    @app.get("/stats")
    async def read_stats() -> dict[str, int]:
        return dict(stats)

    return app


def main() -> None:
    """Serve on 127.0.0.1 until killed."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.latency),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        backlog=4096,
        limit_concurrency=None,
        # As a provider's front end keeps an idle connection (nginx: 75 s), not uvicorn's 5 s:
        # a burst of a thousand calls takes longer than 5 s to go round.
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
