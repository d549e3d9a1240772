"""Configuration of the AWS provider (`adapters.aws.AwsProvider`).

`AwsConfig` is meant to be mounted as the `[aws]` table of the config file::

    [aws]
    owner = "prod-fleet-1"          # capsched-owner tag value: what this daemon may touch
    spot_price_ttl_s = 300

    [[aws.regions]]
    name = "us-east-1"
    image_id = "ami-0123456789abcdef0"
    security_group_ids = ["sg-0123456789abcdef0"]
    subnets = { "us-east-1a" = "subnet-0aaa", "us-east-1b" = "subnet-0bbb" }
    sqs_queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/capsched-interruptions"

Credentials are not configured here: they come from the standard AWS chain
(environment, shared config/profile, instance role), never from this file.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Tag values: up to 256 Unicode characters; we keep the owner to a safe, greppable subset.
_OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=+@-]{0,127}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(v: str) -> str:
    if v and not v.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return v.rstrip("/")


class AwsRegionConfig(_Section):
    """Where and how to launch in one region."""

    name: str  # AWS region, e.g. "us-east-1"
    image_id: str = ""  # AMI to boot; overrides the launch template's image when both are set
    launch_template: str = ""  # launch template name (or an "lt-..." id); "" for none
    launch_template_version: str = "$Default"  # "$Default", "$Latest" or a number
    subnets: dict[str, str] = Field(min_length=1)  # availability zone -> subnet id
    security_group_ids: tuple[str, ...] = ()  # for every instance; () = the template's/default
    sqs_queue_url: str = ""  # EventBridge interruption queue; "" = no notices from this region
    endpoint_url: str = ""  # overrides `AwsConfig.endpoint_url` for this region (tests)

    @field_validator("name")
    @classmethod
    def _region_name(cls, v: str) -> str:
        if not _REGION_RE.match(v):
            raise ValueError(f"not an AWS region name: {v!r}")
        return v

    @field_validator("subnets")
    @classmethod
    def _subnet_ids(cls, v: dict[str, str]) -> dict[str, str]:
        for zone, subnet in v.items():
            if not subnet.startswith("subnet-"):
                raise ValueError(f"{zone}: not a subnet id: {subnet!r}")
        return v

    @field_validator("sqs_queue_url", "endpoint_url")
    @classmethod
    def _urls(cls, v: str) -> str:
        return _http_url(v)

    @model_validator(mode="after")
    def _image_source(self) -> AwsRegionConfig:
        if not self.image_id and not self.launch_template:
            raise ValueError(f"{self.name}: set image_id, launch_template or both")
        for zone in self.subnets:
            if not zone.startswith(self.name):
                raise ValueError(f"{self.name}: zone {zone!r} is not in this region")
        return self


class AwsConfig(_Section):
    """The AWS provider: which regions, what marks our instances, how hard to try."""

    owner: str  # value of the capsched-owner tag: this deployment only touches these instances
    regions: tuple[AwsRegionConfig, ...] = Field(min_length=1)  # regions capsched may launch in
    profile: str = ""  # shared-config profile name; "" = the default credential chain
    endpoint_url: str = ""  # send every call here instead of AWS (tests: a moto server)
    spot_price_ttl_s: float = Field(default=300.0, gt=0)  # live spot prices kept this long
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)  # per HTTP attempt
    read_timeout_s: float = Field(default=20.0, gt=0, le=300)  # per HTTP attempt
    call_timeout_s: float = Field(default=45.0, gt=0, le=600)  # one call in one region, retries in
    max_attempts: int = Field(default=3, ge=1, le=10)  # botocore attempts per call (standard mode)
    notice_window_s: float = Field(default=120.0, gt=0)  # spot warning to reclaim (AWS: 2 min)
    max_sqs_batches: int = Field(default=10, ge=1, le=100)  # receives per queue per poll, 10 each

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        if not _OWNER_RE.match(v):
            raise ValueError(
                "1-128 characters: letters, digits and . _ : / = + @ -, starting alphanumeric"
            )
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _http_url(v)

    @model_validator(mode="after")
    def _unique_regions(self) -> AwsConfig:
        seen: set[str] = set()
        for r in self.regions:
            if r.name in seen:
                raise ValueError(f"regions: duplicate region {r.name!r}")
            seen.add(r.name)
        return self

    def region(self, name: str) -> AwsRegionConfig | None:
        """The configured region called `name`, or None."""
        for r in self.regions:
            if r.name == name:
                return r
        return None
