"""Prices that move (issue 18, item 3): the simulator replays spot price history per pool,
lists the price in force and bills by it; capsched moves when a lasting drop pays for the
move, and a short blip moves nothing. The scripted runs read the bundled synthetic history
(`simulations/data/prices/`); the shared AWS history is read where this machine has it."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.sim import SimCloud
from adapters.spot_prices import SpotPriceError, SpotPriceSeries, load_price_history
from scheduler.config import Config
from scheduler.domain import Cloud, Market, Placement, Pool
from scheduler.fleet.catalog import Catalog, load_catalog
from scheduler.ports.provider import LaunchRequest
from simulations.engine import RunResult, World, replay
from simulations.scenario import (
    MarketSection,
    ScenarioError,
    apply_market,
    load_price_mapping,
    parse_scenario,
    spot_prices_dir,
)

sys.path.insert(0, str(Path(__file__).parent))
from sim_helpers import MODEL, Fixed, registered, small_config, world

DATA = Path(__file__).resolve().parents[1] / "simulations" / "data" / "prices"
HISTORY = DATA / "synthetic_spot_price_history.tsv"
BOOT_S = 120.0
WINDOW_S = 900.0
DROP_S = 3600.0  # the bundled history's use1-az2 and use1-az4 fall at 01:00
MINUTES = 3 * 60
POOL_A = Pool(Cloud.AWS, "us-east-1", "us-east-1a", "g6e.xlarge", Market.SPOT)
POOL_B = Pool(Cloud.AWS, "us-east-1", "us-east-1b", "g6e.xlarge", Market.SPOT)


def zoned_catalog() -> Catalog:
    """g6e.xlarge in us-east-1 only, sold in two zones (two spot pools, one on-demand each)."""
    cat = load_catalog()
    sold = tuple(
        o
        for o in cat.offerings
        if o.pool.instance_type == "g6e.xlarge" and o.pool.region == "us-east-1"
    )
    market = MarketSection(zones={"aws/us-east-1": ("us-east-1a", "us-east-1b")})
    return replace(cat, offerings=apply_market(sold, market))


def mapping(zone_b: str, cat: Catalog) -> dict[Pool, SpotPriceSeries]:
    """Prices per pool from the bundled history: zone a follows use1-az1, zone b `zone_b`."""
    text = f"""
[[spot_prices]]
file = "{HISTORY}"
zone_id = "use1-az1"
pools = "aws/us-east-1a/*/spot"

[[spot_prices]]
file = "{HISTORY}"
zone_id = "{zone_b}"
pools = "aws/us-east-1b/*/spot"
"""
    path = Path("prices.toml")
    prices, notes = load_price_mapping(parse_scenario(text, path), path, cat.offerings)
    assert notes == []
    return prices


def config(**planning: float) -> Config:
    base = small_config(tick_interval_s=60)
    return Config.model_validate(
        base.model_dump(mode="json", exclude_none=True)
        | {
            "planning": {
                "robustness_fraction": 0.0,  # all spot in the cheapest zone is allowed
                "default_boot_time_s": BOOT_S,
                "return_stabilization_s": WINDOW_S,
                **planning,
            },
        }
    )


def price_world(cfg: Config, zone_b: str) -> World:
    cat = zoned_catalog()
    return world(cfg, [6.0] * MINUTES, boot_time_s=BOOT_S, catalog=cat, prices=mapping(zone_b, cat))


def run(cfg: Config, zone_b: str, db: Path) -> RunResult:
    return asyncio.run(replay(price_world(cfg, zone_b), "capsched", db))


def launch_times(db: Path, pool: Pool) -> list[float]:
    """When the run launched each node into `pool`, from its state database."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT launched_at_s FROM nodes WHERE zone = ? AND instance_type = ?"
            " AND market = ? ORDER BY launched_at_s",
            (pool.zone, pool.instance_type, pool.market.value),
        ).fetchall()
    return [float(t) for (t,) in rows]


def launches_into(db: Path, pool: Pool) -> int:
    """Nodes the run launched into `pool`."""
    return len(launch_times(db, pool))


