"""Dashboard charts: inline SVG bars drawn on the server from GET /v1/admin/stats's numbers, for real
withdrawals (one COMPLETED, one FAILED for want of funds): counts per chain and status, volumes
per chain, asset and status, and failure reasons; each bar's length proportional to its value."""

from __future__ import annotations

import re
from html import unescape

from api.console.charts import bar_length
from tests.conftest import create_wallet, fund, random_address, wait_for_status, withdraw

OPS = {"Authorization": "Bearer dev-ops-key"}
BAR = re.compile(r'<g class="bar" data-label="([^"]*)" data-value="([^"]*)">.*?<rect [^>]*width="([^"]*)"', re.S)


def bars(page: str, chart_id: str) -> list[tuple[str, float, float]]:
    svg = re.search(rf'<svg id="{chart_id}".*?</svg>', page, re.S)
    assert svg is not None, f"no {chart_id} chart"
    return [(unescape(label), float(value), float(width)) for label, value, width in BAR.findall(svg.group(0))]


def expected(stats: dict) -> dict[str, list[tuple[str, float]]]:
    counts: dict[str, float] = {}
    for s in stats["by_status"]:
        counts[f"{s['chain']} {s['status']}"] = counts.get(f"{s['chain']} {s['status']}", 0) + s["count"]
    return {
        "chart-counts": list(counts.items()),
        "chart-volumes": [(f"{s['chain']} {s['asset']} {s['status']}", float(s["volume"])) for s in stats["by_status"]],
        "chart-failures": [(r["error_code"], float(r["count"])) for r in stats["failure_reasons"]],
    }


async def test_dashboard_charts_show_the_stats_of_real_withdrawals(api):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    completed = (await withdraw(api, wallet, random_address(), "0.01")).json()
    failed = (await withdraw(api, wallet, random_address(), "50")).json()
    assert (await wait_for_status(api, completed["id"], {"COMPLETED", "FAILED"}))["status"] == "COMPLETED"
    assert (await wait_for_status(api, failed["id"], {"COMPLETED", "FAILED"}))["error_code"] == "INSUFFICIENT_FUNDS"

    form = await api.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    assert (await api.post("/console/sign-in", data={"api_key": "dev-ops-key", "csrf": token.group(1)})).status_code == 303

    # Other tests may add withdrawals meanwhile: the page must match the stats read just before it.
    for _ in range(5):
        stats = (await api.get("/v1/admin/stats", headers=OPS)).json()
        page = await api.get("/console/dashboard")
        assert page.status_code == 200, page.text
        want = expected(stats)
        if all([(label, value) for label, value, _ in bars(page.text, chart)] == want[chart] for chart in want):
            break
    else:
        raise AssertionError(f"charts differ from the stats: {want}")

    counts = dict((label, value) for label, value, _ in bars(page.text, "chart-counts"))
    assert counts["anvil COMPLETED"] >= 1 and counts["anvil FAILED"] >= 1
    assert dict((label, value) for label, value, _ in bars(page.text, "chart-failures"))["INSUFFICIENT_FUNDS"] >= 1
    assert float(dict((b[0], b[1]) for b in bars(page.text, "chart-volumes"))["anvil ETH FAILED"]) >= 50
    for chart in want:
        drawn = bars(page.text, chart)
        largest = max(value for _, value, _ in drawn)
        assert [width for _, _, width in drawn] == [bar_length(value, largest) for _, value, _ in drawn]
        assert max(width for _, _, width in drawn) == bar_length(largest, largest) > 0
    assert "<script" not in page.text.split('<svg id="chart-counts"')[1].split("</svg>")[0]


def test_a_bars_value_is_written_in_full() -> None:
    """A volume in base units of a chain no longer configured has 15+ digits: `:g` wrote 6 of them,
    and the page no longer matched the stats once the suite had made such a withdrawal."""
    from api.console.charts import Bar, bar_chart

    value = 1.49957999687457e17
    drawn = bars(bar_chart("chart-test", "test", [Bar("x", value, "x"), Bar("y", 33, "33")]), "chart-test")
    assert [(label, number) for label, number, _ in drawn] == [("x", value), ("y", 33.0)]
