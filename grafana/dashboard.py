#!/usr/bin/env python3
"""The stampede-layer Grafana dashboard, as code.

grafana/dashboards/stampede.json (what Grafana provisions) is generated from
this file; do not edit the JSON by hand:

    scripts/dashboard.sh            # regenerate grafana/dashboards/stampede.json
    scripts/dashboard.sh --check    # regenerate into a temp file and diff (check-ops runs this)

It is built with Grafana's own typed builders (grafana-foundation-sdk, pinned in
grafana/requirements.txt; scripts/dashboard.sh installs it under target/), so
the JSON model is valid by construction: field names, enums, datasource refs,
panel ids and grid positions come from the SDK and the helpers below. What the
SDK cannot know, the PromQL, is checked by scripts/check_dashboard.py (every
metric exported and documented, labels and values as documented) and by
`promtool check rules` (it parses), and bench/tests/live_prometheus.rs evaluates
every expr on a live Prometheus scraping a real gateway and origin-sim.

Portable: every query goes to the datasource variable `$datasource` (type
prometheus; no uid is written down), so the JSON imports into any Grafana, whatever
the uid of its Prometheus. The headline panels read only what the gateway exports
(stampede_*), at any scrape interval (written for the production 15 s): the herd's
fingerprint, stampede_rebuilds_per_key_window, is counted per key inside the gateway.
What only origin-sim exports (origin_*) sits in the collapsed row "Demo only:
origin-sim", which shows no data in front of another origin.
"""

from __future__ import annotations

import itertools
import json
import re
import sys

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    GridPos,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    ValueMap,
    ValueMappingResult,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

# Every query's datasource: the dashboard variable `datasource` (any Prometheus).
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
VARIABLES = {"datasource", "gateway"}
# A window above this many rebuilds of one key is a herd (alerts.yml: le="4").
HERD = "4"
# Outcomes that looked a cacheable entry up: the miss-ratio denominator (as in alerts.yml).
LOOKUPS = "hit|stale|miss|collapsed|lock_wait_hit"
DASHED = [
    DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
    DynamicConfigValue("custom.fillOpacity", 0),
]
_ids = itertools.count(1)


def gw(metric: str, **labels: str) -> str:
    """`metric{gateway=~"$gateway",label="value",...}`; a value starting with `~` is a regex match."""
    matchers = ['gateway=~"$gateway"'] + [
        f'{k}=~"{v[1:]}"' if v.startswith("~") else f'{k}="{v}"' for k, v in labels.items()
    ]
    return f"{metric}{{{','.join(matchers)}}}"


def herd_windows(window: str, by: str = "") -> str:
    """Windows in which one key was rebuilt more than HERD times, over `window`."""
    group = f" by ({by})" if by else ""
    return (
        f'sum{group} (increase({gw("stampede_rebuilds_per_key_window_count")}[{window}])) - '
        f'sum{group} (increase({gw("stampede_rebuilds_per_key_window_bucket", le=HERD)}[{window}]))'
    )


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    for var in re.findall(r"\$\{?(\w+)", expr):
        assert var.startswith("__") or var in VARIABLES, f"undefined variable ${var} in {expr}"
    return (
        prometheus.Dataquery()
        .datasource(DS)
        .ref_id(ref)
        .expr(expr)
        .legend_format(legend)
        .editor_mode(QueryEditorMode.CODE)
        .range()
    )


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(v, c) for v, c in steps])


def _panel(builder, title: str, description: str, unit: str, width: int, height: int):
    """What every panel sets: a fresh id, texts, the datasource, its size, the unit."""
    return (
        builder.id(next(_ids)).title(title).description(description).datasource(DS)
        .span(width).height(height).unit(unit)
    )