def test_bundled_history_reads_as_step_functions() -> None:
    history = load_price_history(HISTORY)
    b = history.series_for("use1-az2", "g6e.xlarge", "Linux/UNIX", 0.0)
    assert b is not None
    assert b.price_at(-60.0) == 1.10  # before the first record: the first price
    assert b.price_at(DROP_S - 1) == 1.10 and b.price_at(DROP_S) == 0.55
    assert b.price_at(10 * DROP_S) == 0.55  # after the last record: the last price
    assert b.cost_usd(0.0, 2 * DROP_S) == pytest.approx(1.10 + 0.55)
    # The product column picks the series: the Windows row is another series.
    win = history.series_for("use1-az1", "g6e.xlarge", "Windows", 0.0)
    assert win is not None and win.price_at(0.0) == 1.40
    assert history.series_for("use1-az9", "g6e.xlarge", "Linux/UNIX", 0.0) is None
    # An offset moves replay time 0 into the file: the price in force there holds first.
    late = history.series_for("use1-az4", "g6e.xlarge", "Linux/UNIX", DROP_S + 60)
    assert late is not None and late.price_at(0.0) == 0.55 and late.price_at(240.0) == 1.10


@given(
    prices=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=8),
    gaps=st.lists(st.floats(1.0, 5000.0), min_size=8, max_size=8),
    cuts=st.lists(st.floats(-3000.0, 30000.0), min_size=3, max_size=3),
)
def test_billing_adds_up_and_stays_within_the_prices(
    prices: list[float], gaps: list[float], cuts: list[float]
) -> None:
    times = np.cumsum(gaps[: len(prices)])
    series = SpotPriceSeries("hyp", times, np.array(prices))
    a, b, c = sorted(cuts)
    whole = series.cost_usd(a, c)
    assert whole == pytest.approx(series.cost_usd(a, b) + series.cost_usd(b, c), rel=1e-9)
    hours = (c - a) / 3600.0
    assert min(prices) * hours - 1e-9 <= whole <= max(prices) * hours + 1e-9
    assert series.shifted(500.0).cost_usd(a + 500.0, c + 500.0) == pytest.approx(whole)


async def test_sim_cloud_lists_and_bills_the_price_in_force() -> None:
    cat = zoned_catalog()
    prices = mapping("use1-az2", cat)
    cloud = SimCloud(cat.offerings, cat.instance_types, boot_time_s=0.0, spot_prices=prices)
    listed = {o.pool: o.usd_per_hour for o in await cloud.offerings()}
    assert listed[POOL_A] == 0.80 and listed[POOL_B] == 1.10
    await cloud.launch(LaunchRequest("n1", MODEL, POOL_B))
    cloud.advance_to(DROP_S + 60)
    listed = {o.pool: o.usd_per_hour for o in await cloud.offerings()}
    assert listed[POOL_B] == 0.55
    cloud.advance_to(2 * DROP_S)
    # Billed at the price of every second, not at the price when it launched.
    assert cloud.usage().cost_by_market[Market.SPOT] == pytest.approx(1.10 + 0.55)
    await cloud.terminate("n1")
    assert cloud.usage().cost_by_market[Market.SPOT] == pytest.approx(1.10 + 0.55)


def test_replay_bills_the_price_history(tmp_path: Path) -> None:
    # One node in pool b for the 3 h: 1 h at 1.10, 2 h at 0.55.
    cfg = small_config(tick_interval_s=60)
    with registered("one-in-b", Fixed((Placement(MODEL, POOL_B, 1),))):
        r = asyncio.run(replay(price_world(cfg, "use1-az2"), "one-in-b", tmp_path / "f.db"))
    assert r.cost_usd == pytest.approx(1.10 + 2 * 0.55, rel=0.01)


