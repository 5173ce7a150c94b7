#!/usr/bin/python3
"""A local fake of Replicate's HTTP predictions API (protocol reference §12).

Speaks the real protocol closely enough that the C client's tests mean something:
routes under /v1, Bearer/Token auth with Replicate's 401 bodies, create on
/models/{owner}/{name}/predictions (and POST /predictions with `version`), input
validation with 422 `invalid_fields`, 201 prediction objects with 26-char ids and
`urls` on the fake's own base, `Prefer: wait[=N]`, `Cancel-After`, GET and cancel,
and real PNG bytes served from /delivery/...

Each prediction follows a time-based script measured from its creation (starting ->
processing -> terminal), so polling cadence never changes outcomes. Faults are
chosen per test through a control API (not under /v1, no auth):

    POST /_control/config   JSON object merged into the config (see DEFAULTS)
    POST /_control/reset    config back to the CLI defaults, stats and predictions cleared
    GET  /_control/stats    counters, max predictions in flight, every request recorded,
                            the output images encoded so far ("WxH.fmt"),
                            last_input (the input object of the last create)

Modes (config "mode"): ok, slow, failed, http500, rate429, malformed_json,
non_image_output, hang, unknown_model, data_uri_output, processing_with_output.

Files API (§2.6): POST /v1/files (multipart: part `content`, optional `filename`,
`type`, `metadata`) -> 201 file object with `urls.get` = /v1/files/{id} and
`expires_at` = created + file_lifetime_s; GET /v1/files/{id} (the object),
GET /v1/files/{id}/download (the bytes), DELETE -> 204; an expired file is 404.
A prediction input that is such a URL is fetched like Replicate does: an unknown
or expired file makes the prediction fail. files_mode "http500" / "hang" fails
or never answers uploads.

Cost: a burst of 1,000 Kontext predictions with real-size inputs must not make the
fake the bottleneck (bench/kontext_scale.py, bench/fake_creates.py). Hence one loop
thread answering every request (tests/fake/http_loop.py: no GIL hand-offs, a held
Prefer: wait is a timer), the predictions in flight counted from a heap of their end
times, multipart parsing with bytes.find, input images sized from their headers,
large input strings shared by content with their JSON text cached, each output image
encoded once, request headers parsed without the email package and glibc told to
keep freed memory (see main).

Run: /usr/bin/python3 tests/fake/fake_replicate.py --port 0 --token T [--mode ok --delay-ms 200]
[--quiet] prints `READY port=<port>` once listening on 127.0.0.1, then one line per
answered request on stderr (request line and status, never headers). The default
token is r8_fake_token. Python 3 stdlib only (PIL is
used for JPEG/WebP output when available, PNG otherwise).
"""

import argparse
import base64
import copy
import datetime
import gc
import hashlib
import heapq
import json
import random
import re
import string
import struct
import sys
import threading
import time
import zlib
from urllib.parse import unquote, urlsplit

try:
    from tests.fake import http_loop
except ImportError:  # run as a script: its own directory is on sys.path
    import http_loop

KONTEXT = "flux-kontext-apps/multi-image-kontext-pro"
SCHNELL = "black-forest-labs/flux-schnell"
E005 = "The input or output was flagged as sensitive (E005)"
TERMINAL = ("succeeded", "failed", "canceled", "aborted")

DEFAULTS = {
    "mode": "ok",
    "delay_ms": 200,          # creation -> terminal in mode ok/failed/...
    "starting_ms": None,      # part of delay_ms spent in "starting" (None = a quarter)
    "slow_ms": 3600000,       # creation -> terminal in mode slow (effectively never)
    "http500_target": "create",  # create | get | download | all
    "http500_count": -1,      # how many requests fail (-1 = all)
    "http500_html": False,    # HTML body instead of problem+json
    "rate429_count": 1,       # first K creates answer 429
    "retry_after": 1,         # seconds, header Retry-After and body retry_after
    "retry_after_header": True,
    "malformed_target": "create",  # create | get
    "hang_target": "create",  # create | get | download
    "output_width": None,     # None = the size of input_image_1 when it is a data URI
    "output_height": None,
    "default_width": 64,
    "default_height": 48,
    "models": [KONTEXT, SCHNELL],
    "output_lifetime_s": 3600,
    "check_inputs_decode": False,
    "honor_prefer": True,
    "file_lifetime_s": 86400,  # Files API: created_at -> expires_at (the real one showed 24 h)
    "files_mode": "ok",        # ok | http500 | hang: how POST /v1/files answers
    "file_max_bytes": 100 * 1024 * 1024,
    "output_override": "__none__",  # any JSON value: served as `output` of succeeded predictions     # False: answer creates at once (async mode) even with Prefer
}

ID_CHARS = string.ascii_lowercase + string.digits


def now_rfc3339(t=None):
    t = time.time() if t is None else t
    dt = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%06dZ" % dt.microsecond


