"""Results as CrewAI returns them: a durable execution's result as a ``CrewOutput``.

:class:`CrewOutput` *is* CrewAI's ``crewai.CrewOutput`` (a subclass), so code written
against CrewAI's result (``raw``, ``pydantic``, ``json_dict``, ``tasks_output``,
``token_usage``, ``to_dict()``, ``str()``, ``result["field"]``) runs unchanged; it adds the
execution's id and Kasal's older names (``output``, ``tasks``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from crewai.crews.crew_output import CrewOutput as _CrewAIOutput
from crewai.tasks.output_format import OutputFormat
from crewai.tasks.task_output import TaskOutput
from crewai.types.usage_metrics import UsageMetrics
from pydantic import BaseModel, ConfigDict

from kasal.execution import CrewWorkflowResult, TokenUsage
from kasal.spec import CrewSpec

__all__ = ["CrewOutput", "TaskOutput", "UsageMetrics", "crew_output", "usage_metrics"]


class CrewOutput(_CrewAIOutput):
    """CrewAI's ``CrewOutput`` of a durable execution, plus its ``execution_id``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    execution_id: str = ""

    @property
    def output(self) -> str:
        """The final output (``raw``)."""
        return self.raw

    @property
    def tasks(self) -> list[TaskOutput]:
        """Each task's output, in crew order (``tasks_output``)."""
        return self.tasks_output


def usage_metrics(usage: TokenUsage) -> UsageMetrics:
    """Kasal's token counts under CrewAI's ``UsageMetrics`` names."""
    return UsageMetrics(
        total_tokens=usage.total_tokens,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        successful_requests=usage.requests,
    )


def crew_output(
    result: CrewWorkflowResult,
    spec: CrewSpec,
    inputs: dict[str, Any] | None = None,
    models: dict[str, type[BaseModel]] | None = None,
) -> CrewOutput:
    """``result`` with CrewAI's surface. ``models`` are the tasks' Pydantic classes (the
    facade's own, a project's); a data spec's JSON Schema makes one otherwise."""
    # A missing input leaves descriptions with their placeholders; the outputs are intact.
    with contextlib.suppress(Exception):
        spec = spec.interpolated(inputs)
    by_name = {t.name: t for t in spec.tasks}
    models = dict(models or {})
    outputs: list[TaskOutput] = []
    for out in result.tasks:
        task = by_name.get(out.name)
        fmt = OutputFormat(out.output_format) if out.output_format else OutputFormat.RAW
        pydantic_out: BaseModel | None = None
        json_dict: dict[str, Any] | None = None
        if fmt == OutputFormat.PYDANTIC and out.json_dict is not None:
            model = models.get(out.name) or _model_for(task)
            pydantic_out = model.model_validate(out.json_dict) if model else None
        elif fmt == OutputFormat.JSON:
            json_dict = out.json_dict
        agent_role = out.agent
        if task is not None:
            with contextlib.suppress(KeyError):
                agent_role = spec.agent(task.agent).role
        outputs.append(
            TaskOutput(
                description=task.description if task else out.name,
                name=out.name,
                expected_output=task.expected_output if task else None,
                raw=out.raw,
                pydantic=pydantic_out,
                json_dict=json_dict,
                agent=agent_role,
                output_format=fmt,
            )
        )
    last = outputs[-1] if outputs else None
    return CrewOutput(
        raw=result.output,
        pydantic=last.pydantic if last else None,
        json_dict=last.json_dict if last else None,
        tasks_output=outputs,
        token_usage=usage_metrics(result.token_usage),
        execution_id=result.execution_id,
    )


def _model_for(task: Any) -> type[BaseModel] | None:
    if task is None or task.output_pydantic is None:
        return None
    from crewai.utilities.pydantic_schema_utils import create_model_from_schema

    schema = dict(task.output_pydantic)
    schema.setdefault("title", "Output")
    model: type[BaseModel] = create_model_from_schema(schema)
    return model