def test_capsched_moves_within_one_window_and_one_boot_of_a_lasting_halving(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.db"
    r = run(config(), "use1-az2", db)
    minutes = np.arange(MINUTES) * 60.0
    # Before the drop zone a (0.80) is cheapest; zone b (1.10) halves to 0.55 at 01:00.
    assert launches_into(db, POOL_B) > 0, "capsched never moved to the cheaper pool"
    # The new nodes are launched once the lower price has held for the window (at the
    # first tick after it), so they serve one window + one boot (+ a tick) after the drop.
    for at in launch_times(db, POOL_B):
        assert DROP_S + WINDOW_S <= at <= DROP_S + WINDOW_S + 60
    # Zone a's nodes are handed back at the next tick: from then on only zone b is billed.
    cost_per_min = np.diff(r.cost_by_market["spot"], prepend=0.0)
    moved = minutes >= DROP_S + WINDOW_S + BOOT_S + 2 * 60
    assert np.allclose(cost_per_min[moved], 2 * 0.55 / 60, rtol=1e-6)
    # Not before the window: the price must have held that long.
    early = (minutes >= DROP_S) & (minutes < DROP_S + WINDOW_S)
    assert np.allclose(cost_per_min[early], 2 * 0.80 / 60, rtol=1e-6)
    # Make before break: the load is served throughout; the move launches each node once.
    assert (r.served_rps[0, 5:] >= r.demand_rps[0, 5:] - 1e-9).all()
    assert launches_into(db, POOL_B) == 2 and r.launches == 4


def test_a_short_price_blip_does_not_move_capsched(tmp_path: Path) -> None:
    # Zone b falls to 0.55 for 5 minutes (less than the window) and is back at 1.10.
    db = tmp_path / "b.db"
    r = run(config(), "use1-az4", db)
    assert launches_into(db, POOL_B) == 0
    assert r.launches == 2 and r.terminations == 0


def test_a_move_that_does_not_pay_is_not_made(tmp_path: Path) -> None:
    # With a payback horizon of a few seconds the 0.25 USD/h saving per node cannot pay
    # for a 120 s boot at full price: the fleet stays in zone a.
    db = tmp_path / "n.db"
    run(config(return_payback_h=0.01, full_replan_interval_s=0), "use1-az2", db)
    assert launches_into(db, POOL_B) == 0


def test_relative_mode_follows_the_series_from_the_catalog_price() -> None:
    cat = zoned_catalog()
    text = f"""
[[spot_prices]]
file = "{HISTORY}"
zone_id = "use1-az2"
pools = "aws/us-east-1*/*/spot"
mode = "relative"
"""
    path = Path("rel.toml")
    prices, _ = load_price_mapping(parse_scenario(text, path), path, cat.offerings)
    base = {o.pool: o.usd_per_hour for o in cat.offerings}
    for pool in (POOL_A, POOL_B):
        assert prices[pool].price_at(0.0) == pytest.approx(base[pool])
        assert prices[pool].price_at(DROP_S) == pytest.approx(base[pool] / 2)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            'zone_id = "use1-az9"\npools = "aws/us-east-1a/*/spot"',
            "spot_prices[0]: {file} has no 'Linux/UNIX' series in zone 'use1-az9' for g6e.xlarge",
        ),
        (
            'zone_id = "use1-az1"\npools = "gcp/*/spot"',
            "spot_prices[0].pools: 'gcp/*/spot' matches no spot pool of the catalog",
        ),
        (
            'zone_id = "use1-az1"\npools = "aws/us-east-1a/*/spot"\nmode = "cheap"',
            "spot_prices[0].mode",
        ),
    ],
)
def test_bad_price_entries_name_the_key(entry: str, expected: str) -> None:
    path = Path("bad.toml")
    cat = zoned_catalog()
    with pytest.raises(ScenarioError) as info:
        scenario = parse_scenario(f'[[spot_prices]]\nfile = "{HISTORY}"\n{entry}\n', path)
        load_price_mapping(scenario, path, cat.offerings)
    assert f"{path}: " + expected.format(file=HISTORY) in "\n".join(info.value.problems)


def test_a_bad_history_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text(
        "use1-az1\tg6e.xlarge\tLinux/UNIX\t0.8\t2026-01-01T00:00:00+00:00\n"
        "use1-az1\tg6e.xlarge\tLinux/UNIX\tfree\t2026-01-01T00:10:00+00:00\n",
        encoding="utf-8",
    )
    with pytest.raises(SpotPriceError, match=rf"{bad}:2: price must be a positive number"):
        load_price_history(bad)


