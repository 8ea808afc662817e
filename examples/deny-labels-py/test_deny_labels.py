"""Unit tests of the policy logic, with a stock interpreter:

    cd examples/deny-labels-py && python3 -m unittest -v

The component itself is tested through the host in tests/tests/python.rs.
"""

import json
import unittest
from pathlib import Path

import deny_labels
from deny_labels import Verdict

TEST_DATA = Path(__file__).resolve().parent / "test_data"
SETTINGS = (TEST_DATA / "settings.json").read_text()


def fixture(name: str):
    return json.loads((TEST_DATA / name).read_text())


def verdict_on_request(name: str, settings: str = SETTINGS) -> Verdict:
    """The verdict on a bare AdmissionRequest fixture, with the object passed
    as JSON text the way the host passes it (None when absent or null)."""
    request = fixture(name)
    obj = request.get("object")
    text = None if obj is None else json.dumps(obj)
    return deny_labels.validate_request(request["operation"], text, settings)


def rejected(message: str, code: int) -> Verdict:
    return Verdict(allowed=False, message=message, code=code)


ACCEPTED = Verdict(allowed=True)


class Fixtures(unittest.TestCase):
    def test_admission_requests(self):
        cases = {
            "pod_with_denied_label.json": rejected('label "owner" is not allowed', 403),
            "pod_with_denied_labels.json": rejected(
                'labels "cost-center", "owner" are not allowed', 403
            ),
            "pod_without_denied_labels.json": ACCEPTED,
            "pod_without_labels.json": ACCEPTED,
            "deployment_update_with_denied_label.json": rejected(
                'label "cost-center" is not allowed', 403
            ),
            "delete_pod_with_denied_label.json": ACCEPTED,
        }
        for name, expected in cases.items():
            with self.subTest(name):
                self.assertEqual(verdict_on_request(name), expected)

    def test_raw_documents(self):
        cases = {
            "raw_document_with_denied_label.json": rejected(
                'label "owner" is not allowed', 403
            ),
            "raw_document_without_denied_labels.json": ACCEPTED,
        }
        for name, expected in cases.items():
            with self.subTest(name):
                document = (TEST_DATA / name).read_text()
                self.assertEqual(deny_labels.validate_raw(document, SETTINGS), expected)

    def test_only_the_configured_keys_are_denied(self):
        settings = json.dumps({"deniedLabels": ["tier"]})
        self.assertEqual(
            verdict_on_request("pod_with_denied_labels.json", settings), ACCEPTED
        )
        self.assertEqual(
            verdict_on_request("pod_without_denied_labels.json", settings),
            rejected('label "tier" is not allowed', 403),
        )


def check(obj, settings=SETTINGS, operation="CREATE") -> Verdict:
    text = obj if isinstance(obj, str) or obj is None else json.dumps(obj)
    return deny_labels.validate_request(operation, text, settings)


class Validate(unittest.TestCase):
    def test_keys_match_exactly_and_values_do_not_matter(self):
        for labels in ({"Owner": "a"}, {"owner-team": "a"}, {"app": "owner"}):
            with self.subTest(labels):
                self.assertEqual(check({"metadata": {"labels": labels}}), ACCEPTED)
        for value in ("", "alice", None):
            with self.subTest(value):
                self.assertEqual(
                    check({"metadata": {"labels": {"owner": value}}}),
                    rejected('label "owner" is not allowed', 403),
                )

    def test_every_offending_key_is_listed_sorted(self):
        settings = json.dumps({"deniedLabels": ["zone", "owner", "app", "owner"]})
        labels = {"zone": "z", "owner": "o", "app": "a", "other": "x"}
        self.assertEqual(
            check({"metadata": {"labels": labels}}, settings),
            rejected('labels "app", "owner", "zone" are not allowed', 403),
        )

    def test_keys_are_quoted_as_json(self):
        settings = json.dumps({"deniedLabels": ['say "hi"', "example.com/owner"]})
        self.assertEqual(
            check({"metadata": {"labels": {'say "hi"': "x", "example.com/owner": "y"}}}, settings),
            rejected('labels "example.com/owner", "say \\"hi\\"" are not allowed', 403),
        )

    def test_objects_without_labels_are_accepted(self):
        for obj in ({}, {"metadata": None}, {"metadata": {}}, {"metadata": {"labels": None}},
                    {"metadata": {"labels": {}}}, {"metadata": {"name": "x"}}):
            with self.subTest(obj):
                self.assertEqual(check(obj), ACCEPTED)

    def test_pod_template_labels_are_not_the_objects_labels(self):
        deployment = {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"template": {"metadata": {"labels": {"owner": "alice"}}}},
        }
        self.assertEqual(check(deployment), ACCEPTED)

    def test_no_object_or_a_deletion_is_accepted(self):
        self.assertEqual(check(None), ACCEPTED)
        self.assertEqual(check(None, operation="DELETE"), ACCEPTED)
        self.assertEqual(
            check({"metadata": {"labels": {"owner": "a"}}}, operation="DELETE"), ACCEPTED
        )

    def test_update_and_connect_are_checked(self):
        for operation in ("UPDATE", "CONNECT"):
            with self.subTest(operation):
                self.assertEqual(
                    check({"metadata": {"labels": {"owner": "a"}}}, operation=operation),
                    rejected('label "owner" is not allowed', 403),
                )

    def test_unreadable_objects_are_rejected_with_400(self):
        cases = {
            "{not json": "the object is not valid JSON: ",
            "NaN": "the object is not valid JSON: NaN is not a JSON value",
            "[1, 2]": "object must be a JSON object, got a list",
            '"pod"': "object must be a JSON object, got a string",
            '{"metadata": []}': "metadata of the object must be an object, got a list",
            '{"metadata": {"labels": ["owner"]}}':
                "metadata.labels of the object must be an object, got a list",
            '{"metadata": {"labels": "owner=alice"}}':
                "metadata.labels of the object must be an object, got a string",
        }
        for text, message in cases.items():
            with self.subTest(text):
                verdict = check(text)
                self.assertFalse(verdict.allowed)
                self.assertEqual(verdict.code, 400)
                self.assertTrue(verdict.message.startswith(message), verdict.message)

    def test_unusable_settings_at_evaluation_are_a_500(self):
        verdict = check({"metadata": {"labels": {"owner": "a"}}}, settings="{}")
        self.assertEqual(verdict.code, 500)
        self.assertFalse(verdict.allowed)
        self.assertTrue(verdict.message.startswith("invalid settings: deniedLabels is required"))


