"""Settings, requests, refusals, verdicts, logging, and the adapter to the contract's exports.

The contract's own records (`PluginInfo`, `OutgoingRequest`, `Verdict`, ...) are the classes
componentize-py generates from the WIT into the `wit_world` package when it builds the
component. They are imported when the plugin module is (so that they are in the component's
snapshot); natively, unit tests generate them first with
`python -m canopy_plugin_sdk.build --bindings DIR` and put DIR on `sys.path`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Sequence, Union

from .events import parse_event, trim
from .jsontext import Json, parse_json, to_json

if TYPE_CHECKING:
    from wit_world.imports import types as wit

try:
    # Imported while the component is initialised (componentize-py snapshots the interpreter
    # after importing the app): a component has no files to import from later.
    from componentize_py_types import Err as _Err
    from wit_world.imports import host as _host
    from wit_world.imports import types as _types
except ImportError:  # natively, before the bindings are on sys.path
    _types = None
    _host = None
    _Err = None


def _contract() -> Any:
    """The generated contract types, importing them now if they were not importable before."""
    global _types, _host, _Err
    if _types is None:
        try:
            from componentize_py_types import Err
            from wit_world.imports import host, types
        except ImportError as error:
            raise ImportError(
                "the contract's bindings (wit_world) are not importable: a component build "
                "generates them; for native tests run `python -m canopy_plugin_sdk.build "
                "--bindings DIR` and put DIR on sys.path"
            ) from error
        _types, _host, _Err = types, host, Err
    return _types


# ---------------------------------------------------------------------------------------
# Configuration


def config_error(field: str, message: str) -> "wit.ConfigError":
    """A problem with one setting (`field`), or with the whole configuration (`''`)."""
    return _contract().ConfigError(field=field, message=message)


class Config:
    """An integration's non-secret settings and the names of the secrets the admin has set."""

    def __init__(self, settings: dict[str, Json], secrets_present: Sequence[str] = ()) -> None:
        self.settings = settings
        self.secrets_present = tuple(secrets_present)

    @classmethod
    def from_wit(cls, config: "wit.Config") -> Config:
        """Parses the contract's config record; raises `ValueError` when the settings are not
        an object."""
        settings: Json = {}
        if trim(config.settings) != "":
            try:
                settings = parse_json(config.settings)
            except ValueError as error:
                raise ValueError(f"settings are not valid JSON: {error}") from None
        if not isinstance(settings, dict):
            raise ValueError("settings must be a JSON object")
        return cls(settings, config.secrets_present)

    def get(self, name: str) -> Optional[Json]:
        """A setting's raw value; `None` when absent or null."""
        return self.settings.get(name)

    def text(self, name: str) -> Optional[str]:
        """A text setting, trimmed; `None` when absent, blank or not text."""
        value = self.get(name)
        if not isinstance(value, str):
            return None
        trimmed = trim(value)
        return None if trimmed == "" else trimmed

    def text_or(self, name: str, fallback: str) -> str:
        """A text setting, or `fallback` when absent or blank."""
        value = self.text(name)
        return fallback if value is None else value

    def flag(self, name: str, fallback: bool = False) -> bool:
        """A boolean setting, or `fallback` when absent or not a boolean."""
        value = self.get(name)
        return value if isinstance(value, bool) else fallback

    def has_secret(self, name: str) -> bool:
        """Whether the admin has set the named secret (its value never enters the sandbox)."""
        return name in self.secrets_present

    def missing_required(self, spec: Sequence[Union["Setting", "wit.SettingSpec"]]) -> list["wit.ConfigError"]:
        """An error for every required setting or secret of `spec` that is missing."""
        errors = []
        for setting in spec:
            s = setting.build() if isinstance(setting, Setting) else setting
            if not s.required:
                continue
            missing = not self.has_secret(s.name) if s.secret else _blank(self.get(s.name))
            if missing:
                errors.append(config_error(s.name, f"{s.label} is required"))
        return errors


def _blank(value: Optional[Json]) -> bool:
    return value is None or (isinstance(value, str) and trim(value) == "")


