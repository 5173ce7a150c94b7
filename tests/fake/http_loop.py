"""A single-threaded HTTP/1.1 server on one epoll loop, for the fake Replicate.

    loop = Loop(("127.0.0.1", 0), app)      # app(exchange) answers or holds it
    loop.serve_forever()

Why not http.server's ThreadingHTTPServer: a thread per connection. A burst of
1,000 creates had 1,000 threads handing the GIL to each other, and the hand-offs
(futex waits and wake-ups, context switches) cost more CPU than the requests:
~1.0-1.8 ms per create, all of it on the cores the service under test runs on.
Here one thread reads, parses and answers every request, so nothing waits for
the GIL and nothing switches; a request that must wait (Prefer: wait) is
answered later from a timer, not from a sleeping thread.

What a request sees is what http.server gave it: HTTP/1.1 with keep-alive
(HTTP/1.0 closes unless it asks for keep-alive), `Expect: 100-continue`
answered, a body read by Content-Length, 400 / 431 / 505 for requests it cannot
parse, a `Server` and a `Date` header on every answer, TCP_NODELAY.

An Exchange is one request. The app calls exactly one of:
    ex.respond(status, headers, body)   headers: list of (name, value)
    ex.hold()                           never answer; closed when the peer leaves
and may call them later (loop.call_at) as long as the connection is open;
ex.closed tells whether the peer has gone.
"""
import email.utils
import heapq
import io
import itertools
import selectors
import socket
import sys
import time

MAX_HEAD = 65536 * 101      # the request line and 100 header lines of 64 KiB
HOLD_S = 600                # a held (hung) request is dropped after this long
RECV = 262144

_REASONS = {100: "Continue", 200: "OK", 201: "Created", 204: "No Content",
            400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            413: "Request Entity Too Large", 422: "Unprocessable Entity",
            429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 505: "HTTP Version Not Supported"}


def reason(code):
    return _REASONS.get(code, "Unknown")


class Exchange:
    __slots__ = ("conn", "command", "path", "request_version", "requestline",
                 "headers", "body", "done")

    def __init__(self, conn, command, path, version, requestline, headers, body):
        self.conn = conn
        self.command = command
        self.path = path
        self.request_version = version
        self.requestline = requestline
        self.headers = headers
        self.body = body
        self.done = False

    @property
    def closed(self):
        return self.conn.closed

    def respond(self, code, headers, body):
        """Queue the answer (status line, the Server and Date headers, headers,
        body). A second answer, or one after the peer left, is dropped."""
        if self.done:
            return
        self.done = True
        self.conn.answer(self, code, headers, body)

    def hold(self):
        """Never answer: the connection stays open until the peer closes it."""
        if self.done:
            return
        self.done = True
        self.conn.hold()


