#!/usr/bin/python3
"""The floor under the Kontext burst: the fake Replicate alone answering N creates.

    fake_creates.py --fake-port F --scene S.jpg --product P.png [--n 1000] [--pid FAKE_PID]

Sends what scenecomp sends for one composite of the kontext_N stages, N times at
once, straight to tests/fake/fake_replicate.py: the scene goes up once through the
Files API (as scenecomp's upload cache does), then N connections each POST the
create with the same input (scene file URL, product data URI). No Prefer header:
the fake answers each create at once, so the times are its own cost of taking a
create, not the model's delay. The client is one asyncio process that does
nothing else. On the bench's 2 cores the fake shares the CPU only with this
client here; in kontext_N it shares it with scenecomp and a client pushing 432 MB.

Prints one line:

  tool=fake stage=fake_creates_N completed=… p50_ms=… p99_ms=… max_ms=…
    fake_cpu_ms_per_req=… client_cpu_s=…

A scenecomp burst's added p99 cannot be below this p99 on the same host: each of
its composites needs one such create.
"""
import argparse
import asyncio
import base64
import json
import os
import resource
import time
import urllib.request

KONTEXT = "/v1/models/flux-kontext-apps/multi-image-kontext-pro/predictions"
TOKEN = "test"


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def upload(port, path):
    """The scene through POST /v1/files; returns its urls.get."""
    data = open(path, "rb").read()
    b = "fakeCreatesBoundary7c1e"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="content"; '
            f'filename="{os.path.basename(path)}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode() + data + f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/files", data=body, method="POST",
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": f"multipart/form-data; boundary={b}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["urls"]["get"]


async def one(port, req, go, t0, lat, status):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    await go.wait()
    w.write(req)
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    await r.readexactly(n)
    lat.append((time.monotonic() - t0[0]) * 1000)
    status.append(int(head.split()[1]))
    w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fake-port", type=int, required=True)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--product", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pid", type=int, default=0, help="the fake's pid, for its CPU time")
    a = ap.parse_args()

    scene_url = upload(a.fake_port, a.scene)
    product = open(a.product, "rb").read()
    body = json.dumps({"input": {
        "prompt": "Place the product from the second image naturally into the scene",
        "input_image_1": scene_url,
        "input_image_2": "data:image/png;base64," + base64.b64encode(product).decode(),
        "aspect_ratio": "match_input_image", "output_format": "jpg", "safety_tolerance": 2,
    }}, separators=(",", ":")).encode()
    req = (f"POST {KONTEXT} HTTP/1.1\r\nHost: 127.0.0.1:{a.fake_port}\r\n"
           f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    go, t0, lat, status = asyncio.Event(), [0.0], [], []
    tasks = [asyncio.create_task(one(a.fake_port, req, go, t0, lat, status))
             for _ in range(a.n)]
    await asyncio.sleep(0.5)  # every connection open (and its fake thread started) first
    f0 = cpu_ticks(a.pid) if a.pid else 0
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0[0] = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    f1 = cpu_ticks(a.pid) if a.pid else 0
    lat.sort()
    ok = sum(1 for s in status if s == 201)
    tck = os.sysconf("SC_CLK_TCK")
    fake_ms = (f1 - f0) / tck * 1000 / a.n if a.pid else -1
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    def pct(p):  # as bench/kontext_scale.py
        return lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))]
    print(f"tool=fake stage=fake_creates_{a.n} completed={ok} p50_ms={pct(50):.1f} "
          f"p99_ms={pct(99):.1f} max_ms={lat[-1]:.1f} "
          f"fake_cpu_ms_per_req={fake_ms:.3f} client_cpu_s={client:.2f}", flush=True)
    return 0 if ok == a.n else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
