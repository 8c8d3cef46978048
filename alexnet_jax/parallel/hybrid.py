"""config.mesh.layout="hybrid": Krizhevsky 2014, "One weird trick for parallelizing
convolutional neural networks", on the (data, model) mesh of parallel.make_mesh.

conv1-conv5 (5% of the parameters, most of the work) run data-parallel over EVERY device: each
device computes both towers' convolutions for its rows of the batch, with the conv parameters
replicated; shard_map's transpose all-reduces their gradients. fc6-fc8 (95% of the
parameters, little work) run model-parallel over every device, on the whole batch: the pool5
features of all rows are gathered once (the 2014 paper's "all at once" variant: one all-gather
whose transpose is one reduce-scatter, where the one-part-at-a-time variant would issue N
smaller exchanges, each of the same total bytes and N times the latency).

Which device holds what, with D = mesh data size and M = 2 (one tower per model index):
  batch rows    device (d, m) holds block d M + m of the global batch      ROWS = (data, model)
  fc6, fc7      device (d, m) holds tower m's units, block d of D           UNITS = (model, data)
  fc8           split by its INPUTS: the rows of fc7's units that device (d, m) holds, so that
                each device multiplies its own fc7 outputs and the partial logits of all
                devices are summed by one reduce-scatter onto each device's rows. 1,000
                classes need not divide by N (16 devices would not divide 500 per tower): fc8
                is neither padded nor kept whole (kept whole, its gradient all-reduce alone
                would be 2 x 16 MB).
The global parameters keep their shapes (tower axis first): a checkpoint serves both layouts.
The dropout masks are drawn as layers.dropout draws them (tower g of layer l from
fold_in(fold_in(rng, l), g) over the global batch), each device taking its units' columns.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.nets import alexnet
from alexnet_jax.nets import layers

LAYOUTS = ("towers", "hybrid")
ROWS = ("data", "model")
UNITS = ("model", "data")
SPECS = {"conv": {"kernel": P(), "bias": P(), "scale": P(), "mean": P(), "var": P()},
         "fc": {"kernel": P("model", None, "data"), "bias": P("model", "data")},
         "fc8": {"kernel": P(None, UNITS, None), "bias": P()}}


def layout(config) -> str:
  """config.mesh.layout, "towers" where a run's config predates the field."""
  name = config.mesh.layout
  if name not in LAYOUTS:
    raise ValueError(f"config.mesh.layout={name!r}: use one of {LAYOUTS}.")
  return name


def param_specs(params):
  """The PartitionSpec of every leaf of the global AlexNet parameters under this layout."""
  kind = lambda layer: "conv" if layer.startswith("conv") else ("fc8" if layer == "fc8" else "fc")
  return {layer: {name: SPECS[kind(layer)][name] for name in leaves}
          for layer, leaves in params.items()}


def param_shardings(mesh: Mesh, params):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_specs(params),
                      is_leaf=lambda x: isinstance(x, P))


def check_mesh(mesh: Mesh, model_cfg):
  """Refuses meshes whose devices cannot hold whole blocks of the fc layers."""
  if model_cfg.get("name", "alexnet") != "alexnet":
    raise ValueError("config.mesh.layout='hybrid' splits AlexNet's fc layers; the CIFAR nets "
                     "have no towers: use config.mesh.layout='towers'.")
  data, model = mesh.shape["data"], mesh.shape["model"]
  if data * model > 1 and model != alexnet.NUM_TOWERS:
    raise ValueError(f"config.mesh.layout='hybrid' needs config.mesh.model=2 (or 0) on "
                     f"{data * model} devices: each model index holds one tower's fc units.")
  widths = alexnet.tower_widths(model_cfg)
  for layer in ("fc6", "fc7"):
    if widths[layer] % data:
      raise ValueError(f"config.mesh.layout='hybrid': {layer}'s {widths[layer]} units a tower "
                       f"do not divide over the mesh's {data} data rows.")


