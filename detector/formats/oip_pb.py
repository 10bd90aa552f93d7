"""Protobuf classes of the Open Inference Protocol's ``ModelInferRequest`` and
``ModelInferResponse`` (``inference.GRPCInferenceService``), built at import from a
descriptor written here: the messages' field numbers and types as the protocol defines
them, limited to what drift monitoring reads (parameters are left out: a parser keeps
them as unknown fields). No generated code and no compiler: only the ``protobuf``
runtime, an optional extra (``pip install 'drift-detector[protobuf]'``).

>>> req = ModelInferRequest(id="r1", inputs=[{"name": "x", "datatype": "FP32",
...                         "shape": [1], "contents": {"fp32_contents": [0.5]}}])
>>> ModelInferRequest.FromString(req.SerializeToString()).inputs[0].contents.fp32_contents[0]
0.5
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
#: the fields of ``InferTensorContents``: name, number, type (all repeated)
_CONTENTS = [("bool_contents", 1, _F.TYPE_BOOL), ("int_contents", 2, _F.TYPE_INT32),
             ("int64_contents", 3, _F.TYPE_INT64), ("uint_contents", 4, _F.TYPE_UINT32),
             ("uint64_contents", 5, _F.TYPE_UINT64), ("fp32_contents", 6, _F.TYPE_FLOAT),
             ("fp64_contents", 7, _F.TYPE_DOUBLE), ("bytes_contents", 8, _F.TYPE_BYTES)]
PACKAGE = "drift_detector.oip"


def _field(message: descriptor_pb2.DescriptorProto, name: str, number: int, type_: int,
           repeated: bool = False, message_type: str | None = None) -> None:
    f = message.field.add(name=name, number=number, type=type_,
                          label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if message_type is not None:
        f.type_name = f".{PACKAGE}.{message_type}"


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="drift_detector/oip.proto", package=PACKAGE,
                                           syntax="proto3")
    contents = f.message_type.add(name="InferTensorContents")
    for name, number, type_ in _CONTENTS:
        _field(contents, name, number, type_, repeated=True)
    tensor = f.message_type.add(name="InferTensor")   # InferInputTensor = InferOutputTensor
    _field(tensor, "name", 1, _F.TYPE_STRING)
    _field(tensor, "datatype", 2, _F.TYPE_STRING)
    _field(tensor, "shape", 3, _F.TYPE_INT64, repeated=True)
    _field(tensor, "contents", 5, _F.TYPE_MESSAGE, message_type="InferTensorContents")
    for message, tensors, raw in (("ModelInferRequest", "inputs", ("raw_input_contents", 7)),
                                  ("ModelInferResponse", "outputs", ("raw_output_contents", 6))):
        m = f.message_type.add(name=message)
        _field(m, "model_name", 1, _F.TYPE_STRING)
        _field(m, "model_version", 2, _F.TYPE_STRING)
        _field(m, "id", 3, _F.TYPE_STRING)
        _field(m, tensors, 5, _F.TYPE_MESSAGE, repeated=True, message_type="InferTensor")
        _field(m, raw[0], raw[1], _F.TYPE_BYTES, repeated=True)
    return f


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())
ModelInferRequest = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{PACKAGE}.ModelInferRequest"))
ModelInferResponse = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{PACKAGE}.ModelInferResponse"))
#: the ``InferTensorContents`` field of each datatype
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents",
                  "UINT8": "uint_contents", "UINT16": "uint_contents",
                  "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
