"""Regenerate scheduler/data/catalog.json from the public price and spot data.

Usage: .venv/bin/python scripts/build_catalog.py [--shared ../shared/data] [--out PATH]

Reads (paths under --shared, each described by its PROVENANCE.md):
  prices/aws_gpu_ondemand_prices_vantage/aws_gpu_ondemand_by_region_2026-01-21.csv
  spot/aws_spot_advisor/spot_advisor_flat_2025-06-28.csv
  prices/gcp_catalog_anycloud/gcp_vms_2026-05-20.csv
  spot/skypilot_spot_traces/preemption/1-node/gcp-04-30-2023/*.json

and writes one compact JSON file that the package ships, so capsched works
without ../shared. The output is sorted and formatted deterministically: running
the script twice on the same inputs gives byte-identical files (a test checks it).
Design notes: docs/catalog.md.
"""

from __future__ import annotations

import argparse
import ast
import csv
import itertools
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "scheduler" / "data" / "catalog.json"

AWS_PRICES = "prices/aws_gpu_ondemand_prices_vantage/aws_gpu_ondemand_by_region_2026-01-21.csv"
AWS_SPOT_ADVISOR = "spot/aws_spot_advisor/spot_advisor_flat_2025-06-28.csv"
GCP_VMS = "prices/gcp_catalog_anycloud/gcp_vms_2026-05-20.csv"
GCP_PREEMPTION_DIR = "spot/skypilot_spot_traces/preemption/1-node/gcp-04-30-2023"

# Where every number in the catalog comes from (copied from the PROVENANCE.md files).
SOURCES: list[dict[str, str]] = [
    {
        "id": "aws_ondemand",
        "what": "AWS EC2 GPU instance specs, on-demand and reserved USD/h per region, 2026-01-21",
        "repository": "https://github.com/tsaol/aws-gpu",
        "path": "data/all_gpu_instances.js",
        "commit": "77fcd9fe1d0652fd07b830e5ed030d61da87923e",
        "license": "MIT (README badge); upstream is AWS public pricing via ec2instances.info",
    },
    {
        "id": "aws_spot_advisor",
        "what": "AWS Spot Instance Advisor snapshot 2025-06-28: savings vs on-demand and "
        "interruption-frequency bucket per region and instance type (Linux)",
        "repository": "https://github.com/alexei-led/spotinfo",
        "path": "internal/spot/data/spot-advisor-data.json",
        "commit": "5eedf20a99614443af215f4aaf09bd10805cac72",
        "license": "data published by AWS without an explicit license; vendoring repo Apache-2.0",
    },
    {
        "id": "gcp_catalog",
        "what": "GCP VM and accelerator on-demand and spot USD/h per zone (SkyPilot catalog "
        "schema), 2026-05-20",
        "repository": "https://github.com/anycloud-sh/catalog",
        "path": "gcp/vms.csv",
        "commit": "62ff0a987e0c257a89235415d2877812fb1aaf29",
        "license": "none stated; the prices are GCP's public list prices",
    },
    {
        "id": "skypilot_spot_traces",
        "what": "GCP spot preemption traces (c3-highcpu-88, 4 zones, 2023-04-30); only the "
        "pooled preemption rate derived from them is shipped",
        "repository": "https://github.com/skypilot-org/spot-traces",
        "path": "preemption/1-node/gcp-04-30-2023/",
        "commit": "221da1ab9bdfe7966da296265d7694d52dc0c5a6",
        "license": "none stated; cite 'Can't Be Late' (Wu et al., NSDI'24)",
    },
    {
        "id": "region_coordinates",
        "what": "approximate latitude/longitude of the metro each cloud names for its regions",
        "repository": "",
        "path": "AWS 'Regions and Availability Zones' and Google Cloud 'Cloud locations' pages",
        "commit": "",
        "license": "public reference facts",
    },
]

# --- AWS ------------------------------------------------------------------------------

