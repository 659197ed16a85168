"""The services a ``search``, ``study`` or ``train`` run uses: its Ray cluster, checked before
anything is written and then joined, and a remote MLflow server, checked beside it."""

from __future__ import annotations

from typing import Optional

from raydistill.errors import UserError
from raydistill.prepare import check_mlflow_uri


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
        raise UserError(f"cannot connect to the Ray cluster at {address or 'local'}: {str(e).splitlines()[0][:200]}") from None
    return ray
