"""dbevent-bridge: publishes Actian Ingres DBEvents to a RabbitMQ exchange."""

__version__ = "0.1.0"
