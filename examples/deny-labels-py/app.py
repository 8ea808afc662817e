"""The component entry point: `deny_labels` adapted to the `portcullis:policy` world.

componentize-py generates the `wit_world` module from `wit/policy.wit` at
build time. The world exports the `admission` interface, so componentize-py
looks for a class named `Admission` in this module and instantiates it for
every export call; the interface's types are in `wit_world.exports.admission`.
WIT records are dataclasses, enums are `Enum`s, `option<T>` is
`Optional[T]`, and a `result<_, string>` return is `None` on success or a
raised `componentize_py_types.Err(message)` on failure.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.admission import (
    AdmissionRequest,
    Operation,
    PolicyMetadata,
    Rule,
    ValidationResponse,
)

import deny_labels


def _response(verdict: deny_labels.Verdict) -> ValidationResponse:
    return ValidationResponse(
        allowed=verdict.allowed,
        message=verdict.message,
        code=verdict.code,
        warnings=list(verdict.warnings),
        audit_annotations=[],
        mutated_object=None,
    )


class Admission(exports.Admission):
    def metadata(self) -> PolicyMetadata:
        return PolicyMetadata(
            rules=[
                Rule(
                    api_groups=["*"],
                    api_versions=["*"],
                    resources=["*"],
                    operations=[Operation.CREATE, Operation.UPDATE],
                )
            ],
            mutating=False,
            description=deny_labels.DESCRIPTION,
        )

    def validate_settings(self, settings: str) -> None:
        problem = deny_labels.validate_settings(settings)
        if problem is not None:
            raise Err(problem)

    def validate(
        self, request: AdmissionRequest, settings: str
    ) -> ValidationResponse:
        verdict = deny_labels.validate_request(
            request.operation.name, request.object, settings
        )
        return _response(verdict)

    def validate_raw(self, document: str, settings: str) -> ValidationResponse:
        return _response(deny_labels.validate_raw(document, settings))
