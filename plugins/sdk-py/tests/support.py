"""What the tests share: the contract's bindings generated once per run, plugin modules loaded
from their projects, and the reviewable form `canopy plugin test` writes (so answers compare
with the expected files kept beside each plugin)."""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

SDK_DIR = Path(__file__).resolve().parent.parent
REPO = SDK_DIR.parent.parent
SAMPLES = REPO / "crates" / "events" / "samples"

# The SDK under test is this checkout's, not an installed copy.
sys.path.insert(0, str(SDK_DIR))

_bindings: Path | None = None


def ensure_bindings() -> None:
    """Generates `wit_world` from the SDK's WIT (with componentize-py) and puts it on sys.path."""
    global _bindings
    if _bindings is not None:
        return
    try:
        import componentize_py  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "the tests generate the contract's bindings with componentize-py: run them with an "
            "interpreter that has it (plugins/sdk-py/test.sh makes one)"
        ) from None
    from canopy_plugin_sdk import build

    directory = Path(tempfile.mkdtemp(prefix="canopy-bindings-"))
    atexit.register(shutil.rmtree, directory, True)
    build.bindings(directory)
    sys.path.insert(1, str(directory))
    _bindings = directory


def load_plugin(project: str, module: str = "app") -> ModuleType:
    """Imports a plugin project's module (`plugins/template-py/app.py`, ...) under a name of its
    own, so that several projects' `app` modules load side by side."""
    ensure_bindings()
    path = REPO / project / f"{module}.py"
    name = "plugin_" + project.replace("/", "_").replace("-", "_") + "_" + module
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def sample(event_type: str) -> str:
    return (SAMPLES / f"{event_type}.json").read_text()


def wit_config(settings: Any, secrets: list[str] | tuple[str, ...] = ()) -> Any:
    """The contract's config record, with `settings` as JSON text (a str is taken as is)."""
    from canopy_plugin_sdk import to_json
    from wit_world.imports import types

    text = settings if isinstance(settings, str) else to_json(settings)
    return types.Config(settings=text, secrets_present=list(secrets))


def wit_response(status: int, headers: dict[str, str] | None = None, body: str | bytes = b"") -> Any:
    from wit_world.imports import types

    return types.IncomingResponse(
        status=status,
        headers=[(name.lower(), value) for name, value in (headers or {}).items()],
        body=body.encode() if isinstance(body, str) else body,
    )


def call_transform(plugin: Any, event: str, config: Any) -> Any:
    """The contract's answer: the requests, or the refusal (`Err` unwrapped)."""
    from componentize_py_types import Err

    try:
        return plugin.transform(event, config)
    except Err as err:
        return err


# ---------------------------------------------------------------------------------------
# The reviewable form (host/src/plugin_test.rs, `review`)


def _pretty(value: Any, indent: str = "") -> str:
    """JSON as serde_json's pretty printer writes it (two spaces; numbers as parsed)."""
    from canopy_plugin_sdk import to_json

    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{to_json(str(k))}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + "\n" + indent + "]"
    return to_json(value)


def _header_value(segments: list[Any]) -> str:
    from wit_world.imports import types

    out = []
    for segment in segments:
        if isinstance(segment, types.Segment_Text):
            out.append(segment.value)
        elif isinstance(segment, types.Segment_Secret):
            out.append("{{secret:" + segment.value + "}}")
        else:
            out.append(f"Basic base64({segment.value.user}:{{{{secret:{segment.value.secret}}}}})")
    return "".join(out)


def _signature(signature: Any) -> Any:
    from wit_world.imports import types

    if isinstance(signature, types.Signature_HmacSha256Hex):
        return {"hmac_sha256_hex": {"header": signature.value.header, "secret": signature.value.secret}}
    return {"standard_webhooks": {"secret": signature.value}}


def _body(body: bytes) -> Any:
    from canopy_plugin_sdk import parse_json

    try:
        return parse_json(body.decode("utf-8"))
    except ValueError:
        return body.decode("utf-8", "replace")


def review(answer: Any) -> str:
    """What `canopy plugin test` writes for a `transform` answer."""
    from componentize_py_types import Err
    from wit_world.imports import types

    if isinstance(answer, Err):
        kind = {
            types.Refusal_Skip: "skip",
            types.Refusal_InvalidConfig: "invalid_config",
            types.Refusal_InvalidEvent: "invalid_event",
        }[type(answer.value)]
        document: Any = {"refused": kind, "reason": answer.value.value}
    else:
        document = [
            {
                "method": request.method.name,
                "url": request.url,
                "headers": [f"{h.name}: {_header_value(h.value)}" for h in request.headers],
                "signatures": [_signature(s) for s in request.signatures],
                "body": _body(request.body),
            }
            for request in answer
        ]
    return _pretty(document) + "\n"
