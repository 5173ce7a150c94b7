#!/usr/bin/env python3
"""A scenecomp API client written with the Python standard library only.

It shows the three things a pipeline needs (docs/clients.md):
  * submit a composite asynchronously (Prefer: respond-async -> 202 + Location)
    and poll its record until it is "succeeded" or "failed";
  * retry safely: every try of one logical request carries the same
    Idempotency-Key, so a retry after a cut connection never pays twice;
  * receive the webhook and verify its Standard Webhooks signature.

    python3 scenecomp_client.py submit --scene scene.jpg --product product.png \
        [--base http://127.0.0.1:8000] [--webhook https://you.example/hook] [--user-id u1]
    WEBHOOK_SECRET=... python3 scenecomp_client.py receive --port 9000
"""
import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid


# --- webhook signature (copy this function into your receiver) -----------------
def verify_webhook(secret, headers, body, tolerance=300, now=None):
    """True when body (bytes, exactly as received) carries a valid signature.

    secret: WEBHOOK_SECRET as configured on the service ("whsec_<base64>" is
    base64-decoded into the key, as Standard Webhooks libraries do; any other
    value is used as it is). headers: a dict-like with webhook-id,
    webhook-timestamp and webhook-signature (any case). tolerance: seconds a
    timestamp may be away from now (replay protection).
    """
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        return False
    try:
        ts_int = int(ts)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - ts_int) > tolerance:
        return False
    key = secret.encode()
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[len("whsec_"):], validate=True) or key
        except ValueError:
            pass  # not base64: the service uses the secret as it is, so do we
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for sig in sigs.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False
# --------------------------------------------------------------------------------


def multipart(fields, files):
    """Builds a multipart/form-data body; returns (content_type, bytes)."""
    boundary = "scenecomp-" + uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                    % (boundary, name, value)).encode())
    for name, path in files.items():
        with open(path, "rb") as f:
            data = f.read()
        ctype = "image/png" if path.lower().endswith(".png") else "image/jpeg"
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                    "Content-Type: %s\r\n\r\n" % (boundary, name, os.path.basename(path), ctype))
                   .encode() + data + b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


def request(method, url, body=None, headers=None, timeout=30):
    """Returns (status, headers, parsed JSON or raw bytes). HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(data)
    except ValueError:
        return status, hdrs, data


def submit(base, scene, product, fields, webhook=None, tries=5):
    """Submits one composite asynchronously and returns its record (as the 202
    or, after a retry, the 200/202 replay gives it). Every try sends the same
    Idempotency-Key, so at most one composite (and one paid prediction) runs."""
    key = str(uuid.uuid4())  # one key per logical request, reused on every retry
    if webhook:
        fields = dict(fields, webhook=webhook)
    ctype, body = multipart(fields, {"scene": scene, "product": product})
    headers = {"Content-Type": ctype, "Prefer": "respond-async", "Idempotency-Key": key,
               "Accept": "application/json"}
    for attempt in range(tries):
        try:
            status, hdrs, rec = request("POST", base + "/api/composite", body, headers)
        except OSError as e:  # connection refused / reset / timed out: safe to retry
            print("try %d: %s; retrying with the same Idempotency-Key" % (attempt + 1, e),
                  file=sys.stderr)
            time.sleep(min(2 ** attempt, 30))
            continue
        if status in (200, 202):
            if hdrs.get("Idempotent-Replayed") == "true":
                print("replayed: the first try had been accepted", file=sys.stderr)
            return rec
        if status in (429, 503) or status >= 500:
            time.sleep(float(hdrs.get("Retry-After") or min(2 ** attempt, 30)))
            continue
        raise RuntimeError("composite refused: HTTP %d %s" % (status, rec))
    raise RuntimeError("no answer after %d tries" % tries)


def wait(base, record, timeout=300, every=2.0):
    """Polls GET /api/composites/<id> until the record is no longer processing."""
    end = time.time() + timeout
    while record.get("status") == "processing":
        if time.time() > end:
            raise TimeoutError("composite %s still processing" % record.get("id"))
        time.sleep(every)
        status, _, record = request("GET", "%s/api/composites/%s" % (base, record["id"]))
        if status != 200:
            raise RuntimeError("GET record: HTTP %d %s" % (status, record))
    return record


def receive(port, secret):
    """A webhook receiver on 127.0.0.1:port that verifies every delivery."""
    seen = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not verify_webhook(secret, self.headers, body):
                self.send_response(401)
                self.end_headers()
                return
            msg_id = self.headers["webhook-id"]
            if msg_id not in seen:  # a retried delivery has the same webhook-id
                seen.add(msg_id)
                rec = json.loads(body)
                print("composite %s %s (%s): %s" % (rec["id"], rec["status"], rec.get("method"),
                                                     rec.get("image_url")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit")
    s.add_argument("--base", default="http://127.0.0.1:8000")
    s.add_argument("--scene", required=True)
    s.add_argument("--product", required=True)
    s.add_argument("--user-id")
    s.add_argument("--prompt")
    s.add_argument("--webhook")
    r = sub.add_parser("receive")
    r.add_argument("--port", type=int, default=9000)
    a = p.parse_args()
    if a.cmd == "receive":
        secret = os.environ.get("WEBHOOK_SECRET")
        if not secret:
            sys.exit("set WEBHOOK_SECRET (the service's value)")
        receive(a.port, secret)
        return
    fields = {k: v for k, v in (("user_id", a.user_id), ("prompt", a.prompt)) if v}
    rec = submit(a.base, a.scene, a.product, fields, a.webhook)
    print("accepted %s (status %s)" % (rec["id"], rec["status"]))
    rec = wait(a.base, rec)
    print(json.dumps(rec, indent=2))
    if rec["status"] == "succeeded":
        status, _, data = request("GET", a.base + rec["image_url"])
        out = rec["id"] + (".png" if rec["format"] == "png" else ".jpg")
        with open(out, "wb") as f:
            f.write(data)
        print("saved", out)


if __name__ == "__main__":
    main()
