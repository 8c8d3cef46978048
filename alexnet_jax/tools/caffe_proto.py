"""The part of Caffe's caffe.proto that tools/caffe.py reads of its AlexNet files (NetParameter,
BlobProto), built from descriptors at import (no protoc, no Caffe), `layer` (2015) and V1
`layers` (2014) alike:

    net = caffe_proto.NetParameter.FromString(open("bvlc_alexnet.caffemodel", "rb").read())
"""
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
            "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32,
            "bool": _F.TYPE_BOOL}
PACKAGE = "caffe"

# Enums nested in a message: {message: {enum: value names, numbered from 0 in order}}.
# LayerType is whole, so that a V1 layer of any type is named by its type.
_ENUMS = {
    "LRNParameter": {"NormRegion": ("ACROSS_CHANNELS", "WITHIN_CHANNEL")},
    "PoolingParameter": {"PoolMethod": ("MAX", "AVE", "STOCHASTIC")},
    "V1LayerParameter": {"LayerType": (
        "NONE", "ACCURACY", "BNLL", "CONCAT", "CONVOLUTION", "DATA", "DROPOUT", "EUCLIDEAN_LOSS",
        "FLATTEN", "HDF5_DATA", "HDF5_OUTPUT", "IM2COL", "IMAGE_DATA", "INFOGAIN_LOSS",
        "INNER_PRODUCT", "LRN", "MULTINOMIAL_LOGISTIC_LOSS", "POOLING", "RELU", "SIGMOID",
        "SOFTMAX", "SOFTMAX_LOSS", "SPLIT", "TANH", "WINDOW_DATA", "ELTWISE", "POWER",
        "SIGMOID_CROSS_ENTROPY_LOSS", "HINGE_LOSS", "MEMORY_DATA", "ARGMAX", "THRESHOLD",
        "DUMMY_DATA", "SLICE", "MVN", "ABSVAL", "SILENCE", "CONTRASTIVE_LOSS", "EXP",
        "DECONVOLUTION")},
}

# {message: [(field, number, type[, label[, default]])]}: the fields tools/caffe.py reads (and
# tests/caffe_files.py writes); Caffe's others are skipped on reading. The label is "repeated",
# or "packed" for the packed repeated scalars; a default is Caffe's where it is not the type's
# own (0, false). A type naming an enum of _ENUMS is written "Message.Enum".
_R, _P = "repeated", "packed"
_MESSAGES = {
    "BlobShape": [("dim", 1, "int64", _P)],
    "BlobProto": [("shape", 7, "BlobShape"), ("data", 5, "float", _P),
                  ("double_data", 8, "double", _P), ("num", 1, "int32"), ("channels", 2, "int32"),
                  ("height", 3, "int32"), ("width", 4, "int32")],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32"), ("pad", 3, "uint32", _R), ("kernel_size", 4, "uint32", _R),
        ("stride", 6, "uint32", _R), ("pad_h", 9, "uint32"), ("kernel_h", 11, "uint32"),
        ("stride_h", 13, "uint32"), ("group", 5, "uint32", None, "1")],
    "DropoutParameter": [("dropout_ratio", 1, "float", None, "0.5")],
    "InnerProductParameter": [("num_output", 1, "uint32"), ("transpose", 6, "bool")],
    "InputParameter": [("shape", 1, "BlobShape", _R)],
    "LRNParameter": [("local_size", 1, "uint32", None, "5"), ("alpha", 2, "float", None, "1"),
                     ("beta", 3, "float", None, "0.75"),
                     ("norm_region", 4, "LRNParameter.NormRegion"), ("k", 5, "float", None, "1")],
    "PoolingParameter": [("pool", 1, "PoolingParameter.PoolMethod"), ("pad", 4, "uint32"),
                         ("kernel_size", 2, "uint32"), ("stride", 3, "uint32", None, "1")],
    "LayerParameter": [
        ("name", 1, "string"), ("type", 2, "string"), ("bottom", 3, "string", _R),
        ("top", 4, "string", _R), ("blobs", 7, "BlobProto", _R),
        ("convolution_param", 106, "ConvolutionParameter"),
        ("dropout_param", 108, "DropoutParameter"),
        ("inner_product_param", 117, "InnerProductParameter"), ("lrn_param", 118, "LRNParameter"),
        ("pooling_param", 121, "PoolingParameter"), ("input_param", 143, "InputParameter")],
    "V1LayerParameter": [
        ("bottom", 2, "string", _R), ("top", 3, "string", _R), ("name", 4, "string"),
        ("type", 5, "V1LayerParameter.LayerType"), ("blobs", 6, "BlobProto", _R),
        ("convolution_param", 10, "ConvolutionParameter"),
        ("dropout_param", 12, "DropoutParameter"),
        ("inner_product_param", 17, "InnerProductParameter"), ("lrn_param", 18, "LRNParameter"),
        ("pooling_param", 19, "PoolingParameter")],
    "NetParameter": [
        ("name", 1, "string"), ("input", 3, "string", _R), ("input_shape", 8, "BlobShape", _R),
        ("input_dim", 4, "int32", _R), ("layer", 100, "LayerParameter", _R),
        ("layers", 2, "V1LayerParameter", _R)],
}


def _field(name, number, kind, repeated=None, default=None):
  f = _F(name=name, number=number, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if kind in _SCALARS:
    f.type = _SCALARS[kind]
  else:  # A message of _MESSAGES, or an enum: "Message.Enum".
    f.type = _F.TYPE_MESSAGE if kind in _MESSAGES else _F.TYPE_ENUM
    f.type_name = f".{PACKAGE}.{kind}"
  if repeated == _P:
    f.options.packed = True
  if default is not None:
    f.default_value = default
  return f


def _file():
  proto = descriptor_pb2.FileDescriptorProto(name="alexnet_jax_caffe_subset.proto",
                                             package=PACKAGE, syntax="proto2")
  for name, fields in _MESSAGES.items():
    message = proto.message_type.add(name=name)
    for enum, values in _ENUMS.get(name, {}).items():
      message.enum_type.add(name=enum).value.extend(
          descriptor_pb2.EnumValueDescriptorProto(name=v, number=n) for n, v in enumerate(values))
    message.field.extend(_field(*spec) for spec in fields)
  return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def _message(name):
  return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = _message("NetParameter")
V1LayerParameter = _message("V1LayerParameter")
BlobProto = _message("BlobProto")
# V1LayerParameter's types by their LayerParameter names ("CONVOLUTION" -> "Convolution").
V1_TYPES = {"CONVOLUTION": "Convolution", "RELU": "ReLU", "LRN": "LRN", "POOLING": "Pooling",
            "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
            "DATA": "Data", "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy",
            "CONCAT": "Concat", "SPLIT": "Split", "FLATTEN": "Flatten"}