# Normalised accelerator name per vendor GPU string. A100 is split by family below
# (p4d: 40 GB, p4de: 80 GB). Previous-generation K80/M60/K520, fractional L40 (g6f,
# gr6f), and kinds we have no serving profile style for (RTX PRO 6000, B200, B300) are
# left out.
AWS_GPU_KIND = {
    "NVIDIA T4": "T4",
    "NVIDIA A10G": "A10G",
    "NVIDIA L4": "L4",
    "NVIDIA L40S": "L40S",
    "NVIDIA A100": "A100",
    "NVIDIA H100": "H100",
    "NVIDIA H200": "H200",
    "NVIDIA V100": "V100",
}
AWS_A100_80GB_FAMILIES = {"p4de"}

# Memory per GPU (GB) each kind comes in. The source's gpu_memory column is per GPU
# for g4dn/g5/g6/g6e/p3 ("24 GB GDDR6") but for the whole instance for p4d/p4de/p5/p5en
# ("320 GB HBM2" on 8 GPUs), and "Unknown" for gr6; we pick whichever reading matches
# one of these sizes and fail loudly otherwise.
GPU_MEMORY_SIZES_GB: dict[str, tuple[float, ...]] = {
    "T4": (16.0,),
    "A10G": (24.0,),
    "L4": (24.0,),
    "L40S": (48.0,),
    "A100": (40.0,),
    "A100-80GB": (80.0,),
    "H100": (80.0,),
    "H200": (141.0,),
    "V100": (16.0, 32.0),
}

# Standard-partition regions only: "us-east-1", not Local Zones ("us-east-1-bos-1") or
# Wavelength zones ("us-east-1-wl1-bos1"), and not GovCloud ("us-gov-west-1", a separate
# partition that needs its own account and has no spot advisor data).
AWS_STANDARD_REGION = re.compile(r"^[a-z]{2}-[a-z]+-\d+$")

# Spot interruption model for AWS. The advisor's bucket is the share of spot capacity
# of that type AWS reclaimed in the region over the trailing month. We read it as the
# probability that an instance-month ends in an interruption and take the bucket
# midpoint (the open ">20%" bucket at 25%), spread evenly over a 30-day month of 720 h:
# interruptions per instance-hour = midpoint / 720. A rough, steady-state rate; it
# ignores that reclaims cluster in time and in a zone.
AWS_BUCKET_MIDPOINTS = (0.025, 0.075, 0.125, 0.175, 0.25)
AWS_BUCKET_LABELS = ("<5%", "5-10%", "10-15%", "15-20%", ">20%")
HOURS_PER_MONTH = 720.0
AWS_BUCKET_RATES = tuple(m / HOURS_PER_MONTH for m in AWS_BUCKET_MIDPOINTS)

# --- GCP ------------------------------------------------------------------------------

# Accelerator-optimised machine types have the GPUs built in, but the catalog prices the
# machine row without them (SkyPilot convention); the GPUs are a separate row in the same
# zone with AcceleratorName/AcceleratorCount. Which accelerator row goes with which
# machine (SkyPilot's gcp_catalog._ACC_INSTANCE_TYPE_DICTS, GCP's machine-type docs):
GCP_MACHINE_ACCELERATOR = {
    "a2-highgpu": "A100",  # A100 40GB
    "a2-megagpu": "A100",  # 16 x A100 40GB
    "a2-ultragpu": "A100-80GB",
    "a3-highgpu": "H100",
    "a3-edgegpu": "H100",  # same A3 machine with different networking, priced as A3 High
    "a3-megagpu": "H100-MEGA",  # A3 Mega rows are priced under their own GPU SKU
    "a3-ultragpu": "H200",
    "g2-standard": "L4",
}
# GPU count of a2/a3 types is in the name ("a2-highgpu-4g" = 4). G2 names carry the vCPU
# count instead; the GPUs per shape are fixed by GCP (G2 machine-type table): 4/8/12/16/32
# vCPUs have 1 L4, 24 have 2, 48 have 4, 96 have 8. The join below also checks that an
# accelerator row with exactly that count exists in the zone.
G2_L4_COUNT = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}
GCP_MACHINE = re.compile(
    r"^(?P<family>a2-highgpu|a2-megagpu|a2-ultragpu|a3-highgpu|a3-edgegpu|a3-megagpu|"
    r"a3-ultragpu|g2-standard)-(?P<size>\d+)(?P<g>g)?(?P<suffix>-nolssd)?$"
)
# Accelerator names to our normalised kinds (H100-MEGA is an H100 80GB).
GCP_GPU_KIND = {
    "L4": "L4",
    "A100": "A100",
    "A100-80GB": "A100-80GB",
    "H100": "H100",
    "H100-MEGA": "H100",
    "H200": "H200",
}


