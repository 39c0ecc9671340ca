"""A loopback HTTP proxy in front of an EC2 endpoint (moto) that answers every Nth request with
EC2's throttling error, RequestLimitExceeded (HTTP 503), and can add latency to every request.
Used by Chimera's tests of retries and by the AWS benchmark.

usage: throttle_proxy.py PORT UPSTREAM EVERY [DELAY_MS [NOT_FOUND]]   (EVERY = 0: never throttle)
NOT_FOUND: answer the first NOT_FOUND DescribeInstances-by-id requests as EC2 does right after
RunInstances (eventual consistency): asked by id, InvalidInstanceID.NotFound; filtered by
`instance-id`, an empty reservation set.
GET /proxy-health returns how many requests were throttled so far; GET /proxy-requests returns
how many requests of each EC2 Action it has seen, one "Action count" line each.
"""
import time
import http.client
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, UPSTREAM, EVERY = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
DELAY = (int(sys.argv[4]) if len(sys.argv) > 4 else 0) / 1000.0
NOT_FOUND = int(sys.argv[5]) if len(sys.argv) > 5 else 0

MISSING = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
           b'<Code>InvalidInstanceID.NotFound</Code><Message>The instance ID does not exist</Message>'
           b'</Error></Errors><RequestID>throttle-proxy</RequestID></Response>')
EMPTY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse '
         b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>throttle-proxy</requestId>'
         b'<reservationSet/></DescribeInstancesResponse>')
UP = urllib.parse.urlparse(UPSTREAM)
lock = threading.Lock()
seen = 0
throttled = 0
actions = {}

THROTTLE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            b'<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>'
            b'</Error></Errors><RequestID>throttle-proxy</RequestID></Response>')


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/proxy-health":
            with lock:
                n = throttled
            return self.reply(200, str(n).encode())
        if self.path == "/proxy-requests":
            with lock:
                text = "".join(f"{a} {n}\n" for a, n in sorted(actions.items()))
            return self.reply(200, text.encode())
        self.forward()

    def do_POST(self):
        global seen, throttled
        with lock:
            seen += 1
            throttle = EVERY > 0 and seen % EVERY == 0
            if throttle:
                throttled += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
        with lock:
            actions[action] = actions.get(action, 0) + 1
        if DELAY:
            time.sleep(DELAY)
        if throttle:
            return self.reply(503, THROTTLE, [("Content-Type", "text/xml")])
        global NOT_FOUND
        by_id = b"InstanceId.1=" in body
        by_filter = b"Name=instance-id" in body
        if b"Action=DescribeInstances" in body and (by_id or by_filter):
            with lock:
                missing = NOT_FOUND > 0
                if missing:
                    NOT_FOUND -= 1
                    throttled += 1
            if missing and by_id:
                return self.reply(400, MISSING, [("Content-Type", "text/xml")])
            if missing:
                return self.reply(200, EMPTY, [("Content-Type", "text/xml")])
        self.forward(body)

    def forward(self, body=b""):
        conn = http.client.HTTPConnection(UP.hostname, UP.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = f"{UP.hostname}:{UP.port}"
        conn.request(self.command, self.path, body=body or None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        skip = {"transfer-encoding", "connection", "content-length"}
        self.reply(r.status, data, [(k, v) for k, v in r.getheaders() if k.lower() not in skip])
        conn.close()


ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
