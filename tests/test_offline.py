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


# ---------------------------------------------------------------- no attempt, not only no success
# The guard above refuses connections, but a library that catches the refusal and carries on
# would hide the attempt. Here a workload like the book's runs in a fresh process with the guard
# off and an audit hook that only *records*: every connect, name lookup, urllib/http request and
# every unpickled global, by phase. Nothing may go outside loopback, and loading weights may not
# unpickle anything (safetensors only).
WORKLOAD = r'''
import json, os, socket, sys, tempfile
from pathlib import Path
events = []
phase = ["import"]

def record(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            events.append([phase[0], "connect", str(address[0])])
    elif event == "socket.getaddrinfo":
        events.append([phase[0], "resolve", str(args[0])])
    elif event in ("socket.sendto", "socket.sendmsg") and args and isinstance(args[-1], tuple):
        events.append([phase[0], "send", str(args[-1][0])])
    elif event == "urllib.Request":
        events.append([phase[0], "urllib", str(args[0])])
    elif event == "http.client.connect":
        events.append([phase[0], "http", str(args[1])])
    elif event == "pickle.find_class":
        events.append([phase[0], "unpickle", f"{args[0]}.{args[1]}"])

sys.addaudithook(record)
import torch, sdanatomy
from sdanatomy import ledger, miniature, offline, sd15
from sdanatomy.pages import diagrams
from sdanatomy.sd15 import tokenizer
assert not offline.network_forbidden(), "the guard must be off: this test watches attempts"
import torch.serialization
real_load = torch.load
def watched_load(*a, **k):
    events.append([phase[0], "torch.load", str(a[0]) if a else "?"])
    return real_load(*a, **k)
torch.load = torch.serialization.load = watched_load

phase[0] = "weights"
model = miniature.load()                       # sd15.load of a diffusers folder: the real-weights path
arch = sd15.load(components=("vae",), verbose=False)   # no weights: HF cache lookup, then random Θ
phase[0] = "generate"
images = miniature.generate(model, [miniature.prompt(3)], steps=4)   # tokenizer, U-Net, DDIM, VAE
ids = tokenizer.tokenize("a photograph of an astronaut riding a horse")
phase[0] = "ledger"
table = ledger.table(section="3.1")
assert table.all_ok
phase[0] = "figures"
with tempfile.TemporaryDirectory() as out:
    diagrams.write_figure(next(iter(diagrams.FIGURES)), out)
phase[0] = "kernel"
import nbformat
from nbclient import NotebookClient
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sdanatomy, torch; print(torch.ones(2).sum().item())")])
NotebookClient(nb, timeout=120, kernel_name="python3").execute()
assert nb.cells[0].outputs[0]["text"].strip() == "2.0"
phase[0] = "control"
with socket.socket() as server:                # a loopback connection: proves the hook sees sockets
    server.bind(("127.0.0.1", 0)); server.listen(1)
    socket.create_connection(server.getsockname(), timeout=5).close()
print("EVENTS " + json.dumps(events))
'''


@pytest.fixture(scope="module")
def workload_events():
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k not in (offline.ENV_VAR, "HF_HUB_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("EVENTS ")]
    assert out.returncode == 0 and lines, f"the workload failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads(lines[-1][len("EVENTS "):])


def test_workload_attempts_no_connection_outside_loopback(workload_events):
    outside = [e for e in workload_events if e[1] in ("connect", "resolve", "send", "urllib", "http")
               and not offline.is_loopback(e[2])]
    assert not outside, f"attempts to leave the machine (phase, kind, address): {outside}"


def test_the_recording_hook_sees_sockets(workload_events):
    # The control phase connects to loopback once: without it, an empty record would prove nothing.
    assert ["control", "connect", "127.0.0.1"] in workload_events


def test_weights_are_read_without_unpickling(workload_events):
    unpickled = [e for e in workload_events if e[0] == "weights" and e[1] in ("unpickle", "torch.load")]
    assert not unpickled, f"loading weights unpickled something (only safetensors may be read): {unpickled}"
