"""A private redis-server for the integration tests: the Debian package on a
free 127.0.0.1 port, its own directory, AOF on (a SIGTERM flushes it) so that a
stop + start keeps the data as a production Redis with persistence does.
Stopped by pid."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from ports import free_port


class RedisServer:
    def __init__(self, workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="sc_redis_")
        self._own_dir = workdir is None
        self.port = free_port()
        self.proc = None
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is missing: run ./scripts/install-deps.sh")

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self, timeout=10.0):
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def ping(self):
        return self.command("PING") == "+PONG"

    def command(self, *args):
        """One command over a raw RESP connection; returns the first reply line
        (enough for PING, DBSIZE, KEYS counts in tests), or None."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                msg = "*%d\r\n" % len(args) + "".join(
                    "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)
                s.sendall(msg.encode())
                data = b""
                while not data.endswith(b"\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data.decode(errors="replace").split("\r\n")[0]
        except OSError:
            return None

    def stop(self):
        """SIGTERM (Redis flushes its AOF) and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
