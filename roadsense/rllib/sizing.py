"""How many env runners a run gets when `--num-env-runners` is not given.

Locally: one per core. PPO samples and learns in turn; at five epochs per batch the learner
takes 35-45% of an iteration, and a runner more than cores only adds a process that
competes with the learner and one more weight sync: on 2 cores, end to end, 2 runners x 1 env
trained at 1.02-1.23x the steps/s of 3 x 1 and 1.14-1.19x of 4 x 1 in two runs (`python -m
benchmarks layouts`; at ten epochs 3 x 1 and 2 x 1 were level).

On a Ray cluster (`--address`): one per CPU that the cluster's worker nodes offer at the
autoscaler's maximum, read from the cluster config that `ray up` writes on the head
(``~/ray_bootstrap_config.yaml``, node types' resources filled in by Ray). Workers start on
demand, so the CPUs connected when the run starts (often none but the head's) would undersize
it; asking for the maximum makes the autoscaler launch the workers that the runners need. The
head's CPUs count too, when it offers any (cluster.yaml gives it none: it runs the driver and
the learner).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
"""Where `ray up` puts the cluster config on the head node (Ray's own path)."""


def cluster_cpus(config: dict) -> int:
    """CPUs of the head plus the most worker CPUs the autoscaler can launch: types filled
    largest node first, each up to its own `max_workers`, all up to the global `max_workers`."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    total = int((types.get(head, {}).get("resources") or {}).get("CPU", 0))
    budget = int(config.get("max_workers", 0) or 0)
    workers = [(int((t.get("resources") or {}).get("CPU", 0)), int(t.get("max_workers", 0) or 0))
               for name, t in types.items() if name != head and isinstance(t, dict)]
    for cpus, count in sorted(workers, reverse=True):
        take = min(count, budget)
        total += cpus * take
        budget -= take
    return total


def default_env_runners(address: str | None, bootstrap: Path = BOOTSTRAP_CONFIG) -> int:
    """Env runners for a run without `--num-env-runners` (see the module docstring)."""
    local = os.cpu_count() or 2
    if not address:
        return local
    path = bootstrap.expanduser()
    if not path.is_file():
        log.warning("--address %s but no cluster config at %s: one env runner per local "
                    "core (%d); pass --num-env-runners to size the run",
                    address, path, local)
        return local
    import yaml

    cpus = cluster_cpus(yaml.safe_load(path.read_text()) or {})
    if cpus < 1:
        log.warning("the cluster config %s declares no CPUs: one env runner per local "
                    "core (%d)", path, local)
        return local
    log.info("%d env runners: the CPUs of the cluster at its maximum size (%s)", cpus, path)
    return cpus