class Setting:
    """Builds one field of a plugin's settings form:
    `Setting.url('url', 'Endpoint URL').required().describe('...')`."""

    def __init__(self, name: str, label: str, kind: str, is_secret: bool = False) -> None:
        if kind not in _SETTING_KINDS:
            raise ValueError(f"unknown setting kind {kind!r}")
        self.name = name
        self.label = label
        self.kind = kind
        self.is_secret = is_secret
        self.description = ""
        self.is_required = False
        self.default_json: Optional[str] = None
        self.options: list[str] = []

    @classmethod
    def text(cls, name: str, label: str) -> Setting:
        return cls(name, label, "text")

    @classmethod
    def url(cls, name: str, label: str) -> Setting:
        return cls(name, label, "url")

    @classmethod
    def integer(cls, name: str, label: str) -> Setting:
        return cls(name, label, "integer")

    @classmethod
    def boolean(cls, name: str, label: str) -> Setting:
        return cls(name, label, "boolean")

    @classmethod
    def choice(cls, name: str, label: str, options: Sequence[str]) -> Setting:
        setting = cls(name, label, "choice")
        setting.options = list(options)
        return setting

    @classmethod
    def string_map(cls, name: str, label: str) -> Setting:
        return cls(name, label, "string-map")

    @classmethod
    def template_map(cls, name: str, label: str) -> Setting:
        return cls(name, label, "template-map")

    @classmethod
    def secret(cls, name: str, label: str) -> Setting:
        """A secret: stored encrypted by the host, referenced by name in requests, never seen
        here."""
        return cls(name, label, "text", is_secret=True)

    def required(self) -> Setting:
        self.is_required = True
        return self

    def describe(self, description: str) -> Setting:
        self.description = description
        return self

    def default_value(self, value: Json) -> Setting:
        """The default, any JSON value (stored as JSON text)."""
        self.default_json = to_json(value)
        return self

    def build(self) -> "wit.SettingSpec":
        types = _contract()
        return types.SettingSpec(
            name=self.name,
            label=self.label,
            description=self.description,
            kind=types.SettingKind[self.kind.upper().replace("-", "_")],
            required=self.is_required,
            secret=self.is_secret,
            default_value=self.default_json,
            options=list(self.options),
        )


_SETTING_KINDS = ("text", "url", "integer", "boolean", "choice", "string-map", "template-map")


@dataclass
class RateLimit:
    """The platform's documented request rate; the host paces itself under it."""

    requests: int
    per_seconds: int


@dataclass
class Needs:
    """Resources beyond the host's defaults (64 MiB of memory, a 16 MiB component), up to the
    caps the operator set; `None` takes the default. A componentize-py component carries
    CPython and is about 18 MB, so a Python plugin declares `component_mib`."""

    memory_mib: Optional[int] = None
    component_mib: Optional[int] = None


@dataclass(kw_only=True)
class Info:
    """What `describe` returns, with the optional parts optional."""

    id: str
    name: str
    version: str
    description: str
    #: Hosts requests may go to; `settings:<name>` allows the host of a URL setting.
    allowed_hosts: Sequence[str]
    #: Canonical event types this plugin delivers; `['*']` (the default) for all of them.
    events: Optional[Sequence[str]] = None
    settings: Sequence[Union[Setting, "wit.SettingSpec"]] = ()
    rate_limit: Optional[RateLimit] = None
    needs: Needs = field(default_factory=Needs)


def plugin_info(info: Info) -> "wit.PluginInfo":
    """The contract's plugin description from an `Info`."""
    types = _contract()
    return types.PluginInfo(
        id=info.id,
        name=info.name,
        version=info.version,
        description=info.description,
        events=list(info.events) if info.events is not None else ["*"],
        allowed_hosts=list(info.allowed_hosts),
        settings=[s.build() if isinstance(s, Setting) else s for s in info.settings],
        rate_limit=(
            types.RateLimit(requests=info.rate_limit.requests, per_seconds=info.rate_limit.per_seconds)
            if info.rate_limit is not None
            else None
        ),
        needs=types.Needs(memory_mib=info.needs.memory_mib, component_mib=info.needs.component_mib),
    )


# ---------------------------------------------------------------------------------------
# Requests

_METHODS = ("get", "post", "put", "patch", "delete")

# Lone surrogates cannot be UTF-8: written as U+FFFD, as TextEncoder does.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


