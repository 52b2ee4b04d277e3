"""`python -m bench.scale`: Key Vault and Table Storage load at 10-1,000 instances, before and after issue #14.

The per-instance rates of the new design are the ones measured against 3 local instances by
`tests/test_scale_out.py` (written to `bench/results/scale-latest.json`; the committed
`scale-reference.json` is used when no fresh run exists). The old design's rates follow from its
code (one read per item per TTL per instance; a vault listing per signing-key refresh). Both are
multiplied out for every combination of instances x clients x tenants at the request mix below
and compared with the published limits (sources in docs/scale.md). Pure arithmetic: no network.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# Published limits (docs/scale.md cites them).
KV_PER_10S = 4000        # Key Vault secrets, "all other transactions", per vault per region per 10 s
TABLE_ACCOUNT_PER_S = 20_000   # Table Storage: transactions per second per storage account (1 KiB entities)
TABLE_PARTITION_PER_S = 2_000  # Table Storage: entities per second per partition (1 KiB entities)
KV_LIST_PAGE = 25        # secrets per page of a Key Vault listing (its maximum page size)

# The production TTLs (app setting defaults).
SECRET_TTL, ROUTE_TTL, SIGNING_TTL, PORTAL_KEY_TTL, LOG_MARGIN = 60, 30, 300, 300, 60


@dataclass(frozen=True)
class Mix:
    """The stated request mix, per instance (each request picks a client and a tenant uniformly)."""

    token_per_s: float = 2.0          # token requests per second per instance
    fhir_per_s: float = 20.0          # FHIR requests per second per instance
    failed_share: float = 0.01        # token requests with a wrong secret
    secrets_per_client: int = 2       # live secrets (rotation overlap)
    changes_per_s: float = 1 / 60     # fleet-wide writes: secrets added/deleted, tenants changed, clients disabled
    upstream_vault_share: float = 0.0  # tenants whose provider credential is a Key Vault secret (see docs)


@dataclass(frozen=True)
class Measured:
    """The new design's rates from the 3-instance run, all TTLs at `ttl` seconds there."""

    ttl: float
    vault_per_instance_per_ttl: float   # pepper + signing-key index + keys (+ auth challenges)
    table_per_instance_per_ttl: float   # the three change-log queries
    cold_vault: int                     # a fresh instance's first token and FHIR read

    @classmethod
    def load(cls, path: Path | None) -> tuple[Measured, Path]:
        source = path or next(p for p in (RESULTS / "scale-latest.json", RESULTS / "scale-reference.json")
                              if p.exists())
        data: dict[str, Any] = json.loads(source.read_text())
        run = data["runs"][max(data["runs"], key=int)]
        return cls(float(data["ttl_seconds"]), float(run["vault_per_instance_per_ttl"]),
                   float(run["table_per_instance_per_ttl"]), int(data["cold_instance"]["vault_requests"])), source


def distinct(population: int, draws: float) -> float:
    """Expected distinct items among `draws` uniform picks from `population`."""
    return population * (1 - (1 - 1 / population) ** draws) if population else 0.0


@dataclass(frozen=True)
class Load:
    kv_10s: float             # Key Vault transactions per 10 s (one vault)
    table_s: float            # Table Storage transactions per second (one account)
    partition_s: float        # entities per second on the hottest partition
    hottest: str

    def row(self) -> list[str]:
        return [f"{self.kv_10s:,.0f}", f"{100 * self.kv_10s / KV_PER_10S:.1f} %",
                f"{self.table_s:,.0f}", f"{100 * self.table_s / TABLE_ACCOUNT_PER_S:.1f} %",
                f"{self.partition_s:,.0f} ({self.hottest})", f"{100 * self.partition_s / TABLE_PARTITION_PER_S:.1f} %"]


def before(instances: int, clients: int, tenants: int, mix: Mix) -> Load:
    """The design before #14: per-item TTL caches, a verifier secret per client secret in Key Vault."""
    requests_per_s = mix.token_per_s + mix.fhir_per_s
    vault_secrets = clients * mix.secrets_per_client + tenants * mix.upstream_vault_share + 5
    kv_per_s = (distinct(clients, mix.token_per_s * SECRET_TTL) / SECRET_TTL        # verifiers
                + mix.token_per_s * mix.failed_share                                 # made-up secret ids
                + (math.ceil(vault_secrets / KV_LIST_PAGE) + 3) / SIGNING_TTL        # key ring: list + keys
                + 1 / PORTAL_KEY_TTL
                + _upstream(tenants, requests_per_s, mix))
    clients_s = distinct(clients, requests_per_s * SECRET_TTL) / SECRET_TTL          # client status reads
    routes_s = distinct(tenants, requests_per_s * ROUTE_TTL) / ROUTE_TTL              # route reads
    hottest = max((clients_s, "clients"), (routes_s, "tenants"))
    return Load(instances * kv_per_s * 10, instances * (clients_s + routes_s), instances * hottest[0], hottest[1])