def stat_panel(title: str, description: str, expr: str, unit: str, *steps, decimals: int | None = None, width: int = 3) -> stat.Panel:
    p = (
        _panel(stat.Panel(), title, description, unit, width, 4)
        .color_scheme(db.FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds(*steps))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
        .wide_layout(True)
        .show_percent_change(False)
        .with_target(query(expr, title))
    )
    return p if decimals is None else p.decimals(decimals)


def graph(
    title: str,
    description: str,
    unit: str,
    *targets: tuple[str, str],
    interval: str | None = None,
    dashed: str | None = None,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A time series panel; `targets` are (expr, legend) pairs, refIds A, B, ...;
    series whose name matches the regexp `dashed` are drawn dashed, unfilled."""
    p = (
        _panel(timeseries.Panel(), title, description, unit, width, height)
        .color_scheme(db.FieldColor().mode(FieldColorModeId.PALETTE_CLASSIC))
        .thresholds(thresholds((None, "green")))
        .draw_style(common.GraphDrawStyle.LINE)
        .line_interpolation(common.LineInterpolation.LINEAR)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .axis_soft_min(0)
        .stacking(cb.StackingConfig().mode(common.StackingMode.NONE).group("A"))
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs([])
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )
    for ref, (expr, legend) in zip("ABCDEFGH", targets):
        p = p.with_target(query(expr, legend, ref))
    if interval:
        p = p.interval(interval)
    if dashed:
        p = p.override_by_regexp(dashed, DASHED)
    return p


def row(title: str) -> db.Row:
    return db.Row(title).id(next(_ids))


def collapsed_row(title: str, panels: list) -> db.Row:
    """A collapsed row holding `panels`, laid out left to right in rows of 24
    columns below the row (Grafana keeps the panels of a collapsed row in the row).
    Their y is relative to the row (from 1) until render() adds the row's y."""
    r = row(title).collapsed(True)
    x, y, line = 0, 1, 0
    for p in panels:
        built = p.build()
        w, h = built.grid_pos.w, built.grid_pos.h
        if x + w > 24:
            x, y, line = 0, y + line, 0
        p = p.grid_pos(GridPos(x=x, y=y, w=w, h=h))
        x, line = x + w, max(line, h)
        r = r.with_panel(p)
    return r


def dashboard() -> db.Dashboard:
    d = (
        db.Dashboard("stampede-layer")
        .uid("stampede-layer")
        .description(
            "Cache stampedes and their mitigations across the gateway fleet. Triage: docs/RUNBOOK.md. "
            "Headline panels read only the gateways' own metrics and work at the production scrape "
            "interval (15 s): a stampede shows as herd windows (one key rebuilt many times within one "
            "--herd-window, counted in the gateway), not as a 1 s sawtooth of the origin rate. "
            "Pick the Prometheus in the datasource variable; origin-sim's panels are in the collapsed "
            "demo row at the bottom."
        )
        .tags(["stampede-layer", "cache"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .live_now(False)
        .fiscal_year_start_month(0)
        .timezone("browser")
        .refresh("30s")
        .time("now-30m", "now")
        .timepicker(db.TimePicker().refresh_intervals(["15s", "30s", "1m", "5m", "15m"]))
        .version(1)
        .annotation(
            db.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .built_in(1)
            .type("dashboard")
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
        )
        .annotation(
            db.AnnotationQuery()
            .name("Firing alerts")
            .datasource(DS)
            .enable(True)
            .hide(False)
            .icon_color("red")
            .expr('ALERTS{alertstate="firing"}')
        )
        .with_variable(
            db.DatasourceVariable("datasource")
            .label("Prometheus")
            .description("The Prometheus that scrapes the gateways (any uid: nothing in this dashboard names one).")
            .type("prometheus")
        )
        .with_variable(
            db.QueryVariable("gateway")
            .label("gateway")
            .datasource(DS)
            .query("label_values(stampede_requests_total, gateway)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    )
    for panel in overview() + headline() + cache() + lock_and_store() + origin_and_overload() + demo():
        d = d.with_row(panel) if isinstance(panel, db.Row) else d.with_panel(panel)
    return d


def overview() -> list:
    miss = f'sum(rate({gw("stampede_requests_total", outcome="miss")}[1m])) / sum(rate({gw("stampede_requests_total", outcome="~" + LOOKUPS)}[1m]))'
    origin = gw("stampede_origin_requests_total")
    return [
        stat_panel(
            "Fleet miss rate (1m)",
            "miss / (hit + stale + miss + collapsed + lock_wait_hit) over the last minute, all selected gateways. "
            "Alert StampedeMissRateSpike compares the per-gateway value with its 30m baseline.",
            miss, "percentunit", (None, "green"), (0.1, "yellow"), (0.3, "red"),
        ),
        stat_panel(
            "Herd windows (5m)",
            f"Windows in the last 5 minutes in which one gateway rebuilt one key more than {HERD} times within one "
            "--herd-window (stampede_rebuilds_per_key_window, counted in the gateway): a herd. 0 with single-flight on. "
            "Alerts StampedeHerd (any) and StampedeSawtoothOriginRate (3 or more in 5m: recurring, a stampede).",
            herd_windows("5m"), "short", (None, "green"), (1, "yellow"), (3, "red"), decimals=0,
        ),
        stat_panel(
            "Origin requests/s",
            "Requests the selected gateways sent to the origin per second (stampede_origin_requests_total): what the "
            "origin behind the caches sees from them.",
            f"sum(rate({origin}[$__rate_interval]))", "reqps", (None, "green"),
        ),
        stat_panel(
            "Origin errors (2m)",
            "Share of the gateways' origin requests answered 5xx or not at all (status `error`) over 2 minutes. "
            "Above 5%: alert StampedeOriginErrorRatio.",
            f'(sum(rate({gw("stampede_origin_requests_total", status="~5..|error")}[2m])) or vector(0)) / sum(rate({origin}[2m]))',
            "percentunit", (None, "green"), (0.01, "yellow"), (0.05, "red"),
        ),
        stat_panel(
            "Stale age p99 (5m)",
            "p99 of how long past its freshness a stale answer was (stampede_stale_served_age_seconds). "
            "Stale-while-revalidate keeps it within --stale-ttl (5 s); above 30 s the answers are stale-if-error: "
            "grace hiding an origin outage (alert StampedeStaleServedTooOld). No data: no stale answer in 5m.",
            f'histogram_quantile(0.99, sum by (le) (rate({gw("stampede_stale_served_age_seconds_bucket")}[5m])))',
            "s", (None, "green"), (10, "yellow"), (30, "red"),
        ),
        stat_panel(
            "Shed /s",
            "503s the overload gates answered per second (1m). Anything above 0: see the runbook, StampedeOverloadShedding.",
            f'sum(rate({gw("stampede_shed_total")}[1m])) or vector(0)', "reqps", (None, "green"), (0.001, "red"),
        ),
        stat_panel(
            "Rebuilds in flight",
            "Origin rebuilds in flight, summed over the selected gateways (stampede_inflight_rebuilds). "
            "With single-flight + lock, at most one per hot key fleet-wide.",
            f'sum({gw("stampede_inflight_rebuilds")})', "short", (None, "green"), (10, "yellow"),
        ),
        stat_panel(
            "Gateways reporting",
            "Selected gateways whose metrics Prometheus has now (a gateway that stops answering scrapes drops out at "
            "the next scrape). Fewer than you run: alert ScrapeTargetDown, and every panel misses it.",
            f'count(sum by (gateway) ({gw("stampede_requests_total")}))', "short", (None, "green"), decimals=0,
        ),
    ]


def headline() -> list:
    """The stampede at a glance, from the gateways' own metrics only."""
    rebuilds = gw("stampede_rebuilds_per_key_window_sum")
    windows = gw("stampede_rebuilds_per_key_window_count")
    return [
        graph(
            "Origin rebuilds/s: one per key per window, and the herd's duplicates",
            "What the gateways ask the origin, split by the herd's fingerprint (stampede_rebuilds_per_key_window, "
            "counted per key inside each gateway, so it reads the same at a 15 s or a 1 s scrape): *needed* is one "
            "rebuild per key per --herd-window (the histogram's count), *herd duplicates* are the rebuilds beyond the "
            "first of the same key in the same window (its sum less its count). Without mitigations every client that "
            "misses a hot key at its expiry rebuilds it: the duplicates line is the stampede, a burst at every TTL "
            "boundary (the origin-rate sawtooth, at the resolution of the window). With single-flight it stays near 0 "
            "(an early XFetch refresh under a TTL shorter than two windows may share one: 2, never a herd); with "
            "single-flight + lock the fleet's needed rebuilds drop to one per key per TTL. Dashed: all origin requests "
            "(stampede_origin_requests_total, pass-through requests included).",
            "reqps",
            (f"sum by (gateway) (rate({windows}[$__rate_interval]))", "{{gateway}} needed"),
            (f"sum by (gateway) (rate({rebuilds}[$__rate_interval])) - sum by (gateway) (rate({windows}[$__rate_interval]))",
             "{{gateway}} herd duplicates"),
            (f'sum by (gateway) (rate({gw("stampede_origin_requests_total")}[$__rate_interval]))', "{{gateway}} all origin requests"),
            dashed=".*all origin requests",
            width=12,
        ).override_by_regexp(
            ".*herd duplicates",
            [DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}), DynamicConfigValue("custom.lineWidth", 2)],
        ),
        rebuilds_heatmap(),
        graph(
            "Cache miss rate",
            "miss / (hit + stale + miss + collapsed + lock_wait_hit) per gateway (negative hits, shed and bypass are not "
            "lookups of a cacheable entry). Dashed: the 30 minute baseline StampedeMissRateSpike compares against (alert: "
            "> 3x baseline and > 10%). Spikes with herd windows are a stampede; a flat high plateau without herds is a "
            "cold cache or a key-space change (see the runbook).",
            "percentunit",
            (miss_ratio("$__rate_interval"), "{{gateway}}"),
            (miss_ratio("30m"), "{{gateway}} 30m baseline"),
            dashed=".*baseline",
            width=8,
        ),
        graph(
            "Lock wait p99 vs rebuild p99",
            "p99 time a lock loser waited for the winner's fill (solid) against p99 time one origin rebuild takes (dashed), "
            "per gateway. A waiter's wait should stay at or below one rebuild: above it (alert "
            "StampedeLockWaitAboveRebuildP99, > 1.2x for 5m) waiters outlive the rebuild because the wake-up is late "
            "(backoff too coarse) or the holder died and they sit out --lock-ttl. No lock waits (one gateway, or "
            "single-flight in front of the lock): no solid line.",
            "s",
            (
                f'histogram_quantile(0.99, sum by (gateway, le) (rate({gw("stampede_lock_wait_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} lock wait p99",
            ),
            (
                f'histogram_quantile(0.99, sum by (gateway, le) (rate({gw("stampede_rebuild_duration_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} rebuild p99",
            ),
            dashed=".*rebuild p99",
            width=8,
        ),
        graph(
            "Stale answers: age past freshness",
            "How long past its freshness a stale answer was (stampede_stale_served_age_seconds, whole seconds rounded up): "
            "p50 and p99 per gateway, and the stale answers per second (right axis, dashed). Stale-while-revalidate keeps "
            "the age within --stale-ttl (a refresh starts with the first stale answer); an age climbing past 30 s is "
            "stale-if-error serving an origin that keeps failing: grace hiding an outage (alert StampedeStaleServedTooOld).",
            "s",
            (
                f'histogram_quantile(0.5, sum by (gateway, le) (rate({gw("stampede_stale_served_age_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} p50",
            ),
            (
                f'histogram_quantile(0.99, sum by (gateway, le) (rate({gw("stampede_stale_served_age_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} p99",
            ),
            (f'sum by (gateway) (rate({gw("stampede_stale_served_age_seconds_count")}[$__rate_interval]))', "{{gateway}} stale answers/s"),
            width=8,
        ).override_by_regexp(
            ".*stale answers/s",
            [DynamicConfigValue("unit", "reqps"), DynamicConfigValue("custom.axisPlacement", "right"), DASHED[0]],
        ),
    ]


def rebuilds_heatmap() -> heatmap.Panel:
    return (
        _panel(
            heatmap.Panel(),
            "Rebuilds of one key per herd window (heatmap)",
            "How many times one key was rebuilt within one --herd-window, all selected gateways: windows per histogram "
            "bucket (stampede_rebuilds_per_key_window_bucket) and interval, darker = more. A coordinated fleet fills "
            "only the bottom bucket (1: one rebuild per key per window); a herd is a band higher up, at about the "
            "number of clients that missed the key at once. The threshold of the herd alerts is the bucket 4.",
            "short",
            12,
            8,
        )
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().unit("short").axis_placement(common.AxisPlacement.LEFT))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Reds")
            .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-red")
            .reverse(False)
        )
        .filter_values(heatmap.FilterValueRange().le(1e-9))
        .cell_gap(1)
        .show_value(common.VisibilityMode.NEVER)
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .show_legend()
        .exemplars_color("rgba(255,0,255,0.7)")
        .with_target(
            query(f'sum by (le) (increase({gw("stampede_rebuilds_per_key_window_bucket")}[$__rate_interval]))', "{{le}}")
            .format(PromQueryFormat.HEATMAP)
        )
    )


def miss_ratio(window: str) -> str:
    return (
        f'sum by (gateway) (rate({gw("stampede_requests_total", outcome="miss")}[{window}])) / '
        f'sum by (gateway) (rate({gw("stampede_requests_total", outcome="~" + LOOKUPS)}[{window}]))'
    )


def cache() -> list:
    return [
        row("Cache"),
        graph(
            "Stale / collapsed share of answers",
            "Share of all answers that did not wait for a rebuild of their own: stale (stale-while-revalidate served the old "
            "copy), collapsed (shared another request's rebuild in this process), lock_wait_hit (waited for another "
            "instance's fill). These are the herd the mitigations absorbed; at a TTL boundary without mitigations they would "
            "all be misses.",
            "percentunit",
            (
                f'sum by (gateway, outcome) (rate({gw("stampede_requests_total", outcome="~stale|collapsed|lock_wait_hit")}[$__rate_interval])) '
                f'/ on (gateway) group_left sum by (gateway) (rate({gw("stampede_requests_total")}[$__rate_interval]))',
                "{{gateway}} {{outcome}}",
            ),
        ),
        graph(
            "Answers by outcome",
            "All client requests per second by how the cache answered them, stacked (hit, miss, stale, collapsed, "
            "lock_wait_hit, negative_hit, shed, bypass).",
            "reqps",
            (f'sum by (outcome) (rate({gw("stampede_requests_total")}[$__rate_interval]))', "{{outcome}}"),
        )
        .fill_opacity(40)
        .stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL).group("A")),
        graph(
            "Background refreshes",
            "Refreshes started in the background, per trigger: swr (a stale entry was served and refreshed) and xfetch (a "
            "fresh entry was refreshed early). With xfetch tuned well, most hot-key refreshes are xfetch and the hot key is "
            "never stale.",
            "ops",
            (f'sum by (gateway, trigger) (rate({gw("stampede_background_refreshes_total")}[$__rate_interval]))', "{{gateway}} {{trigger}}"),
        ),
        graph(
            "Hot-key request rates (top 10 by rank)",
            "Request rate of the N hottest keys per gateway (stampede_hot_key_requests_per_second, rank 1 = hottest). No key "
            "names in metrics: GET /admin/hot-keys on the gateway's admin port (bearer token) lists them. One key far above "
            "the others is the stampede candidate; put it in the warm list before a cutover.",
            "reqps",
            (f'max by (gateway, rank) ({gw("stampede_hot_key_requests_per_second")})', "{{gateway}} #{{rank}}"),
        ).legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .calcs(["max", "mean"])
        ),
    ]


