#!/usr/bin/env python3
"""Soak test: a real sluice process for MINUTES under steady load, everything on 127.0.0.1.

  file (rotating app.log*) -> remap -+-> disk buffer -> http sink -> flaky endpoint
  http_server (steady POSTs) --------+

The endpoint fails 10% of requests with 503 and goes down for 15 s of every 60. Every few
seconds the agent's RSS, open descriptors and disk-buffer size are sampled (CSV next to the
report). At the end the producers stop, the agent drains, and delivered ids are compared with
produced ones. Reports: lost (must be 0), duplicates, and the slopes of RSS and descriptors
after warm-up (first fifth skipped), which must be flat.

Usage: scripts/soak.py MINUTES [--binary PATH] [--out DIR]
"""
import argparse
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """Records the ids of delivered events; fails some requests and has outages."""

    def __init__(self):
        self.ids = {}
        self.lock = threading.Lock()
        self.started = time.time()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                phase = (time.time() - outer.started) % 60
                if phase >= 45 or random.random() < 0.10:
                    self.send_response(503)
                    self.end_headers()
                    return
                with outer.lock:
                    for line in body.splitlines():
                        if line.strip():
                            event_id = json.loads(line)["id"]
                            outer.ids[event_id] = outer.ids.get(event_id, 0) + 1
                self.send_response(200)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def file_writer(directory, stop, produced, rate=2000):
    """Appends `rate` JSON lines a second to app.log, renaming it away every ~4 MiB and
    deleting rotations older than the last five, as logrotate would."""
    path = os.path.join(directory, "app.log")
    n = 0
    rotations = 0
    log = open(path, "a")
    while not stop.is_set():
        tick = time.time()
        for _ in range(rate // 10):
            log.write(json.dumps({"id": f"f{n}", "msg": "x" * 100}) + "\n")
            n += 1
        log.flush()
        if log.tell() > 4 << 20:
            log.close()
            rotations += 1
            os.rename(path, f"{path}.{rotations}")
            if rotations > 5:
                os.remove(f"{path}.{rotations - 5}")
            log = open(path, "a")
        time.sleep(max(0, 0.1 - (time.time() - tick)))
    log.close()
    produced["file"] = n


def http_writer(port, stop, produced, rate=1000):
    """POSTs batches of 50 NDJSON events, `rate` a second, retrying until each is accepted."""
    n = 0
    while not stop.is_set():
        tick = time.time()
        for _ in range(rate // 50 // 10):
            body = "".join(json.dumps({"id": f"h{n + i}", "msg": "y" * 100}) + "\n" for i in range(50))
            while True:
                try:
                    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body.encode(), method="POST")
                    urllib.request.urlopen(request, timeout=30).read()
                    break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.2)
            n += 50
        time.sleep(max(0, 0.1 - (time.time() - tick)))
    produced["http"] = n


def sample(pid, buffer_dir):
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    size = 0
    for root, _, files in os.walk(buffer_dir):
        for name in files:
            try:
                size += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return rss, fds, size


def slope(points):
    """Least-squares slope of (t, y) points, per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points) or 1
    return sum((t - mt) * (y - my) for t, y in points) / den * 3600


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("minutes", type=float)
    parser.add_argument("--binary", default="target/release/sluice")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-soak-")
    out = args.out or work
    endpoint = Endpoint()
    http_port, api_port = free_port(), free_port()
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    config = f"""
data_dir: {work}/data
shutdown_timeout_secs: 30
api:
  enabled: true
  address: 127.0.0.1:{api_port}
sources:
  files:
    type: file
    include: ["{logs}/app.log*"]
    decoding: {{codec: json}}
  posts:
    type: http_server
    address: 127.0.0.1:{http_port}
    decoding: {{codec: json}}
transforms:
  tag:
    type: remap
    inputs: [files, posts]
    source: '.soak = true; del(.file)'
sinks:
  out:
    type: http
    inputs: [tag]
    uri: http://127.0.0.1:{endpoint.port}/
    batch: {{max_events: 1000, timeout_secs: 0.5}}
    request: {{retry_initial_backoff_ms: 100, retry_max_backoff_secs: 2}}
    buffer: {{type: disk, max_size: 268435456}}
"""
    with open(os.path.join(work, "sluice.yaml"), "w") as f:
        f.write(config)
    agent_log = open(os.path.join(out, "soak-agent.log"), "w")
    agent = subprocess.Popen([args.binary, "run", "--config", os.path.join(work, "sluice.yaml")],
                             stderr=agent_log, stdout=subprocess.DEVNULL)
    try:
        return run(args, work, out, endpoint, agent, http_port)
    finally:
        if agent.poll() is None:
            agent.kill()


def run(args, work, out, endpoint, agent, http_port):
    logs = os.path.join(work, "logs")
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    stop = threading.Event()
    produced = {}
    writers = [threading.Thread(target=file_writer, args=(logs, stop, produced)),
               threading.Thread(target=http_writer, args=(http_port, stop, produced))]
    for w in writers:
        w.start()
    samples = []
    csv_path = os.path.join(out, "soak-samples.csv")
    started = time.time()
    with open(csv_path, "w") as csv:
        csv.write("seconds,rss_kib,fds,buffer_bytes\n")
        while time.time() - started < args.minutes * 60:
            rss, fds, size = sample(agent.pid, os.path.join(work, "data", "buffers"))
            t = time.time() - started
            samples.append((t, rss, fds, size))
            csv.write(f"{t:.0f},{rss},{fds},{size}\n")
            csv.flush()
            time.sleep(5)
    stop.set()
    for w in writers:
        w.join()
    total = produced["file"] + produced["http"]
    drain_deadline = time.time() + 300
    while time.time() < drain_deadline and len(endpoint.ids) < total:
        time.sleep(1)
    final_buffer = sample(agent.pid, os.path.join(work, "data", "buffers"))[2]
    agent.send_signal(signal.SIGTERM)
    code = agent.wait(timeout=60)
    expected = {f"f{i}" for i in range(produced["file"])} | {f"h{i}" for i in range(produced["http"])}
    lost = len(expected - endpoint.ids.keys())
    duplicates = sum(c - 1 for c in endpoint.ids.values())
    warm = [s for s in samples if s[0] >= samples[-1][0] / 5]
    report = {
        "minutes": args.minutes,
        "produced": total,
        "delivered_distinct": len(endpoint.ids),
        "lost": lost,
        "duplicates": duplicates,
        "rss_kib_first_last": [warm[0][1], warm[-1][1]] if warm else None,
        "rss_kib_max": max(s[1] for s in samples) if samples else None,
        "rss_slope_kib_per_hour": round(slope([(s[0], s[1]) for s in warm]), 1),
        "fds_min_max": [min(s[2] for s in warm), max(s[2] for s in warm)] if warm else None,
        "fd_slope_per_hour": round(slope([(s[0], s[2]) for s in warm]), 2),
        "buffer_bytes_max": max(s[3] for s in samples) if samples else None,
        "buffer_bytes_after_drain": final_buffer,
        "agent_exit_code": code,
        "samples_csv": csv_path,
    }
    print(json.dumps(report, indent=2))
    return 0 if lost == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
