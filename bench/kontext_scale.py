#!/usr/bin/python3
"""Kontext at scale: N composites in flight at once against `scenecomp serve`.

    kontext_scale.py --port P --pid SERVER_PID --scene S.jpg --product P.png
                     [--n 1000] [--delay-s 5] [--fake-port F] [--ramp-s R]
                     [--distinct-scenes | --distinct-pixels] [--stage NAME] [--dump F]

Opens N connections to scenecomp (asyncio, one process, no thread per request),
sends N POST /api/composite (format=jpeg, Accept: image/jpeg) at once (or, with
--ramp-s R, request i at i*R/N seconds: with R below the model delay all N are
still in flight together, but the server's own CPU work is not one burst queued
on 2 cores), and reads every answer. client_max_inflight proves how many were
in flight at the same time. Meanwhile samples the server's /proc/PID/status every 50 ms.

--distinct-scenes makes every request's scene bytes unique without re-encoding: a
JPEG COM segment carrying the request index goes right after SOI, so no cache keyed
on the bytes (the Files API upload cache) can serve two requests. Only that small
segment is per request; the large parts of the body are shared bytes objects.
A server that decodes and re-encodes the scene before uploading it to the model
produces the same bytes again (the COM segment does not survive), so
--distinct-pixels goes further: before the clock starts it re-encodes the scene N
times (Pillow, JPEG q90), each with the request index drawn in the top-left
corner as 16 black/white 24x24 blocks (coarse enough to survive JPEG and a
downscale): a different scene per request, as a real pipeline sees.

The client is one asyncio process pushing N full uploads (431 MB for 1,000 x
(1080p JPEG + 1000x1000 PNG)): it reports its own CPU time over the run and how
long the writes took, so a reader can tell whether the client was the bottleneck.
Prints one line:

  tool=scenecomp stage=kontext_N completed=… kontext=… fallback=… errors=…
    p50_ms=… p99_ms=… added_p50_ms=… added_p99_ms=… vmhwm_mib=… rss_idle_mib=…
    threads_max=… threads_idle=… fake_max_inflight=… client_max_inflight=…
    upload_mb=… client_cpu_s=… client_cpu_share=… sent_p50_ms=… sent_p99_ms=…
    sent_max_ms=… to_create_p50_ms=… to_create_p99_ms=…

sent_* = from a request's start until its last byte was handed to the kernel (the
client's write queue plus the server reading it); to_create_* (bursts only) = from
the burst's start until a create reached the fake (the fake's own stamps): the part
of the added latency spent before the model starts, the fake's queue included;
client_cpu_share = the client's CPU seconds / wall seconds (1.0 = the client
saturated one core).

--dump F writes one line per request (index, start s after the first, response ms,
status): where in the run the slow ones started (a cold start, a stall).

added = response time - the fake's delay (the time a request costs beyond the
model itself). Exit status 1 when any request did not complete with method kontext.
"""
import argparse
import asyncio
import json
import os
import resource
import time
import urllib.request

BOUNDARY = "scenecompKontextScaleBoundary9f3a"


def body_parts(scene, product):
    """(head, scene_bytes, tail): the multipart body is head + scene + tail."""
    def part_head(name, path, mime):
        return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{os.path.basename(path)}"\r\nContent-Type: {mime}\r\n\r\n'
                ).encode()

    def part_field(name, value):
        return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n").encode()

    with open(scene, "rb") as f:
        scene_data = f.read()
    with open(product, "rb") as f:
        product_data = f.read()
    tail = (b"\r\n" + part_head("product", product, "image/png") + product_data + b"\r\n"
            + part_field("format", "jpeg") + part_field("prompt", "put the product on the table")
            + f"--{BOUNDARY}--\r\n".encode())
    return part_head("scene", scene, "image/jpeg"), scene_data, tail


def com_segment(i):
    """A JPEG COM segment (FF FE, big-endian length including itself) naming request i."""
    text = b"scenecomp bench request %08d" % i
    return b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text


def distinct_pixel_scenes(path, n):
    """n JPEG encodings of the scene at path, request i with its index in the corner."""
    import io
    from PIL import Image
    im = Image.open(path).convert("RGB")
    out = []
    for i in range(n):
        for bit in range(16):
            v = 255 if (i >> bit) & 1 else 0
            im.paste((v, v, v), (bit * 24, 0, bit * 24 + 24, 24))
        b = io.BytesIO()
        im.save(b, "JPEG", quality=90)
        out.append(b.getvalue())
    return out


def request(port, head, scene, tail, i=None):
    """The request as a list of bytes pieces; with i, the scene carries com_segment(i)
    after SOI (the big pieces stay shared, only the small ones are per request)."""
    if i is None:
        scene_pieces = [scene]
    else:
        if scene[:2] != b"\xff\xd8":
            raise SystemExit("--distinct-scenes needs a JPEG scene (no SOI marker)")
        scene_pieces = [scene[:2], com_segment(i), memoryview(scene)[2:]]
    n = len(head) + sum(len(x) for x in scene_pieces) + len(tail)
    hdr = (f"POST /api/composite HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
           f"Accept: image/jpeg\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n"
           ).encode()
    return [hdr, head] + scene_pieces + [tail]


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


