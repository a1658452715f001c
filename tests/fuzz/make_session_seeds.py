#!/usr/bin/env python3
"""Writes the seed corpus of gateway_session_fuzzer (tests/fuzz/corpus/gateway_session/).

Each seed is a scenario in the fuzzer's input language (see its Input and Harness::Step): one
byte per choice, read front to back. Run from the repository root after changing that language.
"""
import os

OP = dict(hello=0, stream=1, raw=3, cancel=4, window=5, connection=6, writable=7, close=8,
          drain=9, poll=10)
ALICE, BOB, ECHO, GREETER = 0, 1, 2, 3
# Methods, by index: 0 echo.v1.Echo/Echo, 1 echo.v1.Echo/Stream, 2 greeter.v1.Greeter/SayHello,
# 3 nobody.v1.Nobody/Call, 4 "" (empty).


def caller_hello(slot, role=0, region=None):
    out = [OP['hello'], slot, role]
    return out + ([1, 0 if region == 'eu' else 1] if region else [0])


def service_hello(slot, name, methods, role=0, region=None):
    out = [OP['hello'], slot, role, name, 1, len(methods)]
    for m in methods:
        out += [m, 0]
    return out + ([1, 0 if region == 'eu' else 1] if region else [0])


def request(slot, call, method=0, timeout=0, final=True, body=0, forge=False):
    out = [OP['stream'], slot, call - 1, 1, method, timeout]
    out += [1, 1] if forge else [0]
    out += [1, body >> 8, body & 0xff] if body else [0]
    return out + [1 if final else 0]


def more_request(slot, call, final=True):
    # A later frame of the request stream: any payload is the caller's bytes.
    return [OP['stream'], slot, call - 1, 0, 3, 0x0a, 0x01, 0x78, 1 if final else 0]


def response(slot, which=0, final=True, error=False, body=0):
    out = [OP['stream'], slot, which, (1 if final else 0) | (2 if error else 0), 1]
    if error:
        out += [4]  # code 5, NOT_FOUND
    out += [2, ord('o'), ord('k')]
    return out + ([1, body >> 8, body & 0xff] if body else [0])


def cancel_from_caller(slot, call):
    return [OP['cancel'], slot, 1, 0, 4, ord('s'), ord('t'), ord('o'), ord('p'), call - 1]


def cancel_from_service(slot, which=0, long_reason=False):
    reason = [1, 0x0b, 0xb8 - 1] if long_reason else [0, 2, ord('n'), ord('o')]
    return [OP['cancel'], slot, 9] + reason + [which]


def window(slot, grant, target):
    return [OP['window'], slot, grant, target]


def heartbeat(slot):
    return [OP['connection'], slot, 1, 0]


def poll():
    return [OP['poll'], 0]


def seeds():
    both = caller_hello(ALICE) + service_hello(ECHO, 0, [0, 1]) + poll()
    yield 'unary', both + request(ALICE, 1) + response(ECHO) + poll()
    yield 'unary_error', both + request(ALICE, 1) + response(ECHO, error=True) + poll()
    yield 'streams_and_windows', (both + request(ALICE, 1, method=1, final=False, body=3000) +
                                  more_request(ALICE, 1, final=False) + window(ECHO, 1, 0) +
                                  window(ALICE, 1, 0) + response(ECHO, final=False, body=1800) +
                                  response(ECHO, final=False, body=1800) +
                                  window(ALICE, 2, 0) + more_request(ALICE, 1) +
                                  response(ECHO) + poll())
    yield 'cancels', (both + request(ALICE, 1, final=False) + cancel_from_caller(ALICE, 1) +
                      request(ALICE, 2) + cancel_from_service(ECHO, long_reason=True) +
                      response(ECHO, which=1) + request(ALICE, 3) + response(ECHO) +
                      response(ECHO) + poll())
    yield 'deadline', both + request(ALICE, 1, timeout=1) + poll() + response(ECHO) + poll()
    yield 'slow_caller', (both + request(ALICE, 1, method=1, final=False) +
                          [OP['writable'], ALICE] + response(ECHO, final=False) +
                          window(ECHO, 1, 0) + response(ECHO) + poll())
    yield 'service_dies', (both + request(ALICE, 1) + request(ALICE, 2, final=False) +
                           [OP['close'], ECHO] + poll() + [OP['close'], ECHO] +
                           service_hello(ECHO, 0, [0]) + request(ALICE, 3) + response(ECHO) +
                           poll())
    yield 'impersonation', (caller_hello(BOB) + service_hello(GREETER, 0, [0]) +
                            service_hello(ECHO, 3, [0]) + service_hello(ECHO, 0, [0], role=2) +
                            request(BOB, 1, method=2) + poll())
    yield 'policy_and_limits', (caller_hello(BOB) + service_hello(GREETER, 1, [2]) +
                                service_hello(ECHO, 0, [0]) + request(BOB, 1, method=2) +
                                request(BOB, 2, method=3) + request(BOB, 3, method=4) +
                                request(BOB, 4, final=False) + request(BOB, 5, final=False) +
                                request(BOB, 6, final=False) + request(BOB, 7, final=False) +
                                request(BOB, 8) + request(BOB, 4, forge=True) + heartbeat(BOB) +
                                poll())
    yield 'drain', (both + request(ALICE, 1, final=False) + [OP['drain'], 0, 0] +
                    request(ALICE, 2) + more_request(ALICE, 1) + response(ECHO) + poll())
    yield 'protocol_violations', (request(ALICE, 1) + caller_hello(BOB) + caller_hello(BOB) +
                                  service_hello(ECHO, 0, [0]) + response(ECHO, which=2) +
                                  poll())


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'gateway_session')
    os.makedirs(out_dir, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(out_dir, name), 'wb') as f:
            f.write(bytes(data))


if __name__ == '__main__':
    main()
