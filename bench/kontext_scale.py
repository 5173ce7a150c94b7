#!/usr/bin/python3
"""Kontext at scale: N composites in flight at once against `scenecomp serve`.

    kontext_scale.py --port P --pid SERVER_PID --scene S.jpg --product P.png
                     [--n 1000] [--delay-s 5] [--fake-port F] [--ramp-s R]

Opens N connections to scenecomp (asyncio, one process, no thread per request),
sends N POST /api/composite (format=jpeg, Accept: image/jpeg) at once (or, with
--ramp-s R, request i at i*R/N seconds: with R below the model delay all N are
still in flight together, but the server's own CPU work is not one burst queued
on 2 cores), and reads every answer. client_max_inflight proves how many were
in flight at the same time. Meanwhile samples the server's /proc/PID/status every 50 ms.
Prints one line:

  tool=scenecomp stage=kontext_N completed=… kontext=… fallback=… errors=…
    p50_ms=… p99_ms=… added_p50_ms=… added_p99_ms=… vmhwm_mib=… rss_idle_mib=…
    threads_max=… threads_idle=… fake_max_inflight=…

added = response time - the fake's delay (the time a request costs beyond the
model itself). Exit status 1 when any request did not complete with method kontext.
"""
import argparse
import asyncio
import json
import os
import time
import urllib.request

BOUNDARY = "scenecompKontextScaleBoundary9f3a"


def body(scene, product):
    def part_file(name, path, mime):
        with open(path, "rb") as f:
            data = f.read()
        return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{os.path.basename(path)}"\r\nContent-Type: {mime}\r\n\r\n'
                ).encode() + data + b"\r\n"

    def part_field(name, value):
        return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n").encode()

    return (part_file("scene", scene, "image/jpeg") + part_file("product", product, "image/png")
            + part_field("format", "jpeg") + part_field("prompt", "put the product on the table")
            + f"--{BOUNDARY}--\r\n".encode())


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    return out


INFLIGHT = {"now": 0, "max": 0}


async def one(port, req, results, i, ready, go, ramp_s=0.0, n=1):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        results[i] = ("connect", str(e), 0.0)
        ready.release()
        return
    ready.release()
    await go.wait()
    if ramp_s:
        await asyncio.sleep(i * ramp_s / n)
    t0 = time.monotonic()
    INFLIGHT["now"] += 1
    INFLIGHT["max"] = max(INFLIGHT["max"], INFLIGHT["now"])
    try:
        w.write(req)
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split()[1])
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip()
        n = int(hdr.get("content-length", "0"))
        await r.readexactly(n)
        dt = time.monotonic() - t0
        results[i] = (code, hdr.get("x-composite-method", "?")
                      + ("/fallback" if hdr.get("x-composite-fallback") == "true" else ""), dt)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        results[i] = ("io", repr(e), time.monotonic() - t0)
    finally:
        INFLIGHT["now"] -= 1
        w.close()


async def sampler(pid, stop, acc):
    while not stop.is_set():
        try:
            s = status(pid)
            acc["threads_max"] = max(acc.get("threads_max", 0), s["Threads"])
            acc["hwm"] = s["VmHWM"]
        except OSError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))] if xs else float("nan")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--product", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--delay-s", type=float, default=5.0)
    ap.add_argument("--fake-port", type=int, default=0)
    ap.add_argument("--ramp-s", type=float, default=0.0)
    a = ap.parse_args()

    b = body(a.scene, a.product)
    req = (f"POST /api/composite HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
           f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
           f"Accept: image/jpeg\r\nConnection: close\r\nContent-Length: {len(b)}\r\n\r\n"
           ).encode() + b
    idle = status(a.pid)
    acc = {}
    stop = asyncio.Event()
    samp = asyncio.create_task(sampler(a.pid, stop, acc))
    results = [None] * a.n
    ready = asyncio.Semaphore(0)
    go = asyncio.Event()
    tasks = [asyncio.create_task(one(a.port, req, results, i, ready, go, a.ramp_s, a.n))
             for i in range(a.n)]
    for _ in range(a.n):  # every connection open before the first request is sent
        await ready.acquire()
    t0 = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    await asyncio.sleep(0.1)
    stop.set()
    await samp
    final = status(a.pid)

    fake_max = -1
    if a.fake_port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{a.fake_port}/_control/stats",
                                        timeout=10) as f:
                fake_max = json.load(f).get("max_inflight", -1)
        except (OSError, ValueError):
            pass
    ok = [r for r in results if r and r[0] == 200 and r[1] == "kontext"]
    fb = [r for r in results if r and r[0] == 200 and r[1].endswith("/fallback")]
    errs = [r for r in results if not (r and r[0] == 200)]
    lat = [r[2] * 1000 for r in ok]
    added = [x - a.delay_s * 1000 for x in lat]
    stage = f"kontext_{a.n}" + (f"_ramp{a.ramp_s:g}s" if a.ramp_s else "")
    print(f"tool=scenecomp stage={stage} completed={len(ok)} kontext={len(ok)} "
          f"fallback={len(fb)} errors={len(errs)} "
          f"p50_ms={pct(lat, 50):.1f} p99_ms={pct(lat, 99):.1f} max_ms={max(lat, default=0):.1f} "
          f"added_p50_ms={pct(added, 50):.1f} added_p99_ms={pct(added, 99):.1f} "
          f"wall_s={wall:.2f} vmhwm_mib={max(acc.get('hwm', 0), final['VmHWM']) / 2**20:.1f} "
          f"rss_idle_mib={idle['VmRSS'] / 2**20:.1f} threads_idle={idle['Threads']} "
          f"threads_max={acc.get('threads_max', 0)} fake_max_inflight={fake_max} "
          f"client_max_inflight={INFLIGHT['max']}", flush=True)
    if errs or fb:
        kinds = {}
        for r in errs + fb:
            k = f"{r[0]}:{r[1]}"[:120] if r else "none"
            kinds[k] = kinds.get(k, 0) + 1
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
            print(f"#   {v} x {k}", flush=True)
    return 0 if len(ok) == a.n else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
