"""Configuration of the GCP provider (`adapters.gcp.GcpProvider`).

`GcpConfig` is meant to be mounted as the `[gcp]` table of the config file::

    [gcp]
    project = "my-inference-project"
    owner = "prod-fleet-1"       # capsched-owner label value: what this daemon may touch
    image = "projects/my-inference-project/global/images/family/vllm-cuda12"
    network_tags = ["capsched-node"]
    service_account_email = "capsched-node@my-inference-project.iam.gserviceaccount.com"
    operation_timeout_s = 300

    [[gcp.zones]]
    name = "us-central1-a"
    subnetwork = "regions/us-central1/subnetworks/inference"

    [[gcp.zones]]
    name = "us-east4-c"
    subnetwork = "regions/us-east4/subnetworks/inference"

Credentials are not configured here: they come from Application Default Credentials
(`GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth application-default login`, or the
metadata server of the VM the daemon runs on), never from this file.

Label values on GCP must be lowercase, from ``[a-z0-9_-]`` and at most 63 characters;
the owner is validated against exactly that (it is matched verbatim in list filters),
while node ids and model names are sanitised by `adapters.gcp.label_value`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# GCP label values: lowercase letters, digits, "_" and "-", at most 63 characters. We
# also require a leading letter or digit for the owner so it reads well in filters.
_OWNER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ZONE_RE = re.compile(r"^[a-z]+(-[a-z]+)*\d+-[a-z]$")
_PROJECT_RE = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.-]+:[a-z][a-z0-9-]{4,28}[a-z0-9]$"
)
_TAG_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def zone_region(zone: str) -> str:
    """The region of a GCP zone: "us-central1-a" -> "us-central1"."""
    return zone.rsplit("-", 1)[0]


class GcpAccelerator(_Section):
    """GPUs to attach to a machine type that does not bundle them (N1 + T4/V100/P100)."""

    type: str  # accelerator type name, e.g. "nvidia-tesla-t4"
    count: int = Field(ge=1, le=16)  # accelerators per instance

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if not _ACCEL_RE.match(v):
            raise ValueError(f"not an accelerator type name: {v!r}")
        return v


class GcpZoneConfig(_Section):
    """Where and how to launch in one zone."""

    name: str  # GCP zone, e.g. "us-central1-a"
    subnetwork: str  # subnetwork URL or "regions/<region>/subnetworks/<name>"
    network: str = ""  # network URL or "global/networks/<name>"; "" = the subnetwork's
    image: str = ""  # boot image for this zone; "" = `GcpConfig.image`

    @field_validator("name")
    @classmethod
    def _zone_name(cls, v: str) -> str:
        if not _ZONE_RE.match(v):
            raise ValueError(f"not a GCP zone name: {v!r}")
        return v

    @model_validator(mode="after")
    def _subnet_in_region(self) -> GcpZoneConfig:
        region = zone_region(self.name)
        if "/regions/" in f"/{self.subnetwork}" and f"regions/{region}/" not in self.subnetwork:
            raise ValueError(f"{self.name}: subnetwork {self.subnetwork!r} is not in {region}")
        if not self.subnetwork:
            raise ValueError(f"{self.name}: subnetwork is required")
        return self

    @property
    def region(self) -> str:
        """The zone's region."""
        return zone_region(self.name)


class GcpConfig(_Section):
    """The GCP provider: which project and zones, what marks our instances, how long to wait."""

    project: str  # project id the instances live in
    owner: str  # value of the capsched-owner label: this deployment only touches these instances
    zones: tuple[GcpZoneConfig, ...] = Field(min_length=1)  # zones capsched may launch in
    image: str = ""  # boot image (URL, "projects/<p>/global/images/[family/]<name>")
    boot_disk_gb: int = Field(default=200, ge=10, le=65536)  # boot disk size
    boot_disk_type: str = ""  # e.g. "pd-balanced", "hyperdisk-balanced"; "" = GCE default
    network_tags: tuple[str, ...] = ()  # network tags (firewall rules) on every instance
    service_account_email: str = ""  # service account of the nodes; "" = none attached
    external_ip: bool = False  # give nodes an ephemeral public IP (default: private only)
    accelerators: dict[str, GcpAccelerator] = Field(default_factory=dict)  # type -> GPUs (N1)
    endpoint: str = ""  # send every call here instead of compute.googleapis.com (tests)
    operation_timeout_s: float = Field(default=300.0, gt=0, le=3600)  # launch op deadline
    call_timeout_s: float = Field(default=30.0, gt=0, le=600)  # one HTTP call
    max_calls_per_zone: int = Field(default=4, ge=1, le=64)  # concurrent calls per zone
    notice_window_s: float = Field(default=30.0, gt=0)  # Spot preemption notice (GCP: 30 s)

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not _PROJECT_RE.match(v):
            raise ValueError(f"not a GCP project id: {v!r}")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        if not _OWNER_RE.match(v):
            raise ValueError(
                "GCP label value: 1-63 characters of lowercase letters, digits, _ and -, "
                "starting with a letter or digit"
            )
        return v

    @field_validator("network_tags")
    @classmethod
    def _tags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for tag in v:
            if not _TAG_RE.match(tag):
                raise ValueError(f"not a GCE network tag: {tag!r}")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _zones(self) -> GcpConfig:
        seen: set[str] = set()
        for z in self.zones:
            if z.name in seen:
                raise ValueError(f"zones: duplicate zone {z.name!r}")
            seen.add(z.name)
            if not (z.image or self.image):
                raise ValueError(f"{z.name}: no boot image (set gcp.image or the zone's image)")
        return self

    def zone(self, name: str) -> GcpZoneConfig | None:
        """The configured zone called `name`, or None."""
        for z in self.zones:
            if z.name == name:
                return z
        return None
