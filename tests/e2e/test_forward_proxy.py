"""apisim record and replay as a forward proxy: HTTP_PROXY (absolute-form requests) and
HTTPS_PROXY (CONNECT, TLS terminated with apisim's own CA), many hosts in one recording.

Real parts only: the apisim binary, upstreams on loopback (plain and TLS, port 0), curl -x,
Python's urllib through https_proxy, raw sockets for what no client sends, and the real
`claude` CLI (tests/node, installed by scripts/install-deps.sh).
"""

import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ApisimProcess, child_env, curl, query_db, run_apisim,  # noqa: E402
                     wait_until)
from upstream import Upstream  # noqa: E402

NAME = "api.example.test"  # resolved by nobody: --connect-to sends it to a local upstream
OTHER = "other.example.test"


# ---------------------------------------------------------------- helpers

def proxy_curl(proxy, url, *args, timeout=20):
    """curl through apisim as its proxy (-x): returns (status, body bytes, CompletedProcess)."""
    with tempfile.TemporaryDirectory(prefix="apisim-curl-") as d:
        body_f = os.path.join(d, "body")
        cmd = ["curl", "-sS", "-x", proxy, "--max-time", str(timeout), "-o", body_f,
               "-w", "%{http_code}", *map(str, args), url]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10, env=child_env())
        body = Path(body_f).read_bytes() if os.path.exists(body_f) else b""
    out = p.stdout.decode().strip()
    return (int(out) if out.isdigit() else 0), body, p


def connect(proxy_port, target, timeout=5.0):
    """Open a CONNECT tunnel by hand: returns (socket, response head as text)."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head.decode("latin-1")


def read_all(s):
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        out += chunk
    return out


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tls_upstream(cert, key):
    """tests/e2e/upstream.py's server behind TLS with a certificate of its own."""
    up = Upstream()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    up._server.socket = ctx.wrap_socket(up._server.socket, server_side=True)
    up.url = f"https://127.0.0.1:{up.port}"
    return up


@pytest.fixture(scope="module")
def upstream_cert(tmp_path_factory):
    """A self-signed certificate for NAME, OTHER and 127.0.0.1 (the upstreams' own)."""
    d = tmp_path_factory.mktemp("upstream-cert")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={NAME}", "-addext",
                    f"subjectAltName=DNS:{NAME},DNS:{OTHER},IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory):
    """A recording with no exchanges (a replay that only proxies and misses)."""
    db = str(tmp_path_factory.mktemp("empty") / "empty.db")
    with ApisimProcess(["record", "--db", db]) as rec:
        rec.stop()
    return db


@pytest.fixture(params=["tls-daemon", "relay"])
def tls_way(request):
    """Both ways apisim terminates a tunnel's TLS: in libmicrohttpd's TLS daemon (the
    default), and the front's own OpenSSL relay (a libmicrohttpd without TLS)."""
    return request.param


@pytest.fixture
def ca_dir(tmp_path):
    return str(tmp_path / "ca")


def env_ca(ca_dir, way="tls-daemon"):
    return {"APISIM_CA_DIR": ca_dir, "APISIM_TLS_RELAY": "1" if way == "relay" else "0"}


# ---------------------------------------------------------------- HTTP_PROXY