@dataclass(frozen=True)
class InstanceSpec:
    """One instance type row of the output."""

    cloud: str  # "aws" or "gcp"
    name: str  # cloud's instance type name
    gpu_kind: str  # normalised accelerator name
    gpu_count: int  # accelerators per instance
    gpu_memory_gb: float  # memory per accelerator
    vcpus: int  # virtual CPUs
    memory_gb: float  # host memory


@dataclass(frozen=True)
class OfferingRow:
    """One offering row of the output, in `OFFERING_COLUMNS` order."""

    cloud: str  # "aws" or "gcp"
    region: str  # cloud region
    zone: str  # zone, "" for AWS (the cloud picks it)
    instance_type: str  # instance type name
    market: str  # "spot" or "on-demand"
    usd_per_hour: float  # price, rounded to 5 decimals
    interruptions_per_hour: float  # expected reclaims per instance-hour
    price_is_estimate: bool  # True when derived rather than listed

    def as_list(self) -> list[Any]:
        return [
            self.cloud,
            self.region,
            self.zone,
            self.instance_type,
            self.market,
            self.usd_per_hour,
            self.interruptions_per_hour,
            self.price_is_estimate,
        ]


OFFERING_COLUMNS = [
    "cloud",
    "region",
    "zone",
    "instance_type",
    "market",
    "usd_per_hour",
    "interruptions_per_hour",
    "price_is_estimate",
]


# A reserved price row: cloud, region, instance type, USD per node-hour.
RESERVED_COLUMNS = ["cloud", "region", "instance_type", "usd_per_hour"]


def _price(x: float) -> float:
    return round(x, 5)


def _rate(x: float) -> float:
    # Rates are tiny (1e-5/h); round to 6 significant digits rather than to decimals.
    return float(f"{x:.6g}")


def _number(text: str) -> float:
    """The leading number of a spec string like '1152 GiB' or '24 GB GDDR6'."""
    match = re.match(r"^\s*([0-9.]+)", text)
    if not match:
        raise ValueError(f"no number in {text!r}")
    return float(match.group(1))


def _aws_gpu_memory(kind: str, raw: str, count: int, name: str) -> float:
    sizes = GPU_MEMORY_SIZES_GB[kind]
    if raw.strip().lower() == "unknown":
        if len(sizes) != 1:
            raise ValueError(f"{name}: GPU memory unknown and {kind} comes in several sizes")
        return sizes[0]
    value = _number(raw)
    for candidate in (value, value / count):
        if candidate in sizes:
            return candidate
    raise ValueError(f"{name}: GPU memory {raw!r} matches no {kind} size {sizes}")


