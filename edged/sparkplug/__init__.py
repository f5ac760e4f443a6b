"""Sparkplug B 3.0 edge node beside the JSON topics (``[sparkplug]``).

``sparkplug_b.proto`` is Eclipse Tahu's schema, copied unchanged (EPL-2.0); ``sparkplug_b_pb2.py``
and its ``.pyi`` are generated from it by ``python -m grpc_tools.protoc -I. --python_out=.
--pyi_out=. sparkplug_b.proto`` (run in this directory; regenerate when protobuf's major moves).
Nothing here is imported unless ``[sparkplug]`` is configured: the ``protobuf`` package is the
optional ``edged[sparkplug]`` extra, and ``edged check`` says so when it is missing.
"""