def test_absolute_form_two_hosts_same_path_replay_their_own(tmp_path, ca_dir):
    db = str(tmp_path / "rec.db")
    with Upstream() as a, Upstream() as b:
        with ApisimProcess(["record", "--db", db], env=env_ca(ca_dir)) as rec:
            for up in (a, b):
                st, body, p = proxy_curl(rec.url, f"{up.url}/echo?q=1")
                assert st == 200, p.stderr
                # The upstream saw its own Host: the request went to the host it named.
                assert json.loads(body)["headers"]["host"] == f"127.0.0.1:{up.port}"
            assert len(a.received_for("/echo")) == 1 and len(b.received_for("/echo")) == 1
            rec.stop()
        hosts = {(r["scheme"], r["authority"]) for r in
                 query_db(db, "SELECT scheme, authority FROM exchanges")}
        assert hosts == {("http", f"127.0.0.1:{a.port}"), ("http", f"127.0.0.1:{b.port}")}
        urls = {a.port: f"{a.url}/echo?q=1", b.port: f"{b.url}/echo?q=1"}

    # The upstreams are gone: replay answers each host with its own recorded body.
    third = Upstream()  # a port that was never recorded (never started: nothing listens)
    with ApisimProcess(["replay", "--db", db], env=env_ca(ca_dir)) as rep:
        for port, url in urls.items():
            st, body, p = proxy_curl(rep.url, url)
            assert st == 200, p.stderr
            assert json.loads(body)["headers"]["host"] == f"127.0.0.1:{port}"
        st, body, _ = proxy_curl(rep.url, f"http://127.0.0.1:{third.port}/echo?q=1")
        assert st == 404
        miss = json.loads(body)
        assert miss["error"] == "no recorded exchange matches"
        assert miss["request"]["authority"] == f"127.0.0.1:{third.port}"
        assert miss["nearest"] and miss["nearest"][0]["differences"][0].startswith("host: ")
        # A request in origin form (reverse mode) still matches any host's exchange.
        st, body, _ = proxy_curl("", f"{rep.url}/echo?q=1")
        assert st == 200
        # The journal names the host each proxied request was for, and none for the last.
        journal = curl(f"{rep.url}/__apisim/requests").json()
        assert [(j["scheme"], j["authority"]) for j in journal] == \
            [("http", f"127.0.0.1:{port}") for port in urls] + \
            [("http", f"127.0.0.1:{third.port}"), (None, None)]
        res = rep.stop()
    third._server.server_close()
    assert "miss: GET http://127.0.0.1:%d/echo?q=1" % third.port in res.stderr

    # ls, the views and HAR name the host.
    ls = json.loads(run_apisim("ls", "--db", db, "--json").stdout)
    assert sorted(i["url"] for i in ls) == sorted(urls.values())
    assert sorted(r["url"] for r in query_db(db, "SELECT url FROM exchanges_text")) == \
        sorted(urls.values())
    har = json.loads(run_apisim("export", "--db", db, "--format", "har").stdout)
    assert sorted(e["request"]["url"] for e in har["log"]["entries"]) == sorted(urls.values())
    first = ls[0]
    show = run_apisim("show", "--db", db, str(first["id"])).stdout
    assert f"* url {first['url']}" in show
    jsonl = [json.loads(ln) for ln in
             run_apisim("export", "--db", db, "--format", "jsonl").stdout.splitlines()]
    assert {j["authority"] for j in jsonl} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    # Nothing but the recording was written: no CA without a CONNECT.
    assert not os.path.exists(ca_dir)


def test_origin_form_without_upstream_is_400_naming_both_fixes(tmp_path, ca_dir):
    with ApisimProcess(["record", "--db", str(tmp_path / "r.db")], env=env_ca(ca_dir)) as rec:
        r = curl(f"{rec.url}/v1/messages", check=False)
        assert r.status == 400
        msg = r.json()["error"]
        assert "--upstream" in msg and "HTTPS_PROXY" in msg
        with Upstream() as up:  # still serving, as a proxy
            st, _, p = proxy_curl(rec.url, f"{up.url}/json")
            assert st == 200, p.stderr
    assert query_db(str(tmp_path / "r.db"), "SELECT count(*) AS n FROM exchanges")[0]["n"] == 1


# ---------------------------------------------------------------- HTTPS_PROXY

