"""Loaded by client processes of the end-to-end suite (on their PYTHONPATH).

The public host, such as mlflow.example.com, has no DNS entry here. This maps
it to loopback, as /etc/hosts would, so clients use the real public URL: the
certificate's name, nginx's server_name and MLflow's allowed hosts all see
the name a user's client would send. NSELF_TEST_HOSTS is "name=address,...".
"""

import os
import socket

_HOSTS = dict(item.split("=", 1) for item in os.environ.get("NSELF_TEST_HOSTS", "").split(",") if "=" in item)

if _HOSTS:
    _getaddrinfo = socket.getaddrinfo

    def _resolve(host, *args, **kwargs):
        return _getaddrinfo(_HOSTS.get(host, host), *args, **kwargs)

    socket.getaddrinfo = _resolve