class Request:
    """A request under construction. Secrets are referenced by name (`secret_header`,
    `basic_auth`); signatures are asked of the host (`sign_hmac_hex`,
    `sign_standard_webhooks`); the host fills both in at send time."""

    def __init__(self, method: str, url: str) -> None:
        if method.lower() not in _METHODS:
            raise ValueError(f"unknown method {method!r}")
        self.method = method.lower()
        self.url = url
        #: (name, segments); a segment is ("text", str), ("secret", name) or ("basic-auth", (user, secret)).
        self.headers: list[tuple[str, list[tuple[str, Any]]]] = []
        self.body: bytes = b""
        #: ("hmac-sha256-hex", (header, secret)) or ("standard-webhooks", secret).
        self.signatures: list[tuple[str, Any]] = []

    @classmethod
    def post(cls, url: str) -> Request:
        return cls("post", url)

    def header(self, name: str, value: str) -> Request:
        """A header with a literal value."""
        self.headers.append((name, [("text", value)]))
        return self

    def secret_header(self, name: str, prefix: str, secret: str) -> Request:
        """A header whose value is `prefix` then the named secret:
        `secret_header('Authorization', 'Bearer ', 'token')`."""
        value: list[tuple[str, Any]] = [] if prefix == "" else [("text", prefix)]
        value.append(("secret", secret))
        self.headers.append((name, value))
        return self

    def basic_auth(self, user: str, secret: str) -> Request:
        """`Authorization: Basic base64(user:<the named secret>)`, made by the host."""
        self.headers.append(("Authorization", [("basic-auth", (user, secret))]))
        return self

    def bytes(self, body: Union[bytes, bytearray, memoryview, str]) -> Request:
        """The body as raw bytes or text (UTF-8)."""
        self.body = _utf8(body) if isinstance(body, str) else bytes(body)
        return self

    def json(self, body: Any) -> Request:
        """The body as compact JSON (`to_json`)."""
        return self.bytes(to_json(body))

    def sign_hmac_hex(self, header: str, secret: str) -> Request:
        """Asks the host to add `header: hex(HMAC-SHA256(secret, body))`."""
        self.signatures.append(("hmac-sha256-hex", (header, secret)))
        return self

    def sign_standard_webhooks(self, secret: str) -> Request:
        """Asks the host to add Standard Webhooks headers keyed with the named secret."""
        self.signatures.append(("standard-webhooks", secret))
        return self

    def build(self) -> "wit.OutgoingRequest":
        types = _contract()

        def segment(kind: str, value: Any) -> Any:
            if kind == "text":
                return types.Segment_Text(value)
            if kind == "secret":
                return types.Segment_Secret(value)
            user, secret = value
            return types.Segment_BasicAuth(types.BasicCredentials(user=user, secret=secret))

        def signature(kind: str, value: Any) -> Any:
            if kind == "hmac-sha256-hex":
                header, secret = value
                return types.Signature_HmacSha256Hex(types.HmacSignature(header=header, secret=secret))
            return types.Signature_StandardWebhooks(value)

        return types.OutgoingRequest(
            method=types.Method[self.method.upper()],
            url=self.url,
            headers=[
                types.Header(name=name, value=[segment(k, v) for k, v in segments])
                for name, segments in self.headers
            ],
            body=self.body,
            signatures=[signature(k, v) for k, v in self.signatures],
        )


# ---------------------------------------------------------------------------------------
# Refusals


