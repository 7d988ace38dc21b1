"""The Python SDK, natively: events parsed as strictly as the TypeScript and Rust SDKs, with the
same messages; settings, requests, refusals, verdicts and logging as the contract takes them;
the adapter componentize-py exports; and the build module's inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from support import SAMPLES, SDK_DIR, ensure_bindings, wit_config, wit_response

ensure_bindings()

import canopy_plugin_sdk as sdk  # noqa: E402
from canopy_plugin_sdk import build  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world.imports import host, types  # noqa: E402


class EventTest(unittest.TestCase):
    def test_the_catalogue_is_the_rust_one(self) -> None:
        self.assertEqual(len(sdk.EVENT_TYPES), 19)
        self.assertEqual(sorted(sdk.EVENT_TYPES), sorted(p.stem for p in SAMPLES.glob("*.json")))
        self.assertEqual(list(sdk.DISPLAY_NAMES), list(sdk.EVENT_TYPES))
        self.assertEqual(sdk.display_name("eco.tree_planted"), "Eco Tree Planted")
        self.assertEqual(sdk.display_name("seeds.earned.social_share"), "Seeds Earned Social Share")
        self.assertTrue(sdk.is_event_type("tier.changed"))
        self.assertFalse(sdk.is_event_type("seeds.lost") or sdk.is_event_type(5))
        # The TypeScript SDK's catalogue, in the same order with the same names.
        source = (SDK_DIR.parent / "sdk-ts" / "src" / "events.ts").read_text()
        for key, name in sdk.DISPLAY_NAMES.items():
            self.assertIn(f"  '{key}': '{name}',\n", source)

    def test_parses_every_sample(self) -> None:
        for path in sorted(SAMPLES.glob("*.json")):
            event = sdk.parse_event(path.read_text())
            self.assertEqual(event.event, path.stem)
            self.assertIsNotNone(event.id)
            self.assertEqual(event.customer.email, "jane@example.com")
            self.assertEqual(json.loads(sdk.to_json(sdk.event_json(event))), json.loads(path.read_text()))

    def test_keeps_the_event_as_sent(self) -> None:
        event = sdk.parse_event(
            '{"event":"seeds.earned.order","timestamp":"2026-02-06T14:30:00.000Z",'
            '"customer":{"vip":true,"email":"jane@example.com","first_name":"Jane","shopify_customer_id":7891234567890},'
            '"amount":50,"order_total":89.990,"big":123456789012345678901234567890,"e":1E+2,"custom":{"a":1}}'
        )
        self.assertIsNone(event.id)
        self.assertEqual(event.customer.shopify_customer_id, "7891234567890")
        self.assertEqual(event.customer.extra, {"vip": True})
        self.assertEqual(list(event.fields), ["amount", "order_total", "big", "e", "custom"])
        self.assertIsInstance(event.fields["order_total"], sdk.JsonFloat)
        self.assertEqual(event.fields["order_total"], 89.99)
        self.assertEqual(
            sdk.to_json(event),
            '{"event":"seeds.earned.order","timestamp":"2026-02-06T14:30:00.000Z",'
            '"customer":{"email":"jane@example.com","first_name":"Jane","shopify_customer_id":"7891234567890","vip":true},'
            '"amount":50,"order_total":89.990,"big":123456789012345678901234567890,"e":1E+2,"custom":{"a":1}}',
        )

    def test_refuses_malformed_events_with_the_typescript_sdks_messages(self) -> None:
        cases = {
            '{"event": "tier.changed", "timestamp": "x", "customer": {"email": 5}}': "customer.email must be a string",
            '{"event": "tier.changed", "timestamp": "x", "customer": {"shopify_customer_id": true}}': "customer.shopify_customer_id must be a string",
            '{"event": "tier.changed", "timestamp": "x", "customer": "jane"}': "customer must be an object",
            '{"event": "tier.changed", "timestamp": "x", "customer": null}': "customer must be an object",
            '{"event": "tier.changed", "timestamp": 5}': "timestamp must be a string",
            '{"event": "tier.changed"}': "timestamp must be a string",
            '{"event": "tier.changed", "timestamp": "x", "id": 5}': "id must be a string",
            '{"event": "nope", "timestamp": "x"}': 'unknown event type "nope"',
            '{"timestamp": "x"}': "unknown event type null",
            '{"event": ["tier.changed"]}': 'unknown event type ["tier.changed"]',
            "[1]": "the event is not a JSON object",
            '"tier.changed"': "the event is not a JSON object",
        }
        for text, message in cases.items():
            with self.subTest(event=text):
                with self.assertRaises(ValueError) as raised:
                    sdk.parse_event(text)
                self.assertEqual(str(raised.exception), message)
        for text in ("", "{", '{"event": NaN}', '{"a": Infinity}', "[" * 200 + "]" * 200):
            with self.subTest(event=text[:20]):
                with self.assertRaises(ValueError) as raised:
                    sdk.parse_event(text)
                self.assertTrue(str(raised.exception).startswith("the event is not JSON: "))

    def test_accepts_what_the_other_sdks_accept(self) -> None:
        event = sdk.parse_event(
            '{"event": "tier.changed", "timestamp": "x", "id": null, "customer": {"email": null, "vip": null}, "__proto__": {"a": 1}}'
        )
        self.assertIsNone(event.id)
        self.assertEqual(event.customer.to_json_value(), {"vip": None})
        self.assertEqual(event.fields, {"__proto__": {"a": 1}})
        self.assertEqual(sdk.parse_event('{"event": "tier.changed", "timestamp": "x"}').customer, sdk.Customer())

    def test_email_is_a_non_blank_one(self) -> None:
        def email(value: object) -> object:
            return sdk.email(sdk.parse_event(json.dumps({"event": "tier.changed", "timestamp": "x", "customer": {"email": value}})))

        self.assertEqual(email("jane@example.com"), "jane@example.com")
        self.assertIsNone(email("  \u00a0\ufeff"))
        self.assertIsNone(email(None))

    def test_reserved_headers_and_dot_segments_as_the_rust_crate(self) -> None:
        self.assertEqual(sdk.dot_segment("https://x.test/hook/../x"), "..")
        self.assertEqual(sdk.dot_segment("https://x.test/hook/%2E%2e"), "%2E%2e")
        self.assertEqual(sdk.dot_segment("https://x.test/hook/.%2E/"), ".%2E")
        self.assertEqual(sdk.dot_segment("https://x.test/hook/./x"), ".")
        self.assertIsNone(sdk.dot_segment("https://x.test/a?b=/..#/.."))
        self.assertIsNone(sdk.dot_segment("https://x.test"))
        self.assertIsNone(sdk.dot_segment("https://x.test/...x/..a/%2E%2E%2E"))
        self.assertIsNone(sdk.dot_segment("https://x.test/jane.smith/"))
        self.assertTrue(sdk.is_reserved_header("content-length") and sdk.is_reserved_header(" Host"))
        self.assertFalse(sdk.is_reserved_header("X-Content-Length"))
        self.assertEqual(len(sdk.RESERVED_HEADERS), 12)


class JsonTest(unittest.TestCase):
    def test_writes_compact_json_as_json_stringify(self) -> None:
        self.assertEqual(
            sdk.to_json({"a": [1, 2.5, None, True, False], "é": "\u2028\x1f\x7f\"\\\n", "n": {}}),
            '{"a":[1,2.5,null,true,false],"é":"\u2028\\u001f\x7f\\"\\\\\\n","n":{}}',
        )
        self.assertEqual(sdk.to_json("\ud800x"), '"\\ud800x"')
        self.assertEqual(sdk.to_json(float("nan")), "null")
        self.assertEqual(sdk.to_json((1, 2)), "[1,2]")
        self.assertEqual(sdk.to_json({1: "a", None: "b"}), '{"1":"a","null":"b"}')
        with self.assertRaises(TypeError):
            sdk.to_json({"a": object()})

    def test_reads_strictly(self) -> None:
        self.assertEqual(sdk.parse_json(b'{"a": 1}'), {"a": 1})
        self.assertEqual(sdk.parse_json("[" * 128 + "]" * 128)[0] is not None, True)
        for bad in ("NaN", "[-Infinity]", b"\xff", "[" * 129 + "]" * 129, "{'a': 1}"):
            with self.assertRaises(ValueError):
                sdk.parse_json(bad)
        # Brackets inside strings do not count.
        self.assertEqual(sdk.parse_json(json.dumps(["[" * 500])), ["[" * 500])


class ConfigTest(unittest.TestCase):
    def test_reads_the_contracts_config(self) -> None:
        config = sdk.Config.from_wit(wit_config({"url": " https://x.test ", "n": None, "b": True, "blank": " "}, ["token"]))
        self.assertEqual(config.text("url"), "https://x.test")
        self.assertIsNone(config.get("n"))
        self.assertIsNone(config.text("blank"))
        self.assertIsNone(config.text("b"))
        self.assertEqual(config.text_or("blank", "fallback"), "fallback")
        self.assertTrue(config.flag("b"))
        self.assertFalse(config.flag("url"))
        self.assertTrue(config.flag("missing", True))
        self.assertTrue(config.has_secret("token"))
        self.assertFalse(config.has_secret("other"))
        self.assertEqual(sdk.Config.from_wit(wit_config("  ")).settings, {})
        with self.assertRaisesRegex(ValueError, "^settings must be a JSON object$"):
            sdk.Config.from_wit(wit_config("[]"))
        with self.assertRaisesRegex(ValueError, "^settings are not valid JSON: "):
            sdk.Config.from_wit(wit_config("{"))

    def test_missing_required_settings_and_secrets(self) -> None:
        spec = [
            sdk.Setting.url("url", "Endpoint URL").required(),
            sdk.Setting.secret("token", "Token").required().build(),
            sdk.Setting.text("note", "Note"),
        ]
        config = sdk.Config({"url": "  "}, [])
        self.assertEqual(
            [(e.field, e.message) for e in config.missing_required(spec)],
            [("url", "Endpoint URL is required"), ("token", "Token is required")],
        )
        self.assertEqual(sdk.Config({"url": "https://x"}, ["token"]).missing_required(spec), [])

    def test_builds_the_settings_form(self) -> None:
        kinds = {
            "TEXT": sdk.Setting.text("a", "A"),
            "URL": sdk.Setting.url("a", "A"),
            "INTEGER": sdk.Setting.integer("a", "A"),
            "BOOLEAN": sdk.Setting.boolean("a", "A"),
            "CHOICE": sdk.Setting.choice("a", "A", ["x", "y"]),
            "STRING_MAP": sdk.Setting.string_map("a", "A"),
            "TEMPLATE_MAP": sdk.Setting.template_map("a", "A"),
        }
        for kind, setting in kinds.items():
            spec = setting.build()
            self.assertEqual((spec.kind.name, spec.secret, spec.required), (kind, False, False))
        self.assertEqual(kinds["CHOICE"].build().options, ["x", "y"])
        spec = sdk.Setting.secret("k", "Key").required().describe("help").default_value({"a": [1]}).build()
        self.assertEqual(
            (spec.name, spec.label, spec.description, spec.kind, spec.required, spec.secret, spec.default_value),
            ("k", "Key", "help", types.SettingKind.TEXT, True, True, '{"a":[1]}'),
        )

    def test_describes_with_defaults_for_what_is_left_out(self) -> None:
        info = sdk.plugin_info(sdk.Info(id="a", name="A", version="1.0.0", description="d", allowed_hosts=["a.test"]))
        self.assertEqual(info.events, ["*"])
        self.assertEqual(info.settings, [])
        self.assertIsNone(info.rate_limit)
        self.assertEqual(info.needs, types.Needs(memory_mib=None, component_mib=None))
        info = sdk.plugin_info(
            sdk.Info(
                id="a",
                name="A",
                version="1.0.0",
                description="d",
                allowed_hosts=["a.test"],
                events=["tier.changed"],
                settings=[sdk.Setting.text("x", "X")],
                rate_limit=sdk.RateLimit(10, 2),
                needs=sdk.Needs(memory_mib=96, component_mib=32),
            )
        )
        self.assertEqual(info.events, ["tier.changed"])
        self.assertEqual(info.settings[0].name, "x")
        self.assertEqual(info.rate_limit, types.RateLimit(requests=10, per_seconds=2))
        self.assertEqual(info.needs, types.Needs(memory_mib=96, component_mib=32))


class RequestTest(unittest.TestCase):
    def test_builds_headers_with_secret_references_and_signatures(self) -> None:
        request = (
            sdk.Request.post("https://a.test/x")
            .header("Content-Type", "application/json")
            .secret_header("Authorization", "Bearer ", "token")
            .secret_header("X-Token", "", "token")
            .basic_auth("site-id", "api_key")
            .json({"a": 1})
            .sign_hmac_hex("X-Sig", "secret")
            .sign_standard_webhooks("secret")
            .build()
        )
        self.assertEqual(request.method, types.Method.POST)
        self.assertEqual(
            request.headers,
            [
                types.Header("Content-Type", [types.Segment_Text("application/json")]),
                types.Header("Authorization", [types.Segment_Text("Bearer "), types.Segment_Secret("token")]),
                types.Header("X-Token", [types.Segment_Secret("token")]),
                types.Header("Authorization", [types.Segment_BasicAuth(types.BasicCredentials("site-id", "api_key"))]),
            ],
        )
        self.assertEqual(request.body, b'{"a":1}')
        self.assertEqual(
            request.signatures,
            [
                types.Signature_HmacSha256Hex(types.HmacSignature("X-Sig", "secret")),
                types.Signature_StandardWebhooks("secret"),
            ],
        )

    def test_methods_and_bodies(self) -> None:
        self.assertEqual(sdk.Request("PUT", "https://a.test").build().method, types.Method.PUT)
        self.assertEqual(sdk.Request("delete", "https://a.test").build().method, types.Method.DELETE)
        with self.assertRaises(ValueError):
            sdk.Request("TRACE", "https://a.test")
        self.assertEqual(sdk.Request.post("u").bytes("é").build().body, "é".encode())
        self.assertEqual(sdk.Request.post("u").bytes(bytearray(b"\x00\xff")).build().body, b"\x00\xff")
        self.assertEqual(sdk.Request.post("u").bytes("a\ud800").build().body, "a\ufffd".encode())
        self.assertEqual(sdk.Request.post("u").build().body, b"")


class RefusalTest(unittest.TestCase):
    def test_refusals_raise(self) -> None:
        for refuse, kind, case in (
            (sdk.skip, "skip", types.Refusal_Skip),
            (sdk.invalid_config, "invalid-config", types.Refusal_InvalidConfig),
            (sdk.invalid_event, "invalid-event", types.Refusal_InvalidEvent),
        ):
            with self.assertRaises(sdk.Refused) as raised:
                refuse("why")
            self.assertEqual((raised.exception.kind, raised.exception.reason), (kind, "why"))
            self.assertEqual(raised.exception.refusal(), case("why"))
        with self.assertRaises(ValueError):
            sdk.Refused("maybe", "why")

    def test_a_generator_transform_refuses_like_any_other(self) -> None:
        @sdk.destination
        class Plugin:
            def describe(self):
                return sdk.Info(id="gen", name="Gen", version="1.0.0", description="",
                                allowed_hosts=["a.example.com"])

            def validate_config(self, config):
                return []

            def transform(self, event, config):
                if config.text("url") is None:
                    sdk.skip("no url")
                yield sdk.Request.post(config.text("url"))

        sample = (SAMPLES / "tier.changed.json").read_text()
        with self.assertRaises(Err) as raised:
            Plugin().transform(sample, wit_config({}, []))
        self.assertEqual(raised.exception.value, types.Refusal_Skip("no url"))
        sent = Plugin().transform(sample, wit_config({"url": "https://a.example.com/x"}, []))
        self.assertEqual([r.url for r in sent], ["https://a.example.com/x"])


class ResponseTest(unittest.TestCase):
    def test_default_verdict(self) -> None:
        self.assertEqual(sdk.default_verdict(wit_response(204)), types.Verdict_Delivered())
        self.assertEqual(
            sdk.default_verdict(wit_response(429, {"Retry-After": "30"})),
            types.Verdict_Retry(types.RetryAdvice(after_seconds=30, reason="HTTP 429")),
        )
        self.assertEqual(sdk.default_verdict(wit_response(408)).value.reason, "HTTP 408")
        self.assertEqual(sdk.default_verdict(wit_response(500)).value.after_seconds, None)
        self.assertEqual(sdk.default_verdict(wit_response(404)), types.Verdict_Failed("HTTP 404"))
        self.assertEqual(sdk.default_verdict(wit_response(400, body=" bad " + "é" * 400)).value, "HTTP 400: bad " + "é" * 296)

    def test_retry_after_in_seconds_only(self) -> None:
        def after(value: str) -> object:
            return sdk.retry_after_seconds(wit_response(503, {"Retry-After": value}))

        self.assertEqual((after("7"), after(" +5 "), after("4294967295")), (7, 5, 4294967295))
        for value in ("4294967296", "1.5", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "\u0661"):
            self.assertIsNone(after(value), value)
        self.assertIsNone(sdk.retry_after_seconds(wit_response(503)))
        self.assertEqual(sdk.header(wit_response(200, {"X-A": "b"}), "x-a"), "b")

    def test_body_text_drops_a_byte_order_mark(self) -> None:
        self.assertEqual(sdk.body_text(wit_response(200, body=b"\xef\xbb\xbfok\xff")), "ok\ufffd")

    def test_platform_verdict(self) -> None:
        def verdict(status: int, body: str = "") -> object:
            return sdk.platform_verdict(wit_response(status, body=body), "Acme", "bad key")

        self.assertEqual(verdict(201), types.Verdict_Delivered())
        self.assertEqual(verdict(403), types.Verdict_Failed("bad key"))
        self.assertEqual(verdict(502).value.reason, "Acme answered HTTP 502")
        self.assertEqual(verdict(422, '{"errors": [{"detail": "a"}, {"title": "b"}]}'), types.Verdict_Failed("Acme rejected the event (HTTP 422): a; b"))
        self.assertEqual(verdict(400, "<html>"), types.Verdict_Failed("Acme rejected the event (HTTP 400)"))

    def test_error_details_from_common_shapes(self) -> None:
        def details(value: object) -> object:
            return sdk.error_details(json.dumps(value).encode())

        self.assertEqual(details({"errors": [{"detail": "a"}, {"title": "b"}]}), "a; b")
        self.assertEqual(details({"detail": "bad email", "status": 400}), "bad email")
        self.assertEqual(details({"errors": "Not Found"}), "Not Found")
        self.assertEqual(details({"ok": False, "error": "invalid_auth"}), "invalid_auth")
        self.assertEqual(details("plain"), "plain")
        self.assertIsNone(details({"ok": True}))
        self.assertIsNone(details([{"detail": "a"}]))
        self.assertIsNone(sdk.error_details(b"<html>"))

    def test_number(self) -> None:
        self.assertEqual(sdk.number(50), 50)
        self.assertEqual(sdk.number("89.99"), 89.99)
        self.assertEqual(sdk.number(" 10 "), 10)
        self.assertIsInstance(sdk.number("10"), int)
        self.assertEqual(sdk.number("5."), 5.0)
        self.assertEqual(sdk.number(".5e1"), 5.0)
        for value in ("ten", None, True, "1_000", "\u0661", "1e400", float("inf"), [1], "0x10"):
            self.assertIsNone(sdk.number(value), value)


class LogTest(unittest.TestCase):
    def test_writes_to_the_hosts_log(self) -> None:
        with mock.patch.object(host, "log") as log:
            sdk.log.info("hello")
            sdk.log.error("oops")
        self.assertEqual(log.call_args_list, [mock.call(host.LogLevel.INFO, "hello"), mock.call(host.LogLevel.ERROR, "oops")])


class AdapterTest(unittest.TestCase):
    def setUp(self) -> None:
        @sdk.destination
        class Plugin:
            def describe(self):
                return sdk.Info(id="t", name="T", version="0.1.0", description="d", allowed_hosts=["t.test"])

            def validate_config(self, config):
                return [sdk.config_error("x", config.text_or("x", "none"))]

            def transform(self, event, config):
                mode = config.text("mode")
                if mode == "skip":
                    sdk.skip("not today")
                if mode == "bug":
                    raise KeyError("bug")
                if mode == "record":
                    return [sdk.Request.post("https://t.test/r").build()]
                if mode == "wrong":
                    return ["https://t.test"]
                return [sdk.Request.post(f"https://t.test/{event.event}")]

        self.plugin = Plugin()
        self.Plugin = Plugin

    def transform(self, event: str, settings: object) -> object:
        try:
            return self.plugin.transform(event, wit_config(settings))
        except Err as err:
            return err.value

    def test_is_the_export_componentize_py_takes(self) -> None:
        from wit_world import exports

        self.assertIn(exports.Plugin, self.Plugin.__mro__)
        self.assertEqual(self.Plugin.__name__, "Plugin")
        self.assertEqual(self.plugin.describe().id, "t")
        self.assertTrue(hasattr(self.Plugin.destination, "transform"))

    def test_parses_inputs_and_returns_refusals(self) -> None:
        sample = (SAMPLES / "tier.changed.json").read_text()
        (request,) = self.transform(sample, {})
        self.assertEqual(request.url, "https://t.test/tier.changed")
        self.assertEqual(self.transform(sample, {"mode": "record"})[0].url, "https://t.test/r")
        self.assertEqual(self.transform(sample, {"mode": "skip"}), types.Refusal_Skip("not today"))
        self.assertEqual(
            self.transform('{"event": "nope", "timestamp": "x"}', {}),
            types.Refusal_InvalidEvent('the event is not a canonical event: unknown event type "nope"'),
        )
        self.assertEqual(self.transform(sample, "[]"), types.Refusal_InvalidConfig("settings must be a JSON object"))
        with self.assertRaises(KeyError):
            self.transform(sample, {"mode": "bug"})
        with self.assertRaisesRegex(TypeError, "transform returned a str, not a Request"):
            self.transform(sample, {"mode": "wrong"})

    def test_validates_and_interprets(self) -> None:
        self.assertEqual(self.plugin.validate_config(wit_config({"x": "y"})), [types.ConfigError("x", "y")])
        self.assertEqual(self.plugin.validate_config(wit_config("7")), [types.ConfigError("", "settings must be a JSON object")])
        self.assertEqual(self.plugin.interpret(wit_response(200)), types.Verdict_Delivered())

    def test_contract_types_are_importable_from_the_sdk(self) -> None:
        from canopy_plugin_sdk import ConfigError, Verdict_Retry

        self.assertIs(ConfigError, types.ConfigError)
        self.assertIs(Verdict_Retry, types.Verdict_Retry)
        with self.assertRaises(AttributeError):
            sdk.NoSuchType  # noqa: B018
        self.assertFalse(hasattr(sdk, "__wrapped__"))


class BuildTest(unittest.TestCase):
    def test_ships_the_contract_it_was_written_for(self) -> None:
        wit = build.wit_dir()
        self.assertIn("package canopy:destination@0.2.0;", (wit / "destination.wit").read_text())
        self.assertEqual(sdk.CONTRACT_VERSION, "0.2.0")
        printed = subprocess.run(
            [sys.executable, "-m", "canopy_plugin_sdk.build", "--wit"],
            capture_output=True,
            text=True,
            check=True,
            cwd=SDK_DIR,
        ).stdout.strip()
        self.assertEqual(Path(printed), wit)

    def test_a_component_is_fresh_until_an_input_changes(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            project = Path(directory)
            (project / "app.py").write_text("x = 1\n")
            (project / "tests").mkdir()
            (project / "tests" / "test_app.py").write_text("")
            (project / ".venv").mkdir()
            (project / ".venv" / "lib.py").write_text("")
            output = project / "dist" / "a.wasm"
            self.assertFalse(build.is_fresh(output, [project]))
            output.parent.mkdir()
            output.write_bytes(b"")
            later = time.time() + 10
            os.utime(output, (later, later))
            self.assertTrue(build.is_fresh(output, [project]))
            self.assertNotIn(project / ".venv" / "lib.py", build.inputs([project]))
            self.assertNotIn(project / "tests" / "test_app.py", build.inputs([project]))
            (project / "helpers.py").write_text("")
            os.utime(project / "helpers.py", (later + 1, later + 1))
            self.assertFalse(build.is_fresh(output, [project]))


if __name__ == "__main__":
    unittest.main()
