"""OpenAPI documentation of the command bodies, built from the domain's own limits.

Bodies are parsed by the service itself (so that 400 and 422 are told apart and every
field error is named), which is why they are described here rather than by models.
"""

from typing import Any

from pydantic import BaseModel, Field

from warriors.domain.values import NAME_MAX_LENGTH, SKILL_MAX_LENGTH, SKILLS_MAX_COUNT

_NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "description": "Trimmed; not blank."}
_DOB = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        "description": "YYYY-MM-DD, a real date, not in the future."}  # fmt: skip
_SKILLS = {
    "type": ["array", "null"],
    "maxItems": SKILLS_MAX_COUNT,
    "items": {"type": "string", "minLength": 1, "maxLength": SKILL_MAX_LENGTH},
    "description": "Each trimmed, no case-insensitive duplicates; null or absent: none.",
}


def json_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


CREATE_BODY = json_body(
    {"type": "object", "required": ["name", "dob"], "additionalProperties": False,
     "properties": {"name": _NAME, "dob": _DOB, "fight_skills": _SKILLS}},
    {"name": "Miyamoto Musashi", "dob": "1584-03-12", "fight_skills": ["Katana", "Niten Ichi-ryu"]},
)  # fmt: skip
CHANGE_BODY = json_body(
    {"type": "object", "minProperties": 1, "additionalProperties": False,
     "properties": {"name": _NAME, "dob": _DOB, "fight_skills": _SKILLS}},
    {"name": "Musashi"},
)  # fmt: skip
SKILLS_BODY = json_body(
    {"type": "object", "required": ["fight_skills"], "additionalProperties": False,
     "properties": {"fight_skills": _SKILLS}},
    {"fight_skills": ["Katana", "Calligraphy"]},
)  # fmt: skip


class AcceptedBody(BaseModel):
    """A command was stored; read models follow (see the Location header)."""

    id: str = Field(examples=["01936d2e-7a1c-7b3e-9f10-4c2b8e1d2a33"])
    version: int = Field(description="The warrior's version after this command.", examples=[1])
    position: int = Field(description="The event's position in the global stream.", examples=[42])
