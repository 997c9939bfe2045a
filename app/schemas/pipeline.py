from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from app.models.enums import DealStage
from app.models.pipeline import STAGE_KEY_LENGTH
from app.schemas.common import InputSchema, Name, NotNullOnPatch, OutputSchema, Safe

StageKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=STAGE_KEY_LENGTH, pattern=r"^[a-z][a-z0-9_-]*$"),
    Field(
        description="A stage's stable identifier: lower-case letters, digits, `_` and `-`, "
        "starting with a letter. Never changes once the stage exists.",
        examples=["qualification"],
    ),
]


def _plain(value: DealStage | str) -> str:
    return str(value)  # DealStage.CLOSED -> "closed"


def _one_stage_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # One error at `stage` (as the enum of the four stages gave before pipelines), not one
    # per alternative of the union with their internal names in `loc`.
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "enum",
            "Input should be a stage key: a lower-case letter, then lower-case letters, "
            "digits, `_` or `-`",
        ) from None


# A deal's `stage`: a stage key of its pipeline. The default pipeline's keys are named
# (`DealStage`, as before pipelines), so that a client generated from the document keeps them;
# any other pipeline's keys are strings.
DealStageKey = Annotated[
    DealStage | StageKey,
    WrapValidator(_one_stage_error),
    AfterValidator(_plain),
    Field(
        description="A stage key of the deal's pipeline: for the default pipeline, one of "
        "`qualification`, `proposal`, `negotiation`, `closed` (`DealStage`)."
    ),
]
StageName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Safe
]
# Strict: a JSON number, not `true` (which Python's int would take as 1).
Probability = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=100,
        description="How likely (percent) an open deal at this stage is won: weighs the "
        "summary's `weighted_pipeline_value`.",
    ),
]
MAX_STAGES = 50
Position = Annotated[int, Field(strict=True, ge=0, le=MAX_STAGES - 1)]


class StageCreate(InputSchema):
    key: StageKey
    name: StageName
    probability: Probability


class StageAdd(StageCreate):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"key": "demo", "name": "Demo", "probability": 30, "position": 1}]
        }
    )

    position: Position | None = Field(
        default=None,
        description="Where it goes (0: first); the stages from there on move one place down. "
        "Last when left out (or past the end).",
    )


class StageUpdate(NotNullOnPatch):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Live demo", "position": 2}]}
    )

    _not_null = ("name", "probability", "position")

    name: StageName | None = None
    probability: Probability | None = None
    position: Position | None = Field(
        default=None,
        description="Its new place (0: first); the stages between move one place to make "
        "room (past the end: last).",
    )


def _unique_keys(stages: list[StageCreate]) -> list[StageCreate]:
    keys = [stage.key for stage in stages]
    if len(set(keys)) != len(keys):
        raise ValueError("stage keys must be unique in a pipeline")
    return stages


class PipelineCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Partnerships",
                    "stages": [
                        {"key": "intro", "name": "Introduction", "probability": 10},
                        {"key": "pilot", "name": "Pilot", "probability": 50},
                        {"key": "signed", "name": "Signed", "probability": 100},
                    ],
                }
            ]
        }
    )

    name: Name
    stages: Annotated[
        list[StageCreate],
        Field(
            min_length=1,
            max_length=MAX_STAGES,
            description="In order: the first is position 0, where new deals start.",
        ),
        AfterValidator(_unique_keys),
    ]


class PipelineUpdate(NotNullOnPatch):
    model_config = ConfigDict(json_schema_extra={"examples": [{"is_default": True}]})

    _not_null = ("name", "is_default")

    name: Name | None = None
    is_default: bool | None = Field(
        strict=True,
        default=None,
        description="`true` makes it the organization's default pipeline (the former default "
        "stops being it, in the same change). A default cannot be unset, only replaced.",
    )


class StageRead(OutputSchema):
    key: str
    name: str
    position: int
    probability: int


class PipelineRead(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "organization_id": 1,
                    "name": "Sales pipeline",
                    "is_default": True,
                    "stages": [
                        {"key": "qualification", "name": "Qualification", "position": 0,
                         "probability": 10},
                        {"key": "proposal", "name": "Proposal", "position": 1, "probability": 40},
                        {"key": "negotiation", "name": "Negotiation", "position": 2,
                         "probability": 70},
                        {"key": "closed", "name": "Closed", "position": 3, "probability": 100},
                    ],
                    "created_at": "2026-01-15T10:00:00Z",
                    "updated_at": "2026-01-15T10:00:00Z",
                }
            ]
        }
    )  # fmt: skip

    id: int
    organization_id: int
    name: str
    is_default: bool
    stages: list[StageRead] = Field(description="In position order.")
    created_at: datetime
    updated_at: datetime
