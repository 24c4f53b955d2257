"""`gemma-embed serve`: options, one-line errors, and a real process that stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from gemma_embed.cli import main
from gemma_embed.serve.cli import default_model_name, is_loopback
from gemma_embed.serve.settings import LOOPBACK
from helpers import free_port


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "no/such-model"], "not found"),
        (["--max-inputs", "0"], "max_inputs must be a positive integer"),
        (["--max-queue", "8", "--max-inputs", "16"], "max_queue (8) must be at least max_inputs (16)"),
        (["--default-task", "poetry"], "unknown default task 'poetry'"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--api-key", " "], "api_key is empty"),
    ],
)
def test_bad_options_fail_in_one_line(tiny_checkpoint, capsys, args, fragment):
    assert main(["serve", "--model", str(tiny_checkpoint), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.com"))


def test_model_name_is_the_directory_name(tiny_checkpoint):
    assert default_model_name(str(tiny_checkpoint)) == tiny_checkpoint.name
    assert default_model_name("google/embeddinggemma-300m") == "google/embeddinggemma-300m"


def test_serves_on_loopback_and_stops_on_sigterm(tiny_checkpoint):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gemma_embed",
        "serve",
        "--model",
        str(tiny_checkpoint),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://{LOOPBACK}:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        # /health says ok only after the warm-up compiled the kernels, so httpx's default 5 s timeout holds
        response = httpx.post(f"http://{LOOPBACK}:{port}/embed", json={"inputs": ["Mars", "Venus"]})
        assert response.status_code == 200 and len(response.json()) == 2
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode in (0, -signal.SIGTERM), err
    assert f"Uvicorn running on http://{LOOPBACK}:{port}" in err
    assert "Traceback" not in err and "Finished server process" in err
    assert (
        "computes in" in err and "warm-up:" in err
    )  # the dtype and its reason, then the warm-up, are logged
