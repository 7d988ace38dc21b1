# A misbehaving Python destination for the runtime's limit tests, like the Rust
# `tests/components/hostile` and the TypeScript `tests/components-ts/hostile`: the `mode`
# setting chooses what each `transform` does, so one component exercises every limit and a
# normal call (`ok`) can follow each failure.
#
# What each mode is expected to produce in Canopy's sandbox (default limits):
#
#   ok           a request to https://hostile.test/ok with `X-Event: <event type>`.
#   loop         spins forever: the call time limit (TimeLimit).
#   clock        busy-waits an hour on time.monotonic(): the call time limit (TimeLimit).
#   sleep        time.sleep(3600): waiting on a clock is refused, the call traps at once
#                (Forbidden "wait on a clock (sleep)").
#   memory-bomb  keeps 8 MiB buffers until memory cannot grow: the memory limit (MemoryLimit;
#                CPython's MemoryError goes uncaught and the call traps after the denied grow).
#   big-output   returns a body of 5 MiB + 1 byte: past the 4 MiB output limit (OutputTooLarge).
#   throw        raises RuntimeError("hostile plugin raised on purpose"): the call traps
#                (Trap) and the traceback, message included, is in the trap's stderr.
#   socket       resolves hostile.test, then connects to 127.0.0.1:9 with
#                socket.create_connection and with a socket of its own: all three fail inside
#                the sandbox (no name lookup, no address allowed). Returns a request to
#                https://hostile.test/socket whose `X-Outcome` header says what happened:
#                `refused: <exception>` for each attempt (`; `-separated), never `reached`.
#   urllib       urllib.request.urlopen("http://127.0.0.1:9/"): fails the same way;
#                `X-Outcome: refused: URLError: ...`.
#   file         open("/etc/passwd"): the sandbox has no files; `X-Outcome: refused: ...`
#                (FileNotFoundError or PermissionError), never `reached`.
#   env          os.environ as the plugin sees it: empty; `X-Outcome: empty`, or the names
#                (never the values) of the variables if there were any.
#   log          writes `transforming <event type>` to the host's log and returns a request.
#
# Only a loopback address and the reserved `.test` name are ever tried, so that even a
# sandbox that let them through would send nothing off this machine.

import os
import time

from canopy_plugin_sdk import Info, Needs, Request, destination, log

# Imported now, while the component is initialised: a component has no files to import
# from when it runs. A module the interpreter lacks is reported by the mode that uses it.
try:
    # The codec name lookups encode host names with: imported on first use otherwise.
    import encodings.idna  # noqa: F401
    import socket
except ImportError as error:  # pragma: no cover - depends on the interpreter's build
    socket = None
    SOCKET_MISSING = f"{type(error).__name__}: {error}"
try:
    import urllib.request
except ImportError as error:  # pragma: no cover - depends on the interpreter's build
    urllib = None
    URLLIB_MISSING = f"{type(error).__name__}: {error}"


def outcome(text: str) -> str:
    """A header value: printable ASCII, at most 300 characters."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean[:300]


def refused(error: BaseException) -> str:
    return f"refused: {type(error).__name__}: {error}"


def try_socket() -> str:
    if socket is None:
        return f"refused: {SOCKET_MISSING}"
    results = []
    try:
        found = socket.getaddrinfo("hostile.test", 443)
        results.append(f"reached: getaddrinfo gave {len(found)} address(es)")
    except Exception as error:
        results.append(refused(error))
    try:
        connection = socket.create_connection(("127.0.0.1", 9), timeout=1)
        connection.close()
        results.append("reached: connected to 127.0.0.1:9")
    except Exception as error:
        results.append(refused(error))
    try:
        # A socket of its own, connected to an address without a name lookup.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:
            raw.connect((socket.inet_ntoa(bytes([127, 0, 0, 1])), 9))
        results.append("reached: connected a raw socket to 127.0.0.1:9")
    except Exception as error:
        results.append(refused(error))
    return "; ".join(results)


def try_urllib() -> str:
    if urllib is None:
        return f"refused: {URLLIB_MISSING}"
    try:
        with urllib.request.urlopen("http://127.0.0.1:9/", timeout=1) as answer:
            return f"reached: HTTP {answer.status}"
    except Exception as error:
        return refused(error)


def try_file() -> str:
    try:
        with open("/etc/passwd", "rb") as file:
            return f"reached: read {len(file.read())} bytes"
    except Exception as error:
        return refused(error)


def try_env() -> str:
    names = sorted(os.environ)
    return "empty" if not names else "names: " + ", ".join(names)


@destination
class Plugin:
    def describe(self):
        return Info(
            id="hostile-py",
            name="Hostile (Python)",
            version="0.1.0",
            description="Breaks every limit on request",
            allowed_hosts=["hostile.test"],
            # The component carries CPython (about 18 MB); memory stays at the default, the
            # limit memory-bomb runs into.
            needs=Needs(component_mib=32),
        )

    def validate_config(self, config):
        return []

    def transform(self, event, config):
        mode = config.text_or("mode", "ok")
        if mode == "loop":
            n = 0
            while True:
                n = (n + 1) & 0xFFFFFFFF
        if mode == "clock":
            # A busy wait on the clock: the time limit ends it.
            start = time.monotonic()
            while time.monotonic() - start < 3600:
                pass
            return []
        if mode == "sleep":
            time.sleep(3600)
            return []
        if mode == "memory-bomb":
            hoard = []
            while True:
                hoard.append(bytearray(8 << 20))
        if mode == "big-output":
            # Past the 4 MiB output limit.
            return [Request.post("https://hostile.test/").bytes(b"x" * ((5 << 20) + 1))]
        if mode == "throw":
            raise RuntimeError("hostile plugin raised on purpose")
        probes = {"socket": try_socket, "urllib": try_urllib, "file": try_file, "env": try_env}
        if mode in probes:
            return [Request.post(f"https://hostile.test/{mode}").header("X-Outcome", outcome(probes[mode]()))]
        if mode == "log":
            log.info(f"transforming {event.event}")
            return [Request.post("https://hostile.test/")]
        return [Request.post("https://hostile.test/ok").header("X-Event", event.event)]