def test_https_connect_record_replay_with_curl_and_the_ca(tmp_path, ca_dir, upstream_cert,
                                                          tls_way):
    db = str(tmp_path / "rec.db")
    cert, key = upstream_cert
    up = tls_upstream(cert, key).start()
    try:
        args = ["record", "--db", db, "--connect-to", f"{NAME}:443:127.0.0.1:{up.port}",
                "--upstream-cacert", cert]
        with ApisimProcess(args, env=env_ca(ca_dir, tls_way)) as rec:
            ca_pem = os.path.join(ca_dir, "ca.pem")
            # Two requests over one kept-alive tunnel.
            st, body, p = proxy_curl(rec.url, f"https://{NAME}/echo?n=1", "--cacert", ca_pem,
                                     "-H", "Authorization: Bearer sk-secret-1")
            assert st == 200, p.stderr + b" " + rec.stderr_text().encode()
            assert json.loads(body)["headers"]["host"] == NAME
            st2, body2, p = proxy_curl(rec.url, f"https://{NAME}/json", "--cacert", ca_pem)
            assert st2 == 200, p.stderr
            res = rec.stop()
            assert res.rc == 0, res.stderr  # a clean stop (and no sanitizer report)
    finally:
        up.stop()
    rows = query_db(db, "SELECT scheme, authority, path, request_headers FROM exchanges "
                        "ORDER BY id")
    assert [(r["scheme"], r["authority"], r["path"]) for r in rows] == \
        [("https", NAME, "/echo"), ("https", NAME, "/json")]
    assert "sk-secret-1" not in rows[0]["request_headers"]  # redacted like any other
    ca_hash = sha256(os.path.join(ca_dir, "ca.pem"))
    assert stat.S_IMODE(os.stat(os.path.join(ca_dir, "ca-key.pem")).st_mode) == 0o600

    # Replay: no upstream, the same CA, the same answers.
    with ApisimProcess(["replay", "--db", db], env=env_ca(ca_dir, tls_way)) as rep:
        st, rbody, p = proxy_curl(rep.url, f"https://{NAME}/echo?n=1", "--cacert",
                                  os.path.join(ca_dir, "ca.pem"))
        assert (st, rbody) == (200, body), p.stderr
        # Another host through CONNECT misses: it replays only from its own host.
        st, mbody, _ = proxy_curl(rep.url, f"https://{OTHER}/echo?n=1", "--cacert",
                                  os.path.join(ca_dir, "ca.pem"))
        assert st == 404 and json.loads(mbody)["request"]["authority"] == OTHER
        res = rep.stop()
        assert res.rc == 0, res.stderr
    assert sha256(os.path.join(ca_dir, "ca.pem")) == ca_hash  # made once, reused
    assert sorted(os.listdir(ca_dir)) == ["ca-key.pem", "ca.pem"]


def test_leaves_share_the_issuer_and_name_their_host(empty_db, ca_dir, tls_way):
    with ApisimProcess(["replay", "--db", empty_db],
                       env=env_ca(ca_dir, tls_way)) as rep:
        certs = {}
        for host in (NAME, OTHER, "127.0.0.1"):
            s, head = connect(rep.port, f"{host}:443")
            assert head.startswith("HTTP/1.1 200 "), head
            ctx = ssl.create_default_context(cafile=os.path.join(ca_dir, "ca.pem"))
            sni = host if host != "127.0.0.1" else None
            with ctx.wrap_socket(s, server_hostname=sni or host) as t:
                certs[host] = t.getpeercert()
        issuers = {json.dumps(c["issuer"]) for c in certs.values()}
        assert len(issuers) == 1 and "apisim" in issuers.pop()
        assert certs[NAME]["subjectAltName"] == (("DNS", NAME),)
        assert certs[OTHER]["subjectAltName"] == (("DNS", OTHER),)
        assert certs["127.0.0.1"]["subjectAltName"] == (("IP Address", "127.0.0.1"),)


def test_python_urllib_through_https_proxy(tmp_path, ca_dir, upstream_cert):
    db = str(tmp_path / "rec.db")
    cert, key = upstream_cert
    code = ("import json, urllib.request; "
            f"r = urllib.request.urlopen('https://{NAME}/echo?from=urllib', timeout=20); "
            "print(json.dumps({'status': r.status, 'body': r.read().decode()}))")
    up = tls_upstream(cert, key).start()
    try:
        args = ["record", "--db", db, "--connect-to", f"{NAME}:443:127.0.0.1:{up.port}",
                "--upstream-cacert", cert]
        with ApisimProcess(args, env=env_ca(ca_dir)) as rec:
            # The CA exists once a CONNECT needed it; make it now for SSL_CERT_FILE.
            ca_pem = run_apisim("ca", "--ca-dir", ca_dir).stdout.strip()
            env = child_env({"https_proxy": rec.url, "SSL_CERT_FILE": ca_pem})
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                               timeout=60)
            assert p.returncode == 0, p.stderr.decode() + rec.stderr_text()
            recorded = json.loads(p.stdout)
    finally:
        up.stop()
    assert recorded["status"] == 200
    with ApisimProcess(["replay", "--db", db], env=env_ca(ca_dir)) as rep:
        env = child_env({"https_proxy": rep.url, "SSL_CERT_FILE": ca_pem})
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                           timeout=60)
        assert p.returncode == 0, p.stderr.decode()
        assert json.loads(p.stdout) == recorded


