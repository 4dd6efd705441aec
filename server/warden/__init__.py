"""Warden: a policy sidecar for applications that call LLMs."""

import os

# gRPC's core logs at INFO to stderr, e.g. a line on every fork of the embedded Postgres's
# pg_ctl at shutdown. Set here, before anything of Warden imports grpc; a value the
# environment gives wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

__version__ = "0.1.0"
