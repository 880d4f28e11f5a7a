#!/usr/bin/env python3
"""Server CPU time per event, for comparing builds on a shared machine.

    loadtest/scripts/cpu_per_event.py HARNESS LABEL=SERVER_BIN [LABEL=SERVER_BIN ...]

For each LABEL=SERVER_BIN (a `loadtest` binary whose `serve` mode is the server under test),
starts `SERVER_BIN serve --shards 1` pinned to core 0, then runs HARNESS pinned to core 1 three
times, closed loop, ingest only, with the commands of docs/loadtest.md ("Results"): TCP loading
the catalog (`tcp+`), then WebSocket and TCP with `--no-catalog`. For each run it prints the
harness's events/s and the server's CPU time per event ingested (utime + stime from
/proc/PID/task/*/stat, by thread: `shard`, `actix` = the HTTP/WebSocket worker, `tokio` = the
TCP front end; events from the engine's `stats`). Throughput on a machine that other jobs share
moves with their load; CPU time per event moves much less, so builds compare on it.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

HZ = os.sysconf("SC_CLK_TCK")


def group(comm):
    for prefix, name in (("nudge-shard", "shard"), ("actix", "actix"), ("nudge-io", "tokio")):
        if comm.startswith(prefix):
            return name
    return "other"


def cpu_by_group(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        g = group(comm)
        out[g] = out.get(g, 0.0) + (int(fields[11]) + int(fields[12])) / HZ
    return out


def events_total(tcp):
    host, port = tcp.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b'{"op":"stats","id":1}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            buf += chunk
    return sum(shard["events_total"] for shard in json.loads(buf)["stats"]["shards"])


def measure(label, server, harness, out_dir):
    p = subprocess.Popen(
        ["taskset", "-c", "0", server, "serve", "--shards", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        tcp = re.search(r"tcp=(\S+)", line).group(1)
        http = re.search(r"http=(\S+)", line).group(1)
        for run in ["tcp+", "ws", "tcp"]:
            target = {"tcp": f"tcp://{tcp}", "ws": f"ws://{http}/v1/ws"}[run.rstrip("+")]
            summary = os.path.join(out_dir, f"{label}-{run}.json")
            args = ["taskset", "-c", "1", harness, "--target", target, "--mix", "1",
                    "--connections", "4", "--pipeline", "256", "--duration", "8",
                    "--warmup", "2", "--json", summary]
            if not run.endswith("+"):
                args.append("--no-catalog")
            load = open("/proc/loadavg").read().split()[0]
            cpu0, events0 = cpu_by_group(p.pid), events_total(tcp)
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            cpu1, events1 = cpu_by_group(p.pid), events_total(tcp)
            j = json.load(open(summary))
            n = max(events1 - events0, 1)
            per = {g: (cpu1.get(g, 0.0) - cpu0.get(g, 0.0)) / n * 1e6 for g in cpu1}
            detail = " ".join(f"{g}={v:.2f}" for g, v in sorted(per.items()) if v >= 0.01)
            print(f"{label:10} {run:4} load {load:>5}  {round(j['events_per_s']):>7} events/s  "
                  f"valid={j['valid']} errors={len(j['errors'])}  "
                  f"server CPU {sum(per.values()):.2f} us/event ({detail})", flush=True)
    finally:
        p.kill()
        p.wait()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    harness = sys.argv[1]
    with tempfile.TemporaryDirectory() as out_dir:
        for spec in sys.argv[2:]:
            label, server = spec.split("=", 1)
            measure(label, server, harness, out_dir)


if __name__ == "__main__":
    main()
