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

# Enums nested in a message: {message: {enum: [(value name, number)]}}. LayerType is whole, so
# that a V1 layer of any type is named by its type.
_ENUMS = {
    "LRNParameter": {"NormRegion": [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)]},
    "PoolingParameter": {"PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)]},
    "V1LayerParameter": {"LayerType": [
        ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2), ("CONCAT", 3),
        ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5), ("DECONVOLUTION", 39),
        ("DROPOUT", 6), ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7), ("ELTWISE", 25), ("EXP", 38),
        ("FLATTEN", 8), ("HDF5_DATA", 9), ("HDF5_OUTPUT", 10), ("HINGE_LOSS", 28),
        ("IM2COL", 11), ("IMAGE_DATA", 12), ("INFOGAIN_LOSS", 13), ("INNER_PRODUCT", 14),
        ("LRN", 15), ("MEMORY_DATA", 29), ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34),
        ("POOLING", 17), ("POWER", 26), ("RELU", 18), ("SIGMOID", 19),
        ("SIGMOID_CROSS_ENTROPY_LOSS", 27), ("SILENCE", 36), ("SOFTMAX", 20),
        ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33), ("TANH", 23), ("WINDOW_DATA", 24),
        ("THRESHOLD", 31)]},
}

# {message: [(field, number, type, repeated, default or None)]}: the fields tools/caffe.py
# reads (and tests/caffe_files.py writes); Caffe's others are skipped on reading. "packed" marks
# the packed repeated scalars; a type naming an enum of _ENUMS is written "Message.Enum".
_R, _P = "repeated", "packed"
_MESSAGES = {
    "BlobShape": [("dim", 1, "int64", _P, None)],
    "BlobProto": [("shape", 7, "BlobShape", None, None), ("data", 5, "float", _P, None),
                  ("double_data", 8, "double", _P, None), ("num", 1, "int32", None, "0"),
                  ("channels", 2, "int32", None, "0"), ("height", 3, "int32", None, "0"),
                  ("width", 4, "int32", None, "0")],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", None, None), ("pad", 3, "uint32", _R, None),
        ("kernel_size", 4, "uint32", _R, None), ("stride", 6, "uint32", _R, None),
        ("pad_h", 9, "uint32", None, "0"), ("kernel_h", 11, "uint32", None, None),
        ("stride_h", 13, "uint32", None, None), ("group", 5, "uint32", None, "1")],
    "DropoutParameter": [("dropout_ratio", 1, "float", None, "0.5")],
    "InnerProductParameter": [("num_output", 1, "uint32", None, None),
                              ("transpose", 6, "bool", None, "false")],
    "InputParameter": [("shape", 1, "BlobShape", _R, None)],
    "LRNParameter": [("local_size", 1, "uint32", None, "5"), ("alpha", 2, "float", None, "1"),
                     ("beta", 3, "float", None, "0.75"),
                     ("norm_region", 4, "LRNParameter.NormRegion", None, None),
                     ("k", 5, "float", None, "1")],
    "PoolingParameter": [("pool", 1, "PoolingParameter.PoolMethod", None, None),
                         ("pad", 4, "uint32", None, "0"), ("kernel_size", 2, "uint32", None, None),
                         ("stride", 3, "uint32", None, "1")],
    "LayerParameter": [
        ("name", 1, "string", None, None), ("type", 2, "string", None, None),
        ("bottom", 3, "string", _R, None), ("top", 4, "string", _R, None),
        ("blobs", 7, "BlobProto", _R, None),
        ("convolution_param", 106, "ConvolutionParameter", None, None),
        ("dropout_param", 108, "DropoutParameter", None, None),
        ("inner_product_param", 117, "InnerProductParameter", None, None),
        ("lrn_param", 118, "LRNParameter", None, None),
        ("pooling_param", 121, "PoolingParameter", None, None),
        ("input_param", 143, "InputParameter", None, None)],
    "V1LayerParameter": [
        ("bottom", 2, "string", _R, None), ("top", 3, "string", _R, None),
        ("name", 4, "string", None, None), ("type", 5, "V1LayerParameter.LayerType", None, None),
        ("blobs", 6, "BlobProto", _R, None),
        ("convolution_param", 10, "ConvolutionParameter", None, None),
        ("dropout_param", 12, "DropoutParameter", None, None),
        ("inner_product_param", 17, "InnerProductParameter", None, None),
        ("lrn_param", 18, "LRNParameter", None, None),
        ("pooling_param", 19, "PoolingParameter", None, None)],
    "NetParameter": [
        ("name", 1, "string", None, None), ("input", 3, "string", _R, None),
        ("input_shape", 8, "BlobShape", _R, None), ("input_dim", 4, "int32", _R, None),
        ("layer", 100, "LayerParameter", _R, None), ("layers", 2, "V1LayerParameter", _R, None)],
}


def _field(name, number, kind, repeated, default):
  f = _F(name=name, number=number,
         label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if kind in _SCALARS:
    f.type = _SCALARS[kind]
  elif kind in _MESSAGES:
    f.type, f.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{kind}"
  else:  # An enum: "Message.Enum".
    f.type, f.type_name = _F.TYPE_ENUM, f".{PACKAGE}.{kind}"
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
          descriptor_pb2.EnumValueDescriptorProto(name=v, number=n) for v, n in values)
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