def lock_and_store() -> list:
    return [
        row("Lock and store"),
        lock_wait_heatmap(),
        graph(
            "Lock acquisitions and fencing rejections",
            "Distributed-lock attempts per second by result (acquired: this instance rebuilds; contended: another instance "
            "holds it, this one waits; error: Redis failed). Fencing rejections (dashed): fills refused because a newer lock "
            "holder already wrote, i.e. a rebuild outlived --lock-ttl (alert StampedeFencingRejections).",
            "ops",
            (f'sum by (gateway, result) (rate({gw("stampede_lock_acquisitions_total")}[$__rate_interval]))', "{{gateway}} {{result}}"),
            (f'sum by (gateway) (rate({gw("stampede_fencing_rejections_total")}[$__rate_interval]))', "{{gateway}} fencing rejections"),
            dashed=".*fencing rejections",
        ),
        graph(
            "Store errors",
            "Failed store operations per second by gateway, backend and op (a decode failure is served as a miss). Redis "
            "errors: failed reads become misses and failed locks lose fleet-wide coalescing (runbook: StampedeStoreErrors).",
            "ops",
            (f'sum by (gateway, backend, op) (rate({gw("stampede_store_errors_total")}[$__rate_interval]))', "{{gateway}} {{backend}} {{op}}"),
        ),
        graph(
            "Near cache hit ratio (gateways with --redis)",
            "Share of store reads the near cache in front of Redis answered from memory, per gateway: "
            "hits / (hits + misses). A hot key costs about one Redis read per gateway per --near-cache-ttl, so under "
            "a hot-key load this sits near 1; it drops while invalidations or resets clear it, and reads 0 with "
            "--near-cache-ttl 0s. No data: the gateway runs without --redis.",
            "percentunit",
            (
                f'sum by (gateway) (rate({gw("stampede_near_cache_hits_total")}[$__rate_interval])) / '
                f'(sum by (gateway) (rate({gw("stampede_near_cache_hits_total")}[$__rate_interval])) + '
                f'sum by (gateway) (rate({gw("stampede_near_cache_misses_total")}[$__rate_interval])))',
                "{{gateway}}",
            ),
        ),
        _panel(
            statetimeline.Panel(),
            "Redis fallback (store circuit breaker)",
            "Per gateway: is the store circuit open (stampede_store_circuit_open = 1)? While open, entries and locks live "
            "in the gateway's in-process fallback store: no shared cache and no fleet-wide lock, so every gateway rebuilds "
            "a hot key on its own (origin load x the number of gateways). Alert StampedeStoreFallbackActive; the cause is "
            "on Store errors.",
            "short",
            24,
            5,
        )
        .color_scheme(db.FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds((None, "green"), (1, "red")))
        .mappings([ValueMap({
            "0": ValueMappingResult(text="shared store", color="green", index=0),
            "1": ValueMappingResult(text="FALLBACK: circuit open", color="red", index=1),
        })])
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(70)
        .legend(cb.VizLegendOptions().show_legend(False).display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM))
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.SINGLE).sort(common.SortOrder.NONE))
        .with_target(query(f'max by (gateway, backend) ({gw("stampede_store_circuit_open")})', "{{gateway}} {{backend}}")),
        graph(
            "Near cache invalidations",
            "Near-cache invalidations per second by gateway and source: local (a purge or unsafe method on this gateway), "
            "remote (another gateway's, over Redis pub/sub; every gateway should show the same remote rate), reset (the "
            "whole near cache cleared because the invalidation subscriber disconnected or reconnected: dashed, should be 0 "
            "outside Redis incidents).",
            "ops",
            (
                f'sum by (gateway, source) (rate({gw("stampede_near_cache_invalidations_total", source="~local|remote")}[$__rate_interval]))',
                "{{gateway}} {{source}}",
            ),
            (
                f'sum by (gateway) (rate({gw("stampede_near_cache_invalidations_total", source="reset")}[$__rate_interval]))',
                "{{gateway}} reset",
            ),
            dashed=".*reset",
            width=24,
        ),
    ]


