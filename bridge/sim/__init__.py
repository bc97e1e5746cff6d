"""The Ingres OpenAPI simulator.

A DBMS simulator process (`server`) that the simulated `libiiapi.1.so` (built
from `csrc/`) talks to over TCP (PROTOCOL.md).
"""

from bridge.sim.server import ServerThread, SimServer

__all__ = ["ServerThread", "SimServer"]
