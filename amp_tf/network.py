"""Is a download's host reachable? A socket connect with a hard deadline (pure Python, no TensorFlow).

tensorflow-datasets retries a download for minutes without a network; a command
asks `reachable` first and fails in seconds instead. A proxy set in the
environment (``https_proxy`` / ``HTTPS_PROXY``, ...) is what a download connects
to, so that is what is tried.

Example:
    >>> hosts_of(["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"], env={})
    [('www.cs.toronto.edu', 443)]
    >>> hosts_of(["http://data.example/x.tar"], env={"http_proxy": "proxy.local:3128"})
    [('proxy.local', 3128)]
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse

#: Seconds a download waits for a socket connection to the hosts of its files.
PROBE_TIMEOUT_S = 3.0


def hosts_of(urls, env=None):
    """``[(host, port)]`` a download of `urls` connects to first: the proxy when one is set, else the URLs' hosts."""
    env = os.environ if env is None else env
    hosts = []
    for url in urls:
        u = urllib.parse.urlsplit(str(url))
        proxy = env.get(f"{u.scheme}_proxy") or env.get(f"{u.scheme.upper()}_PROXY")
        if proxy:
            u = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if u.hostname:
            hosts.append((u.hostname, u.port or (443 if u.scheme == "https" else 80)))
    return list(dict.fromkeys(hosts))


def reachable(hosts, timeout=PROBE_TIMEOUT_S):
    """True when a TCP connection to any of ``[(host, port)]`` opens within `timeout` seconds.

    Each host is tried in a daemon thread (a name lookup can hang past a socket
    timeout); the answer comes as soon as one connects or all have failed, and
    after at most `timeout` seconds either way.
    """
    hosts = list(hosts)
    if not hosts:
        return False
    answered, ok, lock = threading.Event(), [], threading.Lock()
    failed = [0]

    def attempt(host, port):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(host)
            answered.set()
        except OSError:
            with lock:
                failed[0] += 1
                if failed[0] == len(hosts):  # every host refused: no need to wait out the timeout
                    answered.set()

    for host, port in hosts:
        threading.Thread(target=attempt, args=(host, port), daemon=True).start()
    answered.wait(timeout)
    return bool(ok)
