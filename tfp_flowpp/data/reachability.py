"""Whether download hosts answer: a fast probe for offline machines.

Downloaders (TFDS among them) retry unreachable hosts for minutes. Probing
the hosts with a plain TCP connect first, in parallel and with a short
timeout, lets a data source fail at once with a message that says how to
provide the data instead.
"""

import socket
import threading
import time
import urllib.parse
import urllib.request

__all__ = ['download_addresses', 'unreachable']


def download_addresses(urls):
  """``{(host, port)}`` a download of ``urls`` connects to.

  Honours the proxy environment variables (``https_proxy``, ``all_proxy``,
  ``no_proxy``...): a URL fetched through a proxy connects to the proxy.
  URLs without a host are skipped.
  """
  addresses = set()
  proxies = urllib.request.getproxies()
  for url in urls:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
      continue
    proxy = proxies.get(parts.scheme) or proxies.get('all')
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
      proxy_parts = urllib.parse.urlsplit(proxy)
      if proxy_parts.hostname:
        addresses.add((proxy_parts.hostname, proxy_parts.port or 3128))
        continue
    addresses.add((parts.hostname, parts.port or
                   (80 if parts.scheme == 'http' else 443)))
  return addresses


def unreachable(addresses, timeout):
  """Returns ``{address: reason}`` for addresses that refuse a TCP connect.

  All addresses are probed in parallel daemon threads, so even a hanging DNS
  lookup cannot make this take much longer than ``timeout`` seconds.
  """
  results = {}

  def probe(address):
    try:
      with socket.create_connection(address, timeout=timeout):
        results[address] = None
    except OSError as e:
      results[address] = str(e) or type(e).__name__

  threads = [threading.Thread(target=probe, args=(a,), daemon=True)
             for a in sorted(addresses)]
  for t in threads:
    t.start()
  deadline = time.monotonic() + timeout + 0.5
  for t in threads:
    t.join(max(0., deadline - time.monotonic()))
  return {a: results.get(a, 'timed out') for a in sorted(addresses)
          if results.get(a, 'timed out') is not None}
