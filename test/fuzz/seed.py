#!/usr/bin/env python3
"""test/fuzz/seed.py: writes the seed corpora test/fuzz/corpus/<target>/ from the unit tests'
inputs (test/unit/): the requests of test_http.c, the frames of test_ws.c, the client frames
of test_wire.c (taken from its source), the tokens of test_jwt.c and the replies of
test_reply.c, each with the leading bytes its target reads first (fuzz_<target>.c). The seeds
are committed; run this again after changing a target's input format. Files are named by the
SHA-1 of their content, as libFuzzer names what it adds."""
import base64, hashlib, hmac, json, os, re, shutil, struct, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, 'test', 'fuzz', 'corpus')
SECRET = b'fuzz-secret'  # the targets' secret (fuzz_http.c, fuzz_jwt.c)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=')


def token(header, claims, secret=SECRET):
    s = b64url(header) + b'.' + b64url(claims)
    return s + b'.' + b64url(hmac.new(secret, s, hashlib.sha256).digest())


HS = b'{"alg":"HS256","typ":"JWT"}'
GOOD = token(HS, b'{"sub":"alice","exp":4102444800}')


def http():
    up = (b'GET /ws?token=%s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n'
          b'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
          b'Sec-WebSocket-Version: 13\r\n\r\n')
    reqs = [
        b'GET /ws?room=1&token=abc.def-ghi&x=2 HTTP/1.1\r\nHost: example.com:8080\r\n'
        b'Authorization: Bearer t0k3n\r\nX-Other: ignored\r\nAccept: */*\r\n\r\n',
        b'GET /health HTTP/1.1\r\nHOST: h1\r\naUtHoRiZaTiOn: Bearer x\r\nsec-websocket-version: 13\r\n'
        b'SEC-WEBSOCKET-KEY: k==\r\n\r\n',
        b'GET / HTTP/1.1\r\nHost: first\r\nhost: second\r\nAuthorization:\r\n\r\n',
        b'GET /ws?xtoken=bad&token=good&tokenx=bad2 HTTP/1.1\r\nHost: x\r\n\r\n',
        b'GET /ws?a=1&token=&b=2 HTTP/1.1\r\nHost: x\r\n\r\n',
        b'POST /api/websocket/token HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer key\r\n'
        b'Content-Type: application/json\r\nContent-Length: 19\r\n\r\n{"user_id":"alice"}',
        b'POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n',
        up % b't' + b'\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58',
        up % GOOD,
        up.replace(b'?token=%s', b'').replace(b'Host: localhost\r\n',
                                              b'Host: localhost\r\nAuthorization: Bearer ' + GOOD + b'\r\n'),
        up.replace(b'13\r\n', b'8\r\n') % b'x',
        up.replace(b'dGhlIHNhbXBsZSBub25jZQ==', b'AAAAAAAAAAAAAAAAAAAAAAAA') % b'x',
        b'POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n',
        b'GET /health HTTP/1.1\r\nHost: a\r\n\r\nPOST /api/websocket/token HTTP/1.1\r\nHost: b\r\n'
        b'Content-Length: 2\r\n\r\n{}GET /three?token=3 HTTP/1.1\r\nHost: c\r\n\r\n',
        b'GET / HTTP/1.1\r\nConnection: close\r\n\r\n',
        b'GET / HTTP/1.0\r\n\r\n',
        b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03',
        b'GET / HTTP/9.9\r\n\r\n',
        b'GET / HTTP/1.1\r\nBad Header\r\n\r\n',
        b'GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n',
        b'GET / HTTP/1.1\r\n\r\nXYZ\x01\r\n\r\n',
        b'GET /static/app.js HTTP/1.1\r\nIf-None-Match: "abc"\r\nIf-Modified-Since: Tue, 01 Dec 2026 10:00:00 GMT\r\n'
        b'X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: chat.example\r\n\r\n',
    ]
    # whole (0) and in pieces of up to 5 bytes
    return [bytes([cut]) + r for r in reqs for cut in (0, 5)]


MASK = b'\x37\xfa\x21\x3d'


def frame(op, payload, fin=True, rsv=0, masked=True):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | op])
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack('>H', n)
    else:
        head += bytes([m | 127]) + struct.pack('>Q', n)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def ws():
    streams = [
        frame(1, b'Hello'),
        frame(2, b'\x00\xff\x80'),
        frame(1, b'first') + frame(1, b'second'),
        frame(1, bytes(ord('a') + i % 26 for i in range(300))),
        frame(1, b'Hel', fin=False) + frame(9, b'p!') + frame(0, b'lo ', fin=False) +
        frame(0, b'', fin=False) + frame(0, b'world'),
        frame(2, b'', fin=False) + frame(0, b'xyz'),
        frame(10, b'c' * 125),
        frame(8, b'\x03\xe8bye'),
        frame(1, b'ab', fin=False) + frame(9, b'0123456789') + frame(0, b'cd'),
        frame(1, 'caf\u00e9 \U0001F600'.encode()),
        frame(1, b'\xed\xa0\x80'),  # a surrogate: 1007
        frame(1, b'\xc0\x80'),  # overlong
        frame(1, b'x', rsv=4),  # RSV1 without an extension: 1002
        frame(1, b'unmasked', masked=False),
        frame(0, b'orphan continuation'),
        frame(9, b'p' * 126),  # control frame too long
        frame(9, b'ping', fin=False),  # fragmented control frame
        frame(1, b'y' * 2000),  # over a 1024-byte limit
        frame(3, b'reserved opcode'),
        bytes([0x81, 0xff]) + struct.pack('>Q', 1 << 63) + MASK,  # absurd length
        bytes([0x81, 0xfe, 0x00, 0x05]) + MASK + b'abcde',  # length not in its shortest form
    ]
    out = []
    for s in streams:
        out.append(bytes([0, 0]) + s)  # whole, 1024-byte messages
        out.append(bytes([3, 255]) + s)  # in pieces of up to 3 bytes, 64 KiB messages
    return out


