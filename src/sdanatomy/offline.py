"""No network: an audit hook that refuses every connection outside loopback.

The book promises that building it and running its tests never leaves the machine.
``forbid_network()`` makes that promise checkable: after it, any attempt to resolve a
non-local host name or to connect an IP socket to a non-loopback address raises
:class:`NetworkAccessError`, from any library, in this process. Importing
``sdanatomy`` with ``SDANATOMY_FORBID_NETWORK=1`` in the environment turns it on, which is
how the test suite reaches the notebook kernels that nbval starts.
"""
from __future__ import annotations

import ipaddress
import socket
import sys

ENV_VAR = "SDANATOMY_FORBID_NETWORK"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
_state = {"installed": False, "active": False}


class NetworkAccessError(RuntimeError):
    """Raised when code tries to reach a host other than this machine."""


def is_loopback(host) -> bool:
    """True for loopback addresses and names (127.0.0.0/8, ::1, localhost)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%", 1)[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that is not local


def _hook(event: str, args: tuple) -> None:
    if not _state["active"]:
        return
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise NetworkAccessError(f"sdanatomy is offline: refused connection to {address!r}")
    elif event == "socket.getaddrinfo":
        if not is_loopback(args[0]):
            raise NetworkAccessError(f"sdanatomy is offline: refused to resolve {args[0]!r}")


def forbid_network() -> None:
    """Refuse, from now on, every connection outside loopback in this process."""
    if not _state["installed"]:
        sys.addaudithook(_hook)  # audit hooks cannot be removed; ``allow_network`` disarms it
        _state["installed"] = True
    _state["active"] = True


def allow_network() -> None:
    """Disarm the hook installed by :func:`forbid_network`."""
    _state["active"] = False


def network_forbidden() -> bool:
    return _state["active"]


def main(argv: list[str] | None = None) -> int:
    """``python -m sdanatomy.offline COMMAND [ARGS…]``: run a console script with no network.

    The command is looked up among the installed console scripts (e.g. ``jupyter-book``)
    and run in this process, so the audit hook covers everything it does.
    """
    from importlib.metadata import entry_points

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m sdanatomy.offline COMMAND [ARGS...]", file=sys.stderr)
        return 2
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == argv[0]]
    if not found:
        print(f"sdanatomy.offline: no console script named {argv[0]!r} is installed", file=sys.stderr)
        return 2
    forbid_network()
    sys.argv = argv
    result = found[0].load()()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