def test_no_intercept_tunnels_in_record_and_502_in_replay(tmp_path, ca_dir, upstream_cert):
    db = str(tmp_path / "rec.db")
    cert, key = upstream_cert
    up = tls_upstream(cert, key).start()
    try:
        args = ["record", "--db", db, "--no-intercept", f"x.test,{NAME}",
                "--connect-to", f"{NAME}:443:127.0.0.1:{up.port}"]
        with ApisimProcess(args, env=env_ca(ca_dir)) as rec:
            # The client talks TLS with the upstream itself: it trusts the upstream's cert.
            st, body, p = proxy_curl(rec.url, f"https://{NAME}/json", "--cacert", cert)
            assert st == 200 and json.loads(body)["hello"] == "world", p.stderr
    finally:
        up.stop()
    assert query_db(db, "SELECT count(*) AS n FROM exchanges")[0]["n"] == 0
    assert not os.path.exists(ca_dir)  # nothing intercepted, no CA needed
    with ApisimProcess(["replay", "--db", db, "--no-intercept", NAME],
                       env=env_ca(ca_dir)) as rep:
        s, head = connect(rep.port, f"{NAME}:443")
        head += read_all(s).decode()
        s.close()
        assert head.startswith("HTTP/1.1 502 ") and "--no-intercept" in head


