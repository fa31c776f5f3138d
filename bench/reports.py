"""How fast the supervisors' overview report is with a million step events.

    .venv/bin/python bench/reports.py                              # SQLite, 1,000,000 steps
    .venv/bin/python bench/reports.py --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/reports.py --steps 200000 --json

Fills an empty database with synthetic calls written through the real engine and the real
store (`ivr demo-data`'s generator, which also writes the per-call summaries the way the
recorder does) until it holds at least `--steps` step events, then times the overview report
(every figure and chart of the dashboard's first page, `ivr report --json`) for the last 30
days and for the whole period, `--runs` times each, and prints the median and worst. With
PostgreSQL it works in a schema of its own and drops it at the end. See
docs/supervisor-guide.md for the figures measured on the project's machines.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.calllog import reports  # noqa: E402
from ivr.calllog.store import Store, database_url, steps  # noqa: E402
from ivr.cli.demo import DemoGenerator  # noqa: E402
from ivr.flows.intents import Matchers  # noqa: E402
from ivr.flows.registry import FlowRegistry  # noqa: E402
from ivr.web.dashboard import charts  # noqa: E402

STEPS_PER_CALL = 9.0  # about what the support flow's calls log, to size the period


def _store(url: str | None, workdir: Path) -> tuple[Store, str, Callable[[], None]]:
    if not url or url.startswith("sqlite"):
        path = workdir / "bench-reports.db"
        store = Store(url or f"sqlite:///{path}")
        return store, "sqlite", lambda: None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(database_url(url))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    store = Store(database_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
                  .render_as_string(hide_password=False))

    def drop() -> None:
        store.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return store, "postgresql", drop


def _time(fn, runs: int) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
            "min_s": round(min(times), 3), "runs": runs}


def _overview_with_charts(store: Store, f: reports.Filters) -> dict:
    report = reports.overview(store, f)
    charts.wait_histogram(report["wait_histogram"], f.threshold_s)
    charts.service_level_line(report["service_level_over_time"], threshold_s=f.threshold_s)
    charts.funnel(report["funnel"])
    charts.heatmap(report["heatmap"])
    charts.callback_outcomes(report["callbacks"])
    return report


@click.command()
@click.option("--database", "url", default=None, help="A database URL [default: a new SQLite file].")
@click.option("--steps", "target", default=1_000_000, show_default=True, help="Step events to write.")
@click.option("--days", default=90, show_default=True, help="Period the calls are spread over.")
@click.option("--runs", default=5, show_default=True, help="Timed runs of each report.")
@click.option("--flows", "flows_dir", default=str(ROOT / "flows"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(url: str | None, target: int, days: int, runs: int, flows_dir: str, as_json: bool) -> None:
    """Fill a database with `--steps` step events, then time the overview report."""
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-reports-"))
    store, kind, cleanup = _store(url, workdir)
    try:
        store.migrate()
        registry = FlowRegistry(flows_dir)
        flow = registry.for_number(None)
        per_day = int(target / STEPS_PER_CALL / days * 1.03) + 1
        end = datetime.now(UTC)
        started = time.perf_counter()
        written = 0
        seed = 1
        while written < target:
            gen = DemoGenerator(store, flow, registry.flows, registry.directory(flow), Matchers().match,
                                days=days, calls_per_day=per_day, seed=seed, end=end, batch=500,
                                progress=(lambda d, t: print(f"\r  {d}/{t} calls", end="", file=sys.stderr)))
            stats = gen.run()
            written += stats.steps
            per_day = max(10, int((target - written) / STEPS_PER_CALL / days * 1.05) + 1)
            seed += 1
        fill_s = time.perf_counter() - started
        print(file=sys.stderr)
        with store.engine.connect() as conn:
            n_steps = conn.execute(sa.select(sa.func.count()).select_from(steps)).scalar()
            n_calls = conn.execute(sa.text("SELECT count(*) FROM call_metrics")).scalar()
        if kind == "sqlite":
            with store.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        else:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        tz = "America/New_York"
        last30 = reports.filters("30d", tz=tz, now=end)
        whole = reports.filters(None, None, tz=tz, default_days=days + 1, now=end)
        _overview_with_charts(store, last30)  # warm the page cache once, as a running server has
        result = {
            "database": kind,
            "steps": n_steps, "calls": n_calls,
            "fill_s": round(fill_s, 1), "fill_steps_per_s": round(n_steps / fill_s),
            "overview_last_30_days": _time(lambda: _overview_with_charts(store, last30), runs),
            "overview_whole_period": _time(lambda: _overview_with_charts(store, whole), runs),
            "call_list_page": _time(lambda: reports.call_list(store, last30, limit=50), runs),
            "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                        "sqlite": __import__("sqlite3").sqlite_version},
            "at": end.isoformat(timespec="seconds"),
        }
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        click.echo(f"{kind}: {n_steps:,} steps, {n_calls:,} calls (written in {fill_s:.0f} s, "
                   f"{result['fill_steps_per_s']:,} steps/s through Store.record)")
        for key in ("overview_last_30_days", "overview_whole_period", "call_list_page"):
            t = result[key]
            click.echo(f"  {key:<24} median {t['median_s']:.3f} s, worst {t['max_s']:.3f} s ({runs} runs)")
    finally:
        cleanup()
        for p in workdir.glob("*"):
            p.unlink()
        workdir.rmdir()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
