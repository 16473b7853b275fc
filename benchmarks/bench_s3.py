"""What a logdir on object storage costs in requests and bytes: rayplex's uploader against
tensorboardX's S3 writer (one ``SummaryWriter("s3://...")`` per worker), both writing to a local
S3-compatible server (moto's, versioning on: every PUT that landed is a version, counted with
its size).

C clients (``--clients``, 500 by default: one ``Logger`` each, multiplexed over ``--procs`` Ray
tasks) log R scalars/s each for T seconds into rayplex; W tensorboardX writers (``--workers``)
do the same and are scaled to C. tensorboardX re-uploads each worker's whole event
file at every flush (``flush_secs``), so its bytes grow with the square of the run's length;
rayplex uploads each committed byte once (segments every ``RAYPLEX_UPLOAD_SEGMENT_S``).
rayplex runs the issue's 500 clients x 10 scalars/s itself and is scaled only in time (T
seconds to one hour: its PUTs are per upload round and per run, so they grow linearly);
tensorboardX (this 2-core machine runs 8 writers, as the issue allows) PUTs one whole file per
writer per flush: 500 x flushes per hour, its bytes by its formula.

    python benchmarks/bench_s3.py --clients 500 --procs 4 --rate 10 --seconds 120 \
        --workers 8 --tbx-flush-s 10 --segment-s 30
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

BUCKET = "rayplex-bench"


def server() -> tuple[Any, Any, str]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    endpoint = f"{host}:{port}"
    client = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return srv, client, endpoint


KINDS: dict[str, int] = {}
KIND_BYTES: dict[str, list[int]] = {}
"""Per top-level directory: [bytes PUT, bytes stored]."""


def versions(client: Any, prefix: str) -> tuple[int, int, int, int]:
    """(objects, PUTs, bytes PUT, bytes stored: the latest versions) under ``prefix``; the PUTs
    by top-level directory go to :data:`KINDS`."""
    keys, puts, size, latest = set(), 0, 0, 0
    KINDS.clear()
    KIND_BYTES.clear()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET,
                                                                      Prefix=prefix):
        for v in page.get("Versions", []):
            keys.add(v["Key"])
            puts += 1
            top = v["Key"][len(prefix):].split("/")[0]
            KINDS[top] = KINDS.get(top, 0) + 1
            tree = KIND_BYTES.setdefault(top, [0, 0])
            tree[0] += int(v["Size"])
            tree[1] += int(v["Size"]) if v["IsLatest"] else 0
            size += int(v["Size"])
            latest += int(v["Size"]) if v["IsLatest"] else 0
    return len(keys), puts, size, latest


def run_rayplex(endpoint: str, clients: int, procs: int, rate: float,
                seconds: float) -> dict[str, Any]:
    import ray

    import rayplex

    @ray.remote(num_cpus=0)
    def worker(ids: list[int]) -> int:
        logs = [rayplex.get_logger(f"agent/{i}", hub="bench-s3") for i in ids]
        n, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            for log in logs:
                log.add_scalar("x", float(n), step=n)
            n += 1
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
        for log in logs:
            log.flush(timeout=120)
        return n * len(logs)

    uri = f"s3://{BUCKET}/rayplex?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    hub = rayplex.init(uri, name="bench-s3")
    hub.register_indexed_group("agent", 1)
    scalars = sum(ray.get([worker.remote(list(range(p, clients, procs)))
                           for p in range(procs)]))
    rayplex.shutdown("bench-s3", timeout=300)  # everything in the bucket before it counts
    stored = sum(os.path.getsize(os.path.join(d, f))
                 for d, _, fs in os.walk(os.path.join(hub.logdir, "tensorboard")) for f in fs)
    return {"scalars": scalars, "event_bytes_stored": stored}


def run_tbx(endpoint: str, workers: int, rate: float, seconds: float,
            flush_s: float) -> dict[str, Any]:
    import threading

    from tensorboardX import SummaryWriter

    os.environ["S3_ENDPOINT"] = f"http://{endpoint}"
    counts = [0] * workers

    def worker(i: int) -> None:
        w = SummaryWriter(f"s3://{BUCKET}/tbx/w{i}", flush_secs=flush_s)
        n, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            w.add_scalar("x", float(n), n)
            n += 1
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
        w.close()
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"scalars": sum(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500, help="rayplex Loggers")
    parser.add_argument("--procs", type=int, default=4, help="Ray tasks the Loggers share")
    parser.add_argument("--workers", type=int, default=8, help="tensorboardX writers")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tbx-flush-s", type=float, default=10.0)
    parser.add_argument("--segment-s", type=float, default=10.0,
                        help="RAYPLEX_UPLOAD_SEGMENT_S for the run")
    args = parser.parse_args()
    os.environ["RAYPLEX_UPLOAD_SEGMENT_S"] = str(args.segment_s)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("RAYPLEX_STAGING_DIR", tempfile.mkdtemp(prefix="bench-s3-"))
    import ray

    ray.init(address="local", include_dashboard=False, configure_logging=False)
    srv, client, endpoint = server()
    try:
        rp = run_rayplex(endpoint, args.clients, args.procs, args.rate, args.seconds)
        rp_objects, rp_puts, rp_bytes, rp_stored = versions(client, "rayplex/")
        rp["puts_by_tree"] = dict(KINDS)
        # the store's small segments are merged and deleted as it compacts: bytes PUT twice
        rp["bytes_put_per_byte_stored_by_tree"] = {
            top: round(put / max(1, stored), 3) for top, (put, stored) in KIND_BYTES.items()}
        fixed = sum(n for top, n in KINDS.items() if top in (".rayplex", ""))
        tb = run_tbx(endpoint, args.workers, args.rate, args.seconds, args.tbx_flush_s)
        tb_objects, tb_puts, tb_bytes, tb_stored = versions(client, "tbx/")
    finally:
        srv.stop()
        ray.shutdown()
    hour = 3600.0 / args.seconds
    flushes_per_hour = 3600.0 / args.tbx_flush_s
    result = {
        "clients": args.clients, "procs": args.procs, "tbx_workers": args.workers,
        "rate": args.rate, "seconds": args.seconds,
        "rayplex": {**rp, "objects": rp_objects, "puts": rp_puts, "bytes_put": rp_bytes,
                    "bytes_stored": rp_stored,
                    "bytes_put_per_byte_stored": round(rp_bytes / max(1, rp_stored), 3),
                    "segment_s": args.segment_s,
                    "puts_per_experiment": fixed,
                    "scalars_per_s": round(rp["scalars"] / args.seconds),
                    "puts_per_hour_500_workers": round(
                        (rp_puts - fixed) * hour * 500 / args.clients + fixed * hour)},
        "tensorboardX": {**tb, "objects": tb_objects, "puts": tb_puts, "bytes_put": tb_bytes,
                         "bytes_stored": tb_stored,
                         "bytes_put_per_byte_stored": round(tb_bytes / max(1, tb_stored), 3),
                         "flush_secs": args.tbx_flush_s,
                         "puts_per_hour_500_workers": round(500 * flushes_per_hour),
                         # each flush PUTs the whole file, which grows linearly: over an hour
                         # the bytes PUT are about (flushes + 1) / 2 times the final file
                         "bytes_put_per_byte_stored_after_1h": round((flushes_per_hour + 1) / 2,
                                                                     1)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