def _private_resolv_conf_allowed():
    """Whether this process may run a child in its own mount namespace (root, unshare)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _private_resolv_conf_allowed(),
                    reason="needs root and unshare -m, for a private /etc/resolv.conf")
def test_no_intercept_lookup_does_not_hold_other_clients(tmp_path, monkeypatch):
    """A --no-intercept host whose DNS server never answers: other clients are served while
    the lookup waits, and the CONNECT gets a 502 naming the lookup when it gives up. apisim
    runs in its own mount namespace, its /etc/resolv.conf naming a UDP socket of this test
    that reads queries and answers none."""
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.2", 53))
    dns.settimeout(10)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.2\noptions timeout:5 attempts:1\n")
    wrapper = tmp_path / "apisim-private-dns"
    wrapper.write_text("#!/bin/sh\n"
                       "exec unshare -m sh -c 'mount --bind \"$0\" /etc/resolv.conf && "
                       f"exec \"$@\"' {resolv} {os.environ['APISIM_BIN']} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("APISIM_BIN", str(wrapper))
    up = Upstream().start()
    try:
        args = ["record", "--db", str(tmp_path / "rec.db"), "--upstream", up.url,
                "--no-intercept", "slow.invalid-tld-for-tests"]
        with ApisimProcess(args) as rec:
            slow = socket.create_connection(("127.0.0.1", rec.port), timeout=15)
            target = "slow.invalid-tld-for-tests:443"
            slow.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            dns.recvfrom(512)  # the lookup is under way, and will get no answer
            # A new client meanwhile: the front accepts it and it is answered (the old
            # front looked hosts up on its own thread and took no one in for 5 s).
            r = curl(rec.url + "/json", "--max-time", "4")
            assert r.status == 200, r
            slow.setblocking(False)
            with pytest.raises(BlockingIOError):
                slow.recv(1)  # ... while the CONNECT is still waiting for its lookup
            slow.setblocking(True)
            head = read_all(slow).decode("latin-1")
            slow.close()
            assert head.startswith("HTTP/1.1 502 "), head
            assert "cannot resolve slow.invalid-tld-for-tests" in head, head
            assert "cannot resolve slow.invalid-tld-for-tests" in rec.stderr_text()
    finally:
        up.stop()
        dns.close()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("target", ["nohost", "host:99999", "host:0", ":443", "a b:443",
                                    "[::1:443", "exa$mple.test:443", "h:12ab"])
def test_malformed_connect_target_is_400(empty_db, ca_dir, target):
    with ApisimProcess(["replay", "--db", empty_db], env=env_ca(ca_dir)) as rep:
        s, head = connect(rep.port, target)
        rest = read_all(s)
        s.close()
        assert head.startswith("HTTP/1.1 400 "), head
        body = head.split("\r\n\r\n", 1)[1].encode() + rest
        assert "CONNECT target" in json.loads(body)["error"]
        assert curl(f"{rep.url}/__apisim/health").status == 200  # still serving


def test_non_tls_inside_tunnel_closes_that_connection_only(empty_db, ca_dir, tls_way):
    with ApisimProcess(["replay", "--db", empty_db], env=env_ca(ca_dir, tls_way)) as rep:
        keep = socket.create_connection(("127.0.0.1", rep.port), timeout=5)
        s, head = connect(rep.port, f"{NAME}:443")
        assert head.startswith("HTTP/1.1 200 ")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all(s) == b""  # closed, nothing answered in plaintext
        s.close()
        wait_until(lambda: "is not TLS" in rep.stderr_text(), what="the not-TLS log line")
        # Another connection, opened before, still works.
        keep.sendall(b"GET /__apisim/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(keep).startswith(b"HTTP/1.1 200 ")
        keep.close()
        assert f"CONNECT {NAME}" in rep.stderr_text()
        res = rep.stop()
        assert res.rc == 0, res.stderr


def test_client_rejecting_the_certificate_is_logged_with_the_hint(empty_db, ca_dir, tls_way):
    with ApisimProcess(["replay", "--db", empty_db], env=env_ca(ca_dir, tls_way)) as rep:
        s, head = connect(rep.port, f"{NAME}:443")
        assert head.startswith("HTTP/1.1 200 ")
        ctx = ssl.create_default_context()  # does not trust apisim's CA (as a pinned client)
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(s, server_hostname=NAME)
        s.close()
        wait_until(lambda: "--no-intercept" in rep.stderr_text(), what="the pinning hint")
        log = rep.stderr_text()
        assert f"CONNECT {NAME}" in log and f"--no-intercept {NAME}" in log
        assert curl(f"{rep.url}/__apisim/health").status == 200
        res = rep.stop()
        assert res.rc == 0, res.stderr


@pytest.mark.parametrize("args, needle", [
    (["--connect-to", "a:443:b"], "--connect-to"),
    (["--connect-to", "a:99999:b:1"], "--connect-to"),
    (["--no-intercept", "a b"], "--no-intercept"),
    (["--no-intercept", "a,,b"], "--no-intercept"),
    (["--upstream-cacert", "/nonexistent/ca.pem"], "--upstream-cacert"),
])
def test_bad_proxy_flags_exit_2(tmp_path, args, needle):
    p = run_apisim("record", "--db", str(tmp_path / "r.db"), "--listen", "127.0.0.1:0", *args)
    assert p.returncode == 2 and needle in p.stderr, p.stderr


def test_ca_command_creates_once_and_prints_the_path(tmp_path):
    d = str(tmp_path / "home" / "ca")
    first = run_apisim("ca", "--ca-dir", d)
    assert first.returncode == 0, first.stderr
    path = first.stdout.strip()
    assert path == os.path.join(d, "ca.pem")
    h = sha256(path)
    again = run_apisim("ca", env=child_env({"APISIM_CA_DIR": d}))
    assert again.stdout.strip() == path and sha256(path) == h
    assert stat.S_IMODE(os.stat(os.path.join(d, "ca-key.pem")).st_mode) == 0o600
    # Defaults: $XDG_CONFIG_HOME/apisim/ca, else ~/.config/apisim/ca.
    home = tmp_path / "h2"
    env = {k: v for k, v in child_env().items() if k not in ("APISIM_CA_DIR", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    p = subprocess.run([os.environ["APISIM_BIN"], "ca"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert p.stdout.strip() == str(home / ".config" / "apisim" / "ca" / "ca.pem")
    assert sorted(str(x.relative_to(home)) for x in home.rglob("*") if x.is_file()) == \
        [".config/apisim/ca/ca-key.pem", ".config/apisim/ca/ca.pem"]


# ---------------------------------------------------------------- the real claude CLI

CLAUDE_TEXT = "Hello from the local upstream."


def _messages_sse():
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_local_001", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": CLAUDE_TEXT}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 6}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()


class MessagesUpstream:
    """A TLS upstream answering POST /v1/messages like the Messages API (an SSE stream when
    the request asks for one, as reference/claude-stream-json's sessions show), in a thread."""

    def __init__(self, cert, key):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading
        paths = self.paths = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                body = self.rfile.read(n)
                paths.append(self.path)
                if self.path.split("?")[0] == "/v1/messages":
                    req = json.loads(body or b"{}")
                    if req.get("stream"):
                        data, ctype = _messages_sse(), "text/event-stream"
                    else:
                        data, ctype = json.dumps({
                            "id": "msg_local_002", "type": "message", "role": "assistant",
                            "model": req.get("model"), "stop_reason": "end_turn",
                            "content": [{"type": "text", "text": CLAUDE_TEXT}],
                            "usage": {"input_tokens": 12, "output_tokens": 6}}).encode(), \
                            "application/json"
                    status = 200
                else:
                    status, ctype = 404, "application/json"
                    data = b'{"type":"error","error":{"type":"not_found_error","message":"no"}}'
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self._srv.socket = ctx.wrap_socket(self._srv.socket, server_side=True)
        self.port = self._srv.server_address[1]
        self._t = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
                                   daemon=True)
        self._t.start()

    def stop(self):
        self._srv.shutdown()
        self._t.join(5)
        self._srv.server_close()