class _Conn:
    __slots__ = ("loop", "sock", "inbuf", "out", "closed", "busy", "close_after",
                 "held_until", "mask", "continued")

    def __init__(self, loop, sock):
        self.loop = loop
        self.sock = sock
        self.inbuf = bytearray()
        self.out = []            # memoryviews still to send
        self.closed = False
        self.busy = False        # a request is being answered: the next one waits
        self.close_after = False
        self.held_until = None
        self.mask = selectors.EVENT_READ
        self.continued = False   # 100 Continue sent for the request being read

    # ---- reading ----

    def on_read(self):
        try:
            data = self.sock.recv(RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close()
        if not data:
            return self.close()
        if self.held_until is not None:
            return  # a hung request ignores what the peer sends, as http.server did
        self.inbuf += data
        self.parse()

    def parse(self):
        """Take as many complete requests from inbuf as can be answered in order."""
        while not self.busy and not self.closed and self.inbuf:
            buf = self.inbuf
            end = buf.find(b"\r\n\r\n")
            sep = 4
            if end < 0:
                end = buf.find(b"\n\n")
                sep = 2
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.error(431, "Line too long")
                return
            head = bytes(buf[:end + sep])
            nl = head.find(b"\n")
            requestline = str(head[:nl], "iso-8859-1").rstrip("\r\n")
            words = requestline.split()
            if not words:  # a stray empty line between requests
                del buf[:nl + 1]
                continue
            version = "HTTP/0.9"
            close = True
            if len(words) >= 3:
                version = words[-1]
                try:
                    if not version.startswith("HTTP/"):
                        raise ValueError
                    nums = version.split("/", 1)[1].split(".")
                    if len(nums) != 2:
                        raise ValueError
                    vn = int(nums[0]), int(nums[1])
                except (ValueError, IndexError):
                    return self.error(400, "Bad request version (%r)" % version)
                if vn >= (2, 0):
                    return self.error(505, "Invalid HTTP version (%s)" % version[5:])
                close = vn < (1, 1)
            if not 2 <= len(words) <= 3:
                return self.error(400, "Bad request syntax (%r)" % requestline)
            command, path = words[:2]
            if len(words) == 2 and command != "GET":
                return self.error(400, "Bad HTTP/0.9 request type (%r)" % command)
            if path.startswith("//"):
                path = "/" + path.lstrip("/")
            try:
                headers = self.loop.read_headers(io.BytesIO(head[nl + 1:]))
            except ValueError as err:
                return self.error(431, str(err))
            conntype = (headers.get("Connection") or "").lower()
            if conntype == "close":
                close = True
            elif conntype == "keep-alive":
                close = False
            try:
                n = int(headers.get("Content-Length") or 0)
                if n < 0:
                    raise ValueError
            except ValueError:
                return self.error(400, "Bad Content-Length")
            have = len(buf) - (end + sep)
            if have < n:
                if (have == 0 and version >= "HTTP/1.1"
                        and (headers.get("Expect") or "").lower() == "100-continue"
                        and not self.continued):
                    self.continued = True
                    self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                return  # the rest of the body is still on its way
            body = bytes(buf[end + sep:end + sep + n])
            del buf[:end + sep + n]
            self.close_after = close
            self.continued = False
            self.busy = True
            ex = Exchange(self, command, path, version, requestline, headers, body)
            try:
                self.loop.app(ex)
            except Exception as e:  # a bug in a route must not take the loop down
                sys.stderr.write("fake-replicate: %s: %r\n" % (requestline, e))
                if not ex.done:
                    ex.respond(500, [("Content-Type", "text/plain")], b"fake error\n")

    def error(self, code, message):
        """http.server's send_error: an HTML page, then the connection closes."""
        self.busy = True
        body = ("<html><head><title>Error response</title></head><body>"
                "<h1>Error response</h1><p>Error code: %d</p><p>Message: %s.</p>"
                "</body></html>\n" % (code, message)).encode("utf-8", "replace")
        self.close_after = True
        self.answer(None, code, [("Content-Type", "text/html;charset=utf-8")], body)

    # ---- writing ----

    def answer(self, ex, code, headers, body):
        if self.closed:
            return
        lines = ["HTTP/1.1 %d %s\r\n" % (code, reason(code)),
                 "Server: %s\r\n" % self.loop.server_version,
                 "Date: %s\r\n" % self.loop.date()]
        lines += ["%s: %s\r\n" % kv for kv in headers]
        if self.close_after:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if ex is not None and ex.command == "HEAD":
            body = b""
        if ex is not None:
            self.loop.log(ex.requestline, code, len(body))
        if len(body) < 65536:
            self.send(head + body)
        else:
            self.send(head)
            self.send(body)
        self.busy = False
        if self.close_after:
            self.shut_when_sent()
        elif self.inbuf:
            self.loop.call_at(0, self.parse)  # a pipelined request, after this one

    def send(self, data):
        if self.closed:
            return
        if not self.out:
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                return self.close()
            if n == len(data):
                return
            data = memoryview(data)[n:]
        else:
            data = memoryview(data)
        self.out.append(data)
        self.want(selectors.EVENT_READ | selectors.EVENT_WRITE)

    def on_write(self):
        while self.out:
            d = self.out[0]
            try:
                n = self.sock.send(d)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return self.close()
            if n < len(d):
                self.out[0] = d[n:]
                return
            self.out.pop(0)
        self.want(selectors.EVENT_READ)
        if self.close_after and not self.busy:
            self.close()

    def shut_when_sent(self):
        if not self.out:
            self.close()

    def want(self, mask):
        if self.closed or mask == self.mask:
            return
        self.mask = mask
        self.loop.sel.modify(self.sock, mask, self)

    # ---- hold / close ----

    def hold(self):
        self.close_after = True
        self.held_until = time.time() + HOLD_S
        self.inbuf.clear()
        self.loop.held.add(self)

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.loop.held.discard(self)
        try:
            self.loop.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class Loop:
    server_version = "FakeReplicate/1.0 Python/%d.%d.%d" % sys.version_info[:3]

    def __init__(self, address, app, read_headers, backlog=1024, quiet=False):
        self.app = app
        self.read_headers = read_headers
        self.quiet = quiet
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(address)
        self.lsock.listen(backlog)
        self.lsock.setblocking(False)
        self.server_address = self.lsock.getsockname()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.timers = []         # heap of (when, seq, fn)
        self.seq = itertools.count()
        self.held = set()
        self.stopping = False
        self._date_s = None
        self._date = ""

    def date(self):
        s = int(time.time())
        if s != self._date_s:
            self._date_s, self._date = s, email.utils.formatdate(s, usegmt=True)
        return self._date

    def log(self, requestline, code, size):
        if not self.quiet:
            sys.stderr.write('fake-replicate: "%s" %d %s\n' % (requestline, code, size or "-"))
            sys.stderr.flush()

    def call_at(self, when, fn):
        """Run fn() on the loop at time when (time.time() seconds; 0 = next turn)."""
        heapq.heappush(self.timers, (when, next(self.seq), fn))

    def accept(self):
        for _ in range(256):
            try:
                s, _ = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Conn(self, s)
            self.sel.register(s, selectors.EVENT_READ, c)

    def run_timers(self):
        now = time.time()
        while self.timers and self.timers[0][0] <= now:
            _, _, fn = heapq.heappop(self.timers)
            try:
                fn()
            except Exception as e:
                sys.stderr.write("fake-replicate: timer: %r\n" % e)
        if self.held:
            for c in [c for c in self.held if c.held_until <= now]:
                c.close()

    def serve_forever(self):
        while not self.stopping:
            timeout = 0.5
            if self.timers:
                timeout = min(timeout, max(0.0, self.timers[0][0] - time.time()))
            for key, ev in self.sel.select(timeout):
                c = key.data
                if c is None:
                    self.accept()
                    continue
                if ev & selectors.EVENT_WRITE and not c.closed:
                    c.on_write()
                if ev & selectors.EVENT_READ and not c.closed:
                    c.on_read()
            self.run_timers()

    def close(self):
        self.stopping = True
        for key in list(self.sel.get_map().values()):
            if key.data is not None:
                key.data.close()
        self.sel.close()
        self.lsock.close()
