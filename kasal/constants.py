"""Names shared by the worker, the API, the CLI and the tests."""

#: The one task queue crews run on unless KASAL_TASK_QUEUE says otherwise.
TASK_QUEUE = "kasal-crews"

#: Workflow type name, so callers that do not import ``workflows`` can start crews.
CREW_WORKFLOW = "CrewWorkflow"

#: Workflow ids are ``kasal-exec-<execution id>``.
WORKFLOW_ID_PREFIX = "kasal-exec-"

#: Query, update and signal names of the crew workflow.
STATUS_QUERY = "status"
TRACE_QUERY = "trace"
EVENTS_SIGNAL = "activity_events"
JOURNAL_QUERY = "journal"
FEEDBACK_UPDATE = "feedback"
OUTPUTS_QUERY = "outputs"
STOP_SIGNAL = "stop"
WAITING_QUERY = "waiting"

#: Workflow types of schedules, webhook deliveries and retention.
SCHEDULED_RUN_WORKFLOW = "ScheduledCrewRun"
WEBHOOK_WORKFLOW = "WebhookDelivery"
RETENTION_WORKFLOW = "KasalRetention"
#: Schedule ids are ``kasal-sched-<schedule id>``; Kasal's own retention schedule.
SCHEDULE_ID_PREFIX = "kasal-sched-"
RETENTION_SCHEDULE_ID = "kasal-retention"

#: Topic of the workflow stream that carries execution events.
EVENTS_TOPIC = "events"

#: Custom search attributes (registered on the embedded dev server at start).
SA_CREW_NAME = "KasalCrewName"
SA_CREW_ID = "KasalCrewId"
SA_OWNER = "KasalOwner"
SA_STATUS = "KasalStatus"


def workflow_id_for(execution_id: str) -> str:
    """The Temporal workflow id of an execution."""
    return f"{WORKFLOW_ID_PREFIX}{execution_id}"
