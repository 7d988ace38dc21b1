"""The Slack destination (plugins/slack): its messages for every event type (the expected files
`canopy plugin test` checks, in `plugins/slack/tests/expected/`), its settings, and how it
reads Slack's answers. `CANOPY_BLESS=1` rewrites the expected files from what it answers now."""

from __future__ import annotations

import json
import os
import unittest

from support import REPO, call_transform, load_plugin, review, sample, wit_config, wit_response

PROJECT = REPO / "plugins" / "slack"
EXPECTED = PROJECT / "tests" / "expected"
SETTINGS = json.loads((PROJECT / "tests" / "settings.json").read_text())
EVENT_TYPES = [path.stem for path in sorted((REPO / "crates" / "events" / "samples").glob("*.json"))]


class SlackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.app = load_plugin("plugins/slack")
        cls.plugin = cls.app.Plugin()

    def body(self, event: str, settings: object = None, secrets: tuple[str, ...] = ("bot_token",)) -> dict:
        (request,) = call_transform(self.plugin, event, wit_config(settings or {"channel": "C0123456789"}, secrets))
        return json.loads(request.body)

    def verdict(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> tuple[str, object]:
        answer = self.plugin.interpret(wit_response(status, headers, body))
        name = type(answer).__name__.removeprefix("Verdict_").lower()
        if name == "retry":
            return name, (answer.value.reason, answer.value.after_seconds)
        return name, getattr(answer, "value", None)

    def test_describes_a_slack_destination(self) -> None:
        info = self.plugin.describe()
        self.assertEqual((info.id, info.name), ("slack", "Slack"))
        self.assertEqual((info.events, info.allowed_hosts), (["*"], ["slack.com"]))
        self.assertEqual((info.rate_limit.requests, info.rate_limit.per_seconds), (1, 1))
        self.assertEqual(info.needs.component_mib, 32)
        self.assertEqual(
            [(s.name, s.kind.name, s.required, s.secret, s.default_value) for s in info.settings],
            [
                ("bot_token", "TEXT", True, True, None),
                ("channel", "TEXT", True, False, None),
                ("include_email", "BOOLEAN", False, False, "false"),
            ],
        )

    def test_answers_every_event_type_as_its_expected_files_say(self) -> None:
        self.assertEqual(len(EVENT_TYPES), 19)
        config = wit_config(SETTINGS, ["bot_token"])
        self.assertEqual(self.plugin.validate_config(config), [])
        bless = os.environ.get("CANOPY_BLESS") == "1"
        if bless:
            EXPECTED.mkdir(parents=True, exist_ok=True)
        for event_type in EVENT_TYPES:
            with self.subTest(event=event_type):
                answered = review(call_transform(self.plugin, sample(event_type), config))
                file = EXPECTED / f"{event_type}.json"
                if bless:
                    file.write_text(answered)
                self.assertEqual(answered, file.read_text())

    def test_posts_with_the_token_as_a_secret_reference(self) -> None:
        (request,) = call_transform(self.plugin, sample("tier.changed"), wit_config({"channel": " #loyalty "}, ["bot_token"]))
        self.assertEqual((request.method.name, request.url), ("POST", "https://slack.com/api/chat.postMessage"))
        shown = review([request])
        self.assertIn('"Authorization: Bearer {{secret:bot_token}}"', shown)
        self.assertIn('"Content-Type: application/json; charset=utf-8"', shown)
        body = json.loads(request.body)
        self.assertEqual(list(body), ["channel", "text", "blocks", "unfurl_links", "unfurl_media"])
        self.assertEqual(body["channel"], "#loyalty")
        self.assertEqual(body["text"], ":trophy: *Jane Smith* moved from Silver to Gold (1,250 seeds)")
        self.assertEqual(body["blocks"][0]["text"], {"type": "mrkdwn", "text": body["text"], "verbatim": True})
        self.assertEqual(
            body["blocks"][1]["elements"][0]["text"],
            "Tier Changed · <!date^1770388560^{date_short_pretty} at {time}|2026-02-06T14:36:00.000Z>",
        )

    def test_escapes_what_the_event_says_and_names_whom_it_can(self) -> None:
        event = json.loads(sample("review.rejected"))
        event["customer"] = {"display_name": "<!channel> & Co", "email": "a@b.test"}
        event["rejection_reason"] = "<https://evil.test|click> " + "x" * 300
        text = self.body(json.dumps(event))["text"]
        self.assertTrue(text.startswith(":no_entry_sign: *&lt;!channel&gt; &amp; Co*'s 1-star review"), text)
        self.assertIn(": &lt;https://evil.test|click&gt; xxx", text)
        self.assertTrue(text.endswith("x…"), text)
        self.assertNotIn("a@b.test", text)

        anonymous = json.loads(sample("seeds.earned.visit"))
        anonymous["customer"] = {"email": "ann@example.com", "shopify_customer_id": 42}
        self.assertTrue(self.body(json.dumps(anonymous))["text"].startswith(":seedling: Customer 42 earned 5 seeds"))
        with_email = {"channel": "C1", "include_email": True}
        self.assertTrue(
            self.body(json.dumps(anonymous), with_email)["text"].startswith(":seedling: *ann@example.com* earned 5 seeds")
        )
        anonymous["customer"] = {}
        self.assertTrue(self.body(json.dumps(anonymous))["text"].startswith(":seedling: A customer earned 5 seeds"))

    def test_copes_with_events_missing_their_fields(self) -> None:
        for event_type in EVENT_TYPES:
            with self.subTest(event=event_type):
                bare = json.dumps({"event": event_type, "timestamp": "yesterday"})
                body = self.body(bare)
                self.assertIn("a customer", body["text"].lower())
                self.assertEqual(body["blocks"][1]["elements"][0]["text"].split(" · ")[1], "yesterday")
                odd = json.loads(sample(event_type))
                for key in list(odd):
                    if key not in ("id", "event", "timestamp", "customer"):
                        odd[key] = [1, {"x": None}]
                self.assertTrue(self.body(json.dumps(odd))["text"])

    def test_never_posts_a_gift_card_code(self) -> None:
        self.assertNotIn("GIFT-7QX2-K9PM", json.dumps(self.body(sample("gift_card.claimed"))))

    def test_refuses_what_cannot_work(self) -> None:
        def refusal(settings: object, secrets: tuple[str, ...]) -> tuple[str, str]:
            err = call_transform(self.plugin, sample("tier.changed"), wit_config(settings, secrets))
            return type(err.value).__name__, err.value.value

        self.assertEqual(refusal({"channel": "C1"}, ()), ("Refusal_InvalidConfig", "Bot token is required"))
        self.assertEqual(refusal({"channel": "  "}, ("bot_token",)), ("Refusal_InvalidConfig", "Channel is required"))

    def test_validates_settings(self) -> None:
        def problems(settings: object, secrets: tuple[str, ...] = ("bot_token",)) -> list[tuple[str, str]]:
            return [(e.field, e.message) for e in self.plugin.validate_config(wit_config(settings, secrets))]

        self.assertEqual(problems({"channel": "C0123456789"}), [])
        self.assertEqual(problems({}, ()), [("bot_token", "Bot token is required"), ("channel", "Channel is required")])
        bad = "Channel must be a channel ID such as C0123456789 or a name such as #loyalty"
        self.assertEqual(problems({"channel": "#my loyalty"}), [("channel", bad)])
        self.assertEqual(problems({"channel": "#"}), [("channel", bad)])

    def test_reads_slacks_answers(self) -> None:
        self.assertEqual(self.verdict(200, '{"ok": true, "channel": "C1", "ts": "1.2"}'), ("delivered", None))
        self.assertEqual(
            self.verdict(200, '{"ok": false, "error": "not_in_channel"}'),
            ("failed", "Slack refused the message: not_in_channel (invite the app to the channel (/invite @your-app))"),
        )
        self.assertEqual(self.verdict(200, '{"ok": false, "error": "msg_too_long"}')[0], "failed")
        self.assertEqual(self.verdict(200, '{"ok": false, "error": "some_new_error"}'), ("failed", "Slack refused the message: some_new_error"))
        for error in ("invalid_auth", "not_authed", "token_revoked", "account_inactive"):
            verdict = self.verdict(200, json.dumps({"ok": False, "error": error}))
            self.assertEqual(verdict[0], "failed")
            self.assertTrue(verdict[1].startswith(f"Slack refused the bot token: {error}"), verdict)
        self.assertEqual(
            self.verdict(200, '{"ok": false, "error": "ratelimited"}', {"Retry-After": "30"}),
            ("retry", ("Slack answered ratelimited", 30)),
        )
        self.assertEqual(
            self.verdict(429, '{"ok": false, "error": "ratelimited"}', {"Retry-After": "3"}),
            ("retry", ("Slack answered HTTP 429", 3)),
        )
        self.assertEqual(self.verdict(503, "upstream"), ("retry", ("Slack answered HTTP 503", None)))
        self.assertEqual(self.verdict(401, ""), ("failed", "Slack refused the bot token (check it and its chat:write scope)"))
        self.assertEqual(
            self.verdict(400, '{"ok": false, "error": "invalid_json"}'),
            ("failed", "Slack rejected the event (HTTP 400): invalid_json"),
        )
        self.assertEqual(self.verdict(200, "<html>hi</html>"), ("failed", "Slack's answer is not the Web API's (HTTP 200): <html>hi</html>"))


if __name__ == "__main__":
    unittest.main()
