"""Load test of `gemma-embed serve` on loopback: dynamic batching against one request at a time.

    python bench/load_test.py --model DIR [--clients 16] [--requests 2000] [--threads 1]
                              [--max-batch-tokens N] [--json OUT]

For each mode the server runs as its own process (so the load generator does not share its interpreter),
on a free 127.0.0.1 port: `unbatched` with --max-batch-tokens 1 (every forward pass embeds one input) and
`batched` with the default budget (or --max-batch-tokens). `--clients` concurrent clients send `--requests` single-text OpenAI
requests in all; the report gives throughput, p50/p99 latency, errors, and the batch sizes the server saw
(from /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
UNBATCHED = 1  # --max-batch-tokens 1: every forward pass embeds one input
SENTENCE = (
    "the planet orbits a star with rings of ice and rock while its moons trace slow paths through "
    "cold space and the probe sends data home about water gas dust and light"
)


@dataclass
class Result:
    mode: str
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    batches: int
    mean_batch: float
    batches_over_1: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = SENTENCE.split()
    return [" ".join(rng.choices(words, k=rng.randint(5, 40))) for _ in range(n)]


def start_server(model: str, max_batch_tokens: int | None, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "gemma_embed", "serve", "--model", model, "--port", str(port)]
    command += ["--no-access-log", "--max-queue", "4096", "--threads", str(threads)]
    if max_batch_tokens is not None:
        command += ["--max-batch-tokens", str(max_batch_tokens)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not start:\n{process.communicate()[1]}")
        time.sleep(0.1)


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


async def drive(url: str, inputs: list[str], clients: int) -> tuple[list[float], int, float]:
    """Send every input as one request from `clients` concurrent clients: latencies (s), errors, wall time."""
    pending = iter(inputs)
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for text in pending:
            start = time.perf_counter()
            try:
                response = await http.post("/v1/embeddings", json={"input": text})
                ok = response.status_code == 200 and len(response.json()["data"]) == 1
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start


def batch_stats(url: str) -> tuple[int, float, int]:
    """Forward passes, mean inputs per pass, and passes with more than one input, from /metrics."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    family = next(f for f in families if f.name == "gemma_embed_batch_size")
    values = {s.name: s.value for s in family.samples if not s.name.endswith("_bucket")}
    single = next(s.value for s in family.samples if s.name.endswith("_bucket") and s.labels["le"] == "1.0")
    count = int(values["gemma_embed_batch_size_count"])
    return count, values["gemma_embed_batch_size_sum"] / max(count, 1), count - int(single)


def run_mode(
    model: str, mode: str, budget: int | None, clients: int, requests: int, threads: int, warmup: int = 50
) -> Result:
    """One server with --max-batch-tokens `budget` (None: its default) under the load; `mode` names it."""
    process, url = start_server(model, budget, threads)
    try:
        asyncio.run(drive(url, texts(warmup, seed=1), clients))
        batches0, mean0, over0 = batch_stats(url)
        latencies, errors, seconds = asyncio.run(drive(url, texts(requests), clients))
        batches1, mean1, over1 = batch_stats(url)
    finally:
        stop_server(process)
    batches = batches1 - batches0
    inputs = mean1 * batches1 - mean0 * batches0
    ms = np.array(latencies) * 1000
    return Result(
        mode=mode,
        requests=requests,
        errors=errors,
        seconds=round(seconds, 2),
        throughput_rps=round(requests / seconds, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        batches=batches,
        mean_batch=round(inputs / max(batches, 1), 2),
        batches_over_1=over1 - over0,
    )


def compare(
    model: str, clients: int = 16, requests: int = 2000, threads: int = 1, budget: int | None = None
) -> list[Result]:
    """One request per forward pass, then dynamic batching with `budget`, with the same inputs."""
    return [
        run_mode(model, "unbatched", UNBATCHED, clients, requests, threads),
        run_mode(model, "batched", budget, clients, requests, threads),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (default: 1)")
    parser.add_argument(
        "--max-batch-tokens", type=int, help="budget of the batched server (default: the server's default)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = compare(args.model, args.clients, args.requests, args.threads, args.max_batch_tokens)
    print(
        f"{args.clients} clients, {args.requests} requests of one text each, model {args.model}, "
        f"{args.threads} torch thread(s)"
    )
    print(
        f"{'mode':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'batches':>8} {'mean batch':>11}"
    )
    for r in results:
        print(
            f"{r.mode:<10} {r.throughput_rps:>8} {r.p50_ms:>8} {r.p99_ms:>8} {r.errors:>7} {r.batches:>8} "
            f"{r.mean_batch:>11}"
        )
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from machine import machine_facts  # bench/machine.py

        from gemma_embed.io.files import write_json

        settings = {
            k: getattr(args, k) for k in ("model", "clients", "requests", "threads", "max_batch_tokens")
        }
        write_json(
            args.json,
            {
                "command": " ".join(["python bench/load_test.py", *sys.argv[1:]]),
                "machine": machine_facts(),
                **settings,
                "results": [asdict(r) for r in results],
            },
        )
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