def build_aws(
    shared: Path, stats: Counter[str]
) -> tuple[dict[str, InstanceSpec], list[OfferingRow], list[list[Any]]]:
    """AWS instance types, on-demand + estimated spot offerings, and reserved prices
    (rows of `RESERVED_COLUMNS`, for the types and regions with an on-demand offering)."""
    types: dict[str, InstanceSpec] = {}
    on_demand: dict[tuple[str, str], float] = {}
    reserved: dict[tuple[str, str], float] = {}
    with (shared / AWS_PRICES).open(newline="") as f:
        for row in csv.DictReader(f):
            name, gpu, region = row["instance_type"], row["gpu"], row["region"]
            if gpu not in AWS_GPU_KIND:
                stats[f"aws rows skipped: accelerator {gpu}"] += 1
                continue
            if not AWS_STANDARD_REGION.match(region):
                stats["aws rows skipped: local/wavelength/govcloud region"] += 1
                continue
            if not row["ondemand_usd_per_hr"]:
                stats["aws rows skipped: no on-demand price"] += 1
                continue
            price = float(row["ondemand_usd_per_hr"])
            if price <= 0:
                stats["aws rows skipped: zero price"] += 1
                continue
            count_f = float(row["gpu_count"])
            if count_f != int(count_f) or count_f < 1:
                stats["aws rows skipped: fractional GPU"] += 1
                continue
            count = int(count_f)
            family = name.split(".")[0]
            kind = AWS_GPU_KIND[gpu]
            if kind == "A100" and family in AWS_A100_80GB_FAMILIES:
                kind = "A100-80GB"
            spec = InstanceSpec(
                cloud="aws",
                name=name,
                gpu_kind=kind,
                gpu_count=count,
                gpu_memory_gb=_aws_gpu_memory(kind, row["gpu_memory"], count, name),
                vcpus=int(row["vcpu"]),
                memory_gb=_number(row["memory"]),
            )
            if types.setdefault(name, spec) != spec:
                raise ValueError(f"{name}: specs differ between regions")
            if (region, name) in on_demand:
                raise ValueError(f"{name} in {region}: duplicate row")
            on_demand[(region, name)] = price
            if row["reserved_usd_per_hr"] and float(row["reserved_usd_per_hr"]) > 0:
                reserved[(region, name)] = float(row["reserved_usd_per_hr"])
            else:
                stats["aws reserved: no reserved price"] += 1

    advisor: dict[tuple[str, str], tuple[float, int]] = {}
    with (shared / AWS_SPOT_ADVISOR).open(newline="") as f:
        for row in csv.DictReader(f):
            if row["os"] != "Linux":
                continue
            key = (row["region"], row["instance_type"])
            if key in on_demand:
                advisor[key] = (
                    float(row["savings_pct_vs_ondemand"]),
                    int(row["interruption_bucket"]),
                )

    offerings: list[OfferingRow] = []
    for (region, name), price in on_demand.items():
        offerings.append(
            OfferingRow("aws", region, "", name, "on-demand", _price(price), 0.0, False)
        )
        if (region, name) not in advisor:
            stats["aws spot: type not in the advisor for that region"] += 1
            continue
        savings_pct, bucket = advisor[(region, name)]
        # AWS publishes no spot price here: estimate it from the advisor's average saving.
        spot = price * (1.0 - savings_pct / 100.0)
        if savings_pct < 0:
            # The advisor reports a negative saving for one GPU pool (ca-central-1
            # p5.48xlarge, -62%): spot dearer than on-demand. Nobody would buy it; skip.
            stats["aws spot skipped: advisor saving below 0 (spot above on-demand)"] += 1
            continue
        offerings.append(
            OfferingRow(
                "aws",
                region,
                "",
                name,
                "spot",
                _price(spot),
                _rate(AWS_BUCKET_RATES[bucket]),
                True,
            )
        )
    reserved_rows = [
        ["aws", region, name, _price(price)] for (region, name), price in sorted(reserved.items())
    ]
    return types, offerings, reserved_rows


