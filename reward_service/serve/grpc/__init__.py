"""The Open Inference Protocol over gRPC: the server in ``server.py``, the protocol's messages
in ``protocol.py`` (from proto/grpc_predict_v2.proto, compiled into ``grpc_predict_v2.desc``)."""