class Refused(Exception):
    """Raised from `transform` to refuse an event: `kind` is `skip`, `invalid-config` or
    `invalid-event`. Raise one with `skip`, `invalid_config` or `invalid_event`."""

    KINDS = ("skip", "invalid-config", "invalid-event")

    def __init__(self, kind: str, reason: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown refusal {kind!r}")
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    def refusal(self) -> "wit.Refusal":
        """The contract's refusal."""
        types = _contract()
        return {
            "skip": types.Refusal_Skip,
            "invalid-config": types.Refusal_InvalidConfig,
            "invalid-event": types.Refusal_InvalidEvent,
        }[self.kind](self.reason)


def skip(reason: str) -> NoReturn:
    """Refuses the event: the platform cannot take it (e.g. no customer email); not an error."""
    raise Refused("skip", reason)


def invalid_config(reason: str) -> NoReturn:
    """Refuses the event: the integration's settings cannot work."""
    raise Refused("invalid-config", reason)


def invalid_event(reason: str) -> NoReturn:
    """Refuses the event: it lacks what this destination needs."""
    raise Refused("invalid-event", reason)


# ---------------------------------------------------------------------------------------
# Responses

#: How much of a response body a failure reason quotes.
REASON_EXCERPT_CHARS = 300

_SECONDS = re.compile(r"\+?[0-9]+")


def header(response: "wit.IncomingResponse", name: str) -> Optional[str]:
    """A response header's value (names arrive lowercase)."""
    wanted = name.lower()
    for header_name, value in response.headers:
        if header_name.lower() == wanted:
            return value
    return None


def retry_after_seconds(response: "wit.IncomingResponse") -> Optional[int]:
    """`Retry-After` in seconds, when given as a number of seconds."""
    value = header(response, "retry-after")
    if value is None:
        return None
    value = trim(value)
    if _SECONDS.fullmatch(value) and int(value) <= 0xFFFFFFFF:
        return int(value)
    return None


def body_text(response: "wit.IncomingResponse") -> str:
    """The response body as text (UTF-8, invalid bytes replaced, a byte order mark dropped)."""
    text = bytes(response.body).decode("utf-8", "replace")
    return text[1:] if text.startswith("\ufeff") else text


def delivered() -> "wit.Verdict":
    """The request did what it was for."""
    return _contract().Verdict_Delivered()


def retry(reason: str, after_seconds: Optional[int] = None) -> "wit.Verdict":
    """Try again later, after `after_seconds` when the platform said."""
    types = _contract()
    return types.Verdict_Retry(types.RetryAdvice(after_seconds=after_seconds, reason=reason))


def failed(reason: str) -> "wit.Verdict":
    """The platform refused the event for good."""
    return _contract().Verdict_Failed(reason)


def default_verdict(response: "wit.IncomingResponse") -> "wit.Verdict":
    """2xx delivered; 408, 429 and 5xx retried (honouring `Retry-After`); any other status
    failed, quoting the start of the body."""
    status = response.status
    if 200 <= status <= 299:
        return delivered()
    if status in (408, 429) or 500 <= status <= 599:
        return retry(f"HTTP {status}", retry_after_seconds(response))
    body = trim(body_text(response))
    return failed(f"HTTP {status}" if body == "" else f"HTTP {status}: {body[:REASON_EXCERPT_CHARS]}")


def platform_verdict(response: "wit.IncomingResponse", platform: str, invalid_credentials: str) -> "wit.Verdict":
    """How a platform's HTTP API answer usually reads, in the platform's name: 2xx delivered;
    401/403 failed with `invalid_credentials`; 408, 429 and 5xx retried; any other status
    failed with the platform's own error text (`error_details`)."""
    status = response.status
    if 200 <= status <= 299:
        return delivered()
    if status in (401, 403):
        return failed(invalid_credentials)
    if status in (408, 429) or 500 <= status <= 599:
        return retry(f"{platform} answered HTTP {status}", retry_after_seconds(response))
    detail = error_details(response.body)
    if detail is None:
        return failed(f"{platform} rejected the event (HTTP {status})")
    return failed(f"{platform} rejected the event (HTTP {status}): {detail}")


def error_details(body: bytes) -> Optional[str]:
    """The `detail` (or `title`, `message`, `error`) of each entry of an error list such as
    JSON:API's `errors[]`, or of a single error document, joined by "; "."""
    try:
        value = parse_json(bytes(body).decode("utf-8", "replace").removeprefix("\ufeff"))
    except ValueError:
        return None

    def describe(item: Json) -> Optional[str]:
        if isinstance(item, str):
            return item
        if isinstance(item, dict):
            for key in ("detail", "title", "message", "error"):
                text = item.get(key)
                if isinstance(text, str):
                    return text
        return None

    errors = value.get("errors") if isinstance(value, dict) else None
    if isinstance(errors, list):
        details = [d for d in map(describe, errors) if d is not None]
    elif isinstance(errors, str):
        details = [errors]
    else:
        details = [d for d in (describe(value),) if d is not None]
    return "; ".join(details) if details else None


_NUMERIC_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def number(value: Optional[Json]) -> Optional[Union[int, float]]:
    """A number from a JSON number or numeric text (`50`, `"89.99"`); `None` for anything
    else. Integer text (within 64 bits) gives an `int`, as the Rust SDK does."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if not isinstance(value, str):
        return None
    text = trim(value)
    if not _NUMERIC_TEXT.fullmatch(text):
        return None
    if _INTEGER_TEXT.fullmatch(text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    parsed = float(text)
    return parsed if parsed not in (float("inf"), float("-inf")) else None


# ---------------------------------------------------------------------------------------
# Logging


class _Log:
    """Writes to the host's log, tagged with the plugin and delivery (at most 32 lines of
    1 KiB per call). Events carry customer data: log sparingly."""

    def debug(self, message: str) -> None:
        self._write("DEBUG", message)

    def info(self, message: str) -> None:
        self._write("INFO", message)

    def warn(self, message: str) -> None:
        self._write("WARN", message)

    def error(self, message: str) -> None:
        self._write("ERROR", message)

    @staticmethod
    def _write(level: str, message: str) -> None:
        _contract()
        _host.log(_host.LogLevel[level], message)


log = _Log()


# ---------------------------------------------------------------------------------------
# The export


def _outgoing(request: Any) -> "wit.OutgoingRequest":
    if isinstance(request, Request):
        return request.build()
    if isinstance(request, _contract().OutgoingRequest):
        return request
    raise TypeError(f"transform returned a {type(request).__name__}, not a Request")


def destination(cls: type) -> type:
    """Adapts a destination class to the contract's `plugin` export, as componentize-py takes
    it (a class named `Plugin` in the app module):

        @destination
        class Plugin:
            def describe(self) -> Info: ...
            def validate_config(self, config: Config) -> list[ConfigError]: ...
            def transform(self, event: Event, config: Config) -> list[Request]: ...
            def interpret(self, response: IncomingResponse) -> Verdict: ...  # optional

    The adapter parses the event and settings once, so that the class only sees typed data,
    and turns a raised `Refused` (`skip`, `invalid_config`, `invalid_event`) into the refusal
    the contract returns. Any other exception is a bug in the plugin: the call traps and the
    host reports it with the traceback the interpreter writes to stderr. The class is
    instantiated once, with no arguments; its methods should be pure functions of their input.
    """
    types = _contract()
    from wit_world import exports

    err = _Err
    implementation = cls()
    interpret: Callable[[Any], Any] = getattr(implementation, "interpret", None) or default_verdict

    class Plugin(exports.Plugin):
        def describe(self) -> "wit.PluginInfo":
            return plugin_info(implementation.describe())

        def validate_config(self, config: "wit.Config") -> list["wit.ConfigError"]:
            try:
                parsed = Config.from_wit(config)
            except ValueError as error:
                return [config_error("", str(error))]
            return list(implementation.validate_config(parsed))

        def transform(self, event: str, config: "wit.Config") -> list["wit.OutgoingRequest"]:
            try:
                parsed_event = parse_event(event)
            except ValueError as error:
                raise err(types.Refusal_InvalidEvent(f"the event is not a canonical event: {error}")) from None
            try:
                parsed_config = Config.from_wit(config)
            except ValueError as error:
                raise err(types.Refusal_InvalidConfig(str(error))) from None
            try:
                # list(): a `transform` written as a generator raises its refusals here too.
                requests = list(implementation.transform(parsed_event, parsed_config))
            except Refused as refused:
                raise err(refused.refusal()) from None
            return [_outgoing(request) for request in requests]

        def interpret(self, response: "wit.IncomingResponse") -> "wit.Verdict":
            return interpret(response)

    Plugin.__module__ = cls.__module__
    Plugin.__qualname__ = cls.__qualname__
    Plugin.__doc__ = cls.__doc__
    #: The decorated class's instance, for tests that call it with typed inputs.
    Plugin.destination = implementation  # type: ignore[attr-defined]
    return Plugin


__all__ = [
    "Config",
    "Info",
    "Needs",
    "RateLimit",
    "REASON_EXCERPT_CHARS",
    "Refused",
    "Request",
    "Setting",
    "body_text",
    "config_error",
    "default_verdict",
    "delivered",
    "destination",
    "error_details",
    "failed",
    "header",
    "invalid_config",
    "invalid_event",
    "log",
    "number",
    "platform_verdict",
    "plugin_info",
    "retry",
    "retry_after_seconds",
    "skip",
]
