"""HTTP on a node: the listener (hypercorn's trio worker) and the ASGI apps it serves
(starlette): RabbitMQ's management API on the RabbitMQ engine."""
