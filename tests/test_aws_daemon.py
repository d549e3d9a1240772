"""The daemon's composition root on AWS over moto's real wire protocol: the reconciler
launches with our tags, adopts what is there after a restart, and never launches twice."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import no_sleep
from test_aws_support import MotoAccount, aws_env  # noqa: F401 - the fixture

from capsched.service import build_edges
from scheduler.config import Config, load_config
from scheduler.fleet.catalog import load_catalog
from scheduler.fleet.profiles import load_profiles
from scheduler.loop.factory import build_scheduler
from scheduler.loop.store import StateStore

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def aws_config(tmp_path: Path, account: MotoAccount) -> Config:
    base = load_config(EXAMPLE)
    raw = base.model_dump(mode="json")
    raw["sources"].update(cloud="aws", demand="prometheus")
    raw["prometheus"].update(url="http://127.0.0.1:9", retries=0, timeout_s=1)  # unreachable
    raw["aws"] = json.loads(account.config().model_dump_json())
    raw["clouds"] = {
        "aws": {"regions": ["us-east-1", "us-west-2"], "gpu_kinds": ["L4", "L40S", "A100"]},
        "gcp": {"enabled": False},
    }
    raw["regions"] = [{"name": "us-east", "location": "us-east-1", "max_latency_ms": 80}]
    raw["quotas"] = []
    raw["scheduler"]["state_db"] = str(tmp_path / "state.db")
    return Config.model_validate(raw)


async def test_reconciler_on_moto_launches_tagged_and_never_twice(
    tmp_path: Path,
    aws_env: str,  # noqa: F811
) -> None:
    account = MotoAccount.create(aws_env)
    config = aws_config(tmp_path, account)
    catalog, profiles = load_catalog(), load_profiles()

    async def one_tick() -> list[str]:
        edges = build_edges(config, catalog, profiles)
        store = StateStore(config.scheduler.state_db)
        rec = build_scheduler(
            config, provider=edges.provider, metrics=edges.metrics, store=store, sleep=no_sleep
        )
        report = await rec.tick(edges.clock())
        store.close()
        for edge in (edges.provider, edges.metrics):
            await edge.close()  # type: ignore[attr-defined]
        return [type(a).__name__ for a in report.actions]

    # No load signal (Prometheus is down): only the minimum replicas are launched.
    first = await one_tick()
    assert first and set(first) == {"Launch"}
    launched = [i for r in ("us-east-1", "us-west-2") for i in account.instances(r)]
    assert len(launched) == len(first)
    tags = {t["Key"] for t in launched[0]["Tags"]}
    assert {"capsched-owner", "capsched-node", "capsched-model", "capsched-pool"} <= tags
    # A restarted daemon (new process state, same store) sees them and launches nothing.
    second = await one_tick()
    assert "Launch" not in second
    again = [i for r in ("us-east-1", "us-west-2") for i in account.instances(r)]
    assert len(again) == len(launched)