def gcp_preemption_rate(shared: Path) -> tuple[float, dict[str, float]]:
    """Pooled preemptions per instance-hour over the SkyPilot GCP preemption traces.

    Each trace counts live spot instances per tick (0/1 for 1-node traces); a drop is
    a preemption, and every tick with n live instances adds n x gap seconds of exposure.
    """
    drops = 0
    alive_s = 0.0
    files = sorted((shared / GCP_PREEMPTION_DIR).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no traces in {shared / GCP_PREEMPTION_DIR}")
    detail: dict[str, float] = {}
    for path in files:
        trace = json.loads(path.read_text())
        data = [int(x) for x in trace["data"]]
        gap_s = float(trace["metadata"]["gap_seconds"])
        d = sum(max(0, a - b) for a, b in itertools.pairwise(data))
        drops += d
        alive_s += sum(data) * gap_s
        detail[path.stem] = float(d)
    rate = drops / (alive_s / 3600.0)
    detail["preemptions"] = float(drops)
    detail["instance_hours"] = round(alive_s / 3600.0, 2)
    return rate, detail


def _gcp_count(family: str, size: int, has_g: bool, name: str) -> int:
    if family == "g2-standard":
        if has_g or size not in G2_L4_COUNT:
            raise ValueError(f"{name}: unknown G2 shape")
        return G2_L4_COUNT[size]
    if not has_g:
        raise ValueError(f"{name}: expected an a2/a3 name ending in <count>g")
    return size


def _gib_from_gpu_info(text: str) -> float:
    info = ast.literal_eval(text)  # "{'Gpus': [{'MemoryInfo': {'SizeInMiB': 24576}}]}"
    return float(info["Gpus"][0]["MemoryInfo"]["SizeInMiB"]) / 1024.0


def build_gcp(
    shared: Path, spot_rate: float, stats: Counter[str]
) -> tuple[dict[str, InstanceSpec], list[OfferingRow]]:
    """GCP instance types and per-zone on-demand + spot offerings (machine + GPUs)."""
    machines: list[dict[str, str]] = []
    accelerators: dict[tuple[str, str, int], dict[str, str]] = {}
    with (shared / GCP_VMS).open(newline="") as f:
        for row in csv.DictReader(f):
            if row["InstanceType"] and GCP_MACHINE.match(row["InstanceType"]):
                machines.append(row)
            elif not row["InstanceType"] and row["AcceleratorName"] in GCP_GPU_KIND:
                key = (
                    row["AvailabilityZone"],
                    row["AcceleratorName"],
                    int(row["AcceleratorCount"]),
                )
                if key in accelerators:
                    raise ValueError(f"duplicate accelerator row {key}")
                accelerators[key] = row

    types: dict[str, InstanceSpec] = {}
    offerings: list[OfferingRow] = []
    seen: set[tuple[str, str]] = set()
    for row in machines:
        name, zone, region = row["InstanceType"], row["AvailabilityZone"], row["Region"]
        if (zone, name) in seen:
            raise ValueError(f"{name} in {zone}: duplicate row")
        seen.add((zone, name))
        m = GCP_MACHINE.match(name)
        assert m is not None
        family = m.group("family")
        count = _gcp_count(family, int(m.group("size")), bool(m.group("g")), name)
        acc_name = GCP_MACHINE_ACCELERATOR[family]
        acc = accelerators.get((zone, acc_name, count))
        if acc is None:
            stats["gcp machines skipped: no matching accelerator row in the zone"] += 1
            continue
        if not row["Price"] or not acc["Price"]:
            stats["gcp machines skipped: on-demand price missing"] += 1
            continue
        spec = InstanceSpec(
            cloud="gcp",
            name=name,
            gpu_kind=GCP_GPU_KIND[acc_name],
            gpu_count=count,
            gpu_memory_gb=_gib_from_gpu_info(acc["GpuInfo"]),
            vcpus=int(float(row["vCPUs"])),
            memory_gb=float(row["MemoryGiB"]),
        )
        if types.setdefault(name, spec) != spec:
            raise ValueError(f"{name}: specs differ between zones")
        # Total = machine (CPU, RAM, local SSD) + its bundled GPUs.
        od = float(row["Price"]) + float(acc["Price"])
        offerings.append(
            OfferingRow("gcp", region, zone, name, "on-demand", _price(od), 0.0, False)
        )
        if not row["SpotPrice"] or not acc["SpotPrice"]:
            stats["gcp spot skipped: spot price missing"] += 1
            continue
        # Spot prices are kept as the source gives them. A few accelerator spot rows in the
        # source exceed their on-demand price (e.g. A100-80GB in us-central1); where that
        # makes the machine's spot total dearer than on-demand we drop the spot offering
        # (clamping would invent a price nobody quoted) and count it.
        spot = float(row["SpotPrice"]) + float(acc["SpotPrice"])
        if float(acc["SpotPrice"]) > float(acc["Price"]):
            stats["gcp machines whose GPU spot row is above its on-demand row (source)"] += 1
        if _price(spot) > _price(od):
            stats["gcp spot skipped: spot total above on-demand total"] += 1
            continue
        offerings.append(
            OfferingRow("gcp", region, zone, name, "spot", _price(spot), _rate(spot_rate), False)
        )
    return types, offerings


# --- Region coordinates -----------------------------------------------------------------

# Approximate latitude/longitude (degrees) of the metro each provider names for a region,
# from AWS's "Regions and Availability Zones" page and Google Cloud's "Cloud locations"
# page. Used only to estimate network round-trip times between regions, so a city-level
# position is plenty.
REGION_COORDS: dict[str, tuple[float, float]] = {
    # AWS
    "aws:af-south-1": (-33.92, 18.42),  # Cape Town
    "aws:ap-east-1": (22.32, 114.17),  # Hong Kong
    "aws:ap-east-2": (25.03, 121.57),  # Taipei
    "aws:ap-northeast-1": (35.68, 139.69),  # Tokyo
    "aws:ap-northeast-2": (37.57, 126.98),  # Seoul
    "aws:ap-northeast-3": (34.69, 135.50),  # Osaka
    "aws:ap-south-1": (19.08, 72.88),  # Mumbai
    "aws:ap-south-2": (17.39, 78.49),  # Hyderabad
    "aws:ap-southeast-1": (1.35, 103.82),  # Singapore
    "aws:ap-southeast-2": (-33.87, 151.21),  # Sydney
    "aws:ap-southeast-3": (-6.21, 106.85),  # Jakarta
    "aws:ap-southeast-4": (-37.81, 144.96),  # Melbourne
    "aws:ap-southeast-5": (3.14, 101.69),  # Malaysia (Kuala Lumpur)
    "aws:ap-southeast-7": (13.76, 100.50),  # Thailand (Bangkok)
    "aws:ca-central-1": (45.50, -73.57),  # Canada Central (Montreal)
    "aws:ca-west-1": (51.05, -114.07),  # Calgary
    "aws:eu-central-1": (50.11, 8.68),  # Frankfurt
    "aws:eu-central-2": (47.37, 8.54),  # Zurich
    "aws:eu-north-1": (59.33, 18.07),  # Stockholm
    "aws:eu-south-1": (45.46, 9.19),  # Milan
    "aws:eu-south-2": (41.65, -0.88),  # Spain (Aragon)
    "aws:eu-west-1": (53.35, -6.26),  # Ireland (Dublin)
    "aws:eu-west-2": (51.51, -0.13),  # London
    "aws:eu-west-3": (48.86, 2.35),  # Paris
    "aws:il-central-1": (32.09, 34.78),  # Tel Aviv
    "aws:me-central-1": (25.20, 55.27),  # UAE (Dubai)
    "aws:me-south-1": (26.23, 50.59),  # Bahrain
    "aws:mx-central-1": (20.59, -100.39),  # Mexico (Queretaro)
    "aws:sa-east-1": (-23.55, -46.63),  # Sao Paulo
    "aws:us-east-1": (39.04, -77.49),  # N. Virginia (Ashburn)
    "aws:us-east-2": (39.96, -83.00),  # Ohio (Columbus)
    "aws:us-west-1": (37.35, -121.96),  # N. California (Bay Area)
    "aws:us-west-2": (45.84, -119.70),  # Oregon (Boardman)
    # GCP
    "gcp:africa-south1": (-26.20, 28.05),  # Johannesburg
    "gcp:asia-east1": (24.05, 120.52),  # Changhua County, Taiwan
    "gcp:asia-east2": (22.32, 114.17),  # Hong Kong
    "gcp:asia-northeast1": (35.68, 139.69),  # Tokyo
    "gcp:asia-northeast2": (34.69, 135.50),  # Osaka
    "gcp:asia-northeast3": (37.57, 126.98),  # Seoul
    "gcp:asia-south1": (19.08, 72.88),  # Mumbai
    "gcp:asia-south2": (28.61, 77.21),  # Delhi
    "gcp:asia-southeast1": (1.34, 103.71),  # Jurong West, Singapore
    "gcp:asia-southeast2": (-6.21, 106.85),  # Jakarta
    "gcp:asia-southeast3": (13.76, 100.50),  # Bangkok
    "gcp:australia-southeast1": (-33.87, 151.21),  # Sydney
    "gcp:australia-southeast2": (-37.81, 144.96),  # Melbourne
    "gcp:europe-central2": (52.23, 21.01),  # Warsaw
    "gcp:europe-north1": (60.57, 27.19),  # Hamina, Finland
    "gcp:europe-north2": (59.33, 18.07),  # Stockholm
    "gcp:europe-southwest1": (40.42, -3.70),  # Madrid
    "gcp:europe-west1": (50.47, 3.87),  # St. Ghislain, Belgium
    "gcp:europe-west10": (52.52, 13.40),  # Berlin
    "gcp:europe-west12": (45.07, 7.69),  # Turin
    "gcp:europe-west2": (51.51, -0.13),  # London
    "gcp:europe-west3": (50.11, 8.68),  # Frankfurt
    "gcp:europe-west4": (53.44, 6.83),  # Eemshaven, Netherlands
    "gcp:europe-west6": (47.37, 8.54),  # Zurich
    "gcp:europe-west8": (45.46, 9.19),  # Milan
    "gcp:europe-west9": (48.86, 2.35),  # Paris
    "gcp:me-central1": (25.29, 51.53),  # Doha
    "gcp:me-central2": (26.43, 50.10),  # Dammam
    "gcp:me-west1": (32.09, 34.78),  # Tel Aviv
    "gcp:northamerica-northeast1": (45.50, -73.57),  # Montreal
    "gcp:northamerica-northeast2": (43.65, -79.38),  # Toronto
    "gcp:northamerica-south1": (20.59, -100.39),  # Queretaro
    "gcp:southamerica-east1": (-23.53, -46.79),  # Osasco (Sao Paulo)
    "gcp:southamerica-west1": (-33.45, -70.67),  # Santiago
    "gcp:us-central1": (41.26, -95.86),  # Council Bluffs, Iowa
    "gcp:us-east1": (33.20, -80.01),  # Moncks Corner, South Carolina
    "gcp:us-east4": (39.04, -77.49),  # Ashburn, Virginia
    "gcp:us-east5": (39.96, -83.00),  # Columbus, Ohio
    "gcp:us-south1": (32.78, -96.80),  # Dallas
    "gcp:us-west1": (45.60, -121.18),  # The Dalles, Oregon
    "gcp:us-west2": (34.05, -118.24),  # Los Angeles
    "gcp:us-west3": (40.76, -111.89),  # Salt Lake City
    "gcp:us-west4": (36.17, -115.14),  # Las Vegas
}


# --- Output ---------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def render(doc: dict[str, Any]) -> str:
    """Compact JSON with one instance type / offering per line, so diffs stay readable."""
    parts: list[str] = []
    for key, value in doc.items():
        if key in ("instance_types", "offerings", "reserved"):
            body = ",\n".join(_dumps(item) for item in value)
            parts.append(f"{_dumps(key)}:[\n{body}\n]")
        else:
            parts.append(f"{_dumps(key)}:{_dumps(value)}")
    return "{" + ",\n".join(parts) + "}\n"


def build(shared: Path) -> tuple[str, Counter[str]]:
    """The catalog JSON text and counts of what was skipped and why."""
    stats: Counter[str] = Counter()
    stats["gcp spot skipped: spot total above on-demand total"] = 0  # reported even when 0
    aws_types, aws_offerings, reserved = build_aws(shared, stats)
    gcp_rate, gcp_detail = gcp_preemption_rate(shared)
    gcp_types, gcp_offerings = build_gcp(shared, gcp_rate, stats)

    types = sorted(
        [*aws_types.values(), *gcp_types.values()], key=lambda t: (t.cloud, t.gpu_kind, t.name)
    )
    used = {(o.cloud, o.instance_type) for o in [*aws_offerings, *gcp_offerings]}
    types = [t for t in types if (t.cloud, t.name) in used]
    offerings = sorted(
        [*aws_offerings, *gcp_offerings],
        key=lambda o: (o.cloud, o.region, o.zone, o.instance_type, o.market),
    )
    regions = sorted({f"{o.cloud}:{o.region}" for o in offerings})
    missing = [r for r in regions if r not in REGION_COORDS]
    if missing:
        raise ValueError(f"no coordinates for regions {missing}; add them to REGION_COORDS")

    doc: dict[str, Any] = {
        "sources": SOURCES,
        "interruption_model": {
            "aws": (
                "AWS spot price = on-demand x (1 - advisor savings %); price_is_estimate is "
                "true. The advisor bucket is the share of spot capacity reclaimed over the "
                "trailing month; interruptions per instance-hour = bucket midpoint (25% for "
                ">20%) / 720 hours."
            ),
            "aws_bucket_labels": list(AWS_BUCKET_LABELS),
            "aws_bucket_interruptions_per_hour": [_rate(r) for r in AWS_BUCKET_RATES],
            "gcp": (
                "GCP spot prices are the catalog's listed SpotPrice (machine + GPUs). No "
                "per-pool interruption data exists; every GCP spot offering gets one rate: "
                "preemptions per instance-hour pooled over the SkyPilot GCP preemption "
                "traces (c3-highcpu-88 in us-central1-a/b/c and us-east1-b, 2023-04-30, "
                "about 2 days). A CPU shape from 2023: a placeholder, not a GPU measurement."
            ),
            "gcp_interruptions_per_hour": _rate(gcp_rate),
            "gcp_trace_detail": gcp_detail,
            "on_demand": "on-demand offerings have 0 interruptions per hour",
        },
        "instance_types": [
            {
                "cloud": t.cloud,
                "name": t.name,
                "gpu_kind": t.gpu_kind,
                "gpu_count": t.gpu_count,
                "gpu_memory_gb": t.gpu_memory_gb,
                "vcpus": t.vcpus,
                "memory_gb": t.memory_gb,
            }
            for t in types
        ],
        "offering_columns": OFFERING_COLUMNS,
        "offerings": [o.as_list() for o in offerings],
        # Commitment prices per node-hour (scheduler.fleet.commitments: the default price of a
        # [[commitments]] entry); AWS only, the source's reserved column.
        "reserved_columns": RESERVED_COLUMNS,
        "reserved": reserved,
        "regions": {r: {"lat": REGION_COORDS[r][0], "lon": REGION_COORDS[r][1]} for r in regions},
    }
    for t in types:
        stats[f"instance types {t.cloud}"] += 1
    for o in offerings:
        stats[f"offerings {o.cloud} {o.market}"] += 1
    stats["pools (zone or region x type x market)"] = len(offerings)
    stats["regions"] = len(regions)
    stats["reserved prices aws"] = len(reserved)
    return render(doc), stats


def main(argv: list[str] | None = None) -> int:
    """Build the catalog and print what was kept and skipped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared data root")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    args = parser.parse_args(argv)
    text, stats = build(args.shared)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="ascii")
    for key in sorted(stats):
        print(f"{stats[key]:7d}  {key}")
    size = len(text.encode("ascii"))
    print(f"wrote {args.out} ({size:,} bytes)")
    if size > 1_500_000:
        print("warning: catalog is larger than 1.5 MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
