"""The bundled catalog: prices a user can check against the sources, and RTT estimates."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.domain import Cloud, Market, Offering, Pool
from scheduler.fleet.catalog import Catalog, CatalogError, load_catalog, rtt_ms

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BUNDLED = REPO / "scheduler" / "data" / "catalog.json"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def offering(catalog: Catalog, cloud: Cloud, where: str, itype: str, market: Market) -> Offering:
    """The offering of `itype` in a zone (GCP) or region (AWS)."""
    found = [
        o
        for o in catalog.offerings
        if o.pool.cloud is cloud
        and (o.pool.zone or o.pool.region) == where
        and o.pool.instance_type == itype
        and o.pool.market is market
    ]
    assert len(found) == 1, f"{cloud}/{where}/{itype}/{market}: {len(found)} offerings"
    return found[0]


def test_aws_on_demand_list_price(catalog: Catalog) -> None:
    o = offering(catalog, Cloud.AWS, "us-east-1", "g6.xlarge", Market.ON_DEMAND)
    assert o.usd_per_hour == 0.8048
    assert o.interruptions_per_hour == 0.0
    assert not o.price_is_estimate
    assert o.pool == Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.ON_DEMAND)


def test_aws_spot_is_estimated_from_advisor_savings(catalog: Catalog) -> None:
    # Spot advisor 2025-06-28, us-east-1 Linux g6.xlarge: 49% savings, bucket ">20%".
    o = offering(catalog, Cloud.AWS, "us-east-1", "g6.xlarge", Market.SPOT)
    assert o.usd_per_hour == pytest.approx(0.8048 * (1 - 0.49), abs=1e-5)
    assert o.price_is_estimate
    assert o.interruptions_per_hour == pytest.approx(0.25 / 720, rel=1e-5)


def test_interruption_buckets_map_to_midpoint_per_month_hour(catalog: Catalog) -> None:
    assert catalog.interruption_model is not None
    rates = catalog.interruption_model["aws_bucket_interruptions_per_hour"]
    assert rates == pytest.approx([m / 720 for m in (0.025, 0.075, 0.125, 0.175, 0.25)], rel=1e-5)
    # p4d.24xlarge in us-east-1 sits in the 10-15% bucket.
    o = offering(catalog, Cloud.AWS, "us-east-1", "p4d.24xlarge", Market.SPOT)
    assert o.interruptions_per_hour == pytest.approx(0.125 / 720, rel=1e-5)


@needs_shared
def test_every_aws_spot_price_matches_the_advisor(catalog: Catalog) -> None:
    path = SHARED / "spot/aws_spot_advisor/spot_advisor_flat_2025-06-28.csv"
    with path.open(newline="") as f:
        advisor = {
            (r["region"], r["instance_type"]): (float(r["savings_pct_vs_ondemand"]), r)
            for r in csv.DictReader(f)
            if r["os"] == "Linux"
        }
    on_demand = {
        (o.pool.region, o.pool.instance_type): o.usd_per_hour
        for o in catalog.offerings
        if o.pool.cloud is Cloud.AWS and o.pool.market is Market.ON_DEMAND
    }
    spots = [
        o for o in catalog.offerings if o.pool.cloud is Cloud.AWS and o.pool.market is Market.SPOT
    ]
    assert len(spots) > 400
    for o in spots:
        key = (o.pool.region, o.pool.instance_type)
        savings, _ = advisor[key]
        assert o.usd_per_hour == pytest.approx(on_demand[key] * (1 - savings / 100), abs=1e-5)


def test_gcp_accelerator_machine_price_includes_its_gpus(catalog: Catalog) -> None:
    # Source rows in us-central1-a: g2-standard-4 machine 0.14679, L4 x1 0.56004 (spot
    # 0.06168 + 0.2343).
    od = offering(catalog, Cloud.GCP, "us-central1-a", "g2-standard-4", Market.ON_DEMAND)
    assert od.usd_per_hour == pytest.approx(0.14679 + 0.56004, abs=1e-5)
    spot = offering(catalog, Cloud.GCP, "us-central1-a", "g2-standard-4", Market.SPOT)
    assert spot.usd_per_hour == pytest.approx(0.06168 + 0.2343, abs=1e-5)
    assert spot.pool.region == "us-central1"
    itype = catalog.instance_types[(Cloud.GCP, "g2-standard-4")]
    assert (itype.gpu_kind, itype.gpu_count, itype.gpu_memory_gb) == ("L4", 1, 24.0)


@pytest.mark.parametrize(
    ("name", "gpus"),
    [("g2-standard-24", 2), ("g2-standard-48", 4), ("g2-standard-96", 8), ("a2-highgpu-4g", 4)],
)
def test_gcp_gpu_counts_follow_the_machine_shape(catalog: Catalog, name: str, gpus: int) -> None:
    assert catalog.instance_types[(Cloud.GCP, name)].gpu_count == gpus


def test_no_spot_offering_costs_more_than_on_demand(catalog: Catalog) -> None:
    on_demand = {
        (o.pool.cloud, o.pool.zone or o.pool.region, o.pool.instance_type): o.usd_per_hour
        for o in catalog.offerings
        if o.pool.market is Market.ON_DEMAND
    }
    for o in catalog.offerings:
        if o.pool.market is Market.SPOT:
            key = (o.pool.cloud, o.pool.zone or o.pool.region, o.pool.instance_type)
            assert o.usd_per_hour <= on_demand[key], o.pool.key
            assert o.interruptions_per_hour > 0


def test_gpu_kinds_and_memory_are_normalised(catalog: Catalog) -> None:
    kinds = {t.gpu_kind for t in catalog.instance_types.values()}
    assert kinds == {"T4", "A10G", "L4", "L40S", "A100", "A100-80GB", "H100", "H200", "V100"}
    per_gpu = {
        "p4d.24xlarge": ("A100", 40.0),
        "p4de.24xlarge": ("A100-80GB", 80.0),
        "p5.48xlarge": ("H100", 80.0),
        "p5en.48xlarge": ("H200", 141.0),
        "g6e.xlarge": ("L40S", 48.0),
    }
    for name, (kind, memory) in per_gpu.items():
        t = catalog.instance_types[(Cloud.AWS, name)]
        assert (t.gpu_kind, t.gpu_memory_gb) == (kind, memory)
    assert catalog.instance_types[(Cloud.GCP, "a3-megagpu-8g")].gpu_kind == "H100"


def test_pools_are_consistent(catalog: Catalog) -> None:
    pools = [o.pool for o in catalog.offerings]
    assert len(set(pools)) == len(pools)
    for o in catalog.offerings:
        assert catalog.instance_type(o.pool).cloud is o.pool.cloud
        assert f"{o.pool.cloud}:{o.pool.region}" in catalog.region_coords
        assert o.usd_per_hour > 0
        if o.pool.cloud is Cloud.AWS:
            assert o.pool.zone == ""  # AWS picks the zone; the region is the failure domain
            assert o.pool.region.count("-") == 2  # no Local Zones / Wavelength / GovCloud
        else:
            assert o.pool.zone.startswith(o.pool.region + "-")
    clouds = {o.pool.cloud for o in catalog.offerings}
    assert clouds == {Cloud.AWS, Cloud.GCP}


def test_rtt_same_region_is_small_and_transatlantic_is_plausible() -> None:
    assert rtt_ms("aws:us-east-1", "aws:us-east-1") <= 2.0
    assert rtt_ms("aws:us-east-1", "gcp:us-east4") <= 5.0  # both in Ashburn
    assert 70.0 <= rtt_ms("aws:us-east-1", "gcp:europe-west4") <= 120.0
    assert rtt_ms("aws:us-east-1", "gcp:europe-west4") == rtt_ms(
        "gcp:europe-west4", "aws:us-east-1"
    )
    assert rtt_ms("aws:us-east-1", "aws:us-west-2") < rtt_ms("aws:us-east-1", "aws:ap-northeast-1")


def test_default_catalog_is_loaded_once(catalog: Catalog) -> None:
    assert load_catalog() is catalog
    assert catalog.rtt_ms("aws:eu-west-1", "aws:eu-west-1") == 1.0


def test_malformed_catalog_is_rejected(tmp_path: Path) -> None:
    doc = json.loads(BUNDLED.read_text())
    doc["offerings"][0][3] = "no-such-type"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match="unknown instance type"):
        load_catalog(path)


def test_bundled_file_is_small_and_cites_its_sources() -> None:
    assert BUNDLED.stat().st_size < 1_500_000
    doc = json.loads(BUNDLED.read_text())
    for source in doc["sources"]:
        assert source["license"]
    assert {s["id"] for s in doc["sources"]} >= {"aws_ondemand", "aws_spot_advisor", "gcp_catalog"}


@needs_shared
def test_regenerating_from_shared_data_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_catalog.py"),
            "--shared",
            str(SHARED),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == BUNDLED.read_bytes()


def test_a_pool_from_another_process_finds_its_equal_here() -> None:
    # Pools cache their hash; string hashes differ between processes (sweep workers, Ray
    # tasks), so a pickled pool must not carry the hash of the process that made it.
    made_elsewhere = subprocess.run(
        [sys.executable, "-c",
         "import pickle, sys\n"
         "from scheduler.domain import Cloud, Market, Pool\n"
         "sys.stdout.buffer.write(pickle.dumps("
         "Pool(Cloud.AWS, 'us-east-1', '', 'g6.xlarge', Market.SPOT)))"],
        capture_output=True, check=True,
        env={"PYTHONHASHSEED": "123", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    ).stdout  # fmt: skip
    pool = pickle.loads(made_elsewhere)
    here = Pool(Cloud.AWS, "us-east-1", "", "g6.xlarge", Market.SPOT)
    assert pool == here and pool in {here: 1}
