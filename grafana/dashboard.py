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
`promtool check rules` (it parses).
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

# The provisioned datasource (grafana/provisioning/datasources/prometheus.yml), by uid.
DS = DataSourceRef(type_val="prometheus", uid="prometheus")
VARIABLES = {"gateway", "ttl"}
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


def stat_panel(title: str, description: str, expr: str, unit: str, *steps, decimals: int | None = None) -> stat.Panel:
    p = (
        _panel(stat.Panel(), title, description, unit, 4, 4)
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


def dashboard() -> db.Dashboard:
    d = (
        db.Dashboard("stampede-layer")
        .uid("stampede-layer")
        .description(
            "Cache stampedes and their mitigations across the gateway fleet. Triage: docs/RUNBOOK.md. "
            "Gateways and origin are scraped every 1 s so the TTL sawtooth is visible; the dashboard "
            "refreshes every 5 s (each refresh redraws the range at 1 s step; a 1 s refresh would only "
            "add query load, and Grafana's default min_refresh_interval is 5 s)."
        )
        .tags(["stampede-layer", "cache"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .live_now(False)
        .fiscal_year_start_month(0)
        .timezone("browser")
        .refresh("5s")
        .time("now-10m", "now")
        .timepicker(db.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m"]))
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
        .with_variable(
            db.CustomVariable("ttl")
            .label("TTL (gateway --ttl)")
            .description("The gateways' --ttl (compose: TTL env, default 5s). Sets the window of the rebuilds-per-TTL panel.")
            .values("2s,5s,10s,30s,1m")
            .current(VariableOption(selected=True, text="5s", value="5s"))
            .options([VariableOption(selected=v == "5s", text=v, value=v) for v in ("2s", "5s", "10s", "30s", "1m")])
        )
    )
    for panel in overview() + cache() + lock_and_store() + origin_and_overload():
        d = d.with_row(panel) if isinstance(panel, db.Row) else d.with_panel(panel)
    return d


def overview() -> list:
    miss = f'sum(rate({gw("stampede_requests_total", outcome="miss")}[1m])) / sum(rate({gw("stampede_requests_total", outcome="~" + LOOKUPS)}[1m]))'
    return [
        stat_panel(
            "Fleet miss rate (1m)",
            "miss / (hit + stale + miss + collapsed + lock_wait_hit) over the last minute, all selected gateways. "
            "Alert StampedeMissRateSpike compares the per-gateway value with its 30m baseline.",
            miss, "percentunit", (None, "green"), (0.1, "yellow"), (0.3, "red"),
        ),
        stat_panel(
            "Origin queries/s",
            "Queries origin-sim served per second (10 s window): what the database behind the caches actually sees.",
            "sum(rate(origin_queries_total[10s]))", "reqps", (None, "green"),
        ),
        stat_panel(
            "Shed /s",
            "503s the overload gates answered per second (1m). Anything above 0: see the runbook, StampedeOverloadShedding.",
            f'sum(rate({gw("stampede_shed_total")}[1m])) or vector(0)', "reqps", (None, "green"), (0.001, "red"),
        ),
        stat_panel(
            "Origin pool wait p99",
            "p99 time a query waited for a database connection in origin-sim (1m). Above 100 ms: the pool is full (alert OriginSaturated).",
            "histogram_quantile(0.99, sum by (le) (rate(origin_pool_wait_seconds_bucket[1m])))", "s",
            (None, "green"), (0.05, "yellow"), (0.1, "red"),
        ),
        stat_panel(
            "Rebuilds in flight",
            "Origin rebuilds in flight, summed over the selected gateways (stampede_inflight_rebuilds). "
            "With single-flight + lock, at most one per hot key fleet-wide.",
            f'sum({gw("stampede_inflight_rebuilds")})', "short", (None, "green"), (10, "yellow"),
        ),
        stat_panel(
            "Targets up",
            "Scrape targets up: 3 gateways + origin-sim = 4. Below 4, some panels are missing an instance (alert ScrapeTargetDown).",
            'sum(up{job=~"gateway|origin-sim"})', "short", (None, "red"), (4, "green"), decimals=0,
        ),
        graph(
            "Origin queries/s (1 s resolution): the stampede sawtooth",
            "Per-second rate of origin work: what origin-sim served (origin_queries_total, all gateways together) and what each "
            "gateway sent (stampede_origin_requests_total). A stampede is a sawtooth at the TTL period: a burst of queries at "
            "every expiry of the hot key, quiet in between (alert StampedeSawtoothOriginRate). With single-flight + lock the "
            "bursts shrink to one query per hot key per TTL; with swr/xfetch they also stop blocking clients.\n\n"
            "Resolution vs refresh: the query step is 1 s (panel min interval 1s, irate over the last two 1 s scrapes; "
            "Prometheus scrapes gateways and origin every 1 s), so a 2-5 s sawtooth is visible. A 5 s scrape or a rate over "
            ">= 10 s would fold each TTL period into one flat value. The dashboard refreshes every 5 s: each refresh redraws "
            "the whole range at 1 s step, so nothing is lost; 1 s refresh would only multiply query load (and Grafana refuses "
            "refreshes below its min_refresh_interval, 5 s by default). Zoomed out past ~15 min the step grows and irate "
            "samples the sawtooth: zoom in to read it.",
            "reqps",
            ("sum(irate(origin_queries_total[$__rate_interval]))", "origin-sim: queries served"),
            (f'sum by (gateway) (irate({gw("stampede_origin_requests_total")}[$__rate_interval]))', "{{gateway}} -> origin"),
            interval="1s",
            width=24,
            height=9,
        ).override_by_name(
            "origin-sim: queries served",
            [
                DynamicConfigValue("custom.lineWidth", 2),
                DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}),
            ],
        ),
    ]


def cache() -> list:
    def miss_ratio(window: str) -> str:
        return (
            f'sum by (gateway) (rate({gw("stampede_requests_total", outcome="miss")}[{window}])) / '
            f'sum by (gateway) (rate({gw("stampede_requests_total", outcome="~" + LOOKUPS)}[{window}]))'
        )

    return [
        row("Cache"),
        graph(
            "Cache miss rate",
            "miss / (hit + stale + miss + collapsed + lock_wait_hit) per gateway (negative hits, shed and bypass are not "
            "lookups of a cacheable entry). Dashed: the 30 minute baseline StampedeMissRateSpike compares against (alert: "
            "> 3x baseline and > 10%). A sawtooth here at the TTL period is a stampede; a flat high plateau is a cold cache "
            "or a key-space change (see the runbook).",
            "percentunit",
            (miss_ratio("$__rate_interval"), "{{gateway}}"),
            (miss_ratio("30m"), "{{gateway}} 30m baseline"),
            interval="5s",
            dashed=".*baseline",
        ),
        graph(
            "Hot-key origin rebuilds per TTL boundary (approx.)",
            "Origin requests in each TTL-sized window (increase over [$ttl]; set the TTL variable to the gateways' --ttl). "
            "A TTL window holds one expiry of the hot key on average, so with 95% of the load on one key this reads as: "
            "rebuilds of the hot key per boundary + misses of the cold keys in one TTL. It is an approximation: the cold-key "
            "part is a floor that does not change between rungs of the same load, TTL jitter puts 0 or 2 boundaries in some "
            "windows, and increase() extrapolates. Read the change between mitigation settings: without mitigations the hot "
            "key costs about one rebuild per waiting client (~concurrency), with single-flight one per gateway, with "
            "single-flight + lock one for the whole fleet (compare the gateway lines with the origin-sim line). Exact "
            "per-boundary counts come from origin-sim GET /stats/queries (what stampede-bench ladder reports).",
            "short",
            (f'sum by (gateway) (increase({gw("stampede_origin_requests_total")}[$ttl]))', "{{gateway}} -> origin per TTL"),
            ("sum(increase(origin_queries_total[$ttl]))", "origin-sim per TTL (fleet)"),
            interval="1s",
            dashed="origin-sim.*",
        ),
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
            interval="5s",
        ),
        graph(
            "Answers by outcome",
            "All client requests per second by how the cache answered them, stacked (hit, miss, stale, collapsed, "
            "lock_wait_hit, negative_hit, shed, bypass).",
            "reqps",
            (f'sum by (outcome) (rate({gw("stampede_requests_total")}[$__rate_interval]))', "{{outcome}}"),
            interval="5s",
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
            interval="5s",
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
        graph(
            "Lock wait p99 vs rebuild p99",
            "p99 time a lock loser waited for the winner's fill (solid) against p99 time one origin rebuild takes (dashed), "
            "per gateway. A waiter's wait should stay at or below one rebuild: above it (alert "
            "StampedeLockWaitAboveRebuildP99, > 1.2x for 5m) waiters outlive the rebuild because the wake-up is late "
            "(backoff too coarse) or the holder died and they sit out --lock-ttl.",
            "s",
            (
                f'histogram_quantile(0.99, sum by (gateway, le) (rate({gw("stampede_lock_wait_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} lock wait p99",
            ),
            (
                f'histogram_quantile(0.99, sum by (gateway, le) (rate({gw("stampede_rebuild_duration_seconds_bucket")}[$__rate_interval])))',
                "{{gateway}} rebuild p99",
            ),
            interval="15s",
            dashed=".*rebuild p99",
        ),
        lock_wait_heatmap(),
        graph(
            "Lock acquisitions and fencing rejections",
            "Distributed-lock attempts per second by result (acquired: this instance rebuilds; contended: another instance "
            "holds it, this one waits; error: Redis failed). Fencing rejections (dashed): fills refused because a newer lock "
            "holder already wrote, i.e. a rebuild outlived --lock-ttl (alert StampedeFencingRejections).",
            "ops",
            (f'sum by (gateway, result) (rate({gw("stampede_lock_acquisitions_total")}[$__rate_interval]))', "{{gateway}} {{result}}"),
            (f'sum by (gateway) (rate({gw("stampede_fencing_rejections_total")}[$__rate_interval]))', "{{gateway}} fencing rejections"),
            interval="5s",
            dashed=".*fencing rejections",
        ),
        graph(
            "Store errors",
            "Failed store operations per second by gateway, backend and op (a decode failure is served as a miss). Redis "
            "errors: failed reads become misses and failed locks lose fleet-wide coalescing (runbook: StampedeStoreErrors).",
            "ops",
            (f'sum by (gateway, backend, op) (rate({gw("stampede_store_errors_total")}[$__rate_interval]))', "{{gateway}} {{backend}} {{op}}"),
            interval="5s",
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
        .interval("5s")
        .with_target(query(f'max by (gateway, backend) ({gw("stampede_store_circuit_open")})', "{{gateway}} {{backend}}")),
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
            interval="5s",
        ),
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
            interval="5s",
            dashed=".*reset",
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
            "them means a coarse backoff. The p99 line is on the panel to the left.",
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
        .interval("15s")
        .with_target(
            query(f'sum by (le) (increase({gw("stampede_lock_wait_seconds_bucket")}[$__rate_interval]))', "{{le}}")
            .format(PromQueryFormat.HEATMAP)
        )
    )


def origin_and_overload() -> list:
    return [
        row("Origin and overload"),
        graph(
            "Origin: in-flight queries and query p99",
            "origin-sim side: queries holding or waiting for a pool connection (left) and p99 query duration including pool "
            "wait (right, dashed). In-flight above --db-connections (16) means a queue: every miss pays the queue on top of "
            "--latency-ms.",
            "short",
            ("sum(origin_inflight_queries)", "in-flight queries"),
            ("histogram_quantile(0.99, sum by (le) (rate(origin_query_duration_seconds_bucket[$__rate_interval])))", "query p99"),
            interval="5s",
        ).override_by_name(
            "query p99",
            [
                DynamicConfigValue("unit", "s"),
                DynamicConfigValue("custom.axisPlacement", "right"),
                DASHED[0],
            ],
        ),
        graph(
            "Origin answers by status code",
            "Origin answers per second by HTTP status: as origin-sim served them (origin_queries_total, solid) and as each "
            "gateway received them (stampede_origin_requests_total, dashed; `error` = no answer: connect failure or "
            "timeout). 5xx and errors are red. 404s are a negative-key storm (turn on `negative`); 5xx/errors feed "
            "stale-if-error and the alert StampedeOriginErrorRatio.",
            "reqps",
            ("sum by (status) (rate(origin_queries_total[$__rate_interval]))", "origin-sim {{status}}"),
            (f'sum by (gateway, status) (rate({gw("stampede_origin_requests_total")}[$__rate_interval]))', "{{gateway}} -> origin {{status}}"),
            interval="5s",
            dashed=".* -> origin .*",
        ).override_by_regexp(".* (5\\d\\d|error)", [DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"})]),
        graph(
            "Shed rate (overload gate 503s)",
            "Requests the overload gate answered 503 + Retry-After, per gateway and reason (inflight: origin-bound work above "
            "budget; queue: queue full). Shedding means the origin is saturated: check the origin pool wait and the runbook "
            "(StampedeOverloadShedding).",
            "reqps",
            (f'sum by (gateway, reason) (rate({gw("stampede_shed_total")}[$__rate_interval]))', "{{gateway}} {{reason}}"),
            interval="5s",
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
            interval="15s",
            dashed="p99 outcome=.*",
        ),
    ]


def render() -> str:
    model = json.loads(JSONEncoder().encode(dashboard().build()))
    # Prometheus annotation fields the SDK's AnnotationQuery model does not carry.
    for ann in model["annotations"]["list"]:
        if ann["name"] == "Firing alerts":
            ann.update(step="15s", titleFormat="{{alertname}}", textFormat="{{gateway}}{{instance}} severity={{severity}}",
                       tagKeys="severity", useValueForTime=False)
    cells = set()
    for p in model["panels"]:
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
