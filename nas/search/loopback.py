"""A local Ray instance on the loopback only, through Ray's documented single-machine switch.

Ray binds its servers (GCS, raylet, object manager, the workers' and the driver's gRPC servers, the runtime-env
and dashboard agents, the metrics exporter) to its node's address. In its single-machine mode, the default on
Windows and macOS and chosen on Linux with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, that address is 127.0.0.1;
otherwise Ray takes the machine's address even when asked for 127.0.0.1. Ray reads the switch once, when `ray`
is first imported, so it is set before: by the command line for a search without `--address` (joining a cluster
needs the node's real address), and by a library caller who wants the same.

`ray_session` is the Ray instance a command runs on (a search, a data-parallel `supernet train`): the caller's,
a cluster's (`--address`), or such a local one, in a temporary directory of its own that goes with it:

    prefer_loopback()                    # before Ray is imported
    with ray_session(address=None):      # a private local instance, shut down and removed on leaving
        ...

Ray is imported inside the functions that use it: `prefer_loopback` must run before it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from nas.errors import ConfigError

#: Prefix of the Ray temporary directories a driver makes (short: Ray's socket paths must fit in 107 bytes).
RAY_TEMP_PREFIX = "vitamin-nas-ray-"
#: The longest an AF_UNIX socket's path may be (Linux's sun_path, less its NUL).
SOCKET_PATH_MAX = 107
#: What Ray appends to its temporary directory for its longest socket path, with room for a 7-digit pid and a
#: ".N" suffix: /session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store
RAY_SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store.10")
#: Where Ray's temporary directory goes when TMPDIR is too long for its sockets (Ray's own default is /tmp/ray).
SHORT_TEMP = "/tmp"

#: Ray's switch between single-machine mode ("0") and cluster mode ("1").
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Ray's authentication mode; a new local instance uses a token by default, and warns so unless this names a mode.
AUTH_MODE = "RAY_AUTH_MODE"


def prefer_loopback() -> None:
    """Ask for Ray's single-machine mode for a Ray this process starts, unless the variable says otherwise; a no-op
    once Ray is imported (too late: the driver then warns where its instance listens). Its token authentication,
    Ray's default for a new local instance, is asked for by name: the same protection, without Ray's warning
    about it at every start."""
    if "ray" not in sys.modules:
        os.environ.setdefault(SINGLE_MACHINE, "0")
        os.environ.setdefault(AUTH_MODE, "token")


@contextlib.contextmanager
def ray_session(address: str | None, *, dashboard: bool = False, dashboard_host: str = "127.0.0.1",
                verbose: bool = False) -> Iterator[str | None]:
    """Ray for a command (a search, a data-parallel supernet): the caller's if initialised, a cluster's with
    `address`, else a local one on 127.0.0.1 whose temporary directory (yielded; None otherwise) is removed with
    it, and whose processes end with this one however it ends (`nas.search.reaper`)."""
    import ray

    from nas.search import reaper

    if ray.is_initialized():
        yield None
        return
    options = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    temp = ender = None
    try:
        if address:
            try:
                ray.init(address=address, **options)
            except ConnectionError as err:
                raise ConfigError(f"cannot join the Ray cluster: {err} ({err.__cause__ or 'no cause given'}). A "
                                  "cluster started with `ray start` authenticates with a token: set "
                                  "RAY_AUTH_MODE=token here, with its token in ~/.ray/auth_token or RAY_AUTH_TOKEN",
                                  field="--address") from None
        else:  # never join a cluster by accident (RAY_ADDRESS, /tmp/ray): a private instance on the loopback
            temp = ray_temp_dir()
            ender = reaper.start(os.getpid())
            ray.init(address="local", include_dashboard=dashboard, dashboard_host=dashboard_host, _temp_dir=temp,
                     **options)
            if (warning := loopback_warning()) is not None:
                logging.getLogger(__name__).warning(warning)
        if not verbose:
            logging.getLogger("ray.tune").setLevel(logging.WARNING)
        yield temp
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if ender is not None:
            reaper.stop(ender)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def ray_temp_dir() -> str:
    """A new directory for a local Ray's session: in TMPDIR when Ray's socket paths fit under it, else (a
    cluster job's per-job TMPDIR is often longer) in `SHORT_TEMP`, where they do."""
    base = tempfile.gettempdir()
    longest = len(os.path.join(base, RAY_TEMP_PREFIX + "x" * 8)) + RAY_SOCKET_TAIL  # mkdtemp adds 8 characters
    return tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX, dir=base if longest <= SOCKET_PATH_MAX else SHORT_TEMP)


def loopback_warning() -> str | None:
    """What to say when the local Ray instance just started listens beyond the loopback: Ray was imported before
    `prefer_loopback()` could ask for its single-machine mode (a library caller's process)."""
    import ray

    address = ray.util.get_node_ip_address()
    if address == "127.0.0.1":
        return None
    return (f"the local Ray instance listens on {address}, not only on 127.0.0.1: set {SINGLE_MACHINE}=0 "
            "before Ray is imported (nas.search.loopback.prefer_loopback()) to keep it on this machine")