async def one(port, req, results, sent, i, ready, go, ramp_s=0.0, n=1):
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
        w.writelines(req)
        await w.drain()
        sent[i] = time.monotonic() - t0
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
                      + ("/fallback" if hdr.get("x-composite-fallback") == "true" else ""), dt, t0)
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
    ap.add_argument("--distinct-scenes", action="store_true",
                    help="a unique JPEG COM segment in every scene (defeats byte-keyed caches)")
    ap.add_argument("--distinct-pixels", action="store_true",
                    help="every scene re-encoded with its own pixels (defeats any cache)")
    ap.add_argument("--stage", default="", help="stage name (default kontext_N[_rampRs])")
    ap.add_argument("--dump", default="", help="write one line per request: index, start s, latency ms, status")
    a = ap.parse_args()

    head, scene, tail = body_parts(a.scene, a.product)
    if a.distinct_pixels:
        reqs = [request(a.port, head, sc, tail) for sc in distinct_pixel_scenes(a.scene, a.n)]
    elif a.distinct_scenes:
        reqs = [request(a.port, head, scene, tail, i) for i in range(a.n)]
    else:
        reqs = [request(a.port, head, scene, tail)] * a.n
    upload_bytes = sum(len(x) for r in reqs for x in r)
    idle = status(a.pid)
    acc = {}
    stop = asyncio.Event()
    samp = asyncio.create_task(sampler(a.pid, stop, acc))
    results = [None] * a.n
    sent = [None] * a.n
    ready = asyncio.Semaphore(0)
    go = asyncio.Event()
    tasks = [asyncio.create_task(one(a.port, reqs[i], results, sent, i, ready, go, a.ramp_s, a.n))
             for i in range(a.n)]
    for _ in range(a.n):  # every connection open before the first request is sent
        await ready.acquire()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    tw0 = time.time()  # the fake stamps requests with time.time()
    go.set()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    sent_ms = [x * 1000 for x in sent if x is not None]
    await asyncio.sleep(0.1)
    stop.set()
    await samp
    final = status(a.pid)

    fake_max = -1
    to_create = []
    if a.fake_port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{a.fake_port}/_control/stats",
                                        timeout=30) as f:
                st = json.load(f)
            fake_max = st.get("max_inflight", -1)
            # when each create of this run reached the fake, after the burst began
            to_create = [(r["t"] - tw0) * 1000 for r in st.get("requests", [])
                         if r["method"] == "POST" and r["path"].endswith("/predictions")
                         and r["t"] >= tw0]
        except (OSError, ValueError, KeyError):
            pass
    if a.ramp_s:
        to_create = []  # a create's own start is not known when starts are spread
    if a.dump:
        with open(a.dump, "w") as f:
            for i, r in enumerate(results):
                if r:
                    f.write(f"{i} {r[3] - t0 if len(r) > 3 else -1:.4f} {r[2] * 1000:.1f} {r[0]}\n")
    ok = [r for r in results if r and r[0] == 200 and r[1] == "kontext"]
    fb = [r for r in results if r and r[0] == 200 and r[1].endswith("/fallback")]
    errs = [r for r in results if not (r and r[0] == 200)]
    lat = [r[2] * 1000 for r in ok]
    added = [x - a.delay_s * 1000 for x in lat]
    def tc(p):
        return f"{pct(to_create, p):.1f}" if to_create else "n/a"
    stage = a.stage or (f"kontext_{a.n}" + (f"_ramp{a.ramp_s:g}s" if a.ramp_s else ""))
    print(f"tool=scenecomp stage={stage} completed={len(ok)} kontext={len(ok)} "
          f"fallback={len(fb)} errors={len(errs)} "
          f"p50_ms={pct(lat, 50):.1f} p99_ms={pct(lat, 99):.1f} max_ms={max(lat, default=0):.1f} "
          f"added_p50_ms={pct(added, 50):.1f} added_p99_ms={pct(added, 99):.1f} "
          f"wall_s={wall:.2f} vmhwm_mib={max(acc.get('hwm', 0), final['VmHWM']) / 2**20:.1f} "
          f"rss_idle_mib={idle['VmRSS'] / 2**20:.1f} threads_idle={idle['Threads']} "
          f"threads_max={acc.get('threads_max', 0)} fake_max_inflight={fake_max} "
          f"client_max_inflight={INFLIGHT['max']} upload_mb={upload_bytes / 1e6:.1f} "
          f"client_cpu_s={client_cpu:.2f} client_cpu_share={client_cpu / wall if wall else 0:.2f} "
          f"sent_p50_ms={pct(sent_ms, 50):.1f} sent_p99_ms={pct(sent_ms, 99):.1f} "
          f"sent_max_ms={max(sent_ms, default=0):.1f} "
          f"to_create_p50_ms={tc(50)} to_create_p99_ms={tc(99)}",
          flush=True)
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