def make_apply(model_cfg, mesh: Mesh):
  """apply(params, images_BHWC, rng, train) -> logits_BK, as parallel.make_apply's, under the
  hybrid layout. An evaluation batch that does not divide over the devices is padded."""
  alexnet.check_config(model_cfg)
  check_mesh(mesh, model_cfg)
  n = mesh.size

  def apply(params, images_BHWC, rng, train: bool, micro=None, moments=False):
    batch = images_BHWC.shape[0]
    if train and batch % n:
      raise ValueError(f"The global batch ({batch}) must divide over the {n} devices of the "
                       "hybrid layout (config.train.batch_size).")
    if train and rng is None:
      raise ValueError("apply(..., train=True) needs an rng: it draws the dropout masks.")
    rng = jax.random.key(0) if rng is None else rng  # Unused without training.
    pad = -batch % n
    x = jnp.pad(images_BHWC, ((0, pad),) + ((0, 0),) * 3) if pad else images_BHWC
    count = 1 if micro is None else micro[1]
    local = functools.partial(_local, model_cfg, train=train, count=count)
    # The batch moments are averaged over every device (each holds both towers): replicated.
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(param_specs(params), P(ROWS), P(), P()),
                            out_specs=(P(ROWS), P()))
    logits, sown = sharded(params, x, rng, 0 if micro is None else micro[0])
    return (logits[:batch], sown) if moments else logits[:batch]

  return apply


def _local(model_cfg, params, x_bHWC, rng, index, *, train, count):
  feats_bF, sown = conv_features(model_cfg, params, x_bHWC, train)
  return classifier(model_cfg, params, feats_bF, train, rng, (index, count)), sown


def conv_features(cfg, params, x_BHWC, train=False):
  """(pool5 of both towers for these rows, flattened as nets/alexnet.py flattens it; the batch
  moments of the batch-normalised layers): the same layers (TowerConv, lrn, max_pool) in the
  same order, both towers on this device, the moments averaged over every device."""
  widths, dtype = alexnet.tower_widths(cfg), jnp.dtype(cfg.dtype)
  act = layers.ACTIVATIONS[cfg.activation]
  grouped = cfg.tower_conv == "grouped"
  sown = {}

  def conv(name, features, k, xs, **kw):
    layer = alexnet.TowerConv(features, k, towers=alexnet.NUM_TOWERS, dtype=dtype,
                              grouped=grouped, product_output=cfg.product_output,
                              batch_norm=cfg.norm == "batch", stat_axes=ROWS,
                              epsilon=cfg.bn_epsilon, **kw)
    with jax.named_scope(name):  # The layer's name in the HLO (benchmarks/wire_bytes.py).
      ys, state = layer.apply({"params": params[name]}, xs, train, mutable=["batch_stats"])
      if "batch_stats" in state:
        sown[name] = state["batch_stats"]["moments"]
      return [act(y) for y in ys]

  x = x_BHWC.astype(dtype)
  if cfg.input_scale != 1.0:
    x = x * jnp.asarray(cfg.input_scale, dtype)
  o = alexnet.conv1_overhang(cfg.image_size)
  h = conv("conv1", widths["conv1"], 11, [x] * alexnet.NUM_TOWERS, stride=4,
           padding=((0, o), (0, o)), shared_input=True,
           in_channels=cfg.conv1_channels)
  h = _norm_pool(cfg, h)
  h = _norm_pool(cfg, conv("conv2", widths["conv2"], 5, h, padding=2))
  both = jnp.concatenate(h, axis=-1)
  h = conv("conv3", widths["conv3"], 3, [both] * alexnet.NUM_TOWERS, padding=1,
           shared_input=True)
  h = conv("conv4", widths["conv4"], 3, h, padding=1)
  h = conv("conv5", widths["conv5"], 3, h, padding=1)
  both = jnp.concatenate([_pool(cfg, y) for y in h], axis=-1)
  return both.reshape(both.shape[0], -1), sown


