"""apisim.http: the mock HTTP server under the names of the seed's api-simulator.

    MockResponseSpec(status=200, body=None, headers=None, delay_ms=0, fault=None,
                     dribble=None)            what a stub answers (a ResponseSpec)
    MockHttpServer                            apisim.Server (`apisim mock` by default)
    RecordedRequest                           one journal entry: a dict that also allows
                                              attribute access (r.headers["authorization"])

The server takes both call forms of the seed:

    server.register("GET", "/v1/x", MockResponseSpec(body={"ok": True}))          # newer
    server.register_sequence("GET", "/v1/x", [MockResponseSpec(...), ...])
    server.register("GET", "/v1/x", json={"ok": True}, status=200, delay_seconds=0.1)  # older
    server.register_sequence("GET", "/v1/x", responses=[{"json": {...}}, {"status": 503}])

`fault` ("reset", "empty", "reset-mid-body", "malformed-chunk", "garbage-then-close",
"stall"), `after_bytes` and `dribble` ((K, D) or {"chunks": K, "over_ms": D}) are those of
ResponseSpec: see the README's "Faults".
"""

import json as _json

from .errors import ApisimError
from .server import ResponseSpec, Server

__all__ = ["MockHttpServer", "MockResponseSpec", "RecordedRequest", "response_from_keywords"]

# The older keyword form's names (and the newer ones, which it also takes).
_KEYWORDS = ("json", "body", "text", "status", "headers", "delay_seconds", "delay_ms", "fault",
             "dribble", "after_bytes")


class MockResponseSpec(ResponseSpec):
    """A ResponseSpec (with its `fault`, `after_bytes` and `dribble`) that also takes the
    older form's `json=` value as `json_body`, so any JSON value (a string, a number) can be
    the body."""

    __slots__ = ("_json_value",)

    _NO_JSON = object()

    def __init__(self, status=200, body=None, headers=None, delay_ms=0, fault=None,
                 dribble=None, after_bytes=None, json_body=_NO_JSON):
        super().__init__(status=status, body=body, headers=headers, delay_ms=delay_ms,
                         fault=fault, after_bytes=after_bytes, dribble=dribble)
        self._json_value = json_body

    def to_json(self):
        d = super().to_json()
        if self._json_value is not MockResponseSpec._NO_JSON:
            d.pop("body", None)
            d.pop("body_base64", None)
            d["json"] = self._json_value
        return d

    def __repr__(self):
        return "Mock" + super().__repr__()


def response_from_keywords(kwargs, where="register()"):
    """A MockResponseSpec from the older keyword form: json=, body= (or text=), status=,
    headers=, delay_seconds= (or delay_ms=), fault=, dribble=, after_bytes=. Raises TypeError
    naming an unknown keyword."""
    unknown = sorted(set(kwargs) - set(_KEYWORDS))
    if unknown:
        raise TypeError(f"{where}: unknown keyword {unknown[0]!r} (takes "
                        f"{', '.join(_KEYWORDS)})")
    if "json" in kwargs and ("body" in kwargs or "text" in kwargs):
        raise TypeError(f"{where}: give json= or body=, not both")
    if "delay_seconds" in kwargs and "delay_ms" in kwargs:
        raise TypeError(f"{where}: give delay_seconds= or delay_ms=, not both")
    delay_ms = kwargs.get("delay_ms", 0)
    if "delay_seconds" in kwargs:
        seconds = kwargs["delay_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"{where}: delay_seconds must be a number, not "
                            f"{type(seconds).__name__}")
        delay_ms = seconds * 1000.0
    body = kwargs.get("body", kwargs.get("text"))
    extra = {}
    if "json" in kwargs:
        value = kwargs["json"]
        try:
            _json.dumps(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{where}: json= is not JSON-serialisable: {e}") from None
        extra["json_body"] = value
    return MockResponseSpec(status=kwargs.get("status", 200), body=body,
                            headers=kwargs.get("headers"), delay_ms=delay_ms,
                            fault=kwargs.get("fault"), dribble=kwargs.get("dribble"),
                            after_bytes=kwargs.get("after_bytes"), **extra)


class RecordedRequest(dict):
    """A journal entry (see Server.get_requests): a dict whose keys are also attributes
    (`r.headers`, `r.method`, `r.path`, `r.query`, `r.body`, `r.matched`,
    `r.received_at`)."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"recorded request has no {name!r} (it has "
                                 f"{', '.join(sorted(self))})") from None

    def json(self):
        """The body parsed as JSON."""
        if self.get("body") is None:
            raise ApisimError("the recorded request has no text body to parse")
        return _json.loads(self["body"])


MockHttpServer = Server
