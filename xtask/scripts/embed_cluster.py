"""Embeds a corpus into a GeAR store over a Ray cluster: one Ray task per shard, each running
our own `gear index build --store URL --shard I/N` on its contiguous range of the corpus. A shard
writes its documents in transactions keyed by document row, so a task whose worker or process
dies is retried by Ray (max_retries) and writes only what is missing. Run by
`cargo xtask embed-cluster` (which then runs `gear index finish`); the gear binary and the corpus
must be at the same paths on every node.

Prints one JSON object, the last line: per shard, what its last attempt wrote (and, on a cluster
this script started, the attempts it took).

usage: embed_cluster.py --gear BIN --corpus FILE --store URL --shards N
       [--address HOST:PORT | --start-local CPUS] [--schema S] [gear index build options ...]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def start_local(cpus: int, temp: str) -> tuple[subprocess.Popen, str]:
    """A Ray head on loopback (`ray start --head --block`), stopped by its PID afterwards."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    log = open(os.path.join(temp, "ray-head.log"), "w")
    head = subprocess.Popen(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}", "--block"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if head.poll() is not None:
            raise SystemExit(f"ray start exited with {head.returncode}: see {log.name}")
        with open(log.name) as f:
            if "Ray runtime started" in f.read():
                return head, f"127.0.0.1:{port}"
        time.sleep(0.2)
    stop_local(head)
    raise SystemExit(f"the Ray head did not start in 120 s: see {log.name}")


def stop_local(head: subprocess.Popen) -> None:
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gear", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--schema", default="gear")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--retries", type=int, default=3)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--address")
    where.add_argument("--start-local", type=int, metavar="CPUS")
    args, build_args = p.parse_known_args()

    import ray

    temp = tempfile.mkdtemp(prefix="gear-ray-")
    head, address = (None, args.address)
    if args.start_local:
        head, address = start_local(args.start_local, temp)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        env = {k: v for k, v in os.environ.items() if k in ("LD_LIBRARY_PATH", "GEAR_HOME", "PATH")}

        @ray.remote(num_cpus=1, max_retries=args.retries, retry_exceptions=True)
        def shard(i: int, attempts_dir: str | None) -> dict:
            # On a local cluster, count the attempts (a retried task runs this again).
            if attempts_dir is not None:
                with open(os.path.join(attempts_dir, f"shard-{i}"), "a") as f:
                    f.write(f"{os.getpid()}\n")
            cmd = [args.gear, "index", "build", "--corpus", args.corpus, "--store", args.store,
                   "--schema", args.schema, "--shard", f"{i}/{args.shards}", *build_args]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
            if done.returncode != 0:
                raise RuntimeError(f"shard {i}/{args.shards}: gear exited with {done.returncode}: {done.stderr[-2000:]}")
            return json.loads(done.stdout.strip().splitlines()[-1])

        started = time.time()
        local = temp if head is not None else None
        pending = {shard.remote(i, local): i for i in range(args.shards)}
        reports = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            r = ray.get(ready[0])
            del pending[ready[0]]
            reports.append(r)
            print(f"shard {r['shard']}/{args.shards} done ({len(reports)}/{args.shards}): documents {r['first']}..{r['end']}, "
                  f"wrote {r['written']}, {r['present']} already in the store", file=sys.stderr, flush=True)
        reports.sort(key=lambda r: r["shard"])
        for r in reports if local else []:
            with open(os.path.join(local, f"shard-{r['shard']}")) as f:
                r["attempts"] = len(f.read().split())
        print(json.dumps({"address": address, "seconds": time.time() - started, "shards": reports}))
    finally:
        ray.shutdown()
        if head is not None:
            stop_local(head)


if __name__ == "__main__":
    main()
