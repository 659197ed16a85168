"""The services a ``search``, ``study`` or ``train`` run uses: its Ray cluster, checked before
anything is written and then joined, and a remote MLflow server, checked beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from raydistill.errors import UserError
from raydistill.prepare import check_mlflow_uri
from raydistill.utils import one_line


def check_address_form(address: Optional[str]) -> None:
    """A UserError unless ``address`` is None, ``auto``, ``local``, ``host:port`` or ``ray://host:port``."""
    if address is None or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and port.isdigit() and 0 < int(port) < 65536 and host and "/" not in host):
        raise UserError(f"--address {address!r}: use auto, HOST:PORT (a Ray head, e.g. 10.0.0.1:6379) or "
                        "ray://HOST:PORT (Ray Client, e.g. ray://head:10001)")


def check_address(address: Optional[str], timeout: float = 5.0) -> None:
    """A UserError unless something listens at the Ray address (``host:port``,
    ``ray://host:port``, or the cluster ``auto`` finds on this machine): Ray itself retries an
    unreachable GCS for minutes before it gives up."""
    import socket

    if not address or address == "local":
        return
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # Ray's layout changed: leave it to ray.init
            return
        try:
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise UserError("--address auto: no Ray cluster is running on this machine "
                            "(start one with `ray start --head`, or leave out --address)") from None
        except Exception:  # anything else: leave it to ray.init
            return
        if address is None:
            return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except OSError:
        raise UserError(f"cannot connect to the Ray cluster at {address}: nothing answers there") from None


def check_services(opts) -> None:
    """That a remote MLflow server and the Ray cluster answer (last: they may take seconds)."""
    if opts.mlflow_uri is not None:
        check_mlflow_uri(opts.mlflow_uri)
    check_address(opts.address)


def connect(address: Optional[str]):
    """Join the given Ray cluster, or start a local one (dashboard on 127.0.0.1 only).

    Callers run :func:`check_address` first, before they write anything."""
    import ray

    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(dashboard_host="127.0.0.1", include_dashboard=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot connect to the Ray cluster at {address or 'local'}: {one_line(e, 200, first_line=True)}") from None
    return ray


# Where `ray up` leaves the cluster's autoscaling config on the head (node types filled in with
# the resources of their instance types): the file Ray's own head is started with.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


def capacity(ray, bootstrap: Optional[Path] = None) -> dict[str, float]:
    """The most of each resource the cluster can hold: what is up now or what its autoscaler may
    start, whichever is more. An autoscaling cluster's GPU workers (min 0) are not up when a
    search starts, and may have idled out while the references were scored on the head:
    planning from the nodes up now would give trials no GPU, or one trial at a time."""
    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    limits = autoscaling_limits(bootstrap)
    return {k: max(now.get(k, 0.0), limits.get(k, 0.0)) for k in {*now, *limits}}


def autoscaling_limits(bootstrap: Optional[Path] = None) -> dict[str, float]:
    """The resources of the largest cluster the autoscaler may build: Ray's record of the cluster
    config (the one Ray Train checks its workers against), else the ``ray up`` config on this
    head; {} for a cluster without an autoscaler (a local one, ``ray start`` by hand)."""
    try:
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API (docs/architecture.md#optuna): fall back to the file
        limits = None
    if limits:
        return {k: float(v) for k, v in limits.items()}
    path = Path(bootstrap or BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return {}
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return node_type_limits(config)


def node_type_limits(config: dict) -> dict[str, float]:
    """Sum over an autoscaling config's node types of ``max_workers`` (the head: one) times their
    ``resources``, workers capped by the cluster's ``max_workers``. Node types whose resources
    are left to detection (``{}``) count nothing: ``ray up`` fills them in for the clouds it knows."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    budget = config.get("max_workers")
    total: dict[str, float] = {}
    for name, node in types.items():
        count = 1 if name == head else int(node.get("max_workers", 0))
        if name != head and budget is not None:
            count = min(count, int(budget))
        for key, value in (node.get("resources") or {}).items():
            total[key] = total.get(key, 0.0) + count * float(value)
    return total
