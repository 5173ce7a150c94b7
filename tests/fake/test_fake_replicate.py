"""The fake Replicate server speaks the real protocol (reference §12): these tests
pin its behaviour so that the C client's tests against it mean something.

Run: /usr/bin/python3 -m pytest -q tests/fake
"""

import base64
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.fake.fake_replicate import E005, image_size, parse_cancel_after, png_bytes  # noqa: E402
from tests.fake.harness import FakeReplicate  # noqa: E402

TOKEN = "r8_pytestFakeToken"
KONTEXT = "/models/flux-kontext-apps/multi-image-kontext-pro/predictions"
SCHNELL = "/models/black-forest-labs/flux-schnell/predictions"


def data_uri(w, h):
    return "data:image/png;base64," + base64.b64encode(png_bytes(w, h)).decode()


def kontext_input(w=32, h=24, **kw):
    inp = {"prompt": "place it", "input_image_1": data_uri(w, h), "input_image_2": data_uri(8, 8),
           "aspect_ratio": "match_input_image", "output_format": "png", "safety_tolerance": 2}
    inp.update(kw)
    return {"input": inp}


@pytest.fixture(scope="module")
def server():
    with FakeReplicate(token=TOKEN) as f:
        yield f


@pytest.fixture
def fake(server):
    server.reset()
    yield server


