"""The offline guard: any connection outside loopback fails, loopback still works."""
import socket
import subprocess
import sys

import pytest

from sdanatomy import offline


def test_guard_is_armed_for_the_suite():
    assert offline.network_forbidden()


@pytest.mark.parametrize("address", [("203.0.113.7", 443), ("8.8.8.8", 53), ("2001:db8::1", 80, 0, 0)])
def test_connect_outside_loopback_is_refused(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        with pytest.raises(offline.NetworkAccessError, match="offline"):
            s.connect(address)


def test_name_resolution_outside_loopback_is_refused():
    with pytest.raises(offline.NetworkAccessError, match="huggingface.co"):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_still_works():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()


def test_hub_download_is_refused_before_any_connection(tmp_path):
    # huggingface_hub in offline mode must not even try; if it did, the guard would raise.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    with pytest.raises((LocalEntryNotFoundError, OfflineModeIsEnabled, offline.NetworkAccessError)):
        hf_hub_download("stable-diffusion-v1-5/stable-diffusion-v1-5", "unet/config.json", cache_dir=tmp_path)


def test_environment_variable_arms_the_guard_in_a_new_process():
    code = ("import socket, sdanatomy\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
            "except sdanatomy.offline.NetworkAccessError:\n    print('refused')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, offline.ENV_VAR: "1"})
    assert out.stdout.strip() == "refused", out.stderr


def test_offline_runner_refuses_unknown_commands(capsys):
    assert offline.main(["no-such-console-script"]) == 2
    assert "no console script" in capsys.readouterr().err