def c_strings(path):
    """The JSON objects written as C string literals in a unit test, without printf formats."""
    src = open(path, encoding='utf-8').read()
    for lit in re.findall(r'"((?:\{|\[)(?:[^"\\]|\\.)*)"', src):
        if '%' in lit:
            continue
        yield lit.encode('latin-1').decode('unicode_escape').encode('latin-1')


def wire():
    seen = [b'{"type":"message","room":"r1","text":"' + b'x' * 20000 + b'"}',
            b'{"type":"subscribe","rooms":[' + b','.join(b'"r%d"' % i for i in range(1100)) + b']}',
            b'[' * 100 + b']' * 100, b'{"type":"read","room":"r","seq":1e400}',
            b'{"type":"message","to":"bob","text":"\\u00e9\\n\\"","cid":"c\\t1"}']
    for s in c_strings(os.path.join(ROOT, 'test', 'unit', 'app', 'test_wire.c')):
        if s not in seen:
            seen.append(s)
    return seen[:60]


def jwt():
    toks = [
        GOOD,
        token(HS, b'{"sub":"erin"}'),
        token(HS, b'{"sub":"alice","exp":1000}'),
        token(b'{"alg":"none","typ":"JWT"}', b'{"sub":"alice"}'),
        b64url(b'{"alg":"none","typ":"JWT"}') + b'.' + b64url(b'{"sub":"alice"}') + b'.',
        token(b'{"alg":"HS512","typ":"JWT"}', b'{"sub":"alice"}'),
        token(b'{"alg":256}', b'{"sub":"alice"}'),
        token(HS, b'{"sub":"alice\\u0000admin"}'),
        token(HS, b'{"sub":"al\\nice"}'),
        token(HS, b'{"sub":"' + b'u' * 129 + b'"}'),
        token(HS, b'{"sub":42}'),
        b'eyJ+bGciOiJIUzI1NiJ9.e30.AAAA',
        b'eyJhbGciOiJIUzI1NiJ9=.e30.AAAA',
        b'a.b.c.d',
    ]
    out = [b'\x00' + t for t in toks]
    claims = [b'{"sub":"alice","exp":4102444800}', b'{"sub":"bob"}', b'{"exp":9999999999}',
              b'{"sub":""}', b'{"sub":null}', b'{"sub":"al\\u007fice"}', b'{"sub":"x","exp":"soon"}',
              b'[]', b'{"sub":"alice\\u0000admin"}']
    out += [b'\x01' + HS + b'\x00' + c for c in claims]
    out += [b'\x01' + b'{"alg":"HS256"}', b'\x01{"alg":"none"}\x00{"sub":"alice"}']
    out += [b'\x02\x01alice', b'\x02\x00carol-\xc3\xa9', b'\x02\x01' + b'u' * 128, b'\x02\x00a\nb']
    return out


def reply():
    rs = [
        b'*4\r\n$8\r\npmessage\r\n$6\r\nroom:*\r\n$7\r\nroom:r1\r\n$11\r\n{"a":"b\x00c"}\r\n',
        b'*5\r\n:42\r\n$-1\r\n*0\r\n*2\r\n+OK\r\n-ERR no\r\n*-1\r\n',
        b'-NOSCRIPT x\r\n:-7\r\n',
        b'*3\r\n$3\r\nabc\r\n:1\r\n',
        b'*200\r\n' + b''.join(b'$4\r\n%04d\r\n' % k for k in range(200)),
        b'*2\r\n:1\r\n:57\r\n',
        b'*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n',  # as deep as hiredis reads
        b'*2147483647\r\n',
        b'$-2\r\n',
        b'?x\r\n',
    ]
    return [bytes([cut]) + r for r in rs for cut in (0, 4)]


def main():
    total = 0
    for name, fn in [('http', http), ('ws', ws), ('wire', wire), ('jwt', jwt), ('reply', reply)]:
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        seeds = fn()
        for s in seeds:
            with open(os.path.join(d, hashlib.sha1(s).hexdigest()), 'wb') as f:
                f.write(s)
        total += len(set(seeds))
        print(f'{name}: {len(set(seeds))} seeds')
    print(f'{total} in all')


if __name__ == '__main__':
    sys.exit(main())
