"""A local OpenAI-compatible HTTP server for tests: real HTTP, scripted behaviour, a request log.

Kasal's real provider path (CrewAI's OpenAI client -> HTTP) talks to it. Behaviour is keyed by
the ``model`` of each request:

- the answer is ``Final Answer: <model> says <digest of the prompt>`` unless ``tool_steps``
  asks for that many calculator steps first (counted from the ``Observation:`` entries
  already in the prompt, so a replayed attempt asks for exactly the same thing);
- ``fail_first`` / ``fail_status``: the first N requests for the model fail with that status;
- ``latency``: seconds to wait before answering; ``block_at``: the n-th request (1-based)
  blocks until released (lets a test kill a worker in the middle of an LLM call).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ModelBehaviour:
    """How the stub answers one model."""

    tool_steps: int = 0
    fail_first: int = 0
    fail_status: int = 503
    latency: float = 0.0
    block_at: int | None = None
    #: Pad every answer to this many characters (large outputs).
    answer_chars: int = 0
    #: Exact replies for the first requests, in order (then the usual behaviour).
    script: list[str] = field(default_factory=list)
    #: Tool steps to ask for instead of calculator ones: ``(tool name, arguments)``, in order.
    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def step(self, done: int) -> tuple[str, dict[str, Any]] | None:
        """The tool call to ask for after ``done`` steps (None: time to answer)."""
        if self.steps:
            return self.steps[done] if done < len(self.steps) else None
        if done < self.tool_steps:
            return "calculator", {"expression": f"{done + 1} * 10"}
        return None


@dataclass
class LoggedRequest:
    """One request the stub received."""

    model: str
    messages: list[dict[str, Any]]
    prompt: str
    status: int = 200
    answer: str = ""
    at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None


class _Server(ThreadingHTTPServer):
    # Connections waiting to be accepted, as a provider's front end keeps them (nginx: 511).
    # With the standard library's 5, a worker opening a hundred connections at once (a
    # standby taking over a killed worker's tasks) lost most of its SYNs, and each came back
    # after the kernel's retransmission backoff: 1, 3, 7 s.
    request_queue_size = 1024
    daemon_threads = True


class StubLLMServer:
    """An OpenAI-compatible ``/v1/chat/completions`` server on a free port."""

    def __init__(self) -> None:
        self.behaviours: dict[str, ModelBehaviour] = {}
        self.requests: list[LoggedRequest] = []
        self.lock = threading.Lock()
        self.blocked = threading.Event()  # set when a request is blocked at ``block_at``
        self.release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The ``base_url`` an OpenAI client needs."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> StubLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def requests_for(self, model: str, status: int | None = 200) -> list[LoggedRequest]:
        """Logged requests for ``model`` (answered with ``status``; None: all)."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.model == model and (status is None or r.status == status)
            ]

    def answer_for(self, model: str, prompt: str) -> str:
        """What the stub answers to ``prompt`` once no tool steps are left."""
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:10]
        return f"{model} says {digest}"

    # -- HTTP -------------------------------------------------------------------------------

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = str(body.get("model", ""))
        messages = list(body.get("messages", []))
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        behaviour = self.behaviours.get(model, ModelBehaviour())
        with self.lock:
            seen = sum(1 for r in self.requests if r.model == model)
            entry = LoggedRequest(model=model, messages=messages, prompt=prompt)
            self.requests.append(entry)
        number = seen + 1
        if behaviour.block_at == number:
            self.blocked.set()
            self.release.wait(timeout=120)
        if behaviour.latency:
            time.sleep(behaviour.latency)
        if number <= behaviour.fail_first:
            entry.status = behaviour.fail_status
            return behaviour.fail_status, {
                "error": {"message": f"stub failure {number}", "type": "server_error"}
            }
        native = bool(body.get("tools"))
        tool_calls = None
        if number <= len(behaviour.script):
            text = behaviour.script[number - 1]
        elif native:  # OpenAI function calling: steps are tool_calls, the answer plain text
            steps_done = sum(1 for m in messages if m.get("role") == "tool")
            if (step := behaviour.step(steps_done)) is not None:
                text = ""
                tool_calls = [
                    {
                        "id": f"call_{number}",
                        "type": "function",
                        "function": {"name": step[0], "arguments": json.dumps(step[1])},
                    }
                ]
            else:
                text = self.answer_for(model, prompt)
                text += "." * max(0, behaviour.answer_chars - len(text))
        else:  # CrewAI's ReAct text protocol
            steps_done = prompt.count("Observation:")
            if (step := behaviour.step(steps_done)) is not None:
                text = (
                    f"Thought: step {steps_done + 1}\nAction: {step[0]}\n"
                    f"Action Input: {json.dumps(step[1])}"
                )
            else:
                answer = self.answer_for(model, prompt)
                answer += "." * max(0, behaviour.answer_chars - len(answer))
                text = f"Thought: I now know the final answer\nFinal Answer: {answer}"
        entry.answer = text or json.dumps(tool_calls)
        return 200, {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text or None}
                    | ({"tool_calls": tool_calls} if tool_calls else {}),
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt) // 4 + 1,
                "completion_tokens": len(text) // 4 + 1,
                "total_tokens": len(prompt) // 4 + len(text) // 4 + 2,
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    status, payload = 404, {"error": {"message": "not found"}}
                elif self.headers.get("authorization") == "Bearer bad-key":
                    with stub.lock:
                        stub.requests.append(
                            LoggedRequest(str(body.get("model")), [], "", status=401)
                        )
                    status, payload = (
                        401,
                        {"error": {"message": "Incorrect API key provided", "type": "auth"}},
                    )
                else:
                    status, payload = stub._respond(body)
                data = json.dumps(payload).encode()
                with stub.lock:
                    for entry in reversed(stub.requests):
                        if entry.answered_at is None and entry.messages == body.get("messages"):
                            entry.answered_at = time.monotonic()
                            break
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
