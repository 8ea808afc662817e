"""The deny-labels policy, in plain Python.

This module holds all of the policy's logic and imports nothing but the
standard library (not the generated `wit_world` bindings), so it runs and is
unit-tested with a stock interpreter: `python3 -m unittest`. `app.py` adapts it
to the `portcullis:policy` world.

Settings: `{"deniedLabels": ["owner", "cost-center"]}`, a non-empty list of
label keys. A resource whose `metadata.labels` carries any of them is rejected
with code 403.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, List, Optional

#: The only setting, and the key it is read from.
DENIED_LABELS = "deniedLabels"

#: HTTP status of a rejection because of a denied label.
FORBIDDEN = 403
#: HTTP status of a rejection because the object cannot be read.
BAD_REQUEST = 400
#: HTTP status when the settings (already accepted at load time) are unusable.
INTERNAL_ERROR = 500

DESCRIPTION = (
    "Rejects any resource whose metadata.labels carries one of the label keys "
    "listed in the deniedLabels setting. Written in Python and built with "
    "componentize-py."
)


class SettingsError(ValueError):
    """The operator's settings are not usable; the message says why."""


@dataclass(frozen=True)
class Verdict:
    """A policy's decision, independent of the generated bindings."""

    allowed: bool
    message: Optional[str] = None
    code: Optional[int] = None
    warnings: List[str] = field(default_factory=list)

    @staticmethod
    def accept() -> "Verdict":
        return Verdict(allowed=True)

    @staticmethod
    def reject(message: str, code: int) -> "Verdict":
        return Verdict(allowed=False, message=message, code=code)


def _no_constant(name: str) -> Any:
    """Refuses `NaN`, `Infinity` and `-Infinity`, which are not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def loads(text: str) -> Any:
    """Parses strict JSON `text`."""
    return json.loads(text, parse_constant=_no_constant)


def quote(text: str) -> str:
    """`text` as a JSON string literal, as messages show keys."""
    return json.dumps(text, ensure_ascii=False)


def _type_name(value: Any) -> str:
    """The JSON name of the type of a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_settings(text: str) -> List[str]:
    """The denied label keys in the settings JSON `text`, sorted and unique.

    Raises `SettingsError` with a message for the operator when the settings
    are not a JSON object with exactly one key, `deniedLabels`, holding a
    non-empty list of non-empty strings.
    """
    try:
        settings = loads(text)
    except (ValueError, RecursionError) as error:
        raise SettingsError(f"settings are not valid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise SettingsError(
            f"settings must be a JSON object, got {_type_name(settings)}"
        )
    unknown = sorted(key for key in settings if key != DENIED_LABELS)
    if unknown:
        names = ", ".join(quote(key) for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise SettingsError(
            f"unknown setting{plural} {names}: the only setting is {quote(DENIED_LABELS)}"
        )
    if DENIED_LABELS not in settings:
        raise SettingsError(
            f"{DENIED_LABELS} is required: give the list of label keys to deny, "
            f'e.g. {{"{DENIED_LABELS}": ["owner"]}}'
        )
    denied = settings[DENIED_LABELS]
    if not isinstance(denied, list):
        raise SettingsError(
            f"{DENIED_LABELS} must be a list of label keys, got {_type_name(denied)}"
        )
    if not denied:
        raise SettingsError(f"{DENIED_LABELS} must list at least one label key")
    for index, key in enumerate(denied):
        if not isinstance(key, str):
            raise SettingsError(
                f"{DENIED_LABELS}[{index}] must be a label key (a string), "
                f"got {_type_name(key)}"
            )
        if not key:
            raise SettingsError(f"{DENIED_LABELS}[{index}] must not be empty")
    return sorted(set(denied))


def validate_settings(text: str) -> Optional[str]:
    """None when the settings JSON `text` is usable, else why not."""
    try:
        parse_settings(text)
    except SettingsError as error:
        return str(error)
    return None


def denied_message(keys: List[str]) -> str:
    """The rejection message for the (sorted) denied label `keys`."""
    names = ", ".join(quote(key) for key in keys)
    if len(keys) == 1:
        return f"label {names} is not allowed"
    return f"labels {names} are not allowed"


def check_labels(resource: Any, denied: List[str], what: str) -> Verdict:
    """The verdict on a parsed JSON `resource` (called `what` in messages)."""
    if not isinstance(resource, dict):
        return Verdict.reject(
            f"{what} must be a JSON object, got {_type_name(resource)}", BAD_REQUEST
        )
    metadata = resource.get("metadata")
    if metadata is None:
        return Verdict.accept()
    if not isinstance(metadata, dict):
        return Verdict.reject(
            f"metadata of the {what} must be an object, got {_type_name(metadata)}",
            BAD_REQUEST,
        )
    labels = metadata.get("labels")
    if labels is None:
        return Verdict.accept()
    if not isinstance(labels, dict):
        return Verdict.reject(
            f"metadata.labels of the {what} must be an object, got {_type_name(labels)}",
            BAD_REQUEST,
        )
    offending = [key for key in denied if key in labels]
    if offending:
        return Verdict.reject(denied_message(offending), FORBIDDEN)
    return Verdict.accept()


def _parse_document(text: str, what: str):
    """(parsed JSON, None) or (None, a 400 rejection)."""
    try:
        return loads(text), None
    except (ValueError, RecursionError) as error:
        return None, Verdict.reject(f"the {what} is not valid JSON: {error}", BAD_REQUEST)


def _denied_or_rejection(settings: str):
    """(denied keys, None) or (None, a 500 rejection)."""
    try:
        return parse_settings(settings), None
    except SettingsError as error:
        return None, Verdict.reject(f"invalid settings: {error}", INTERNAL_ERROR)


def validate_request(operation: str, obj: Optional[str], settings: str) -> Verdict:
    """The verdict on an admission request.

    `operation` is `CREATE`, `UPDATE`, `DELETE` or `CONNECT`; `obj` is the
    request's `object` as JSON text (None when absent); `settings` is the
    settings JSON text. A deletion is always accepted: nothing is being stored.
    """
    if operation == "DELETE" or obj is None:
        return Verdict.accept()
    denied, rejection = _denied_or_rejection(settings)
    if rejection:
        return rejection
    resource, rejection = _parse_document(obj, "object")
    if rejection:
        return rejection
    return check_labels(resource, denied, "object")


def validate_raw(document: str, settings: str) -> Verdict:
    """The verdict on a raw JSON document: the same check on its `metadata.labels`."""
    denied, rejection = _denied_or_rejection(settings)
    if rejection:
        return rejection
    resource, rejection = _parse_document(document, "document")
    if rejection:
        return rejection
    return check_labels(resource, denied, "document")
