"""The part of Caffe's caffe.proto its AlexNet files use (NetParameter, BlobProto), built from
descriptors at import (no protoc, no Caffe), `layer` (2015) and V1 `layers` (2014) alike:

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

# Enums nested in a message: {message: {enum: [(value name, number)]}}; Phase is top-level.
_ENUMS = {
    "ConvolutionParameter": {"Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)]},
    "LRNParameter": {"NormRegion": [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)],
                     "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)]},
    "PoolingParameter": {"PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
                         "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
                         "RoundMode": [("CEIL", 0), ("FLOOR", 1)]},
    "ReLUParameter": {"Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)]},
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
_TOP_ENUMS = {"Phase": [("TRAIN", 0), ("TEST", 1)]}

# {message: [(field, number, type, repeated, default or None)]}; "packed" marks the packed
# repeated scalars. A type naming an enum of _ENUMS is written "Message.Enum".
_R, _P = "repeated", "packed"
_MESSAGES = {
    "BlobShape": [("dim", 1, "int64", _P, None)],
    "BlobProto": [("shape", 7, "BlobShape", None, None), ("data", 5, "float", _P, None),
                  ("diff", 6, "float", _P, None), ("double_data", 8, "double", _P, None),
                  ("double_diff", 9, "double", _P, None), ("num", 1, "int32", None, "0"),
                  ("channels", 2, "int32", None, "0"), ("height", 3, "int32", None, "0"),
                  ("width", 4, "int32", None, "0")],
    "FillerParameter": [("type", 1, "string", None, "constant"), ("value", 2, "float", None, "0"),
                        ("min", 3, "float", None, "0"), ("max", 4, "float", None, "1"),
                        ("mean", 5, "float", None, "0"), ("std", 6, "float", None, "1")],
    "NetStateRule": [("phase", 1, "Phase", None, None), ("min_level", 2, "int32", None, None),
                     ("max_level", 3, "int32", None, None), ("stage", 4, "string", _R, None),
                     ("not_stage", 5, "string", _R, None)],
    "ParamSpec": [("name", 1, "string", None, None), ("lr_mult", 3, "float", None, "1"),
                  ("decay_mult", 4, "float", None, "1")],
    "TransformationParameter": [("scale", 1, "float", None, "1"), ("mirror", 2, "bool", None, None),
                                ("crop_size", 3, "uint32", None, "0"),
                                ("mean_file", 4, "string", None, None),
                                ("mean_value", 5, "float", _R, None)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", None, None), ("bias_term", 2, "bool", None, "true"),
        ("pad", 3, "uint32", _R, None), ("kernel_size", 4, "uint32", _R, None),
        ("stride", 6, "uint32", _R, None), ("dilation", 18, "uint32", _R, None),
        ("pad_h", 9, "uint32", None, "0"), ("pad_w", 10, "uint32", None, "0"),
        ("kernel_h", 11, "uint32", None, None), ("kernel_w", 12, "uint32", None, None),
        ("stride_h", 13, "uint32", None, None), ("stride_w", 14, "uint32", None, None),
        ("group", 5, "uint32", None, "1"), ("weight_filler", 7, "FillerParameter", None, None),
        ("bias_filler", 8, "FillerParameter", None, None),
        ("engine", 15, "ConvolutionParameter.Engine", None, None),
        ("axis", 16, "int32", None, "1")],
    "DropoutParameter": [("dropout_ratio", 1, "float", None, "0.5")],
    "InnerProductParameter": [
        ("num_output", 1, "uint32", None, None), ("bias_term", 2, "bool", None, "true"),
        ("weight_filler", 3, "FillerParameter", None, None),
        ("bias_filler", 4, "FillerParameter", None, None), ("axis", 5, "int32", None, "1"),
        ("transpose", 6, "bool", None, "false")],
    "InputParameter": [("shape", 1, "BlobShape", _R, None)],
    "LRNParameter": [("local_size", 1, "uint32", None, "5"), ("alpha", 2, "float", None, "1"),
                     ("beta", 3, "float", None, "0.75"),
                     ("norm_region", 4, "LRNParameter.NormRegion", None, None),
                     ("k", 5, "float", None, "1"),
                     ("engine", 6, "LRNParameter.Engine", None, None)],
    "PoolingParameter": [
        ("pool", 1, "PoolingParameter.PoolMethod", None, None), ("pad", 4, "uint32", None, "0"),
        ("pad_h", 9, "uint32", None, "0"), ("pad_w", 10, "uint32", None, "0"),
        ("kernel_size", 2, "uint32", None, None), ("kernel_h", 5, "uint32", None, None),
        ("kernel_w", 6, "uint32", None, None), ("stride", 3, "uint32", None, "1"),
        ("stride_h", 7, "uint32", None, None), ("stride_w", 8, "uint32", None, None),
        ("engine", 11, "PoolingParameter.Engine", None, None),
        ("global_pooling", 12, "bool", None, "false"),
        ("round_mode", 13, "PoolingParameter.RoundMode", None, None)],
    "ReLUParameter": [("negative_slope", 1, "float", None, "0"),
                      ("engine", 2, "ReLUParameter.Engine", None, None)],
    "SoftmaxParameter": [("axis", 2, "int32", None, "1")],
    "LayerParameter": [
        ("name", 1, "string", None, None), ("type", 2, "string", None, None),
        ("bottom", 3, "string", _R, None), ("top", 4, "string", _R, None),
        ("phase", 10, "Phase", None, None), ("loss_weight", 5, "float", _R, None),
        ("param", 6, "ParamSpec", _R, None), ("blobs", 7, "BlobProto", _R, None),
        ("include", 8, "NetStateRule", _R, None), ("exclude", 9, "NetStateRule", _R, None),
        ("transform_param", 100, "TransformationParameter", None, None),
        ("convolution_param", 106, "ConvolutionParameter", None, None),
        ("dropout_param", 108, "DropoutParameter", None, None),
        ("inner_product_param", 117, "InnerProductParameter", None, None),
        ("lrn_param", 118, "LRNParameter", None, None),
        ("pooling_param", 121, "PoolingParameter", None, None),
        ("relu_param", 123, "ReLUParameter", None, None),
        ("softmax_param", 125, "SoftmaxParameter", None, None),
        ("input_param", 143, "InputParameter", None, None)],
    "V1LayerParameter": [
        ("bottom", 2, "string", _R, None), ("top", 3, "string", _R, None),
        ("name", 4, "string", None, None), ("include", 32, "NetStateRule", _R, None),
        ("exclude", 33, "NetStateRule", _R, None),
        ("type", 5, "V1LayerParameter.LayerType", None, None),
        ("blobs", 6, "BlobProto", _R, None), ("param", 1001, "string", _R, None),
        ("blobs_lr", 7, "float", _R, None), ("weight_decay", 8, "float", _R, None),
        ("loss_weight", 35, "float", _R, None),
        ("convolution_param", 10, "ConvolutionParameter", None, None),
        ("dropout_param", 12, "DropoutParameter", None, None),
        ("inner_product_param", 17, "InnerProductParameter", None, None),
        ("lrn_param", 18, "LRNParameter", None, None),
        ("pooling_param", 19, "PoolingParameter", None, None),
        ("relu_param", 30, "ReLUParameter", None, None),
        ("softmax_param", 39, "SoftmaxParameter", None, None),
        ("transform_param", 36, "TransformationParameter", None, None)],
    "NetParameter": [
        ("name", 1, "string", None, None), ("input", 3, "string", _R, None),
        ("input_shape", 8, "BlobShape", _R, None), ("input_dim", 4, "int32", _R, None),
        ("force_backward", 5, "bool", None, "false"),
        ("layer", 100, "LayerParameter", _R, None), ("layers", 2, "V1LayerParameter", _R, None)],
}


def _field(name, number, kind, repeated, default):
  f = _F(name=name, number=number,
         label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if kind in _SCALARS:
    f.type = _SCALARS[kind]
  elif kind in _MESSAGES:
    f.type, f.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{kind}"
  else:  # An enum: "Phase" or "Message.Enum".
    f.type, f.type_name = _F.TYPE_ENUM, f".{PACKAGE}.{kind}"
  if repeated == _P:
    f.options.packed = True
  if default is not None:
    f.default_value = default
  return f


def _file():
  proto = descriptor_pb2.FileDescriptorProto(name="alexnet_jax_caffe_subset.proto",
                                             package=PACKAGE, syntax="proto2")
  for name, values in _TOP_ENUMS.items():
    proto.enum_type.add(name=name).value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=v, number=n) for v, n in values)
  for name, fields in _MESSAGES.items():
    message = proto.message_type.add(name=name)
    for enum, values in _ENUMS.get(name, {}).items():
      message.enum_type.add(name=enum).value.extend(
          descriptor_pb2.EnumValueDescriptorProto(name=v, number=n) for v, n in values)
    message.field.extend(_field(*spec) for spec in fields)
  return proto


_POOL = descriptor_pool.DescriptorPool()
_FILE = _POOL.Add(_file())


def _message(name):
  return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = _message("NetParameter")
LayerParameter = _message("LayerParameter")
V1LayerParameter = _message("V1LayerParameter")
BlobProto = _message("BlobProto")
BlobShape = _message("BlobShape")
# V1LayerParameter's types by their LayerParameter names ("CONVOLUTION" -> "Convolution").
V1_TYPES = {"CONVOLUTION": "Convolution", "RELU": "ReLU", "LRN": "LRN", "POOLING": "Pooling",
            "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
            "DATA": "Data", "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy",
            "CONCAT": "Concat", "SPLIT": "Split", "FLATTEN": "Flatten"}
