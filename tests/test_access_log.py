"""The access line is hand-formatted for speed: it must still be one valid JSON object."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from proxy.core.masking import MASK
from proxy.ops.logs import REDACTOR, AccessLog


@dataclass
class Finished:
    """What the access line reads of a finished request (the pipeline's ``Exchange``)."""

    route_name: str | None = "r"
    method: str = "GET"
    path: str = "/"
    status: int = 200
    upstream_seconds: float = 0.0
    upstream_status: int | None = None
    replayed: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    client_addr: str | None = None
    client: str | None = None
    error_code: str | None = None
    request_id: str = "id"


@given(
    path=st.text(max_size=40),
    request_id=st.text(max_size=20),
    route=st.none() | st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True),  # config rule
    status=st.integers(100, 599),
    seconds=st.floats(0, 1e4),
    replayed=st.booleans(),
    upstream_status=st.none() | st.integers(100, 599),
    sizes=st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)),
    client_addr=st.none() | st.text(max_size=40),
    client=st.none() | st.text(max_size=20),
    code=st.none() | st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
)
def test_every_line_is_one_json_object_with_the_fields_as_given(
    path: str,
    request_id: str,
    route: str | None,
    status: int,
    seconds: float,
    replayed: bool,
    upstream_status: int | None,
    sizes: tuple[int, int],
    client_addr: str | None,
    client: str | None,
    code: str | None,
) -> None:
    log = AccessLog()
    out = io.StringIO()
    log.configure(out, "json")
    entry = Finished(
        route_name=route,
        path=path,
        status=status,
        upstream_seconds=seconds / 2,
        replayed=replayed,
        request_id=request_id,
        upstream_status=upstream_status,
        bytes_in=sizes[0],
        bytes_out=sizes[1],
        client_addr=client_addr,
        client=client,
        error_code=code,
    )
    log.write(entry, seconds)
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["path"] == REDACTOR.text(path)
    assert event["request_id"] == request_id
    assert event["route"] == route
    assert (event["status"], event["replayed"]) == (status, replayed)
    assert event["duration_ms"] == round(seconds * 1000, 2)
    assert (event["upstream_status"], event["code"]) == (upstream_status, code)
    assert (event["bytes_in"], event["bytes_out"]) == sizes
    assert (event["client_addr"], event["client"]) == (client_addr, client)
    assert (event["event"], event["level"]) == ("request", "info")


def test_access_lines_are_info_events_a_higher_level_leaves_out() -> None:
    out = io.StringIO()
    for level in ("debug", "info", "warning", "error"):
        log = AccessLog()
        log.configure(out, "json", level)
        log.write(Finished(path=f"/{level}"), 0.001)
    assert [json.loads(line)["path"] for line in out.getvalue().splitlines()] == ["/debug", "/info"]


def test_known_secrets_in_a_path_are_masked() -> None:
    REDACTOR.add("path-secret-0123")
    log = AccessLog()
    out = io.StringIO()
    log.configure(out, "json")
    log.write(Finished(path="/x/path-secret-0123/y"), 0.001)
    assert json.loads(out.getvalue())["path"] == f"/x/{MASK}/y"