def lock_wait_heatmap() -> heatmap.Panel:
    return (
        _panel(
            heatmap.Panel(),
            "Lock wait distribution (heatmap)",
            "How long lock losers waited for the winner's fill, all selected gateways: lock waits per histogram bucket "
            "(stampede_lock_wait_seconds_bucket) and interval, darker = more. A band at the rebuild time is healthy (waiters "
            "woken by the fill); a band at --lock-ttl means holders died and waiters sat out the lock TTL; a smear between "
            "them means a coarse backoff. The p99 line is on *Lock wait p99 vs rebuild p99* at the top.",
            "s",
            12,
            8,
        )
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().unit("s").axis_placement(common.AxisPlacement.LEFT))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
            .reverse(False)
        )
        .filter_values(heatmap.FilterValueRange().le(1e-9))
        .cell_gap(1)
        .show_value(common.VisibilityMode.NEVER)
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .show_legend()
        .exemplars_color("rgba(255,0,255,0.7)")
        .with_target(
            query(f'sum by (le) (increase({gw("stampede_lock_wait_seconds_bucket")}[$__rate_interval]))', "{{le}}")
            .format(PromQueryFormat.HEATMAP)
        )
    )


def origin_and_overload() -> list:
    return [
        row("Origin (as the gateways see it) and overload"),
        graph(
            "Origin answers by status code",
            "Origin answers per second by HTTP status, as each gateway received them (stampede_origin_requests_total; "
            "`error` = no answer: connect failure or timeout). 5xx and errors are red. 404s are a negative-key storm "
            "(turn on `negative`); 5xx/errors feed stale-if-error and the alert StampedeOriginErrorRatio.",
            "reqps",
            (f'sum by (gateway, status) (rate({gw("stampede_origin_requests_total")}[$__rate_interval]))', "{{gateway}} -> origin {{status}}"),
        ).override_by_regexp(".* (5\\d\\d|error)", [DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"})]),
        graph(
            "Shed rate (overload gate 503s)",
            "Requests the overload gate answered 503 + Retry-After, per gateway and reason (inflight: origin-bound work above "
            "budget; queue: queue full). Shedding means the origin is saturated: check the origin's own saturation signal "
            "(the demo's: origin-sim pool wait, in the demo row) and the runbook (StampedeOverloadShedding).",
            "reqps",
            (f'sum by (gateway, reason) (rate({gw("stampede_shed_total")}[$__rate_interval]))', "{{gateway}} {{reason}}"),
        ),
        graph(
            "Gateway p99 latency",
            "p99 of stampede_request_duration_seconds (request to response headers, as seen by the gateway): per gateway "
            "(solid) and per outcome over the selected gateways (dashed). Hits should stay sub-millisecond; miss p99 is at "
            "least one origin round trip. Hot-key vs other-key latency is in the stampede-bench report.",
            "s",
            (
                f'histogram_quantile(0.99, sum by (gateway, le) (rate({gw("stampede_request_duration_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} p99",
            ),
            (
                f'histogram_quantile(0.99, sum by (outcome, le) (rate({gw("stampede_request_duration_seconds_bucket")}[$__rate_interval])))',
                "p99 outcome={{outcome}}",
            ),
            dashed="p99 outcome=.*",
            width=24,
        ),
    ]


def demo() -> list:
    """origin-sim's own metrics: in a collapsed row, clearly marked, since no other origin exports them."""
    return [
        collapsed_row(
            "Demo only: origin-sim (origin_* metrics; no data in front of another origin)",
            [
                stat_panel(
                    "origin-sim queries/s",
                    "DEMO ONLY. Queries origin-sim served per second: the ground truth of what the database behind the "
                    "caches saw (all gateways together).",
                    "sum(rate(origin_queries_total[$__rate_interval]))", "reqps", (None, "green"), width=6,
                ),
                stat_panel(
                    "origin-sim pool wait p99",
                    "DEMO ONLY. p99 time a query waited for a database connection in origin-sim (1m). Above 100 ms: the "
                    "pool is full (alert OriginSaturated, in the demo-only rule group).",
                    "histogram_quantile(0.99, sum by (le) (rate(origin_pool_wait_seconds_bucket[1m])))", "s",
                    (None, "green"), (0.05, "yellow"), (0.1, "red"), width=6,
                ),
                stat_panel(
                    "Demo targets up",
                    "DEMO ONLY. Scrape targets up in the demo's prometheus.yml jobs (gateway, origin-sim): 3 gateways + "
                    "origin-sim = 4 in compose (alert ScrapeTargetDown).",
                    'sum(up{job=~"gateway|origin-sim"})', "short", (None, "red"), (4, "green"), decimals=0, width=6,
                ),
                stat_panel(
                    "origin-sim in-flight queries",
                    "DEMO ONLY. Queries holding or waiting for a pool connection in origin-sim.",
                    "sum(origin_inflight_queries)", "short", (None, "green"), (16, "yellow"), width=6,
                ),
                graph(
                    "origin-sim: queries served/s, by status",
                    "DEMO ONLY. Queries origin-sim served per second by status (origin_queries_total): compare with the "
                    "gateways' origin requests in the headline. Without mitigations a burst at every TTL boundary.",
                    "reqps",
                    ("sum by (status) (rate(origin_queries_total[$__rate_interval]))", "origin-sim {{status}}"),
                ).override_by_regexp("origin-sim 5\\d\\d", [DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"})]),
                graph(
                    "origin-sim: in-flight queries and query p99",
                    "DEMO ONLY. Queries holding or waiting for a pool connection (left) and p99 query duration including "
                    "pool wait (right, dashed). In-flight above --db-connections (16) means a queue: every miss pays the "
                    "queue on top of --latency-ms.",
                    "short",
                    ("sum(origin_inflight_queries)", "in-flight queries"),
                    ("histogram_quantile(0.99, sum by (le) (rate(origin_query_duration_seconds_bucket[$__rate_interval])))", "query p99"),
                ).override_by_name(
                    "query p99",
                    [
                        DynamicConfigValue("unit", "s"),
                        DynamicConfigValue("custom.axisPlacement", "right"),
                        DASHED[0],
                    ],
                ),
            ],
        )
    ]


def render() -> str:
    model = json.loads(JSONEncoder().encode(dashboard().build()))
    # Prometheus annotation fields the SDK's AnnotationQuery model does not carry.
    for ann in model["annotations"]["list"]:
        if ann["name"] == "Firing alerts":
            ann.update(step="15s", titleFormat="{{alertname}}", textFormat="{{gateway}}{{instance}} severity={{severity}}",
                       tagKeys="severity", useValueForTime=False)
    # A collapsed row's panels sit below it, at absolute positions (Grafana
    # moves them by the row's offset when it is expanded).
    for r in model["panels"]:
        for p in r.get("panels") or []:
            p["gridPos"]["y"] += r["gridPos"]["y"]
    cells = set()
    for p in model["panels"] + [p for r in model["panels"] for p in r.get("panels") or []]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"panel {p['title']!r} overflows the 24-column grid: {g}"
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another: {g}"
        cells |= mine
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    out = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
