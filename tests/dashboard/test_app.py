"""The dashboard over plain HTTP: its guards (Host, token, actions), the API, the event stream, /metrics."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_broker.dashboard.app import CSP, DashboardConfig, host_allowed
from mcp_broker.dashboard.source import EventKind

from .fake_source import FakeSource
from .served import StartDashboard, running_dashboard

GUARDED = [
    "/api/sessions",
    "/api/protocols",
    "/api/compatibility",
    "/api/traffic",
    "/api/messages/x",
    "/api/dead-letters",
    "/api/stats",
    "/api/events",
    "/metrics",
]


def client(origin: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=origin, timeout=5, **kwargs)


@pytest.mark.parametrize(
    ("header", "bound", "allowed"),
    [
        ("127.0.0.1:8765", "127.0.0.1", True),
        ("localhost:8765", "127.0.0.1", True),
        ("[::1]:8765", "127.0.0.1", True),
        ("127.0.0.1:8766", "127.0.0.1", False),
        ("127.0.0.1", "127.0.0.1", False),
        ("evil.example:8765", "127.0.0.1", False),
        ("127.0.0.1.evil.example:8765", "127.0.0.1", False),
        ("", "127.0.0.1", False),
        ("192.168.1.5:8765", "192.168.1.5", True),
        ("localhost:8765", "192.168.1.5", False),
        ("10.0.0.7:8765", "0.0.0.0", True),
        ("rebind.example:8765", "0.0.0.0", False),
    ],
)
def test_host_header_must_name_the_served_address(header: str, bound: str, allowed: bool) -> None:
    assert host_allowed(header, DashboardConfig(host=bound, port=8765, token="t")) is allowed


def test_a_foreign_host_header_is_refused(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    with client(dash.origin) as http:
        for path in ["/", f"/?token={dash.token}", f"/api/sessions?token={dash.token}", "/static/app.js"]:
            response = http.get(path, headers={"Host": f"rebind.example:{dash.config.port}"})
            assert response.status_code == 421, path
            assert dash.origin in response.text
        assert http.get(
            f"/api/sessions?token={dash.token}", headers={"Host": f"localhost:{dash.config.port}"}
        ).is_success


def test_every_api_endpoint_wants_the_token(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    with client(dash.origin) as http:
        for path in GUARDED:
            assert http.get(path).status_code == 401, path
            assert http.get(path, params={"token": "wrong"}).status_code == 401, path
            assert http.get(path, headers={"X-Dashboard-Token": dash.token + "x"}).status_code == 401, path
        assert "token" in http.get("/api/sessions").json()["error"]
        assert http.get("/").status_code == 401
        assert http.get("/static/style.css").is_success  # the package's own files hold no secret
        for how in [
            {"params": {"token": dash.token}},
            {"headers": {"X-Dashboard-Token": dash.token}},
            {"headers": {"Authorization": f"Bearer {dash.token}"}},
        ]:
            assert http.get("/api/sessions", **how).is_success, how


def test_the_url_token_becomes_a_strict_http_only_cookie(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    with client(dash.origin) as http:
        response = http.get(f"/?token={dash.token}")
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        page = http.get("/")  # the client keeps the cookie, as a browser does
        assert page.is_success and "/static/app.js" in page.text
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert page.headers["x-frame-options"] == "DENY"
        assert http.get("/api/sessions").is_success
        assert http.get("/?token=wrong").status_code == 401


def test_actions_want_the_flag_and_the_header(start_dashboard: StartDashboard) -> None:
    read_only = start_dashboard()
    ids = {"message_ids": ["d3ad0001-0000-4000-8000-000000000001"]}
    with client(read_only.origin, headers={"X-Dashboard-Token": read_only.token}) as http:
        response = http.post("/api/dead-letters/replay", json=ids)
        assert response.status_code == 403 and "--allow-actions" in response.json()["error"]
        assert http.post("/api/dead-letters/purge", json=ids).status_code == 403
        assert http.get("/api/dead-letters/replay").status_code == 405  # changing actions are POST only
    assert read_only.source.calls == []

    dash = start_dashboard(allow_actions=True)
    with client(dash.origin) as http:
        # The cookie alone (what a cross-site form would ride on) does not do.
        http.get(f"/?token={dash.token}")
        assert http.post("/api/dead-letters/replay", json=ids).status_code == 401
        assert http.post(f"/api/dead-letters/replay?token={dash.token}", json=ids).status_code == 401
        token = {"X-Dashboard-Token": dash.token}
        foreign = http.post(
            "/api/dead-letters/replay", json=ids, headers={**token, "Origin": "http://evil.example"}
        )
        assert foreign.status_code == 401
        assert (
            http.post("/api/dead-letters/replay", json={"message_ids": []}, headers=token).status_code == 400
        )
        assert http.post("/api/dead-letters/replay", content=b"{", headers=token).status_code == 400
        done = http.post("/api/dead-letters/replay", json=ids, headers=token)
        assert done.json() == {"results": [{"message_id": ids["message_ids"][0], "status": "requeued"}]}
    assert dash.source.calls == [("replay", tuple(ids["message_ids"]))]


def test_the_api_reads_the_source(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    with client(dash.origin, headers={"X-Dashboard-Token": dash.token}) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        assert [s["name"] for s in sessions] == ["author", "reviewer", "ci", "old-bot"]
        assert sessions[0]["protocols"][0] == {"name": "review", "versions": "==1.0.0"}
        page = http.get("/api/traffic", params={"limit": 2}).json()
        assert len(page["events"]) == 2 and page["cursor"] == str(len(dash.source.events))
        chat = http.get("/api/traffic", params={"protocol": "chat", "limit": 100}).json()["events"]
        assert {e["protocol"] for e in chat} == {"chat"} and len(chat) == 2
        assert http.get("/api/traffic", params={"limit": 0}).status_code == 400
        assert http.get("/api/traffic", params={"limit": "many"}).status_code == 400
        story = http.get("/api/messages/5e7d0001-0000-4000-8000-000000000001").json()
        assert [e["kind"] for e in story["events"]] == ["sent", "leased", "acked"]
        assert story["deliveries"][0]["adapter_path"] == ["1.0.0", "1.1.0", "2.0.0"]
        stats = http.get("/api/stats").json()
        assert len(stats["per_minute"]) == 60 and stats["now"] - stats["since"] == pytest.approx(3600)


def test_the_event_stream_sends_the_backlog_then_new_traffic(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    backlog = len(dash.source.events)
    with (
        client(dash.origin, headers={"X-Dashboard-Token": dash.token}) as http,
        http.stream("GET", "/api/events", params={"session": "ci"}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        seen: list[dict[str, Any]] = []
        lines = stream.iter_lines()
        added = None
        for line in lines:
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if len(seen) == 2 and added is None:  # the two chat deliveries ci sent, then something new
                dash.source.add_event(EventKind.SENT, "other", sender="author", recipient="reviewer")
                added = dash.source.add_event(
                    EventKind.SENT, "fresh", sender="ci", recipient="author", at=time.time()
                )
            if len(seen) == 3:
                break
    assert all("ci" in (e["sender"], e["recipient"]) for e in seen)
    assert seen[-1]["message_id"] == "fresh" and added is not None and seen[-1]["cursor"] == added.cursor
    assert int(seen[-1]["cursor"]) == backlog + 2


def test_stopping_the_server_ends_open_event_streams(fake: FakeSource) -> None:
    ended = threading.Event()
    with running_dashboard(fake) as dash:

        def listen() -> None:
            with (
                client(dash.origin, headers={"X-Dashboard-Token": dash.token}) as http,
                http.stream("GET", "/api/events") as stream,
            ):
                for _ in stream.iter_lines():
                    pass
            ended.set()

        threading.Thread(target=listen, daemon=True).start()
        deadline = time.monotonic() + 5
        while not dash.source._waiters:  # the stream has sent its backlog and waits for traffic
            assert time.monotonic() < deadline, "the event stream never waited for traffic"
            time.sleep(0.01)
        stopping = time.monotonic()
    # Well within uvicorn's grace period: the stream ended itself instead of being cancelled.
    assert ended.wait(5) and time.monotonic() - stopping < 0.5


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_parse_and_match_the_traffic(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    source = dash.source
    source.add_event(EventKind.EXPIRED, "late", protocol="chat")
    source.add_event(EventKind.RELEASED, "back", protocol="review")
    with client(dash.origin, headers={"X-Dashboard-Token": dash.token}) as http:
        response = http.get("/metrics")
    assert response.is_success and response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    for kind in EventKind:
        family = found[f"mcp_broker_messages_{kind.value}"]
        assert family.type == "counter"
        for protocol in ("review", "chat"):
            expected = sum(1 for e in source.events if e.kind == kind and e.protocol == protocol)
            (sample,) = [
                s for s in family.samples if s.labels == {"protocol": protocol} and s.name.endswith("_total")
            ]
            assert sample.value == expected, (kind, protocol)
    assert {s.labels["session"]: s.value for s in found["mcp_broker_queue_depth"].samples} == {
        "author": 0,
        "reviewer": 3,
        "ci": 1,
        "old-bot": 7,
    }
    assert {s.labels["status"]: s.value for s in found["mcp_broker_sessions"].samples} == {
        "active": 2,
        "stale": 1,
        "disconnected": 1,
    }
    latency = {
        s.name: s for s in found["mcp_broker_delivery_latency_seconds"].samples if not s.labels.get("le")
    }
    assert latency["mcp_broker_delivery_latency_seconds_count"].value == len(source.latencies)
    assert latency["mcp_broker_delivery_latency_seconds_sum"].value == pytest.approx(sum(source.latencies))
    buckets = {
        s.labels["le"]: s.value
        for s in found["mcp_broker_delivery_latency_seconds"].samples
        if s.labels.get("le")
    }
    assert buckets["0.01"] == 1 and buckets["0.25"] == 4 and buckets["+Inf"] == 5
    assert "mcp_broker_store_errors" in found and "mcp_broker_store_retries" in found


def test_metrics_open_serves_metrics_alone_without_the_token(start_dashboard: StartDashboard) -> None:
    dash = start_dashboard(metrics_open=True)
    with client(dash.origin) as http:
        assert http.get("/metrics").is_success
        assert http.get("/api/sessions").status_code == 401
        assert http.get("/metrics", headers={"Host": "rebind.example"}).status_code == 421
