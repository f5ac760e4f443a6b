"""The JSON Schemas in schemas/, loaded once, and a validator that picks the schema by payload."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from tests.conftest import REPO

SCHEMAS = {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in (REPO / "schemas").glob("*.json")}
VALIDATORS = {name: Draft202012Validator(s) for name, s in SCHEMAS.items()}


def validate(payload: Any, topic: str = "") -> None:
    """Raise jsonschema.ValidationError unless ``payload`` matches its schema (by its ``schema``
    field; label payloads, which have none, by topic)."""
    name = "label.v1" if "/label/" in topic else str(payload["schema"]).removeprefix("edged.")
    VALIDATORS[name].validate(payload)


def validate_all(messages: list[tuple[str, Any, bool]]) -> int:
    """Validate every recorded (topic, payload, retained) message; returns how many."""
    for topic, payload, _ in messages:
        validate(payload, topic)
    return len(messages)