def _norm_pool(cfg, h):
  if cfg.norm == "lrn":
    norm = layers.configured_lrn(cfg)
    if cfg.lrn_across_towers:  # Both towers are on this device: one stack of channels.
      y, width = norm(jnp.concatenate(h, axis=-1)), h[0].shape[-1]
      h = [y[..., t * width:(t + 1) * width] for t in range(len(h))]
    else:
      h = [norm(y) for y in h]
  return [_pool(cfg, y) for y in h]


def _pool(cfg, y):
  pool = layers.max_pool if cfg.pool_grad == "custom" else layers.reduce_window_max
  return pool(y, cfg.pool_window, cfg.pool_stride)


def classifier(cfg, params, feats_bF, train, rng, micro=(0, 1)):
  """fc6-fc8 on the whole batch, this device's units; returns the logits of its own rows.
  micro: (index, count), this batch's place among the micro-batches of one step."""
  dtype = jnp.dtype(cfg.dtype)
  act = layers.ACTIVATIONS[cfg.activation]
  acc = layers.product_type(cfg.product_output, dtype)
  towers = alexnet.NUM_TOWERS // lax.axis_size("model")

  def dense(x, layer):
    p = params[layer]
    with jax.named_scope(layer):
      return [layers.add_bias(jnp.matmul(x, p["kernel"][t].astype(dtype),
                                           preferred_element_type=acc), p["bias"][t], dtype)
              for t in range(towers)]

  with jax.named_scope("fc6"):
    x = lax.all_gather(feats_bF, ROWS, axis=0, tiled=True)  # [B, F]: every row's pool5.
  h = [act(y) for y in dense(x, "fc6")]
  h = layers.at_test_time(cfg, _dropout(cfg, h, 6, train, rng, micro), train)
  with jax.named_scope("fc7"):
    x = lax.all_gather(jnp.concatenate(h, axis=-1), UNITS, axis=1, tiled=True)  # [B, all fc6]
  h = [act(y) for y in dense(x, "fc7")]
  h = layers.at_test_time(cfg, _dropout(cfg, h, 7, train, rng, micro), train)
  # fc8 by its inputs: this device's fc7 units times their rows of both towers' kernels.
  with jax.named_scope("fc8"):
    kernel = params["fc8"]["kernel"].astype(dtype)
    h7 = jnp.concatenate(h, axis=-1)
    partial_BK = jnp.concatenate([jnp.matmul(h7, kernel[t], preferred_element_type=acc)
                                  for t in range(alexnet.NUM_TOWERS)], axis=-1)
    logits_bK = lax.psum_scatter(partial_BK, ROWS, scatter_dimension=0, tiled=True)
    bias = params["fc8"]["bias"].reshape(-1)
    return layers.add_bias(logits_bK, bias, dtype).astype(jnp.float32)


def _dropout(cfg, h, layer, train, rng, micro):
  """layers.dropout's masks for this device's towers and units, over the global batch (of
  the whole step: micro-batch `index` of `count` holds rows [index b, (index + 1) b) of each
  device's block of b count rows)."""
  rate, paper = cfg.dropout_rate, cfg.dropout_scaling == "paper"
  if rate == 0.0 or not train:
    return h
  batch, units = h[0].shape
  index, count = micro
  n = lax.axis_size(ROWS)
  first_tower = lax.axis_index("model") * len(h)
  start = lax.axis_index("data") * units
  out = []
  for t, y in enumerate(h):
    key = jax.random.fold_in(jax.random.fold_in(rng, layer), first_tower + t)
    shape = (batch * count, units * lax.axis_size("data"))
    keep_BU = jax.random.bernoulli(key, 1.0 - rate, shape)
    if count > 1:
      blocks = keep_BU.reshape(n, count, batch // n, shape[1])
      keep_BU = lax.dynamic_index_in_dim(blocks, index, axis=1, keepdims=False).reshape(
          batch, shape[1])
    keep_Bu = lax.dynamic_slice_in_dim(keep_BU, start, units, axis=1)
    out.append(jnp.where(keep_Bu, y if paper else y / (1.0 - rate), jnp.zeros_like(y)))
  return out
