"""The Python template (plugins/template-py) answers exactly as the TypeScript one and so the
Rust one: for every event type, the requests in `plugins/template-ts/tests/expected/`, byte for
byte once reviewed, and the same answers for the unusual and malformed events and the
configurations Canopy's parity test (host/tests/suite/languages.rs) uses."""

from __future__ import annotations

import json
import unittest

from support import REPO, call_transform, load_plugin, review, sample, wit_config, wit_response

EXPECTED = REPO / "plugins" / "template-ts" / "tests" / "expected"
OWN_EXPECTED = REPO / "plugins" / "template-py" / "tests" / "expected"
SETTINGS = json.loads((REPO / "plugins" / "template-py" / "tests" / "settings.json").read_text())
URL = {"url": "https://hooks.example.com/loyalty"}


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.app = load_plugin("plugins/template-py")
        cls.plugin = cls.app.Plugin()

    def transform(self, event: str, settings: object, secrets: list[str]) -> str:
        return review(call_transform(self.plugin, event, wit_config(settings, secrets)))

    def test_describes_itself_as_the_typescript_template_does(self) -> None:
        info = self.plugin.describe()
        self.assertEqual((info.id, info.name, info.version), ("template-py", "Template (Python)", "0.1.0"))
        self.assertEqual(info.description, "POSTs the canonical event as JSON to a URL")
        self.assertEqual((info.events, info.allowed_hosts), (["*"], ["settings:url"]))
        self.assertIsNone(info.rate_limit)
        self.assertEqual((info.needs.memory_mib, info.needs.component_mib), (None, 32))
        specs = [(s.name, s.label, s.kind.name, s.required, s.secret, s.default_value) for s in info.settings]
        self.assertEqual(
            specs,
            [
                ("url", "Endpoint URL", "URL", True, False, None),
                ("require_email", "Only customers with an email", "BOOLEAN", False, False, "false"),
                ("token", "Bearer token", "TEXT", False, True, None),
                ("signing_secret", "Signing secret", "TEXT", False, True, None),
            ],
        )
        self.assertEqual(
            [s.description for s in info.settings],
            [
                "Where events are POSTed, e.g. https://hooks.example.com/loyalty",
                "Skip events about anonymous customers",
                "Sent as `Authorization: Bearer <token>`",
                "Signs the body as `X-Signature: <hex HMAC-SHA256>`",
            ],
        )

    def test_answers_every_sample_as_the_typescript_templates_expected_files(self) -> None:
        # `canopy plugin test` sets every secret the plugin declares.
        secrets = [s.name for s in self.plugin.describe().settings if s.secret]
        self.assertEqual(self.plugin.validate_config(wit_config(SETTINGS, secrets)), [])
        files = sorted(EXPECTED.glob("*.json"))
        self.assertEqual(len(files), 19)
        for file in files:
            with self.subTest(event=file.stem):
                answered = self.transform(sample(file.stem), SETTINGS, secrets)
                self.assertEqual(answered, file.read_text())
                self.assertEqual(answered, (OWN_EXPECTED / file.name).read_text())

    def test_bodies_are_the_events_byte_for_byte_in_compact_json(self) -> None:
        for file in sorted(EXPECTED.glob("*.json")):
            requests = call_transform(self.plugin, sample(file.stem), wit_config(URL))
            compact = json.dumps(json.loads(sample(file.stem)), separators=(",", ":"), ensure_ascii=False)
            self.assertEqual(requests[0].body, compact.encode())

    def test_validates_configurations_as_the_rust_template(self) -> None:
        def fields(settings: object, secrets: list[str] = []) -> list[tuple[str, str]]:
            return [(e.field, e.message) for e in self.plugin.validate_config(wit_config(settings, secrets))]

        self.assertEqual(fields(URL), [])
        self.assertEqual(fields(URL, ["token", "signing_secret"]), [])
        self.assertEqual(fields({"url": "https://hooks.example.com/x", "require_email": True}, ["token"]), [])
        self.assertEqual(fields({}), [("url", "Endpoint URL is required")])
        self.assertEqual(fields({"url": "   "}), [("url", "Endpoint URL is required")])
        self.assertEqual(
            fields({"url": "ftp://nope"}),
            [("url", "Endpoint URL must start with https:// or http://")],
        )
        self.assertEqual(fields("[1]"), [("", "settings must be a JSON object")])
        self.assertEqual(fields(""), [("url", "Endpoint URL is required")])
        (only,) = fields("{")
        self.assertEqual(only[0], "")
        self.assertTrue(only[1].startswith("settings are not valid JSON: "), only)

    def test_refuses_and_skips_as_the_rust_template(self) -> None:
        anonymous = json.loads(sample("review.submitted"))
        anonymous["customer"] = {"shopify_customer_id": 42}
        blank_email = json.loads(sample("tier.changed"))
        blank_email["customer"]["email"] = "  "
        required = {"url": "https://hooks.example.com/x", "require_email": True}
        for event in (anonymous, blank_email):
            self.assertEqual(
                json.loads(self.transform(json.dumps(event), required, ["token"])),
                {"refused": "skip", "reason": "the customer has no email"},
            )
        self.assertEqual(
            json.loads(self.transform(sample("tier.changed"), {}, [])),
            {"refused": "invalid_config", "reason": "Endpoint URL is required"},
        )
        # Without require_email the anonymous customer is sent, the id as text.
        sent = json.loads(self.transform(json.dumps(anonymous), URL, []))
        self.assertEqual(sent[0]["body"]["customer"], {"shopify_customer_id": "42"})
        self.assertEqual(sent[0]["headers"][1:], ["X-Event-Type: review.submitted", "X-Event-Name: Review Submitted"])
        # The host, not the plugin, refuses an ftp:// URL.
        self.assertEqual(json.loads(self.transform(sample("tier.changed"), {"url": "ftp://nope"}, []))[0]["url"], "ftp://nope")

    def test_keeps_unusual_events_as_sent(self) -> None:
        unusual = """{"event": "seeds.earned.bonus", "timestamp": "2026-02-06T14:30:00Z",
            "customer": {"vip": null, "last_name": "Smith", "email": "jane@example.com", "first_name": null},
            "__proto__": {"a": 1}, "amount": 5, "note": "x"}"""
        (request,) = call_transform(self.plugin, unusual, wit_config(URL))
        self.assertEqual(
            request.body,
            b'{"event":"seeds.earned.bonus","timestamp":"2026-02-06T14:30:00Z",'
            b'"customer":{"email":"jane@example.com","last_name":"Smith","vip":null},'
            b'"__proto__":{"a":1},"amount":5,"note":"x"}',
        )

    def test_refuses_malformed_events_as_invalid(self) -> None:
        cases = {
            '{"event": "tier.changed", "timestamp": "x", "customer": {"email": 5}}': "customer.email must be a string",
            '{"event": "tier.changed", "timestamp": "x", "customer": "jane"}': "customer must be an object",
            '{"event": "tier.changed", "timestamp": 5}': "timestamp must be a string",
            '{"event": "tier.changed", "timestamp": "x", "id": 5}': "id must be a string",
            '{"event": "nope", "timestamp": "x"}': 'unknown event type "nope"',
        }
        for event, reason in cases.items():
            with self.subTest(event=event):
                self.assertEqual(
                    json.loads(self.transform(event, URL, [])),
                    {"refused": "invalid_event", "reason": f"the event is not a canonical event: {reason}"},
                )

    def test_interprets_with_the_default_verdict(self) -> None:
        self.assertEqual(type(self.plugin.interpret(wit_response(204))).__name__, "Verdict_Delivered")
        retry = self.plugin.interpret(wit_response(503, {"Retry-After": "30"}))
        self.assertEqual((retry.value.reason, retry.value.after_seconds), ("HTTP 503", 30))
        self.assertEqual(self.plugin.interpret(wit_response(404, body=" gone ")).value, "HTTP 404: gone")


if __name__ == "__main__":
    unittest.main()