def after(instances: int, clients: int, tenants: int, mix: Mix, measured: Measured) -> Load:
    """This design: snapshots + change logs, peppered verifiers in Table Storage, a signing-key index."""
    requests_per_s = mix.token_per_s + mix.fhir_per_s
    # Measured at TTL t: 1 pepper read per secret TTL, the rest (index, keys, auth) per signing-key TTL.
    kv_per_s = 1 / SECRET_TTL + (measured.vault_per_instance_per_ttl - 1) / SIGNING_TTL + 1 / PORTAL_KEY_TTL
    kv_per_s += _upstream(tenants, requests_per_s, mix)
    # Measured: 3 log queries per TTL; here one per ROUTE_TTL (tenants), two per SECRET_TTL (clients, secrets).
    assert round(measured.table_per_instance_per_ttl) == 3, "the model assumes three snapshots"
    log_queries_s = 1 / ROUTE_TTL + 2 / SECRET_TTL
    log_rows = mix.changes_per_s * LOG_MARGIN  # rows each log query returns again (the margin), on average
    change_reads_s = mix.changes_per_s  # each logged change: one point read per instance
    failures_s = mix.token_per_s * mix.failed_share * 6  # 3 counts, each a read and an ETag write
    table_s = instances * (log_queries_s + change_reads_s + failures_s)
    per_log_partition = instances / ROUTE_TTL * max(1.0, log_rows)
    per_data_partition = instances * change_reads_s
    per_limit_partition = instances * failures_s / 16  # 16 partitions per limit, 3 limits: one of 48
    hottest = max((per_log_partition, "tenant change log"), (per_data_partition, "changed data"),
                  (per_limit_partition, "failure counts"))
    return Load(instances * kv_per_s * 10, table_s, hottest[0], hottest[1])


def _upstream(tenants: int, requests_per_s: float, mix: Mix) -> float:
    """Provider credentials kept in Key Vault: unchanged by #14 (one read per tenant per TTL per instance)."""
    touched = distinct(tenants, requests_per_s * SECRET_TTL) * mix.upstream_vault_share
    return touched / SECRET_TTL


def burst(cold: int, steady: int, clients: int, tenants: int, mix: Mix, measured: Measured) -> tuple[Load, Load]:
    """`cold` instances starting within one minute while `steady` others run: (before, after), per 10 s,
    the cold starts spread evenly over the minute."""
    per_10s = cold / 6
    vault_secrets = clients * mix.secrets_per_client + 5
    old_cold_kv = math.ceil(vault_secrets / KV_LIST_PAGE) + 3 + distinct(clients, mix.token_per_s * SECRET_TTL)
    old = before(steady, clients, tenants, mix)
    new = after(steady, clients, tenants, mix, measured)
    fleet = before(steady + cold, clients, tenants, mix)  # cold instances read per item per TTL like the rest
    old_b = Load(old.kv_10s + per_10s * old_cold_kv, fleet.table_s, fleet.partition_s, fleet.hottest)
    # A cold instance reads each row on first use (then follows the change log): during its first
    # minute, the clients and tenants its requests touch, one read each. At the end of the burst all
    # `cold` instances are in their first minute.
    requests_per_s = mix.token_per_s + mix.fhir_per_s
    first_minute = {"clients": distinct(clients, requests_per_s * 60) / 60,
                    "tenants": distinct(tenants, requests_per_s * 60) / 60,
                    "secrets": distinct(clients, mix.token_per_s * 60) / 60}
    cold_reads_s = cold * sum(first_minute.values())
    hottest_cold = max(first_minute, key=lambda k: first_minute[k])
    cold_partition_s = cold * first_minute[hottest_cold]
    new_b = Load(new.kv_10s + per_10s * measured.cold_vault, new.table_s + cold_reads_s,
                 max(new.partition_s, cold_partition_s),
                 f"{hottest_cold}, first reads" if cold_partition_s > new.partition_s else new.hottest)
    return old_b, new_b


HEADER = ["instances", "clients", "tenants", "design", "KV ops/10 s", "KV %", "Table tx/s", "Table %",
          "hottest partition entities/s", "partition %"]


def table(mix: Mix, measured: Measured) -> list[list[str]]:
    rows = []
    for instances in (10, 100, 1000):
        for clients in (100, 10_000):
            for tenants in (1000, 10_000):
                for name, load in (("before", before(instances, clients, tenants, mix)),
                                   ("after", after(instances, clients, tenants, mix, measured))):
                    rows.append([f"{instances:,}", f"{clients:,}", f"{tenants:,}", name, *load.row()])
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=Path, help="JSON from tests/test_scale_out.py (default: latest)")
    parser.add_argument("--upstream-vault-share", type=float, default=0.0,
                        help="share of tenants whose provider credential is a Key Vault secret")
    args = parser.parse_args(argv)
    mix = Mix(upstream_vault_share=args.upstream_vault_share)
    measured, source = Measured.load(args.measured)
    print(f"measured (3 instances, TTL {measured.ttl:g} s, {source.name}): "
          f"{measured.vault_per_instance_per_ttl:.2f} Key Vault and {measured.table_per_instance_per_ttl:.2f} "
          f"Table requests per instance per TTL; a cold instance {measured.cold_vault} Key Vault requests")
    print(f"mix per instance: {mix.token_per_s:g} token/s ({mix.failed_share:.0%} failed), {mix.fhir_per_s:g} "
          f"FHIR/s, {mix.secrets_per_client} secrets per client, {mix.changes_per_s * 60:g} change/min fleet-wide, "
          f"{mix.upstream_vault_share:.0%} of tenants with a Key Vault provider credential\n")
    print(markdown(HEADER, table(mix, measured)))
    print("\nburst: 300 cold instances within one minute, beside 1,000 running (10,000 clients, 10,000 tenants)\n")
    old, new = burst(300, 1000, 10_000, 10_000, mix, measured)
    print(markdown(["design", "KV ops/10 s", "KV %", "Table tx/s", "Table %", "hottest partition entities/s",
                    "partition %"], [["before", *old.row()], ["after", *new.row()]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