def fetch(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


# ---- auth ----

def test_missing_token_is_401(fake):
    st, hdrs, body = fake.api("POST", KONTEXT, kontext_input(), headers={"Authorization": None})
    assert st == 401
    assert hdrs["Content-Type"] == "application/problem+json"
    assert body == {"title": "Unauthenticated", "status": 401,
                    "detail": "You did not pass an authentication token"}


def test_wrong_token_is_401(fake):
    st, _, body = fake.api("GET", "/predictions/abc", headers={"Authorization": "Bearer nope"})
    assert st == 401 and body["detail"] == "You did not pass a valid authentication token"
    assert TOKEN not in str(body)


def test_token_scheme_also_accepted(fake):
    st, _, body = fake.api("POST", KONTEXT, kontext_input(),
                           headers={"Authorization": "Token " + TOKEN})
    assert st == 201 and body["status"] == "starting"
    rec = [r for r in fake.stats()["requests"] if r["path"].endswith("/predictions")][-1]
    assert rec["auth"] == "token" and rec["headers"]["Authorization"] == "<redacted>"


def test_requests_recorded_without_token(fake):
    fake.api("POST", KONTEXT, kontext_input())
    fake.api("POST", KONTEXT, kontext_input(), headers={"X-Leak": TOKEN})
    reqs = fake.stats()["requests"]
    assert [r["token_elsewhere"] for r in reqs] == [False, True]
    assert all(r["auth_ok"] for r in reqs)
    assert TOKEN not in str(fake.stats())


# ---- routing and validation ----

def test_unknown_model_and_route_404(fake):
    st, hdrs, body = fake.api("POST", "/models/someone/private-model/predictions", kontext_input())
    assert st == 404 and body == {"detail": "The requested resource could not be found.",
                                  "status": 404}
    st, _, _ = fake.api("GET", "/nothing/here")
    assert st == 404
    fake.configure(mode="unknown_model")
    st, _, _ = fake.api("POST", KONTEXT, kontext_input())
    assert st == 404
    assert fake.stats()["creates"] == 0


def test_422_input_validation(fake):
    st, _, body = fake.api("POST", SCHNELL, {"input": {"num_inference_steps": 9,
                                                       "megapixels": 1}})
    assert st == 422 and body["title"] == "Input validation failed"
    fields = {(f["type"], f["field"]) for f in body["invalid_fields"]}
    assert ("required", "input") in fields
    assert ("number_lte", "input.num_inference_steps") in fields
    assert ("enum", "input.megapixels") in fields  # a string enum, not a number
    assert body["detail"].startswith("- input: prompt is required\n")

    st, _, body = fake.api("POST", KONTEXT, kontext_input(output_format="webp",
                                                          safety_tolerance=5))
    assert st == 422
    fields = {f["field"] for f in body["invalid_fields"]}
    assert fields == {"input.output_format", "input.safety_tolerance"}


def test_422_extra_top_level_key_and_400_bad_json(fake):
    body = kontext_input()
    body["model"] = "x"
    st, _, b = fake.api("POST", KONTEXT, body)
    assert st == 422 and b["invalid_fields"][0]["type"] == "additional_property_not_allowed"
    st, _, b = fake.api("POST", KONTEXT, raw=b"{nope")
    assert st == 400 and b["detail"].startswith("Failed to parse request body as JSON")


def test_create_by_version(fake):
    st, _, b = fake.api("POST", "/predictions", {"version": "black-forest-labs/flux-schnell",
                                                 "input": {"prompt": "x"}})
    assert st == 201 and b["model"] == "black-forest-labs/flux-schnell"
    st, _, b = fake.api("POST", "/predictions", {"version": "nobody/nothing", "input": {}})
    assert st == 422 and b["title"] == "Invalid version or not permitted"
    st, _, b = fake.api("POST", "/predictions", {"input": {"prompt": "x"}})
    assert st == 422 and b["invalid_fields"]


# ---- lifecycle ----

def test_async_create_object_and_polling(fake):
    fake.configure(delay_ms=400)
    st, hdrs, p = fake.api("POST", KONTEXT, kontext_input(40, 30))
    assert st == 201
    assert re.fullmatch(r"[a-z0-9]{26}", p["id"])
    assert p["status"] == "starting" and p["output"] is None and p["version"] == "hidden"
    assert p["urls"]["get"] == fake.base_url + "/predictions/" + p["id"]
    assert p["urls"]["cancel"] == p["urls"]["get"] + "/cancel"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", p["created_at"])
    assert "Preference-Applied" not in hdrs
    seen = []
    for _ in range(100):
        st, _, q = fake.api("GET", "/predictions/" + p["id"])
        assert st == 200
        seen.append(q["status"])
        if q["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert seen[-1] == "succeeded" and "processing" in seen
    assert q["completed_at"] and q["metrics"]["predict_time"] >= 0
    st, ctype, data = fetch(q["output"])
    assert st == 200 and ctype == "image/png"
    assert image_size(data) == (40, 30)  # output sized like input_image_1
    st, _, _ = fake.api("GET", "/predictions/zzzzzzzzzzzzzzzzzzzzzzzzzz")
    assert st == 404


def test_output_image_is_made_while_the_prediction_runs(fake):
    # The real service's output exists when its prediction succeeds: the fake
    # encodes it from the create on, so no download waits for the encode.
    fake.configure(delay_ms=60000, output_width=321, output_height=123)
    st, _, p = fake.api("POST", KONTEXT, kontext_input())
    assert st == 201
    for _ in range(200):
        s = fake.stats()
        if "321x123.png" in s["output_images"]:
            break
        time.sleep(0.05)
    assert "321x123.png" in s["output_images"]
    assert s["downloads"] == 0 and s["predictions"][p["id"]] != "succeeded"


def test_prefer_wait_holds_until_done(fake):
    fake.configure(delay_ms=500)
    t0 = time.time()
    st, hdrs, p = fake.api("POST", KONTEXT, kontext_input(), headers={"Prefer": "wait"})
    assert st == 201 and p["status"] == "succeeded"
    assert hdrs["Preference-Applied"] == "wait"
    assert time.time() - t0 >= 0.45
    assert isinstance(p["output"], str) and p["output"].endswith(".png")


def test_prefer_wait_n_expires_incomplete(fake):
    fake.configure(mode="slow")
    t0 = time.time()
    st, hdrs, p = fake.api("POST", KONTEXT, kontext_input(), headers={"Prefer": "wait=1"})
    took = time.time() - t0
    assert st == 201 and p["status"] in ("starting", "processing") and p["output"] is None
    assert hdrs["Preference-Applied"] == "wait=1"
    assert 0.9 <= took < 5
    assert fake.stats()["inflight"] == 1


def test_schnell_array_output(fake):
    fake.configure(delay_ms=50)
    st, _, p = fake.api("POST", SCHNELL, {"input": {"prompt": "x", "num_outputs": 2,
                                                    "output_format": "png"}},
                        headers={"Prefer": "wait=5"})
    assert p["status"] == "succeeded" and len(p["output"]) == 2
    assert p["output"][1].endswith("/out-1.png")


def test_cancel_counts_and_terminal_unchanged(fake):
    fake.configure(mode="slow")
    _, _, p = fake.api("POST", KONTEXT, kontext_input())
    st, _, c = fake.api("POST", "/predictions/%s/cancel" % p["id"])
    assert st == 200 and c["status"] == "canceled" and c["output"] is None
    assert c["completed_at"] and "metrics" in c
    st, _, c2 = fake.api("POST", "/predictions/%s/cancel" % p["id"])
    assert c2["status"] == "canceled"  # already terminal: unchanged
    s = fake.stats()
    assert s["cancels"] == 2 and s["inflight"] == 0 and s["max_inflight"] == 1


def test_cancel_ends_a_held_prefer_wait(fake):
    fake.configure(mode="slow")
    out = {}

    def held():
        out["t0"] = time.time()
        out["r"] = fake.api("POST", KONTEXT, kontext_input(), headers={"Prefer": "wait=60"})
        out["t1"] = time.time()

    th = threading.Thread(target=held)
    th.start()
    pid = None
    for _ in range(100):
        preds = fake.stats()["predictions"]
        if preds:
            pid = next(iter(preds))
            break
        time.sleep(0.05)
    assert pid
    t_cancel = time.time()
    st, _, _ = fake.api("POST", "/predictions/%s/cancel" % pid)
    th.join(10)
    assert st == 200 and not th.is_alive()
    st, _, p = out["r"]
    assert st == 201 and p["id"] == pid and p["status"] == "canceled"
    assert out["t1"] - t_cancel < 2  # woken by the cancel, not by the 60 s wait


def raw_exchange(port, data, timeout=5):
    """Sends data on one connection and reads until the fake closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                return got
            got += d


def status_lines(raw):
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)


def test_http_errors_close_the_connection(fake):
    assert status_lines(raw_exchange(fake.port, b"GARBAGE\r\n\r\n")) == [b"400"]
    assert status_lines(raw_exchange(fake.port, b"GET / HTTP/2.0\r\n\r\n")) == [b"505"]
    big = b"GET /_control/stats HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
    assert status_lines(raw_exchange(fake.port, big)) == [b"431"]
    put = b"PUT /v1/files HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert status_lines(raw_exchange(fake.port, put)) == [b"501"]


def test_http_keep_alive_pipelining_and_100_continue(fake):
    # two requests in one write: both answered, in order, on one connection
    two = (b"GET /_control/stats HTTP/1.1\r\n\r\n"
           b"GET /v1/nothing HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode()
           + b"\r\nConnection: close\r\n\r\n")
    assert status_lines(raw_exchange(fake.port, two)) == [b"200", b"404"]
    # Expect: 100-continue: the interim answer comes before the body is sent
    body = json.dumps(kontext_input()).encode()
    head = ("POST /v1%s HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: "
            "application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n"
            "Connection: close\r\n\r\n" % (KONTEXT, TOKEN, len(body))).encode()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(head)
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    assert status_lines(got) == [b"201"]
    # HTTP/1.0 closes after its answer unless it asks for keep-alive
    assert status_lines(raw_exchange(fake.port, b"GET /_control/stats HTTP/1.0\r\n\r\n")) == [b"200"]


def test_cancel_after(fake):
    fake.configure(mode="slow")
    st, _, b = fake.api("POST", KONTEXT, kontext_input(), headers={"Cancel-After": "3s"})
    assert st == 422
    st, _, p = fake.api("POST", KONTEXT, kontext_input(), headers={"Cancel-After": "1m5s"})
    assert st == 201 and p["deadline"]
    assert parse_cancel_after("1h30m45s") == 5445 and parse_cancel_after("30") == 30
    assert parse_cancel_after("soon") is None


def test_failed_mode(fake):
    fake.configure(mode="failed", delay_ms=50)
    _, _, p = fake.api("POST", KONTEXT, kontext_input(), headers={"Prefer": "wait=5"})
    assert p["status"] == "failed" and p["error"] == E005 and p["output"] is None


def test_max_inflight(fake):
    fake.configure(delay_ms=800)
    for _ in range(3):
        fake.api("POST", KONTEXT, kontext_input())
    s = fake.stats()
    assert s["creates"] == 3 and s["max_inflight"] == 3


# ---- faults ----

def test_rate429_with_retry_after(fake):
    fake.configure(mode="rate429", rate429_count=1, retry_after=2)
    st, hdrs, b = fake.api("POST", KONTEXT, kontext_input())
    assert st == 429 and hdrs["Retry-After"] == "2" and b["retry_after"] == 2
    assert "throttled" in b["detail"]
    assert fake.stats()["creates"] == 0  # a throttled create creates nothing
    st, _, _ = fake.api("POST", KONTEXT, kontext_input())
    assert st == 201


def test_http500_json_and_html(fake):
    fake.configure(mode="http500", http500_count=1)
    st, _, b = fake.api("POST", KONTEXT, kontext_input())
    assert st == 500 and b == {"detail": "Internal server error"}
    st, _, _ = fake.api("POST", KONTEXT, kontext_input())
    assert st == 201
    fake.configure(mode="http500", http500_html=True, http500_count=-1)
    st, hdrs, b = fake.api("POST", KONTEXT, kontext_input())
    assert st == 500 and hdrs["Content-Type"] == "text/html" and b.startswith(b"<html>")


def test_malformed_non_image_data_uri(fake):
    fake.configure(mode="malformed_json")
    st, _, b = fake.api("POST", KONTEXT, kontext_input())
    assert st == 201 and isinstance(b, bytes)  # not parseable
    fake.configure(mode="non_image_output", delay_ms=10)
    _, _, p = fake.api("POST", KONTEXT, kontext_input(), headers={"Prefer": "wait=5"})
    st, ctype, data = fetch(p["output"])
    assert ctype == "text/html" and image_size(data) is None
    fake.configure(mode="data_uri_output", delay_ms=10)
    _, _, p = fake.api("POST", KONTEXT, kontext_input(20, 10), headers={"Prefer": "wait=5"})
    assert p["output"].startswith("data:image/png;base64,")
    assert image_size(base64.b64decode(p["output"].split(",", 1)[1])) == (20, 10)


def test_processing_with_output_quirk(fake):
    fake.configure(mode="processing_with_output", delay_ms=600)
    _, _, p = fake.api("POST", KONTEXT, kontext_input(), headers={"Prefer": "wait=5"})
    assert p["status"] == "processing" and p["output"] and "completed_at" not in p
    time.sleep(0.5)
    _, _, q = fake.api("GET", "/predictions/" + p["id"])
    assert q["status"] == "succeeded"


def test_hang_never_answers(fake):
    fake.configure(mode="hang")
    with pytest.raises(Exception):
        req = urllib.request.Request(fake.base_url + KONTEXT, data=b"{}", method="POST",
                                     headers={"Authorization": "Bearer " + TOKEN})
        urllib.request.urlopen(req, timeout=1)
    assert fake.stats()["hangs"] == 1


def test_control_rejects_unknown_keys(fake):
    with pytest.raises(urllib.error.HTTPError):
        fake.configure(no_such_option=1)


# ---- Files API (§2.6) ----

def multipart(parts, boundary="----scenecompTestBoundary"):
    """(content_type, body) for parts = [(name, filename|None, ctype|None, bytes)]."""
    out = []
    for name, filename, ctype, data in parts:
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        head = "--%s\r\nContent-Disposition: %s\r\n" % (boundary, disp)
        if ctype:
            head += "Content-Type: %s\r\n" % ctype
        out.append(head.encode() + b"\r\n" + data + b"\r\n")
    body = b"".join(out) + ("--%s--\r\n" % boundary).encode()
    return "multipart/form-data; boundary=" + boundary, body


def upload(fake, data, filename="product.png", ctype="image/png", extra=None, headers=None):
    ct, body = multipart([("content", filename, ctype, data)] + (extra or []))
    h = {"Content-Type": ct}
    h.update(headers or {})
    return fake.api("POST", "/files", raw=body, headers=h)


def test_file_upload_object_get_download_delete(fake):
    data = png_bytes(40, 30)
    st, _, obj = upload(fake, data, extra=[("metadata", None, None, b'{"k": "v"}')])
    assert st == 201, obj
    assert obj["name"] == "product.png" and obj["content_type"] == "image/png"
    assert obj["size"] == len(data)
    import hashlib
    assert obj["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert obj["metadata"] == {"k": "v"}
    assert obj["urls"]["get"] == fake.base_url + "/files/" + obj["id"]
    created = obj["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", obj["expires_at"])
    assert obj["expires_at"] > created  # default lifetime 24 h
    st, _, again = fake.api("GET", obj["urls"]["get"])
    assert st == 200 and again["id"] == obj["id"]
    st, _, raw = fake.api("GET", obj["urls"]["get"] + "/download")
    assert st == 200 and raw == data
    assert fake.stats()["file_uploads"] == 1
    # files need the token like every API route
    st, _, _ = fake.api("GET", obj["urls"]["get"], headers={"Authorization": None})
    assert st == 401
    st, _, _ = fake.api("DELETE", "/files/" + obj["id"])
    assert st == 204
    st, _, body = fake.api("GET", obj["urls"]["get"])
    assert st == 404


def test_file_upload_errors(fake):
    ct, body = multipart([("filename", None, None, b"x.png")])
    st, _, obj = fake.api("POST", "/files", raw=body, headers={"Content-Type": ct})
    assert st == 422 and "content is required" in obj["detail"]
    st, _, obj = fake.api("POST", "/files", raw=b"{}")  # JSON, not multipart
    assert st == 400
    fake.configure(file_max_bytes=10)
    st, _, obj = upload(fake, b"x" * 11)
    assert st == 413 and obj["detail"] == "Files must be less than 100MB in size"
    fake.configure(file_max_bytes=100 << 20, files_mode="http500")
    st, _, obj = upload(fake, b"abc")
    assert st == 500
    assert fake.stats()["file_uploads"] == 0


def test_file_url_as_prediction_input(fake):
    st, _, obj = upload(fake, png_bytes(52, 36))
    assert st == 201
    inp = kontext_input()
    inp["input"]["input_image_1"] = obj["urls"]["get"]
    st, _, p = fake.api("POST", KONTEXT, inp, headers={"Prefer": "wait=5"})
    assert st == 201 and p["status"] == "succeeded", p
    # the output takes the size of input_image_1, read from the uploaded file
    st, _, out = fake.api("GET", p["output"])
    assert image_size(out) == (52, 36)
    assert fake.stats()["file_fetches"] >= 1


def test_file_expiry(fake):
    fake.configure(file_lifetime_s=1)
    st, _, obj = upload(fake, png_bytes(8, 8))
    assert st == 201
    t_created = obj["created_at"]
    assert obj["expires_at"] > t_created
    time.sleep(1.2)
    st, _, body = fake.api("GET", obj["urls"]["get"])
    assert st == 404
    assert fake.stats()["files"][obj["id"]]["expired"] is True
    inp = kontext_input()
    inp["input"]["input_image_2"] = obj["urls"]["get"]
    st, _, p = fake.api("POST", KONTEXT, inp, headers={"Prefer": "wait=5"})
    assert st == 201 and p["status"] == "failed", p
    assert "input_image_2" in p["error"] and "expired" in p["error"]
    # an unknown file id fails the same way
    inp["input"]["input_image_2"] = fake.base_url + "/files/doesnotexist"
    st, _, p = fake.api("POST", KONTEXT, inp, headers={"Prefer": "wait=5"})
    assert p["status"] == "failed"


# ---- the multipart parser behind POST /v1/files ----

def test_parse_multipart_splits_on_the_boundary_only():
    from tests.fake.fake_replicate import MultipartError, parse_multipart
    # binary content holding CRLF, `--`, a near-boundary and a CRLF + `--` + other text
    nasty = (b"\x89PNG\r\n\x1a\n--\r\n--xyz\r\n\r\n--" + bytes(range(256)) + b"\r\n--Boundar"
             b"\r\n--BoundaryXYZnot-a-delimiter\r\n" + b"\r\n" * 3)
    ct, body = multipart([("content", "a.png", "image/png", nasty),
                          ("metadata", None, None, b'{"k": 1}'),
                          ("empty", None, None, b"")], boundary="BoundaryXYZ")
    parts = parse_multipart(body, ct)
    assert [p[1] for p in parts] == [nasty, b'{"k": 1}', b""]
    assert parts[0][0]["content-type"] == "image/png"
    assert parts[0][0]["content-disposition"] == 'form-data; name="content"; filename="a.png"'
    # quoted boundary parameter, a preamble, blanks after a delimiter
    body2 = (b"preamble\r\n--b c\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n"
             b"--b c  \r\n\r\n2\r\n--b c--\r\nepilogue")
    assert [p[1] for p in parse_multipart(body2, 'multipart/form-data; boundary="b c"')] == [
        b"1", b"2"]
    # malformed: no closing boundary, no boundary at all, headers never end
    for bad_body, bad_ct in [
            (body[:-len(b"--BoundaryXYZ--\r\n")], ct),          # last part never closed
            (body.replace(b"--BoundaryXYZ--", b"--BoundaryXYZ\r\n"), ct),  # no `--` close
            (body, "multipart/form-data"),                      # no boundary parameter
            (b"no delimiter here", ct),
            (b"--BoundaryXYZ\r\nContent-Disposition: form-data", ct)]:
        with pytest.raises(MultipartError):
            parse_multipart(bad_body, bad_ct)


def test_file_upload_binary_content_and_malformed_body(fake):
    data = b"\r\n--" + png_bytes(16, 9) + b"\r\n--\r\n----scenecompTestBoundary-ish\r\n"
    st, _, obj = upload(fake, data, filename="odd.bin", ctype="application/octet-stream",
                        extra=[("type", None, None, b"image/png")])
    assert st == 201, obj
    assert obj["size"] == len(data) and obj["content_type"] == "image/png"
    st, _, raw = fake.api("GET", obj["urls"]["get"] + "/download")
    assert raw == data
    ct, body = multipart([("content", "a.png", "image/png", b"abc")])
    st, _, obj = fake.api("POST", "/files", raw=body[:-len(b"--\r\n") - 30],
                          headers={"Content-Type": ct})
    assert st == 400 and "multipart" in obj["detail"], obj
    st, _, obj = fake.api("POST", "/files", raw=body, headers={"Content-Type": "multipart/form-data"})
    assert st == 400
    assert fake.stats()["file_uploads"] == 1