def claude_binary():
    """The pinned real CLI from tests/node (scripts/install-deps.sh installs it)."""
    root = os.environ.get("APISIM_SOURCE_DIR",
                          os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    path = os.path.join(root, "tests", "node", "node_modules", "@anthropic-ai", "claude-code",
                        "bin", "claude.exe")
    if os.access(path, os.X_OK):
        return path
    import shutil
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the real claude CLI cannot be installed")
    pytest.fail(f"{path} is missing: run scripts/install-deps.sh (it installs tests/node)")


def run_claude(binary, proxy, ca_pem, home, cwd):
    env = child_env({"ANTHROPIC_API_KEY": "sk-test", "DISABLE_TELEMETRY": "1",
                     "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "HOME": str(home),
                     "HTTPS_PROXY": proxy, "NODE_EXTRA_CA_CERTS": ca_pem,
                     "ANTHROPIC_BASE_URL": f"https://{NAME}"})
    for k in ("CLAUDE_CONFIG_DIR", "ANTHROPIC_AUTH_TOKEN", "XDG_CONFIG_HOME"):
        env.pop(k, None)
    p = subprocess.run([binary, "-p", "say hello", "--model", "claude-sonnet-4-5",
                        "--output-format", "stream-json", "--verbose"],
                       capture_output=True, env=env, cwd=str(cwd), timeout=120)
    records = [json.loads(ln) for ln in p.stdout.decode().splitlines() if ln.startswith("{")]
    result = [r for r in records if r.get("type") == "result"]
    return p, (result[-1] if result else None)


def test_real_claude_cli_recorded_then_replayed_offline(tmp_path, ca_dir, upstream_cert):
    binary = claude_binary()
    cert, key = upstream_cert
    db = str(tmp_path / "claude.db")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    ca_pem = run_apisim("ca", "--ca-dir", ca_dir).stdout.strip()
    up = MessagesUpstream(cert, key)
    try:
        args = ["record", "--db", db, "--connect-to", f"{NAME}:443:127.0.0.1:{up.port}",
                "--upstream-cacert", cert]
        with ApisimProcess(args, env=env_ca(ca_dir)) as rec:
            p, recorded = run_claude(binary, rec.url, ca_pem, home, work)
            assert p.returncode == 0 and recorded, \
                p.stdout.decode()[-2000:] + p.stderr.decode() + rec.stderr_text()
            rec.stop()
    finally:
        up.stop()
    assert recorded["result"] == CLAUDE_TEXT and not recorded["is_error"]
    assert "/v1/messages?beta=true" in up.paths
    rows = query_db(db, "SELECT scheme, authority, path, status, request_headers FROM exchanges")
    assert ("https", NAME, "/v1/messages", 200) in \
        {(r["scheme"], r["authority"], r["path"], r["status"]) for r in rows}
    assert all("sk-test" not in r["request_headers"] for r in rows)  # x-api-key redacted

    # The upstream is gone; the CLI's session id in metadata differs per run.
    with ApisimProcess(["replay", "--db", db, "--ignore-json", "/metadata/user_id"],
                       env=env_ca(ca_dir)) as rep:
        p, replayed = run_claude(binary, rep.url, ca_pem, home, work)
        assert p.returncode == 0 and replayed, p.stdout.decode()[-2000:] + rep.stderr_text()
    for k in ("result", "is_error", "subtype", "num_turns", "stop_reason"):
        assert replayed.get(k) == recorded.get(k), k


def test_older_recording_opens_with_hosts_from_its_upstream(ca_dir):
    """recordings/demo.sql is schema 3 (no hosts): its exchanges take their session's
    --upstream, and replay both as a reverse proxy and as a proxy for that host."""
    root = os.environ.get("APISIM_SOURCE_DIR",
                          os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    dump = os.path.join(root, "recordings", "demo.sql")
    assert "PRAGMA user_version=3;" in Path(dump).read_text().splitlines()[0]
    items = json.loads(run_apisim("ls", "--db", dump, "--json").stdout)
    assert items and {(i["scheme"], i["authority"]) for i in items} == \
        {("http", "127.0.0.1:46099")}
    path = [i for i in items if i["method"] == "GET"][0]["url"]
    assert path.startswith("/")  # the session's own upstream: shown as before
    with ApisimProcess(["replay", "--db", dump], env=env_ca(ca_dir)) as rep:
        direct = curl(f"{rep.url}{path}")
        st, body, p = proxy_curl(rep.url, f"http://127.0.0.1:46099{path}")
        assert direct.status == 200 and (st, body) == (200, direct.body), p.stderr


def test_stop_with_tunnels_open_is_clean(empty_db, ca_dir, tls_way):
    """SIGTERM while tunnels are open (one serving, one mid-CONNECT, one half a CONNECT line)
    and a plain connection idles: exit 0 (a use-after-free here once aborted ASan builds)."""
    with ApisimProcess(["replay", "--db", empty_db], env=env_ca(ca_dir, tls_way)) as rep:
        s, head = connect(rep.port, f"{NAME}:443")
        assert head.startswith("HTTP/1.1 200 ")
        ctx = ssl.create_default_context(cafile=os.path.join(ca_dir, "ca.pem"))
        t = ctx.wrap_socket(s, server_hostname=NAME)
        t.sendall(b"GET /x HTTP/1.1\r\nHost: " + NAME.encode() + b"\r\n\r\n")
        assert t.recv(100).startswith(b"HTTP/1.1 404 ")
        others = [socket.create_connection(("127.0.0.1", rep.port)) for _ in range(3)]
        others[1].sendall(f"CONNECT {OTHER}:443 HTTP/1.1\r\n\r\n".encode())
        others[2].sendall(b"CONN")
        wait_until(lambda: others[1].recv(100, socket.MSG_PEEK), what="the 200 to the CONNECT")
        res = rep.stop()
        assert res.rc == 0, res.stderr
        for o in [t, *others]:
            o.close()


# ---------------------------------------------------------------- one tunnel, many answers

def tunnel_connection(port, ca_pem, timeout=10):
    """http.client through a CONNECT tunnel to NAME, trusting apisim's CA (SNI: NAME)."""
    ctx = ssl.create_default_context(cafile=ca_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    conn.set_tunnel(NAME, 443)
    return conn


def exchange(conn, method, path, body=None):
    conn.request(method, path, body=body)
    r = conn.getresponse()
    return r.status, r.read(), r


def test_kept_alive_tunnel_answers_every_kind_of_response(tmp_path, ca_dir, upstream_cert,
                                                          tls_way):
    """One kept-alive tunnel carries answers with a body, with an empty body, to HEAD, a body
    of many TLS records, a POST's and a miss's, each whole and in order. (apisim sends a
    small answer's head and body in one send(); a head held back with nothing after it would
    leave the client waiting here.)"""
    db = str(tmp_path / "rec.db")
    cert, key = upstream_cert
    ca_pem = run_apisim("ca", "--ca-dir", ca_dir).stdout.strip()
    asks = [("GET", "/json", None), ("HEAD", "/json", None), ("GET", "/binary?n=0", None),
            ("GET", "/binary?n=200000", None), ("POST", "/echo", b'{"q": "kept alive"}')]
    up = tls_upstream(cert, key).start()
    try:
        args = ["record", "--db", db, "--connect-to", f"{NAME}:443:127.0.0.1:{up.port}",
                "--upstream-cacert", cert]
        with ApisimProcess(args, env=env_ca(ca_dir, tls_way)) as rec:
            conn = tunnel_connection(rec.port, ca_pem)
            recorded = [exchange(conn, *a)[:2] for a in asks]
            conn.close()
            assert rec.stop().rc == 0
    finally:
        up.stop()
    assert [r[0] for r in recorded] == [200] * 5, recorded
    assert recorded[1][1] == b"" and recorded[2][1] == b"" and len(recorded[3][1]) == 200000

    with ApisimProcess(["replay", "--db", db], env=env_ca(ca_dir, tls_way)) as rep:
        conn = tunnel_connection(rep.port, ca_pem)
        for _ in range(2):  # twice over, on the one connection
            for ask, want in zip(asks, recorded):
                st, body, r = exchange(conn, *ask)
                assert (st, body) == want, (ask, st, body[:200])
                assert not r.will_close
                sock = conn.sock
            st, body, _ = exchange(conn, "GET", "/not-recorded")
            assert st == 404 and json.loads(body)["request"]["authority"] == NAME
            assert exchange(conn, "HEAD", "/not-recorded")[:2] == (404, b"")  # a head alone
            assert conn.sock is sock  # the same connection throughout
        conn.close()
        res = rep.stop()
        assert res.rc == 0, res.stderr


def cpu_seconds(pid):
    """utime + stime of every thread of process pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_handshake_waiting_for_the_client_costs_no_cpu(empty_db, ca_dir, tls_way):
    """A client that sends its ClientHello and then takes its time (a slow certificate check)
    leaves the server idle: libmicrohttpd's epoll loop once spun on it, a core at 100% for as
    long as the client took (about 4 ms of CPU per handshake in bench/connect.sh)."""
    with ApisimProcess(["replay", "--db", empty_db], env=env_ca(ca_dir, tls_way)) as rep:
        s, head = connect(rep.port, f"{NAME}:443")
        assert head.startswith("HTTP/1.1 200 ")
        ctx = ssl.create_default_context(cafile=os.path.join(ca_dir, "ca.pem"))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname=NAME)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        s.sendall(outgoing.read())  # the ClientHello
        s.settimeout(10)
        assert s.recv(5)[:1] == b"\x16"  # the server's flight: it now waits for the client
        cpu0, t0 = cpu_seconds(rep.proc.pid), time.monotonic()
        time.sleep(1.0)  # the window measured, not a synchronisation
        used, window = cpu_seconds(rep.proc.pid) - cpu0, time.monotonic() - t0
        assert used < 0.25 * window, f"{used:.2f} s of CPU in {window:.2f} s"
        s.close()
        assert curl(f"{rep.url}/__apisim/health").status == 200
        res = rep.stop()
        assert res.rc == 0, res.stderr