def png_bytes(width, height, seed=0):
    """A real RGB PNG (gradient) built with zlib + struct."""
    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    template = bytearray(width * 3)
    template[0::3] = bytes((x * 255 // max(1, width - 1)) & 0xFF for x in range(width))
    template[2::3] = bytes([(seed * 37) & 0xFF]) * width
    rows = []
    for y in range(height):
        template[1::3] = bytes([(y * 255 // max(1, height - 1)) & 0xFF]) * width
        rows.append(b"\x00" + bytes(template))
    raw = b"".join(rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


_IMG_CACHE = {}
_IMG_LOCK = threading.Lock()
_IMG_MAKING = {}  # key -> lock held by the one thread encoding that image


def image_bytes(width, height, fmt):
    """(content_type, bytes) of an image in fmt; PNG unless PIL can do better.
    Encoded once per (width, height, fmt): every prediction of that size serves the
    same bytes, and a burst of downloads waits for the one encode instead of
    each encoding its own copy."""
    key = (width, height, fmt)
    with _IMG_LOCK:
        if key in _IMG_CACHE:
            return _IMG_CACHE[key]
        making = _IMG_MAKING.setdefault(key, threading.Lock())
    with making:
        with _IMG_LOCK:
            if key in _IMG_CACHE:
                return _IMG_CACHE[key]
        data, ctype = None, "image/png"
        if fmt in ("jpg", "webp"):
            try:
                import io
                from PIL import Image  # optional
                im = Image.open(io.BytesIO(png_bytes(width, height)))
                out = io.BytesIO()
                im.save(out, "JPEG" if fmt == "jpg" else "WEBP", quality=85)
                data = out.getvalue()
                ctype = "image/jpeg" if fmt == "jpg" else "image/webp"
            except Exception:  # no PIL: PNG bytes are still a decodable image
                data = None
        if data is None:
            data, ctype = png_bytes(width, height), "image/png"
        with _IMG_LOCK:
            if len(_IMG_CACHE) > 32:
                _IMG_CACHE.clear()
            _IMG_CACHE[key] = (ctype, data)
            _IMG_MAKING.pop(key, None)
    return ctype, data


def image_bytes_ahead(width, height, fmt):
    """Starts image_bytes(width, height, fmt) on a thread of its own unless that image
    is cached or being made. Called at create: the real service's output exists when
    its prediction succeeds, so the first download of a size must not wait for the
    fake to encode it (a 1080p PNG is ~120 ms of this process's CPU, which stalled
    every prediction finishing in that window)."""
    key = (width, height, fmt)
    with _IMG_LOCK:
        if key in _IMG_CACHE or key in _IMG_MAKING:
            return
        # registered now, not when the thread runs: the creates of a burst that
        # come before it does start no thread of their own
        _IMG_MAKING[key] = threading.Lock()
    threading.Thread(target=image_bytes, args=key, daemon=True).start()


_URI_CACHE = {}


def image_data_uri(width, height, fmt):
    """The data URI of image_bytes(width, height, fmt), encoded once per key."""
    key = (width, height, fmt)
    with _IMG_LOCK:
        uri = _URI_CACHE.get(key)
    if uri is None:
        ctype, data = image_bytes(width, height, fmt)
        uri = "data:%s;base64,%s" % (ctype, base64.b64encode(data).decode())
        with _IMG_LOCK:
            if len(_URI_CACHE) > 32:
                _URI_CACHE.clear()
            _URI_CACHE[key] = uri
    return uri


def image_size(data):
    """(w, h) of PNG or JPEG bytes, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return (w, h)
            i += 2 + seglen
    return None


_DATA_URI_RE = re.compile(r"data:([^;,]*)(;base64)?,")


def decode_data_uri(uri):
    m = _DATA_URI_RE.match(uri)
    if not m or not m.group(2):
        return None
    try:
        return base64.b64decode(uri[m.end():], validate=True)
    except Exception:
        return None


def data_uri_image_size(uri):
    """(w, h) of the image in a base64 data URI, or None, decoding only as much of
    the base64 text as the header needs (a 1080p JPEG's SOF is in its first few KB):
    the size of every input is read per prediction, so no full decode (the rest of
    the text is not validated here; check_inputs_decode does that)."""
    m = _DATA_URI_RE.match(uri)
    if not m or not m.group(2):
        return None
    start = m.end()
    n = 4096
    while True:
        chunk = uri[start:start + n]
        try:
            size = image_size(base64.b64decode(chunk))
        except Exception:
            return None
        if size is not None or start + n >= len(uri):
            return size
        n *= 4


def parse_cancel_after(v):
    """Seconds of a Cancel-After value (`30`, `30s`, `5m`, `1h30m45s`), or None."""
    v = v.strip()
    if re.fullmatch(r"\d+", v):
        return int(v)
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", v)
    if not m or not any(m.groups()):
        return None
    h, mi, s = (int(x) if x else 0 for x in m.groups())
    return h * 3600 + mi * 60 + s


# ==== Large input strings ====
# A Kontext create carries data URIs of hundreds of KB, and a burst repeats the same
# ones (one product in every request). Each prediction keeps its input (GETs echo it),
# so without sharing, every create would pin fresh copies, and fresh memory is what
# costs here (page faults), not the copy. Strings of BIG_STR bytes or more are
# shared by content, with their JSON text and image size computed once.

BIG_STR = 4096


class BigStr:
    __slots__ = ("s", "json", "size", "sized")

    def __init__(self, s):
        self.s = s
        self.json = json.dumps(s).encode()
        self.size = None
        self.sized = False


_BIG = {}        # fingerprint -> [BigStr]
_BIG_BY_ID = {}  # id(BigStr.s) -> BigStr (the entry keeps the string alive)
_BIG_LOCK = threading.Lock()


def intern_big(v):
    """The shared copy of the large string v (v itself the first time)."""
    n = len(v)
    key = (n, v[:64], v[n // 2:n // 2 + 64], v[-64:])
    with _BIG_LOCK:
        for e in _BIG.get(key, ()):
            if e.s == v:
                return e.s
    e = BigStr(v)  # json.dumps outside the lock
    with _BIG_LOCK:
        if len(_BIG_BY_ID) >= 4096:  # bound the table; predictions keep their strings
            _BIG.clear()
            _BIG_BY_ID.clear()
        for other in _BIG.get(key, ()):
            if other.s == v:
                return other.s
        _BIG.setdefault(key, []).append(e)
        _BIG_BY_ID[id(v)] = e
    return v


def big_entry(v):
    """The BigStr of a string returned by intern_big, or None."""
    with _BIG_LOCK:
        e = _BIG_BY_ID.get(id(v))
    return e if e is not None and e.s is v else None


def clear_big():
    with _BIG_LOCK:
        _BIG.clear()
        _BIG_BY_ID.clear()


def json_value(v):
    """json.dumps(v).encode(), from the cache for an interned large string."""
    if isinstance(v, str) and len(v) >= BIG_STR:
        e = big_entry(v)
        if e is not None:
            return e.json
    return json.dumps(v).encode()


def input_image_size(src):
    """(w, h) of a data URI input, computed once per interned string."""
    e = big_entry(src)
    if e is None:
        return data_uri_image_size(src)
    if not e.sized:
        e.size, e.sized = data_uri_image_size(src), True
    return e.size


def use_big_malloc_pools():
    """Keep freed memory in the process (glibc: no trimming, no mmap per large block):
    a request's transient copies of a large body then reuse warm pages instead of
    faulting in fresh ones each time. Only in the server process (main)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (the largest glibc accepts)
    except Exception:  # not glibc: only slower
        pass


# ==== multipart/form-data (Files API uploads) ====

class MultipartError(ValueError):
    pass


_BOUNDARY_RE = re.compile(r';\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.I)
_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


def header_params(value):
    """(main value lowercased, {param: value}) of a header like Content-Disposition
    (`form-data; name="content"; filename="a.png"`); quoted values are unescaped,
    `filename*=UTF-8''...` (RFC 5987) is decoded into `filename`."""
    main, _, rest = value.partition(";")
    params = {}
    for m in _PARAM_RE.finditer(";" + rest):
        k = m.group(1).lower()
        v = m.group(2)
        v = re.sub(r"\\(.)", r"\1", v) if v is not None else m.group(3).strip()
        if k.endswith("*"):
            charset, _, enc = v.partition("'")
            _, _, enc = enc.partition("'")
            try:
                v = unquote(enc, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                continue
            k = k[:-1]
            params[k] = v  # the extended form wins over the plain one
        elif k not in params:
            params[k] = v
    return main.strip().lower(), params


def parse_multipart(body, content_type):
    """The parts of a multipart/form-data body as a list of (headers, data): headers a
    dict with lowercased names, data the part's bytes as a memoryview of body (no
    copy: an uploaded file keeps the request body, whose pages are already in
    memory; bytes when a base64 or quoted-printable Content-Transfer-Encoding was
    decoded). Finds the delimiters with bytes.find, so
    the cost does not depend on what the bytes contain (binary data full of CRLF and
    `--` included). Raises MultipartError when the body is not well formed: no
    boundary parameter, no first delimiter, a part without its header block, or no
    closing delimiter (`--boundary--`)."""
    m = _BOUNDARY_RE.search(content_type or "")
    if not m:
        raise MultipartError("no boundary in Content-Type")
    boundary = m.group(1) if m.group(1) is not None else m.group(2)
    boundary = re.sub(r"\\(.)", r"\1", boundary) if m.group(1) is not None else boundary
    if not boundary or len(boundary) > 200:
        raise MultipartError("invalid boundary")
    delim = b"--" + boundary.encode("latin-1")
    sep = b"\r\n" + delim
    if body.startswith(delim):
        pos = len(delim)
    else:  # a preamble before the first delimiter is allowed (RFC 2046)
        i = body.find(sep)
        if i < 0:
            raise MultipartError("no opening boundary")
        pos = i + len(sep)
    parts = []
    n = len(body)
    view = memoryview(body)
    while True:
        # pos is just after a delimiter: `--` closes, else optional blanks and CRLF
        if body.startswith(b"--", pos):
            return parts
        while pos < n and body[pos] in (0x20, 0x09):
            pos += 1
        if not body.startswith(b"\r\n", pos):
            raise MultipartError("malformed boundary line")
        pos += 2
        if body.startswith(b"\r\n", pos):  # a part without headers
            head, start = b"", pos + 2
        else:
            end = body.find(b"\r\n\r\n", pos)
            if end < 0:
                raise MultipartError("part headers not terminated")
            head, start = body[pos:end], end + 4
        # the part's data ends at the next CRLF + delimiter followed by `--`, blanks or CRLF
        search = start
        while True:
            i = body.find(sep, search)
            if i < 0:
                raise MultipartError("missing closing boundary")
            after = i + len(sep)
            if (body.startswith(b"--", after) or body.startswith(b"\r\n", after)
                    or body[after:after + 1] in (b" ", b"\t")):
                break
            search = i + 1
        headers = {}
        for line in head.split(b"\r\n"):
            if not line:
                continue
            k, colon, v = line.partition(b":")
            if not colon:
                raise MultipartError("malformed part header")
            headers[k.strip().decode("latin-1").lower()] = v.strip().decode("utf-8", "replace")
        data = view[start:i]
        cte = headers.get("content-transfer-encoding", "").strip().lower()
        if cte == "base64":
            try:
                data = base64.b64decode(data)
            except Exception:
                raise MultipartError("bad base64 part")
        elif cte == "quoted-printable":
            import binascii
            data = binascii.a2b_qp(data)
        parts.append((headers, data))
        pos = after


# ==== Input validation (§6) ====

KONTEXT_AR = ["match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5",
              "5:4", "21:9", "9:21", "2:1", "1:2"]
SCHNELL_AR = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]


def _enum_msg(name, allowed):
    return "%s must be one of the following: %s" % (name, ", ".join('"%s"' % a for a in allowed))


def validate_input(model, inp):
    """List of invalid_fields entries ({type, field, description})."""
    errs = []

    def bad(typ, field, desc):
        errs.append({"type": typ, "field": field, "description": desc})

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def check_int(name, lo, hi):
        if name in inp:
            v = inp[name]
            if not is_int(v):
                bad("invalid_type", "input." + name, "Invalid type. Expected: integer, given: %s"
                    % type(v).__name__)
            elif lo is not None and v < lo:
                bad("number_gte", "input." + name, "Must be greater than or equal to %d" % lo)
            elif hi is not None and v > hi:
                bad("number_lte", "input." + name, "Must be less than or equal to %d" % hi)

    def check_enum(name, allowed):
        if name in inp and inp[name] not in allowed:
            bad("enum", "input." + name, _enum_msg(name, allowed))

    def check_bool(name):
        if name in inp and not isinstance(inp[name], bool):
            bad("invalid_type", "input." + name, "Invalid type. Expected: boolean")

    if not isinstance(inp.get("prompt"), str):
        if "prompt" in inp:
            bad("invalid_type", "input.prompt", "Invalid type. Expected: string")
        else:
            bad("required", "input", "prompt is required")
    if model == KONTEXT:
        for k in ("input_image_1", "input_image_2"):
            v = inp.get(k)
            if v is None:
                bad("required", "input", "%s is required" % k)
            elif not isinstance(v, str) or not re.match(r"^(https?://|data:)", v):
                bad("format", "input." + k, "Does not match format 'uri'")
        check_enum("aspect_ratio", KONTEXT_AR)
        check_enum("output_format", ["jpg", "png"])
        check_int("safety_tolerance", 0, 2)
        check_int("seed", None, None)
    elif model == SCHNELL:
        check_enum("aspect_ratio", SCHNELL_AR)
        check_int("num_outputs", 1, 4)
        check_int("num_inference_steps", 1, 4)
        check_int("seed", None, None)
        check_enum("output_format", ["webp", "jpg", "png"])
        check_int("output_quality", 0, 100)
        check_bool("disable_safety_checker")
        check_bool("go_fast")
        check_enum("megapixels", ["1", "0.25"])
    return errs


# ==== State ====

class Prediction:
    def __init__(self, pid, model, inp, cfg, base, deadline_s):
        self.id = pid
        self.model = model
        self.input = inp
        self.created = time.time()
        self.mode = cfg["mode"]
        if self.mode == "slow":
            total = cfg["slow_ms"] / 1000.0
        else:
            total = cfg["delay_ms"] / 1000.0
        st = cfg["starting_ms"]
        self.t_start = self.created + (st / 1000.0 if st is not None else total / 4.0)
        self.t_end = self.created + total
        self.forced = None        # (status, time) after cancel / deadline
        self.deadline = self.created + deadline_s if deadline_s else None
        self.base = base
        fmt = inp.get("output_format", "png" if model == KONTEXT else "webp")
        self.fmt = fmt if fmt in ("png", "jpg", "webp") else "png"
        self.input_error = None   # a file input that could not be fetched: the prediction fails
        w, h = cfg["output_width"], cfg["output_height"]
        if not w or not h:
            size = None
            src = inp.get("input_image_1")
            if isinstance(src, str) and src.startswith("data:"):
                size = input_image_size(src)
            elif isinstance(src, str):
                f = STATE.file_for_url(src) if STATE else None
                size = f["image_size"] if f else None
            w, h = size if size else (cfg["default_width"], cfg["default_height"])
        self.out_w, self.out_h = int(w), int(h)
        self.n_outputs = int(inp.get("num_outputs", 1)) if model == SCHNELL else 1
        self.lifetime = cfg["output_lifetime_s"]
        self.override = cfg["output_override"]
        self.waiters = []  # held creates (Prefer: wait) to look again at once on a cancel

    def status_at(self, t):
        if self.forced and t >= self.forced[1]:
            return self.forced[0]
        if self.deadline and t >= self.deadline and t < self.t_end:
            # Cancel-After reached before the script finished
            return "aborted" if self.deadline < self.t_start else "canceled"
        if t < self.t_start:
            return "starting"
        if self.input_error:
            return "failed"
        if t < self.t_end or self.mode == "slow":
            return "processing"
        return "failed" if self.mode == "failed" else "succeeded"

    def terminal_time(self):
        """When the prediction became (or will become) terminal, or None."""
        cands = []
        if self.forced:
            cands.append(self.forced[1])
        if self.deadline and self.deadline < self.t_end:
            cands.append(self.deadline)
        if self.mode != "slow":
            cands.append(self.t_end)
        return min(cands) if cands else None

    def out_of_flight_at(self):
        """From when on status_at is terminal for good (inf: not known yet). Only
        ever moves earlier (a cancel), never later."""
        cands = [self.terminal_time() or float("inf")]
        if self.input_error:
            cands.append(self.t_start)
        return min(cands)

    def next_change(self, t):
        """The next time after t at which status_at (or output_ready) may change."""
        cands = [x for x in (self.t_start, self.t_end, self.deadline) if x and x > t]
        if self.mode == "processing_with_output":
            mid = self.t_start + (self.t_end - self.t_start) / 2
            if mid > t:
                cands.append(mid)
        return min(cands) if cands else None

    def json(self, api_base, t=None, quirk_output=False):
        """json.dumps(self.obj(...)).encode(), byte for byte, with the large strings of
        the echoed input taken from their cached JSON text (see intern_big)."""
        o = self.obj(api_base, t, quirk_output)
        inp = o.pop("input")
        head = {k: o.pop(k) for k in ("id", "model", "version")}
        items = b", ".join(json.dumps(k).encode() + b": " + json_value(v)
                           for k, v in inp.items())
        return b"".join((json.dumps(head)[:-1].encode(), b', "input": {', items, b"}, ",
                         json.dumps(o)[1:].encode()))

    def output_ready(self, t):
        """For the processing_with_output quirk: outputs exist before `succeeded`."""
        return self.mode == "processing_with_output" and t >= self.t_start + (self.t_end - self.t_start) / 2

    def output_value(self):
        if self.override != "__none__":
            return self.override
        ext = self.fmt
        if self.mode == "data_uri_output":
            vals = [image_data_uri(self.out_w, self.out_h, self.fmt)] * self.n_outputs
        elif self.model == SCHNELL:
            vals = ["%s/delivery/%s/out-%d.%s" % (self.base, self.id, i, ext)
                    for i in range(self.n_outputs)]
        else:
            vals = ["%s/delivery/%s/tmp%s.%s" % (self.base, self.id, self.id[:8], ext)]
        return vals if self.model == SCHNELL else vals[0]

    def obj(self, api_base, t=None, quirk_output=False):
        t = time.time() if t is None else t
        st = self.status_at(t)
        removed = t > self.created + self.lifetime
        o = {
            "id": self.id, "model": self.model, "version": "hidden", "input": self.input,
            "logs": "", "output": None, "data_removed": removed, "error": None,
            "status": st, "created_at": now_rfc3339(self.created), "source": "api",
            "urls": {"get": "%s/predictions/%s" % (api_base, self.id),
                     "cancel": "%s/predictions/%s/cancel" % (api_base, self.id),
                     "web": "%s/p/%s" % (self.base, self.id)},
        }
        if self.deadline:
            o["deadline"] = now_rfc3339(self.deadline)
        if st != "starting":
            o["started_at"] = now_rfc3339(min(self.t_start, t))
            o["logs"] = "Running prediction...\n"
        if st in TERMINAL:
            end = self.terminal_time() or t
            o["completed_at"] = now_rfc3339(end)
            o["metrics"] = {"predict_time": round(max(0.0, end - self.t_start), 6),
                            "total_time": round(end - self.created, 6)}
        if st == "succeeded" and not removed:
            o["output"] = self.output_value()
            o["logs"] += "Generated image\n"
        elif st == "failed":
            o["error"] = self.input_error or E005
        elif st == "processing" and quirk_output and self.output_ready(t):
            o["output"] = self.output_value()
        return o


class State:
    def __init__(self, defaults):
        self.lock = threading.Lock()
        self.defaults = defaults
        self.reset()

    def reset(self):
        with self.lock:
            self.cfg = copy.deepcopy(self.defaults)
            clear_big()
            self.preds = {}
            self.live = {}  # the predictions that may still be in flight (see inflight)
            self.ends = []  # heap of (out_of_flight_at, seq, pid) over self.live
            self.seq = 0
            self.files = {}
            self.requests = []
            self.last_input = None
            self.counters = {"creates": 0, "create_requests": 0, "cancels": 0, "gets": 0,
                             "downloads": 0, "http500_sent": 0, "rate429_sent": 0,
                             "max_inflight": 0, "auth_failures": 0, "hangs": 0,
                             "file_uploads": 0, "file_fetches": 0}

    def file_for_url(self, url, t=None):
        """The stored file a /v1/files/{id} URL of this fake names, if it has not expired."""
        m = re.search(r"/v1/files/([A-Za-z0-9_-]+)(?:/download)?$", url or "")
        if not m:
            return None
        f = self.files.get(m.group(1))
        t = time.time() if t is None else t
        if f is None or t >= f["expires"]:
            return None
        return f

    def watch(self, p):
        """Count p in flight until p.out_of_flight_at() (under self.lock); again
        after a cancel, which brings that time forward."""
        self.live[p.id] = p
        self.seq += 1
        heapq.heappush(self.ends, (p.out_of_flight_at(), self.seq, p.id))

    def inflight(self, t):
        """Predictions not terminal at t (under self.lock). Each leaves self.live at
        its earliest heap entry (out_of_flight_at only moves earlier, and a cancel
        pushes the new time; the older entry then finds it gone), so a burst of N
        creates costs O(log N) each, not O(in flight) (a burst of 1,000 spent 0.2 ms
        per create counting)."""
        ends = self.ends
        while ends and ends[0][0] <= t:
            self.live.pop(heapq.heappop(ends)[2], None)
        return len(self.live)


STATE = None
API_PREFIX = "/v1"


class Headers:
    """Request headers: what the handlers use of email.message.Message (get by name,
    case-insensitive, first match; items() in order, names as sent), parsed without
    the email package (which cost more per request than the whole create route)."""
    __slots__ = ("_items", "_first")

    def __init__(self, items):
        self._items = items
        self._first = {}
        for k, v in items:
            self._first.setdefault(k.lower(), v)

    def get(self, name, default=None):
        return self._first.get(name.lower(), default)

    def __getitem__(self, name):
        return self._first.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self._first

    def items(self):
        return list(self._items)

    def keys(self):
        return [k for k, _ in self._items]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._items)


def read_headers(rfile, max_line=65536, max_headers=100):
    """Headers from rfile up to the blank line. Raises ValueError (line too long or
    too many headers, as http.client's limits)."""
    items = []
    while True:
        line = rfile.readline(max_line + 1)
        if len(line) > max_line:
            raise ValueError("Line too long")
        if line in (b"\r\n", b"\n", b""):
            return Headers(items)
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and items:  # obsolete line folding
            k, v = items[-1]
            items[-1] = (k, v + " " + text.strip())
            continue
        if len(items) >= max_headers:
            raise ValueError("got more than %d headers" % max_headers)
        k, _, v = text.partition(":")
        items.append((k, v.lstrip(" \t")))


def problem(status, detail, title=None, **extra):
    o = {"detail": detail, "status": status}
    if title:
        o["title"] = title
    o.update(extra)
    return o


class Handler:
    """One request, answered through an http_loop.Exchange (see http_loop for why
    one loop thread and no thread per request)."""
    __slots__ = ("ex", "server", "command", "path", "headers")

    def __init__(self, ex, server):
        self.ex = ex
        self.server = server
        self.command = ex.command
        self.path = ex.path
        self.headers = ex.headers

    def _send(self, code, obj=None, ctype="application/json", raw=None, headers=None):
        if raw is None:
            raw = json.dumps(obj).encode() if obj is not None else b""
        hdrs = [("Content-Type", ctype), ("Content-Length", str(len(raw)))]
        hdrs += list((headers or {}).items())
        self.ex.respond(code, hdrs, raw)

    def _problem(self, code, detail, title=None, headers=None, **extra):
        self._send(code, problem(code, detail, title, **extra), "application/problem+json",
                   headers=headers)

    def _hang(self):
        """Accept the request and never answer: wait until the peer goes away."""
        with STATE.lock:
            STATE.counters["hangs"] += 1
        self.ex.hold()

    def _api_base(self):
        return "http://%s:%d%s" % (self.server.server_address[0], self.server.server_address[1],
                                   API_PREFIX)

    def _base(self):
        return "http://%s:%d" % self.server.server_address[:2]

    def _record(self, body, auth_state):
        tok = STATE.cfg.get("token") or ""
        hdrs = {}
        elsewhere = False
        for k, v in self.headers.items():
            if k.lower() == "authorization":
                hdrs[k] = "<redacted>"
                continue
            if tok and tok in v:
                elsewhere = True
                v = v.replace(tok, "<token>")  # flagged, never stored
            hdrs[k] = v
        if tok and (tok in self.path or tok.encode() in body):
            elsewhere = True
        rec = {"t": time.time(), "method": self.command, "path": urlsplit(self.path).path,
               "headers": hdrs, "auth": auth_state, "auth_ok": auth_state in ("bearer", "token"),
               "body_size": len(body), "token_elsewhere": elsewhere}
        with STATE.lock:
            STATE.requests.append(rec)
            if len(STATE.requests) > 20000:
                del STATE.requests[:10000]
        return rec

    def _auth_state(self):
        tok = STATE.cfg.get("token") or ""
        a = self.headers.get("Authorization")
        if not a:
            return "missing"
        for scheme, name in (("Bearer ", "bearer"), ("Token ", "token")):
            if a.startswith(scheme):
                return name if tok and a[len(scheme):] == tok else "wrong"
        return "wrong"

    # ---- dispatch ----

    def _dispatch(self):
        if self.command not in ("GET", "POST", "DELETE"):
            return self._send(501, raw=("Unsupported method (%r)\n" % self.command).encode(),
                              ctype="text/plain")
        body = self.ex.body
        path = urlsplit(self.path).path
        if path.startswith("/_control/"):
            return self._control(path, body)
        if path.startswith("/delivery/"):
            self._record(body, "n/a")
            return self._delivery(path)
        if not path.startswith(API_PREFIX + "/"):
            self._record(body, "n/a")
            return self._problem(404, "The requested resource could not be found.")
        auth = self._auth_state()
        self._record(body, auth)
        if auth == "missing":
            with STATE.lock:
                STATE.counters["auth_failures"] += 1
            return self._problem(401, "You did not pass an authentication token", "Unauthenticated")
        if auth == "wrong":
            with STATE.lock:
                STATE.counters["auth_failures"] += 1
            return self._problem(401, "You did not pass a valid authentication token",
                                 "Unauthenticated")
        rest = path[len(API_PREFIX):]
        m = re.fullmatch(r"/models/([^/]+)/([^/]+)/predictions", rest)
        if m and self.command == "POST":
            return self._create(m.group(1) + "/" + m.group(2), body, by_version=False)
        if rest == "/predictions" and self.command == "POST":
            return self._create(None, body, by_version=True)
        m = re.fullmatch(r"/predictions/([a-z0-9]+)", rest)
        if m and self.command == "GET":
            return self._get(m.group(1))
        m = re.fullmatch(r"/predictions/([a-z0-9]+)/cancel", rest)
        if m and self.command == "POST":
            return self._cancel(m.group(1))
        if rest == "/files" and self.command == "POST":
            return self._file_upload(body)
        m = re.fullmatch(r"/files/([A-Za-z0-9_-]+)(/download)?", rest)
        if m and self.command in ("GET", "DELETE"):
            return self._file(m.group(1), bool(m.group(2)))
        m = re.fullmatch(r"/models/([^/]+)/([^/]+)", rest)
        if m and self.command == "GET":
            name = m.group(1) + "/" + m.group(2)
            if name not in STATE.cfg["models"] or STATE.cfg["mode"] == "unknown_model":
                return self._problem(404, "The requested resource could not be found.")
            return self._send(200, {"url": "https://replicate.com/" + name, "owner": m.group(1),
                                    "name": m.group(2), "visibility": "public",
                                    "is_official": True, "latest_version": None})
        return self._problem(404, "The requested resource could not be found.")

    # ---- faults shared by several routes ----

    def _maybe_500(self, target):
        cfg = STATE.cfg
        if cfg["mode"] != "http500" or cfg["http500_target"] not in (target, "all"):
            return False
        with STATE.lock:
            n = cfg["http500_count"]
            if n == 0:
                return False
            if n > 0:
                cfg["http500_count"] = n - 1
            STATE.counters["http500_sent"] += 1
        if cfg["http500_html"]:
            self._send(500, raw=b"<html><head><title>500 Internal Server Error</title></head>"
                       b"<body><h1>Internal Server Error</h1></body></html>",
                       ctype="text/html")
        else:
            self._send(500, {"detail": "Internal server error"}, "application/problem+json")
        return True

    # ---- routes ----

    def _create(self, model, body, by_version):
        cfg = STATE.cfg
        with STATE.lock:
            STATE.counters["create_requests"] += 1
        if cfg["mode"] == "hang" and cfg["hang_target"] == "create":
            return self._hang()
        if cfg["mode"] == "rate429":
            with STATE.lock:
                throttle = cfg["rate429_count"] != 0
                if cfg["rate429_count"] > 0:
                    cfg["rate429_count"] -= 1
                if throttle:
                    STATE.counters["rate429_sent"] += 1
            if throttle:
                ra = int(cfg["retry_after"])
                hdrs = {"Retry-After": str(ra)} if cfg["retry_after_header"] else None
                return self._problem(
                    429, "Request was throttled. Your rate limit for creating predictions is "
                    "reduced to 6 requests per minute with a burst of 1 requests while you have "
                    "less than $5.0 in credit. Your rate limit resets in ~%ds." % ra,
                    headers=hdrs, retry_after=ra)
        if self._maybe_500("create"):
            return
        try:
            req = json.loads(body.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except Exception as e:
            return self._problem(400, "Failed to parse request body as JSON: %s" % e)
        allowed = {"input", "webhook", "webhook_events_filter", "stream"}
        if by_version:
            allowed.add("version")
            v = req.get("version")
            if v is None:
                return self._problem(422, "- version: version is required\n",
                                     "Input validation failed",
                                     invalid_fields=[{"type": "required", "field": "",
                                                      "description": "version is required"}])
            name = v.split(":")[0] if isinstance(v, str) else None
            if name not in cfg["models"] or cfg["mode"] == "unknown_model":
                return self._problem(422, "The specified version does not exist (or perhaps you "
                                     "don't have permission to use it?)",
                                     "Invalid version or not permitted")
            model = name
        elif model not in cfg["models"] or cfg["mode"] == "unknown_model":
            return self._problem(404, "The requested resource could not be found.")
        extra = [k for k in req if k not in allowed]
        if extra:
            f = [{"type": "additional_property_not_allowed", "field": "",
                  "description": "Additional property %s is not allowed" % k} for k in extra]
            return self._problem(422, "".join("- %s\n" % x["description"] for x in f),
                                 "Input validation failed", invalid_fields=f)
        inp = req.get("input")
        if isinstance(inp, dict):
            with STATE.lock:  # the last create's input, for tests that check what was sent
                STATE.last_input = inp
            for k, v in inp.items():
                if isinstance(v, str) and len(v) >= BIG_STR:
                    inp[k] = intern_big(v)
        if not isinstance(inp, dict):
            f = [{"type": "required", "field": "", "description": "input is required"}]
            return self._problem(422, "- input is required\n", "Input validation failed",
                                 invalid_fields=f)
        errs = validate_input(model, inp)
        if not errs and cfg["check_inputs_decode"] and model == KONTEXT:
            for k in ("input_image_1", "input_image_2"):
                v = inp[k]
                raw = decode_data_uri(v) if v.startswith("data:") else None
                if v.startswith("data:") and (raw is None or image_size(raw) is None):
                    errs.append({"type": "format", "field": "input." + k,
                                 "description": "could not decode the image"})
        if not errs and cfg["check_inputs_decode"] and model == KONTEXT:
            for k in ("input_image_1", "input_image_2"):
                f = STATE.file_for_url(inp[k]) if not inp[k].startswith("data:") else None
                if f is not None and f["image_size"] is None:
                    errs.append({"type": "format", "field": "input." + k,
                                 "description": "could not decode the image"})
        if errs:
            detail = "".join("- %s: %s\n" % (e["field"], e["description"]) for e in errs)
            return self._problem(422, detail, "Input validation failed", invalid_fields=errs)
        deadline_s = None
        ca = self.headers.get("Cancel-After")
        if ca is not None:
            deadline_s = parse_cancel_after(ca)
            if deadline_s is None or deadline_s < 5:
                f = [{"type": "cancel_after", "field": "",
                      "description": "Cancel-After must be a duration of at least 5s"}]
                return self._problem(422, "- Cancel-After must be a duration of at least 5s\n",
                                     "Invalid Cancel-After", invalid_fields=f)
        pid = "".join(random.choices(ID_CHARS, k=26))
        with STATE.lock:
            p = Prediction(pid, model, inp, cfg, self._base(), deadline_s)
            # Replicate fetches URL inputs; one of our Files API URLs that is
            # unknown or expired fails the prediction like a dead link does
            for k, v in sorted(inp.items()):
                if isinstance(v, str) and "/v1/files/" in v:
                    if STATE.file_for_url(v) is None:
                        p.input_error = ("Failed to download %s: 404 Not Found (file missing or "
                                         "expired)" % k)
                    else:
                        STATE.counters["file_fetches"] += 1
            STATE.preds[pid] = p
            STATE.watch(p)
            STATE.counters["creates"] += 1
            n = STATE.inflight(time.time())
            STATE.counters["max_inflight"] = max(STATE.counters["max_inflight"], n)
        if p.override == "__none__":
            image_bytes_ahead(p.out_w, p.out_h, p.fmt)
        headers = {"ratelimit-remaining": "599", "ratelimit-reset": "1"}
        prefer = self.headers.get("Prefer")
        if prefer is not None and cfg["honor_prefer"]:
            m = re.fullmatch(r"wait(=([1-9]|[1-9][0-9]|60))?", prefer.strip())
            if m:  # malformed values are ignored (async mode)
                n = int(m.group(2)) if m.group(2) else 60
                headers["Preference-Applied"] = prefer.strip()
                return self._hold_create(p, p.created + n, headers)
        self._answer_create(p, headers)

    def _hold_create(self, p, end, headers):
        """Prefer: wait: answer when the prediction is terminal (or, in mode
        processing_with_output, has its output) or at the wait's end, whichever
        comes first. One timer per state change, and a cancel looks again at once
        (Prediction.waiters): no thread sleeps, no tick loop."""
        quirk = STATE.cfg["mode"] == "processing_with_output"

        def look():
            if look not in p.waiters:  # answered, or the client gave up
                return
            if self.ex.closed:  # the client gave up: nobody to answer
                p.waiters.remove(look)
                return
            t = time.time()
            if t >= end or p.status_at(t) in TERMINAL or (quirk and p.output_ready(t)):
                p.waiters.remove(look)
                return self._answer_create(p, headers)
            nxt = p.next_change(t)
            self.server.call_at(min(end, nxt) if nxt else end, look)

        p.waiters.append(look)
        look()

    def _answer_create(self, p, headers):
        if STATE.cfg["mode"] == "malformed_json" and STATE.cfg["malformed_target"] == "create":
            return self._send(201, raw=b'{"id": "' + p.id.encode() + b'", "status": "start',
                              headers=headers)
        self._send(201, raw=p.json(self._api_base(), quirk_output=True), headers=headers)

    def _get(self, pid):
        cfg = STATE.cfg
        with STATE.lock:
            STATE.counters["gets"] += 1
            p = STATE.preds.get(pid)
        if cfg["mode"] == "hang" and cfg["hang_target"] == "get":
            return self._hang()
        if self._maybe_500("get"):
            return
        if p is None:
            return self._problem(404, "The requested resource could not be found.")
        if cfg["mode"] == "malformed_json" and cfg["malformed_target"] == "get":
            return self._send(200, raw=b"{not json")
        self._send(200, raw=p.json(self._api_base()))

    def _cancel(self, pid):
        with STATE.lock:
            STATE.counters["cancels"] += 1
            p = STATE.preds.get(pid)
            if p is None:
                return self._problem(404, "The requested resource could not be found.")
            t = time.time()
            if p.status_at(t) not in TERMINAL:
                p.forced = ("canceled", t)
                STATE.watch(p)
                for look in list(p.waiters):
                    self.server.call_at(0, look)
        self._send(200, raw=p.json(self._api_base()))

    # ---- Files API (§2.6) ----

    def _file_obj(self, f):
        return {"id": f["id"], "name": f["name"], "content_type": f["content_type"],
                "size": len(f["data"]), "etag": f["md5"],
                "checksums": {"sha256": f["sha256"], "md5": f["md5"]},
                "metadata": f["metadata"], "created_at": now_rfc3339(f["created"]),
                "expires_at": now_rfc3339(f["expires"]),
                "urls": {"get": "%s/files/%s" % (self._api_base(), f["id"])}}

    def _file_upload(self, body):
        cfg = STATE.cfg
        mode = cfg["files_mode"]
        if mode == "hang":
            return self._hang()
        if mode == "http500":
            return self._send(500, {"detail": "Internal server error"}, "application/problem+json")
        if len(body) > cfg["file_max_bytes"]:
            return self._problem(413, "Files must be less than 100MB in size")
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.lower().startswith("multipart/form-data"):
            return self._problem(400, "Failed to parse request body as multipart/form-data")
        try:
            parts = {}
            for headers, data in parse_multipart(body, ctype):
                _, disp = header_params(headers.get("content-disposition", ""))
                parts[disp.get("name")] = (headers, disp, data)
        except MultipartError as e:
            return self._problem(400, "Failed to parse request body as multipart/form-data: %s" % e)
        content = parts.get("content")
        if content is None:
            f = [{"type": "required", "field": "content", "description": "content is required"}]
            return self._problem(422, "- content: content is required\n",
                                 "Input validation failed", invalid_fields=f)
        headers, disp, data = content
        name = disp.get("filename") or "file"
        typ = header_params(headers.get("content-type", ""))[0] or "application/octet-stream"
        if "filename" in parts:
            name = bytes(parts["filename"][2]).decode("utf-8", "replace")
        if "type" in parts:
            typ = bytes(parts["type"][2]).decode("utf-8", "replace")
        meta = {}
        if "metadata" in parts:
            try:
                meta = json.loads(bytes(parts["metadata"][2]) or b"{}")
            except Exception:
                return self._problem(422, "- metadata: must be a JSON object\n",
                                     "Input validation failed")
        if len(name.encode()) > 255:
            return self._problem(422, "- filename: must be at most 255 bytes\n",
                                 "Input validation failed")
        fid = base64.urlsafe_b64encode(("%032x" % random.getrandbits(128)).encode()).decode()
        fid = fid.rstrip("=")
        t = time.time()
        f = {"id": fid, "name": name, "content_type": typ, "data": data, "metadata": meta,
             "created": t, "expires": t + float(cfg["file_lifetime_s"]),
             "sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
             "image_size": image_size(data)}  # read once: predictions size their output by it
        with STATE.lock:
            STATE.files[fid] = f
            STATE.counters["file_uploads"] += 1
        self._send(201, self._file_obj(f))

    def _file(self, fid, download):
        with STATE.lock:
            f = STATE.files.get(fid)
            if f is not None and time.time() >= f["expires"]:
                f = None
            if f is not None and self.command == "DELETE":
                del STATE.files[fid]
        if f is None:
            return self._problem(404, "The requested resource could not be found.")
        if self.command == "DELETE":
            return self._send(204, raw=b"")
        if download:
            with STATE.lock:
                STATE.counters["file_fetches"] += 1
            return self._send(200, raw=f["data"], ctype=f["content_type"])
        self._send(200, self._file_obj(f))

    def _delivery(self, path):
        cfg = STATE.cfg
        with STATE.lock:
            STATE.counters["downloads"] += 1
        if cfg["mode"] == "hang" and cfg["hang_target"] == "download":
            return self._hang()
        if self._maybe_500("download"):
            return
        m = re.fullmatch(r"/delivery/([a-z0-9]+)/[^/]+\.(png|jpg|webp)", path)
        p = STATE.preds.get(m.group(1)) if m else None
        if p is None or time.time() > p.created + p.lifetime:
            return self._send(404, raw=b"Not Found", ctype="text/plain")
        if cfg["mode"] == "non_image_output":
            return self._send(200, raw=b"<html><body>Oops, this is not an image</body></html>",
                              ctype="text/html")
        ctype, data = image_bytes(p.out_w, p.out_h, p.fmt)
        self._send(200, raw=data, ctype=ctype)

    # ---- control API ----

    def _control(self, path, body):
        if path == "/_control/config" and self.command == "POST":
            try:
                upd = json.loads(body or b"{}")
                if not isinstance(upd, dict):
                    raise ValueError("config must be an object")
                unknown = [k for k in upd if k not in DEFAULTS and k != "token"]
                if unknown:
                    raise ValueError("unknown config keys: %s" % ", ".join(unknown))
            except Exception as e:
                return self._send(400, {"error": str(e)})
            with STATE.lock:
                STATE.cfg.update(upd)
                cfg = {k: v for k, v in STATE.cfg.items() if k != "token"}
            return self._send(200, cfg)
        if path == "/_control/reset" and self.command == "POST":
            STATE.reset()
            return self._send(200, {"status": "reset"})
        if path == "/_control/stats" and self.command == "GET":
            with STATE.lock:
                t = time.time()
                out = dict(STATE.counters)
                out["inflight"] = STATE.inflight(t)
                out["predictions"] = {pid: p.status_at(t) for pid, p in STATE.preds.items()}
                out["files"] = {fid: {"name": f["name"], "size": len(f["data"]),
                                      "sha256": f["sha256"], "expired": t >= f["expires"]}
                                for fid, f in STATE.files.items()}
                out["requests"] = list(STATE.requests)
                out["last_input"] = STATE.last_input
            with _IMG_LOCK:
                out["output_images"] = sorted("%dx%d.%s" % k for k in _IMG_CACHE)
                out["mode"] = STATE.cfg["mode"]
            return self._send(200, out)
        return self._send(404, {"error": "unknown control route"})


def app(ex):
    Handler(ex, LOOP)._dispatch()


LOOP = None


def main(argv=None):
    global STATE, LOOP
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default="r8_fake_token")
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--delay-ms", type=int, default=DEFAULTS["delay_ms"])
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    args = ap.parse_args(argv)
    defaults = copy.deepcopy(DEFAULTS)
    defaults.update(mode=args.mode, delay_ms=args.delay_ms, token=args.token)
    use_big_malloc_pools()
    STATE = State(defaults)
    # A full collection walks every object alive: mid-burst (1,000 requests and
    # predictions in flight) one held the GIL 21-44 ms, and every create and
    # answer behind it came 40-110 ms late. Considered after 1,000 collections of
    # the middle generation instead of 10, it no longer comes in a bench run.
    # (gc.freeze() was worse: with nothing counted as long-lived, every 10th
    # middle collection became a full one, and creates cost 2-4 ms, not 1.2.)
    gc.set_threshold(700, 10, 1000)
    LOOP = http_loop.Loop(("127.0.0.1", args.port), app, read_headers, quiet=args.quiet)
    sys.stdout.write("READY port=%d\n" % LOOP.server_address[1])
    sys.stdout.flush()
    try:
        LOOP.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        LOOP.close()


if __name__ == "__main__":
    main()
