"""Issue 10: one OpenTelemetry trace from the API request through the workflow, its task
activities and LLM calls, across the API and a separate worker process; Prometheus
``/metrics`` on both counting a run; JSON logs naming execution, task and trace."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from kasal import telemetry
from kasal.client import free_port
from tests.fixtures.api import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    api_settings_for,
    asgi_client,
    login,
    new_user,
    offline_spec,
    running_app,
    wait_for_status,
)
from tests.fixtures.worker_process import WorkerProcess

pytestmark = pytest.mark.timeout(120)


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint (what a collector is to the worker): it decodes every
    export into (trace id, span id, parent id, name, attributes) tuples kept in memory."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = {
                        a.key: a.value.string_value for a in resource.resource.attributes
                    }.get("service.name")
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(
                                {
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex() or None,
                                    "name": span.name,
                                    "service": service,
                                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                                }
                            )
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _memory_span(span) -> dict:
    return {
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
    }


@pytest.fixture
def tracing(monkeypatch):
    """The API's spans into an in-memory exporter (this process's tracer provider)."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")  # the test session turns it off
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_provider(provider)
    yield exporter
    telemetry.use_provider(None)
    provider.shutdown()


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus exposition, parsed by the Prometheus client's parser."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


async def test_one_trace_and_metrics_across_api_and_worker_process(
    tmp_path, temporal_server, temporal_client, task_queue, settings, tracing
):
    receiver = OtlpReceiver()
    metrics_port = free_port()
    worker = WorkerProcess(
        temporal_server.address,
        task_queue,
        tmp_path / "worker",
        OTEL_SDK_DISABLED="false",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="kasal-worker-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
        KASAL_WORKER_METRICS_PORT=str(metrics_port),
        KASAL_LOG_FORMAT="json",
    )
    api = api_settings_for(settings, database_url=worker.env["KASAL_DATABASE_URL"])
    try:
        import asyncio

        await asyncio.to_thread(worker.start)
        async with running_app(api) as app, asgi_client(app) as client:
            before = scrape((await client.get("/metrics")).text)
            admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            alice = await new_user(client, admin)
            started = await client.post(
                "/api/v1/executions", json={"spec": offline_spec("traced")}, headers=alice
            )
            assert started.status_code == 202, started.text
            execution_id = started.json()["execution_id"]
            done = await wait_for_status(client, alice, execution_id, {"completed", "failed"})
            assert done["status"] == "completed"
            api_metrics = scrape((await client.get("/metrics")).text)

            # -- the trace ---------------------------------------------------------------
            api_spans = [_memory_span(s) for s in tracing.get_finished_spans()]
            root = next(
                s
                for s in api_spans
                if s["name"] == "POST /api/v1/executions" and s["parent_id"] is None
            )

            def llm_spans():
                return [
                    s
                    for s in receiver.spans
                    if s["name"] == "llm.call" and s["trace_id"] == root["trace_id"]
                ]

            for _ in range(200):
                if len(llm_spans()) >= 2:
                    break
                await asyncio.sleep(0.1)
            spans = {s["span_id"]: s for s in api_spans + receiver.spans}
            assert len(llm_spans()) == 2, sorted({s["name"] for s in receiver.spans})
            for llm in llm_spans():
                assert llm["service"] == "kasal-worker-under-test"
                assert llm["attributes"]["gen_ai.request.model"] == "offline/analyst"
                assert llm["attributes"]["gen_ai.usage.output_tokens"] > 0
                assert "kasal.llm.latency_ms" in llm["attributes"]
                chain, current = [], llm
                while current["parent_id"] is not None:
                    current = spans[current["parent_id"]]  # a gap would be a KeyError
                    chain.append(current["name"])
                assert current is root, chain
                # The workflow schedules the activity (StartActivity, a span the worker
                # makes in the workflow), under the API's start of the workflow.
                assert chain == [
                    "RunActivity:run_task",
                    "StartActivity:run_task",
                    "StartWorkflow:CrewWorkflow",
                    "POST /api/v1/executions",
                ], chain
            start_span = next(s for s in api_spans if s["name"] == "StartWorkflow:CrewWorkflow")
            run_workflow = [s for s in receiver.spans if s["name"] == "RunWorkflow:CrewWorkflow"]
            assert [s["parent_id"] for s in run_workflow] == [start_span["span_id"]]
            assert (
                run_workflow[0]["attributes"]["temporalWorkflowID"] == f"kasal-exec-{execution_id}"
            )
            # No prompt text anywhere without content capture.
            dumped = json.dumps([s["attributes"] for s in spans.values()], default=str)
            assert "Step 0" not in dumped and "Analyse things" not in dumped

            # -- the metrics -------------------------------------------------------------
            started_delta = total(api_metrics, "kasal_executions_started_total") - total(
                before, "kasal_executions_started_total"
            )
            assert started_delta == 1
            assert (
                total(
                    api_metrics,
                    "kasal_http_request_duration_seconds_count",
                    route="/api/v1/executions",
                    method="POST",
                    status="202",
                )
                >= 1
            )
            async with httpx.AsyncClient(timeout=10) as http:
                for _ in range(100):
                    worker_text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                    worker_metrics = scrape(worker_text)
                    if total(worker_metrics, "kasal_executions_finished_total"):
                        break
                    await asyncio.sleep(0.1)
            assert total(worker_metrics, "kasal_executions_finished_total", state="completed") == 1
            # The worker settled its heap once started: its collections are counted.
            assert total(worker_metrics, "kasal_gc_pause_seconds_count") > 0
            assert (
                total(
                    worker_metrics,
                    "kasal_task_duration_seconds_count",
                    kind="run_task",
                    outcome="completed",
                )
                == 2
            )
            assert total(worker_metrics, "kasal_llm_calls_total", model="offline/analyst") == 2
            assert (
                total(worker_metrics, "kasal_llm_tokens_total")
                == done["token_usage"]["total_tokens"]
            )
            assert total(worker_metrics, "kasal_task_retries_total") == 0
            # The Temporal SDK's own worker metrics are on the same page.
            assert any(name.startswith("temporal_") for name, _ in worker_metrics), sorted(
                {n for n, _ in worker_metrics}
            )[:20]
    finally:
        worker.stop()
        receiver.stop()

    # -- the worker's JSON logs name the execution, the task and the trace ----------------
    lines = [json.loads(line) for line in worker.output if line.startswith("{")]
    task_lines = [line for line in lines if line.get("execution_id") == execution_id]
    assert {line["task"] for line in task_lines} == {"step0", "step1"}, worker.output[-20:]
    assert {line["trace_id"] for line in task_lines} == {root["trace_id"]}
