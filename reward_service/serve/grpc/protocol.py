"""The protocol's messages, built at import from the compiled proto/grpc_predict_v2.proto.

``grpc_predict_v2.desc`` beside this file is that .proto compiled by grpcio-tools' protoc into a
descriptor set (a test recompiles it and fails on any difference). Loading it into a private
descriptor pool, rather than checking in generated ``_pb2`` modules, keeps the default pool free:
tritonclient and kserve each register their own copy of the ``inference`` package there, and a
process that embeds this server beside either client would otherwise fail on duplicate symbols.
It also leaves no generated code tied to one protobuf release.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

DESCRIPTOR_SET = Path(__file__).with_name("grpc_predict_v2.desc")
PACKAGE = "inference"
SERVICE_NAME = f"{PACKAGE}.GRPCInferenceService"


def _pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


_POOL = _pool()


def message(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ServerLiveRequest = message("ServerLiveRequest")
ServerLiveResponse = message("ServerLiveResponse")
ServerReadyRequest = message("ServerReadyRequest")
ServerReadyResponse = message("ServerReadyResponse")
ModelReadyRequest = message("ModelReadyRequest")
ModelReadyResponse = message("ModelReadyResponse")
ServerMetadataRequest = message("ServerMetadataRequest")
ServerMetadataResponse = message("ServerMetadataResponse")
ModelMetadataRequest = message("ModelMetadataRequest")
ModelMetadataResponse = message("ModelMetadataResponse")
TensorMetadata = message("ModelMetadataResponse.TensorMetadata")
ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")
InferOutputTensor = message("ModelInferResponse.InferOutputTensor")
