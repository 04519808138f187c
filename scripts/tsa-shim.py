#!/usr/bin/env python3
"""A local RFC 3161 time-stamp authority for tests and the demo: OpenSSL's
own TSA (`openssl ts -reply`) behind a small HTTP shim on 127.0.0.1.

    tsa-shim.py init DIR          test CA + TSA certificate (critical timeStamping
                                  EKU) and a second, untrusted "rogue" CA + TSA
    tsa-shim.py serve DIR PORT [tls]   POST application/timestamp-query -> reply
                                  (tls: HTTPS with the https-server certificate,
                                  and a client certificate required)
    tsa-shim.py reply DIR QUERY OUT [rogue]   one reply, no HTTP

The server's behaviour can be switched for fault tests with
`POST /-/mode` and a body of: ok (default), http-error (500), garbage
(random bytes), rejection (a granted=false TimeStampResp), wrong-imprint (a
valid token for another query), foreign (a token from the rogue TSA), slow
(waits 30 s). `GET /-/mode` tells the mode; `GET /-/count` how many tokens
were issued.
"""
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time

CNF = """
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {dir}
serial = $dir/{name}-serial
crypto_device = builtin
signer_cert = $dir/{name}.pem
certs = $dir/{name}.pem
signer_key = $dir/{name}.key
signer_digest = sha256
default_policy = 1.2.392.200081.1.1
other_policies = 1.2.3.4.5
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

EXT = """
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
"""


def run(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def init(directory):
    os.makedirs(directory, exist_ok=True)
    init_tsa(directory)
    # HTTPS: a server certificate for 127.0.0.1 and a client certificate,
    # both from the test CA.
    for name, ext in (("https-server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("https-client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(directory, f"{name}-ext.cnf"), "w") as f:
            f.write(ext + "\n")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "3650", "-extfile", f"{name}-ext.cnf",
            cwd=directory)


def init_tsa(directory):
    with open(os.path.join(directory, "tsa-ext.cnf"), "w") as f:
        f.write(EXT)
    for prefix, ca_name in (("", "inkan test TSA CA"), ("rogue-", "rogue TSA CA")):
        ca, tsa = prefix + "ca", prefix + "tsa"
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
            "-out", f"{ca}.pem", "-subj", f"/CN={ca_name}", "-days", "3650",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{tsa}.key",
            "-out", f"{tsa}.csr", "-subj", f"/CN={ca_name} time stamping", cwd=directory)
        run("openssl", "x509", "-req", "-in", f"{tsa}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{tsa}.pem", "-days", "3650", "-extfile", "tsa-ext.cnf",
            cwd=directory)
        with open(os.path.join(directory, f"{tsa}.cnf"), "w") as f:
            f.write(CNF.format(dir=directory, name=tsa))
        with open(os.path.join(directory, f"{tsa}-serial"), "w") as f:
            f.write("01\n")


def reply(directory, query, out, signer="tsa"):
    run("openssl", "ts", "-reply", "-config", os.path.join(directory, f"{signer}.cnf"),
        "-queryfile", query, "-out", out)


def reply_bytes(directory, query_bytes, signer="tsa"):
    with tempfile.TemporaryDirectory() as tmp:
        q, r = os.path.join(tmp, "q.tsq"), os.path.join(tmp, "r.tsr")
        with open(q, "wb") as f:
            f.write(query_bytes)
        reply(directory, q, r, signer)
        with open(r, "rb") as f:
            return f.read()


def serve(directory, port, tls=False):
    state = {"mode": "ok", "count": 0}
    lock = threading.Lock()
    # A query for other data, for wrong-imprint answers.
    with tempfile.TemporaryDirectory() as tmp:
        other = os.path.join(tmp, "other.txt")
        with open(other, "w") as f:
            f.write("not the checkpoint\n")
        other_query = subprocess.run(
            ["openssl", "ts", "-query", "-data", other, "-sha256", "-cert"],
            check=True, capture_output=True).stdout

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body, content_type="application/timestamp-reply"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/-/mode":
                return self.answer(200, state["mode"].encode(), "text/plain")
            if self.path == "/-/count":
                return self.answer(200, str(state["count"]).encode(), "text/plain")
            self.answer(404, b"", "text/plain")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/-/mode":
                state["mode"] = body.decode().strip()
                return self.answer(200, b"ok", "text/plain")
            mode = state["mode"]
            if self.headers.get("Content-Type") != "application/timestamp-query":
                return self.answer(415, b"", "text/plain")
            if mode == "http-error":
                return self.answer(500, b"TSA unavailable", "text/plain")
            if mode == "garbage":
                return self.answer(200, os.urandom(200))
            if mode == "rejection":
                # TimeStampResp { status PKIStatusInfo { rejection(2) } }
                return self.answer(200, bytes.fromhex("3005300302 0102".replace(" ", "")))
            if mode == "slow":
                time.sleep(30)
            with lock:
                if mode == "wrong-imprint":
                    token = reply_bytes(directory, other_query)
                elif mode == "foreign":
                    token = reply_bytes(directory, body, "rogue-tsa")
                else:
                    token = reply_bytes(directory, body)
                state["count"] += 1
            self.answer(200, token)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    if tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(directory, "https-server.pem"),
                                os.path.join(directory, "https-server.key"))
        context.load_verify_locations(os.path.join(directory, "ca.pem"))
        context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def main():
    command, directory = sys.argv[1], os.path.abspath(sys.argv[2])
    if command == "init":
        init(directory)
    elif command == "serve":
        serve(directory, sys.argv[3], sys.argv[4:] == ["tls"])
    elif command == "reply":
        reply(directory, sys.argv[3], sys.argv[4], "rogue-tsa" if sys.argv[5:] == ["rogue"] else "tsa")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
