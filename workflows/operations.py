"""Workflows of operations: a schedule's run, a webhook delivery, Kasal's retention.

Deterministic orchestration only, like ``crew_workflow``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        DELIVER_WEBHOOK,
        PREPARE_SCHEDULED_RUN,
        PURGE_EXPIRED,
        DeliverWebhookInput,
        DeliverWebhookResult,
        PreparedRun,
        PrepareRunInput,
        PurgeInput,
        PurgeResult,
        ScheduledRunInput,
    )
    from kasal.constants import (
        CREW_WORKFLOW,
        RETENTION_WORKFLOW,
        SA_CREW_ID,
        SA_CREW_NAME,
        SA_OWNER,
        SA_STATUS,
        SCHEDULED_RUN_WORKFLOW,
        WEBHOOK_WORKFLOW,
        workflow_id_for,
    )
    from kasal.execution import CrewWorkflowInput, CrewWorkflowResult, WebhookDeliveryInput

#: How deliveries are retried: quickly at first, then at most every 10 minutes, for 3 days.
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["webhook_target"],
)
WEBHOOK_GIVE_UP = timedelta(days=3)


@workflow.defn(name=SCHEDULED_RUN_WORKFLOW)
class ScheduledCrewRun:
    """One run of a schedule: an ordinary execution (row, owner, webhooks, Web UI), started
    as a child so the schedule's overlap policy applies to the crew itself."""

    @workflow.run
    async def run(self, data: ScheduledRunInput) -> str:
        execution_id = workflow.uuid4().hex
        prepared = await workflow.execute_activity(
            PREPARE_SCHEDULED_RUN,
            PrepareRunInput(
                run=data, execution_id=execution_id, workflow_id=workflow.info().workflow_id
            ),
            result_type=PreparedRun,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary="prepare the run",
        )
        if prepared.skip or prepared.spec is None:
            return ""
        spec = prepared.spec
        attributes = None
        if data.search_attributes:
            values = {
                SA_CREW_NAME: spec.name[:200],
                SA_CREW_ID: prepared.crew_id,
                SA_OWNER: prepared.owner,
                SA_STATUS: "pending",
            }
            attributes = TypedSearchAttributes(
                [
                    SearchAttributePair(SearchAttributeKey.for_keyword(k), v)
                    for k, v in values.items()
                    if v
                ]
            )
        await workflow.execute_child_workflow(
            CREW_WORKFLOW,
            CrewWorkflowInput(
                execution_id=execution_id,
                spec=spec,
                inputs=prepared.inputs,
                crew_id=prepared.crew_id,
                owner=prepared.owner,
                schedule_id=data.schedule_id,
                webhooks=prepared.webhooks,
            ),
            id=workflow_id_for(execution_id),
            result_type=CrewWorkflowResult,
            search_attributes=attributes,
            memo={
                "crew_name": spec.name,
                "crew_id": prepared.crew_id,
                "owner": prepared.owner,
                "schedule_id": data.schedule_id,
                "status": "pending",
            },
            # The schedule's overlap policy cancels or terminates this run: the crew too.
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            static_summary=f"crew {spec.name} (schedule {data.schedule_id})",
        )
        return execution_id


@workflow.defn(name=WEBHOOK_WORKFLOW)
class WebhookDeliveryWorkflow:
    """One event to its subscriptions, each through a retrying activity. Started by the crew
    with an id of the event's own, it outlives the crew's run."""

    @workflow.run
    async def run(self, data: WebhookDeliveryInput) -> list[int | None]:
        async def one(subscription_id: str) -> int | None:
            try:
                result = await workflow.execute_activity(
                    DELIVER_WEBHOOK,
                    DeliverWebhookInput(
                        subscription_id=subscription_id,
                        event_id=data.event_id,
                        event_type=data.event_type,
                        execution_id=data.execution_id,
                        payload=data.payload,
                    ),
                    result_type=DeliverWebhookResult,
                    start_to_close_timeout=timedelta(seconds=30),
                    heartbeat_timeout=timedelta(seconds=3),
                    schedule_to_close_timeout=WEBHOOK_GIVE_UP,
                    retry_policy=WEBHOOK_RETRY,
                    summary=f"{data.event_type} -> {subscription_id}",
                )
                return result.status_code
            except ActivityError as exc:
                workflow.logger.warning("webhook %s gave up: %s", data.event_id, exc)
                return None

        return list(await asyncio.gather(*(one(s) for s in data.subscriptions)))


@workflow.defn(name=RETENTION_WORKFLOW)
class RetentionWorkflow:
    """Purge finished executions older than the retention period (run by the
    ``kasal-retention`` schedule)."""

    @workflow.run
    async def run(self, data: PurgeInput) -> PurgeResult:
        return await workflow.execute_activity(
            PURGE_EXPIRED,
            data,
            result_type=PurgeResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=5),
            summary="purge expired executions",
        )
