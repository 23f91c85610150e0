"""How fast the explorer answers: the latency of one decode as the page sees it (HTTP round trip on loopback through
uvicorn: JSON in, model, PNG, JSON out) against its parts measured in the same run (the decoder alone; the decoder and
the PNG), and a burst of concurrent decodes.

    python benchmarks/explore_latency.py RUN [RUN ...] [--requests 300] [--burst 400]

For each run: a real server on a free loopback port (as `vaekit explore` starts it); `--requests` sequential POST
/api/decode with random codes from the prior (median and 95th percentile, milliseconds); the same codes through
latent.decode_mean alone, and with the PNG encoding; then `--burst` concurrent decodes (all answered? wall time).
Writes benchmarks/results/explore-<date>.json and prints a Markdown table. Needs the explore extra.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

from vaekit import checkpoint, latent  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.serve import Explorer, bind  # noqa: E402
from vaekit.serve.app import create_app  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(run: Path, requests: int, burst: int, data_dir: str | None) -> dict:
    import httpx
    import uvicorn

    config = checkpoint.load_config(run).data
    if data_dir:
        from dataclasses import replace

        config = replace(config, data_dir=data_dir)
    model = checkpoint.load(run)
    explorer = Explorer(model, load_dataset(config), run=run.name)
    codes = model.sample_prior(requests, torch.Generator().manual_seed(0)).flatten(1)

    def timed(fn, which=None) -> list[float]:
        out = []
        for z in codes if which is None else which:
            start = time.perf_counter()
            fn(z)
            out.append((time.perf_counter() - start) * 1000)
        return out

    for z in codes[:20]:  # warm-up
        explorer.decode(z.tolist())
    decoder = timed(lambda z: latent.decode_mean(model, z.reshape(1, *model.code_shape)))
    with_png = timed(lambda z: explorer.decode(z.tolist()))

    def start(nodelay: bool):
        sock = bind("127.0.0.1", 0)
        if not nodelay:  # as a socket is by default: what the explorer's bind() changes
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        return server, thread, sock.getsockname()[1]

    server, thread, port = start(nodelay=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for z in codes[:5]:
                client.post("/api/decode", json={"z": z.tolist()})
            without_nodelay = timed(lambda z: client.post("/api/decode", json={"z": z.tolist()}).raise_for_status(),
                                    codes[:50])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    server, thread, port = start(nodelay=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for z in codes[:20]:
                client.post("/api/decode", json={"z": z.tolist()})
            http = timed(lambda z: client.post("/api/decode", json={"z": z.tolist()}).raise_for_status())

        async def many() -> tuple[list[int], float]:
            limits = httpx.Limits(max_connections=burst, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=300) as client:
                start = time.perf_counter()
                answers = await asyncio.gather(*[client.post("/api/decode", json={"z": codes[k % len(codes)].tolist()})
                                                 for k in range(burst)])
                return [a.status_code for a in answers], time.perf_counter() - start

        statuses, wall = asyncio.run(many())
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        explorer.close()

    def summary(values: list[float]) -> dict:
        return {"median_ms": round(statistics.median(values), 2), "p95_ms": round(percentile(values, 0.95), 2)}

    return {
        "run": str(run), "data": explorer.dataset.name, "data_shape": list(model.data_shape),
        "network": type(model.encoder).__name__, "code_size": explorer.code_size, "requests": requests,
        "decoder": summary(decoder), "decoder_and_png": summary(with_png), "http_round_trip": summary(http),
        "http_round_trip_without_tcp_nodelay": summary(without_nodelay),
        "round_trip_over_decoder": round(statistics.median(http) / statistics.median(decoder), 2),
        "burst": {"requests": burst, "answered_200": statuses.count(200), "wall_s": round(wall, 2),
                  "per_s": round(burst / wall, 1)},
    }


def markdown(results: dict) -> str:
    lines = [f"Explorer decode latency on {results['machine']['cpu_label']}, torch threads "
             f"{results['machine']['torch_threads']} (ms: median / 95th percentile)", "",
             "| run | data | decoder | + PNG | HTTP round trip | without TCP_NODELAY | round trip / decoder | "
             "burst: answered, wall |", "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        shape = "x".join(map(str, r["data_shape"][1:]))
        lines.append(f"| {Path(r['run']).name} | {r['data']} {shape} {r['network']} | "
                     f"{r['decoder']['median_ms']} / {r['decoder']['p95_ms']} | "
                     f"{r['decoder_and_png']['median_ms']} / {r['decoder_and_png']['p95_ms']} | "
                     f"{r['http_round_trip']['median_ms']} / {r['http_round_trip']['p95_ms']} | "
                     f"{r['http_round_trip_without_tcp_nodelay']['median_ms']} | "
                     f"{r['round_trip_over_decoder']}x | {r['burst']['answered_200']}/{r['burst']['requests']}, "
                     f"{r['burst']['wall_s']} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--data-dir", help="where the runs' data sets are (e.g. ../shared/data/faces)")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/explore-<date>.json)")
    args = parser.parse_args()
    results = {"machine": machine(),
               "runs": [measure(run, args.requests, args.burst, args.data_dir) for run in args.runs]}
    write_results("explore", results, args.out, markdown(results))


if __name__ == "__main__":
    main()
