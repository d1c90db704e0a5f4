"""The page in a real headless chromium, against the app over a fake Source: each view, live traffic,
a replay from the page. A screenshot of each view goes to tests/dashboard/artifacts/."""

from __future__ import annotations

from typing import Any

from mcp_broker.dashboard.source import EventKind

from .served import StartDashboard, screenshot

DEAD = "d3ad0001-0000-4000-8000-000000000001"


def open_view(page: Any, url: str, view: str) -> None:
    """Load the printed URL (which trades its token for a cookie), then show one view."""
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    page.goto(page.url.split("#")[0] + f"#{view}")
    page.wait_for_selector(f"body[data-ready='{view}']")


def test_the_sessions_view_lists_sessions_with_their_status(
    page: Any, start_dashboard: StartDashboard
) -> None:
    dash = start_dashboard()
    open_view(page, dash.url, "sessions")
    assert page.url == dash.origin + "/#sessions"  # the token left the address bar
    rows = page.locator("#sessions-table tbody tr")
    assert rows.count() == 4
    reviewer = page.locator("tr[data-session='reviewer']")
    assert "active" in reviewer.inner_text() and "review ^2.0" in reviewer.inner_text()
    assert "stale" in page.locator("tr[data-session='ci']").inner_text()
    page.wait_for_selector("#live.on")
    screenshot(page, "sessions")


def test_a_new_event_shows_in_the_traffic_view_within_a_second(
    page: Any, start_dashboard: StartDashboard
) -> None:
    dash = start_dashboard()
    open_view(page, dash.url, "traffic")
    page.wait_for_selector("#live.on")
    page.wait_for_selector("#traffic-table tbody tr[data-message]")
    backlog = page.locator("#traffic-table tbody tr").count()
    assert backlog == len(dash.source.events)

    # A message's story: its adapter path and every step.
    page.click("#traffic-table tr.kind-sent[data-message^='5e7d0001']")
    story = page.locator("#story")
    story.wait_for()
    page.wait_for_selector("#story .timeline li")
    text = story.inner_text()
    assert "1.0.0 → 1.1.0 → 2.0.0" in text and "acked" in text and "please review PR 17" in text
    screenshot(page, "traffic")

    # The page notes when each row lands, on the same clock the event's time was taken from.
    page.evaluate(
        """() => { window.landed = {};
        new MutationObserver((changes) => { for (const change of changes) for (const row of change.addedNodes)
            if (row.dataset && row.dataset.message) window.landed[row.dataset.message] ??= Date.now() / 1000; })
        .observe(document.querySelector('#traffic-table tbody'), { childList: true }); }"""
    )
    lags = []
    for n in range(10):
        message_id = f"11ve{n:04d}-0000-4000-8000-000000000000"
        event = dash.source.add_event(
            EventKind.SENT, message_id, sender="reviewer", recipient="author", protocol="chat"
        )
        page.wait_for_selector(f"#traffic-table tr[data-message='{message_id}']", timeout=1000)
        lags.append(page.evaluate(f"() => window.landed['{message_id}']") - event.at)
    lags.sort()
    print(
        f"\nstored event -> row on the page: median {lags[5] * 1000:.0f} ms, worst {lags[-1] * 1000:.0f} ms"
    )
    assert lags[-1] < 1.0

    # The filter reconnects the stream and keeps only that protocol.
    page.select_option("#filter-protocol", "review")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#traffic-table tbody tr')].every(r => r.innerText.includes('review'))"
    )
    dash.source.add_event(EventKind.SENT, "f11e0001", protocol="review")
    dash.source.add_event(EventKind.SENT, "f11e0002", protocol="chat")
    page.wait_for_selector("#traffic-table tr[data-message='f11e0001']", timeout=1000)
    assert page.locator("#traffic-table tr[data-message='f11e0002']").count() == 0


def test_the_compatibility_grid_shows_the_adapter_path(page: Any, start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    open_view(page, dash.url, "compatibility")
    review = page.locator("#compat-list article[data-protocol='review']")
    cell = review.locator("td.mode.adapted").first
    assert "1.0.0 → 1.1.0 → 2.0.0" in cell.inner_text()
    assert cell.get_attribute("title") == "author → reviewer: adapted"
    assert page.locator("#compat-list article[data-protocol='chat'] td.mode.direct").count() == 6
    screenshot(page, "compatibility")


def test_replay_of_a_dead_letter_from_the_page(page: Any, start_dashboard: StartDashboard) -> None:
    dash = start_dashboard(allow_actions=True)
    open_view(page, dash.url, "dead-letters")
    row = page.locator(f"#dead-table tr[data-message='{DEAD}']")
    assert "not acked after 5 deliveries" in row.inner_text()
    screenshot(page, "dead-letters")
    row.locator("button.replay").click()
    page.wait_for_selector("#toast:has-text('replay: 1 of 1 done')")
    assert dash.source.calls == [("replay", (DEAD,))]
    page.wait_for_selector(f"#dead-table tr[data-message='{DEAD}']", state="detached")

    # Purge asks first; accepting goes through.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#dead-table tbody input[type=checkbox]").first.check()
    page.click("#purge-selected")
    page.wait_for_selector("#toast:has-text('purge: 1 of 1 done')")
    assert dash.source.calls[-1][0] == "purge"


def test_a_read_only_dashboard_disables_the_actions(page: Any, start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    open_view(page, dash.url, "dead-letters")
    assert page.locator("#replay-selected").is_disabled()
    assert page.locator(f"#dead-table tr[data-message='{DEAD}'] button.replay").is_disabled()
    assert "--allow-actions" in page.inner_text("#actions-note")


def test_the_protocols_view_draws_adapters_between_versions(
    page: Any, start_dashboard: StartDashboard
) -> None:
    dash = start_dashboard()
    open_view(page, dash.url, "protocols")
    review = page.locator("#protocols-list article[data-protocol='review']")
    assert review.locator("svg.graph g.node").count() == 3
    assert review.locator("svg.graph path[marker-end]").count() == 4
    review.locator("button:has-text('schema')").nth(2).click()
    assert '"body"' in review.locator("pre.schema").inner_text()
    screenshot(page, "protocols")


def test_the_charts_cover_the_last_hour(page: Any, start_dashboard: StartDashboard) -> None:
    dash = start_dashboard()
    open_view(page, dash.url, "charts")
    assert page.locator("#chart-rate svg rect").count() > 60
    assert page.locator("#chart-depth svg path").count() == 2
    assert page.locator("#chart-latency svg path").count() == 3
    assert "p99" in page.inner_text("#chart-latency .legend")
    screenshot(page, "charts")