class ValidateRaw(unittest.TestCase):
    def test_same_check_on_the_documents_labels(self):
        self.assertEqual(
            deny_labels.validate_raw('{"metadata": {"labels": {"cost-center": "1"}}}', SETTINGS),
            rejected('label "cost-center" is not allowed', 403),
        )
        self.assertEqual(deny_labels.validate_raw('{"spec": {}}', SETTINGS), ACCEPTED)

    def test_unreadable_documents_are_rejected_with_400(self):
        verdict = deny_labels.validate_raw("plan: yaml", SETTINGS)
        self.assertEqual((verdict.allowed, verdict.code), (False, 400))
        self.assertTrue(verdict.message.startswith("the document is not valid JSON: "))
        verdict = deny_labels.validate_raw("[]", SETTINGS)
        self.assertEqual(
            verdict, rejected("document must be a JSON object, got a list", 400)
        )


class Settings(unittest.TestCase):
    def test_valid_settings(self):
        self.assertIsNone(deny_labels.validate_settings(SETTINGS))
        self.assertEqual(deny_labels.parse_settings(SETTINGS), ["cost-center", "owner"])
        self.assertEqual(
            deny_labels.parse_settings('{"deniedLabels": ["b", "a", "b"]}'), ["a", "b"]
        )

    def test_invalid_settings_say_why(self):
        cases = {
            "{}": 'deniedLabels is required: give the list of label keys to deny, '
                  'e.g. {"deniedLabels": ["owner"]}',
            '{"deniedLabels": []}': "deniedLabels must list at least one label key",
            '{"deniedLabels": "owner"}': "deniedLabels must be a list of label keys, got a string",
            '{"deniedLabels": null}': "deniedLabels must be a list of label keys, got null",
            '{"deniedLabels": {"owner": true}}':
                "deniedLabels must be a list of label keys, got an object",
            '{"deniedLabels": ["owner", 7]}':
                "deniedLabels[1] must be a label key (a string), got a number",
            '{"deniedLabels": [""]}': "deniedLabels[0] must not be empty",
            '{"deniedLabels": ["owner"], "deniedlabels": ["x"], "extra": 1}':
                'unknown settings "deniedlabels", "extra": the only setting is "deniedLabels"',
            '{"denied": ["owner"]}': 'unknown setting "denied": the only setting is "deniedLabels"',
            '["owner"]': "settings must be a JSON object, got a list",
            "null": "settings must be a JSON object, got null",
        }
        for text, message in cases.items():
            with self.subTest(text):
                self.assertEqual(deny_labels.validate_settings(text), message)
                with self.assertRaises(deny_labels.SettingsError):
                    deny_labels.parse_settings(text)

    def test_settings_that_are_not_json(self):
        message = deny_labels.validate_settings("deniedLabels: [owner]")
        self.assertTrue(message.startswith("settings are not valid JSON: "), message)


if __name__ == "__main__":
    unittest.main()
