#!/usr/bin/python3
"""Drives a running fake Replicate server (tests/fake/fake_replicate.py) by hand.

    /usr/bin/python3 tests/fake/fakectl.py --port 9999 config mode=slow
    /usr/bin/python3 tests/fake/fakectl.py --port 9999 config mode=ok delay_ms=3000
    /usr/bin/python3 tests/fake/fakectl.py --port 9999 stats          # counters, no request log
    /usr/bin/python3 tests/fake/fakectl.py --port 9999 stats --all    # with every request
    /usr/bin/python3 tests/fake/fakectl.py --port 9999 reset

config values are read as JSON when they parse (3000, true, null, [..]), else as text.
"""
import argparse
import json
import sys
import urllib.request


def call(port, method, path, obj=None):
    data = json.dumps(obj).encode() if obj is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read().decode())


def main(argv=None):
    ap = argparse.ArgumentParser(description="control a running fake Replicate server")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("command", choices=["config", "stats", "reset"])
    ap.add_argument("settings", nargs="*", help="key=value pairs for config")
    ap.add_argument("--all", action="store_true", help="stats: include the request log")
    a = ap.parse_args(argv)
    if a.command == "config":
        upd = {}
        for kv in a.settings:
            if "=" not in kv:
                ap.error("config settings are key=value, got %r" % kv)
            k, v = kv.split("=", 1)
            try:
                upd[k] = json.loads(v)
            except ValueError:
                upd[k] = v
        out = call(a.port, "POST", "/_control/config", upd)
    elif a.command == "stats":
        out = call(a.port, "GET", "/_control/stats")
        if not a.all:
            out.pop("requests", None)
    else:
        out = call(a.port, "POST", "/_control/reset")
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
