"""A local Ray instance on the loopback only, through Ray's documented single-machine switch.

Ray binds its servers (GCS, raylet, object manager, the workers' and the driver's gRPC servers, the runtime-env
and dashboard agents, the metrics exporter) to its node's address. In its single-machine mode, the default on
Windows and macOS and chosen on Linux with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, that address is 127.0.0.1;
otherwise Ray takes the machine's address even when asked for 127.0.0.1. Ray reads the switch once, when `ray`
is first imported, so it is set before: by the command line for a search without `--address` (joining a cluster
needs the node's real address), and by a library caller who wants the same.
"""

from __future__ import annotations

import os
import sys

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
