"""Caffe files of an AlexNet with random weights, written from this package's own message
definitions: deploy.prototxt (text), a .caffemodel and the mean's .binaryproto, in the `layer`
format of Caffe since 2015 or the `layers` (V1) format of bvlc_alexnet's 2014 files.

The weights are drawn with He's scaling (std sqrt(2 / fan_in)) and the biases small, so that
0-255 images minus the mean reach fc8 and its logits vary with the image."""
import numpy as np
from google.protobuf import text_format

from alexnet_jax.tools import caffe_proto

V1 = caffe_proto.V1LayerParameter
# (name, type, bottom, parameters) of deploy.prototxt, ReLUs in place as Caffe's.
CONVS = {"conv1": (96, 11, 4, 0, 1), "conv2": (256, 5, 1, 2, 2), "conv3": (384, 3, 1, 1, 1),
         "conv4": (384, 3, 1, 1, 2), "conv5": (256, 3, 1, 1, 2)}


def deploy_layers(width, num_classes):
  """[(name, type, bottom, top, fill(message))] of bvlc_alexnet's deploy.prototxt."""
  w = lambda n: int(round(n * width / 2)) * 2

  def conv(name):
    out, k, s, p, g = CONVS[name]

    def fill(m):
      c = m.convolution_param
      c.num_output, c.group = w(out), g
      c.kernel_size.append(k)
      if s != 1:
        c.stride.append(s)
      if p:
        c.pad.append(p)
    return fill

  def lrn(m):
    m.lrn_param.local_size, m.lrn_param.alpha, m.lrn_param.beta = 5, 1e-4, 0.75

  def pool(m):
    m.pooling_param.kernel_size, m.pooling_param.stride = 3, 2

  def fc(n):
    def fill(m):
      m.inner_product_param.num_output = n
    return fill

  def drop(m):
    m.dropout_param.dropout_ratio = 0.5

  out = []
  bottom = "data"
  for i, name in enumerate(["conv1", "conv2", "conv3", "conv4", "conv5"], 1):
    out += [(name, "Convolution", bottom, name, conv(name)),
            (f"relu{i}", "ReLU", name, name, None)]
    bottom = name
    if i <= 2:
      out += [(f"norm{i}", "LRN", bottom, f"norm{i}", lrn),
              (f"pool{i}", "Pooling", f"norm{i}", f"pool{i}", pool)]
      bottom = f"pool{i}"
  out.append(("pool5", "Pooling", "conv5", "pool5", pool))
  bottom = "pool5"
  for i, units in ((6, w(4096)), (7, w(4096))):
    out += [(f"fc{i}", "InnerProduct", bottom, f"fc{i}", fc(units)),
            (f"relu{i}", "ReLU", f"fc{i}", f"fc{i}", None),
            (f"drop{i}", "Dropout", f"fc{i}", f"fc{i}", drop)]
    bottom = f"fc{i}"
  out += [("fc8", "InnerProduct", "fc7", "fc8", fc(num_classes)),
          ("prob", "Softmax", "fc8", "prob", None)]
  return out


V1_NAMES = {v: k for k, v in caffe_proto.V1_TYPES.items()}


def deploy_net(width, num_classes, v1=False, size=227):
  net = caffe_proto.NetParameter(name="AlexNet")
  if v1:
    net.input.append("data")
    net.input_dim.extend([1, 3, size, size])
  else:
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add().dim.extend([1, 3, size, size])
  for name, kind, bottom, top, fill in deploy_layers(width, num_classes):
    m = (net.layers.add(name=name, type=V1.LayerType.Value(V1_NAMES[kind])) if v1 else
         net.layer.add(name=name, type=kind))
    m.bottom.append(bottom)
    m.top.append(top)
    if fill:
      fill(m)
  return net


def random_blobs(net, rng, size=227):
  """{layer: [weight [O, I/g, k, k] or [O, I], bias [O]]} for the deploy net, He-scaled."""
  blobs, channels, spatial = {}, 3, size
  for name, kind, _, _, _ in deploy_layers_of(net):
    m = [layer for layer in (net.layer or net.layers) if layer.name == name][0]
    if kind == "Convolution":
      c = m.convolution_param
      k, s = c.kernel_size[0], (c.stride[0] if c.stride else 1)
      p = c.pad[0] if c.pad else 0
      shape = (c.num_output, channels // c.group, k, k)
      channels, spatial = c.num_output, (spatial + 2 * p - k) // s + 1
    elif kind == "Pooling":
      spatial = (spatial - 3) // 2 + 1
      continue
    elif kind == "InnerProduct":
      fan_in = channels * spatial * spatial
      shape, channels, spatial = (m.inner_product_param.num_output, fan_in), \
          m.inner_product_param.num_output, 1
    else:
      continue
    std = np.sqrt(2.0 / np.prod(shape[1:]))
    blobs[name] = [rng.normal(0, std, shape).astype(np.float32),
                   rng.normal(0, 0.1, shape[:1]).astype(np.float32)]
  return blobs


def deploy_layers_of(net):
  names = V1.LayerType
  if net.layer:
    return [(m.name, m.type, None, None, None) for m in net.layer]
  return [(m.name, caffe_proto.V1_TYPES[names.Name(m.type)], None, None, None)
          for m in net.layers]


def set_blob(blob, array, v1):
  if v1:  # The 2014 files' num, channels, height, width, fully connected as 1 x 1 x O x I.
    dims = (1,) * (4 - array.ndim) + array.shape
    blob.num, blob.channels, blob.height, blob.width = dims
  else:
    blob.shape.dim.extend(array.shape)
  # BlobProto.data (field 5) packed: its tag, length and float32 bytes, parsed at C speed.
  raw = np.ascontiguousarray(array, "<f4").tobytes()
  blob.MergeFromString(bytes([5 << 3 | 2]) + _varint(len(raw)) + raw)


def _varint(n):
  out = bytearray()
  while True:
    out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
    n >>= 7
    if not n:
      return bytes(out)


def write(folder, *, width, num_classes, v1, seed=0, size=227):
  """Writes deploy.prototxt, model.caffemodel and mean.binaryproto into `folder`; returns
  their paths, the Caffe weights and the mean (BGR [3, 256, 256])."""
  rng = np.random.default_rng(seed)
  net = deploy_net(width, num_classes, v1, size)
  blobs = random_blobs(net, rng, size)
  model = caffe_proto.NetParameter()
  model.CopyFrom(net)
  for layer in (model.layers if v1 else model.layer):
    for array in blobs.get(layer.name, []):
      set_blob(layer.blobs.add(), array, v1)
  # The mean: about ImageNet's channel means, varying over the image so that a mean cut at
  # the wrong offset would show.
  yy, xx = np.mgrid[0:256, 0:256] / 256.0
  mean = np.stack([104 + 20 * np.sin(6 * yy), 117 + 20 * np.cos(5 * xx),
                   123 + 15 * np.sin(4 * (xx + yy))]).astype(np.float32)
  mean_blob = caffe_proto.BlobProto()
  set_blob(mean_blob, mean[None], v1)
  paths = {"prototxt": folder / "deploy.prototxt", "caffemodel": folder / "model.caffemodel",
           "mean": folder / "mean.binaryproto"}
  paths["prototxt"].write_text(text_format.MessageToString(net))
  paths["caffemodel"].write_bytes(model.SerializeToString())
  paths["mean"].write_bytes(mean_blob.SerializeToString())
  return paths, blobs, mean