def test_missing_shared_prices_are_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import simulations.scenario as scenario_mod

    monkeypatch.delenv("CAPSCHED_SPOT_PRICES", raising=False)
    monkeypatch.setattr(scenario_mod, "_SHARED_PRICES", tmp_path / "absent")
    text = '[[spot_prices]]\nfile = "$PRICES/x.tsv"\nzone_id = "use1-az1"\npools = "*"\n'
    path = Path("s.toml")
    prices, notes = load_price_mapping(parse_scenario(text, path), path, zoned_catalog().offerings)
    assert prices == {} and len(notes) == 1 and "CAPSCHED_SPOT_PRICES" in notes[0]


SHARED = spot_prices_dir()
SHARED_FILE = (
    SHARED / "aws_spot_price_history_ericpauley" / "2022-05.tsv" if SHARED is not None else None
)


@pytest.mark.skipif(
    SHARED_FILE is None or not SHARED_FILE.exists(), reason="shared AWS price history absent"
)
def test_shared_aws_history_maps_onto_catalog_pools() -> None:
    assert SHARED_FILE is not None
    history = load_price_history(SHARED_FILE)
    g5 = history.series_for("use1-az1", "g5.12xlarge", "Linux/UNIX", 0.0)
    assert g5 is not None and len(g5.times_s) == 2
    assert 1.96 < g5.price_at(0.0) < 1.97 and g5.price_at(math.inf) != g5.price_at(0.0)
    text = (
        '[[spot_prices]]\nfile = "$PRICES/aws_spot_price_history_ericpauley/2022-05.tsv"\n'
        'zone_id = "use1-az1"\npools = "aws/us-east-1/*/spot"\n'
    )
    path = Path("shared.toml")
    offerings = load_catalog().offerings
    prices, _ = load_price_mapping(parse_scenario(text, path), path, offerings)
    assert prices, "no catalog pool of us-east-1 found a series"
    assert all(p.region == "us-east-1" and p.market is Market.SPOT for p in prices)


def test_a_zone_glob_prices_a_pool_at_the_mean_of_its_zones() -> None:
    # As the AWS adapter prices a pool without a zone: the mean over the zones' prices.
    cat = zoned_catalog()
    text = f"""
[[spot_prices]]
file = "{HISTORY}"
zone_id = "use1-az[12]"
pools = "aws/us-east-1a/*/spot"
"""
    path = Path("mean.toml")
    prices, _ = load_price_mapping(parse_scenario(text, path), path, cat.offerings)
    assert set(prices) == {POOL_A}
    assert prices[POOL_A].price_at(0.0) == pytest.approx((0.80 + 1.10) / 2)
    assert prices[POOL_A].price_at(DROP_S) == pytest.approx((0.80 + 0.55) / 2)


@pytest.mark.timeout(60)
async def test_a_fractional_trace_offset_does_not_stop_virtual_time() -> None:
    # Found replaying the 16-node microbenchmark from day 0.9486111: the next trace tick,
    # strictly later in trace time, rounded back to "now" once the cloud's start was
    # added, and the replay never left that instant.
    from adapters.sim import SpotTrace

    cat = zoned_catalog()
    offset = 438600 + 0.9486111 * 86400
    trace = SpotTrace("full", 300.0, np.array([3] * 1000), offset, True)
    start = 604620.0
    cloud = SimCloud(
        cat.offerings, cat.instance_types, start_s=start, boot_time_s=0.0,
        spot_traces={POOL_A: trace},
    )  # fmt: skip
    await cloud.launch(LaunchRequest("n1", MODEL, POOL_A))
    # Past the instant it stopped at (trace time 444120.00096); each trace tick of a pool
    # with a live node is an event the cloud steps through.
    end = start + 444300.0
    assert cloud.advance_until_notice(end) == end
    assert [i.node_id for i in cloud.running()] == ["n1"]
