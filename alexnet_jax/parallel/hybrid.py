"""config.mesh.layout="hybrid", Krizhevsky 2014's "one weird trick": convolutions data-parallel
over every device, fc6-fc8 model-parallel over every device (`Hybrid`, `shard_net`, the
PartitionSpecs); docs/design.md, "Layouts"."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import errors
from alexnet_jax.nets import alexnet

LAYOUTS = ("towers", "hybrid")
ROWS = ("data", "model")
UNITS = ("model", "data")
SPECS = {"conv": {"kernel": P(), "bias": P(), "scale": P(), "mean": P(), "var": P()},
         "fc": {"kernel": P("model", None, "data"), "bias": P("model", "data")},
         "fc8": {"kernel": P(None, UNITS, None), "bias": P()}}
# The 2014 network's one column: its fc units split over every device.
COLUMN_FC = {"kernel": P(None, None, UNITS), "bias": P(None, UNITS)}


def layout_name(config) -> str:
  """config.mesh.layout, checked (compatibility.upgrade gives an older run's config "towers")."""
  name = config.mesh.layout
  if name not in LAYOUTS:
    raise errors.ConfigError(f"config.mesh.layout={name!r}: use one of {LAYOUTS}.")
  return name


def param_specs(params):
  """The PartitionSpec of every leaf of the global AlexNet parameters under this layout."""
  column = params["fc6"]["kernel"].shape[0] == 1
  specs = dict(SPECS, fc=COLUMN_FC) if column else SPECS
  kind = lambda layer: "conv" if layer.startswith("conv") else ("fc8" if layer == "fc8" else "fc")
  return {layer: {name: specs[kind(layer)][name] for name in leaves}
          for layer, leaves in params.items()}


def param_shardings(mesh: Mesh, params):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_specs(params),
                      is_leaf=lambda x: isinstance(x, P))


def check_mesh(mesh: Mesh, model_cfg):
  """Refuses meshes whose devices cannot hold whole blocks of the fc layers."""
  if model_cfg.name not in ("alexnet", alexnet.OWT):
    raise errors.ConfigError(
        "config.mesh.layout='hybrid' splits AlexNet's fc layers; the CIFAR nets "
        "have no fc layers to split: use config.mesh.layout='towers'.")
  data, model = mesh.shape["data"], mesh.shape["model"]
  column = alexnet.towers_of(model_cfg) == 1
  if data * model > 1 and model != alexnet.NUM_TOWERS and not column:
    raise errors.ConfigError(
        f"config.mesh.layout='hybrid' needs config.mesh.model=2 (or 0) on "
        f"{data * model} devices: each model index holds one tower's fc units.")
  blocks = data * model if column else data
  widths = alexnet.tower_widths(model_cfg)
  for layer in ("fc6", "fc7"):
    if widths[layer] % blocks:
      raise errors.ConfigError(
          f"config.mesh.layout='hybrid': {layer}'s {widths[layer]} units a tower "
          f"do not divide over the mesh's {blocks} blocks of them.")


@dataclasses.dataclass(frozen=True)
class Hybrid:
  """What the hybrid layout holds and exchanges (alexnet.Towers' questions): every tower of
  every convolution on each device, for its rows; `fc_towers` towers of fc6-fc8 units, one of
  `blocks` blocks of each, for the whole batch."""
  conv_towers: int           # The network's towers (2; 1 for the 2014 network's column).
  fc_towers: int             # conv_towers // the mesh's model size (1 for the column).
  blocks: int                # The fc units' blocks per tower (data, or every device).
  unit_axes: tuple = ("data",)
  model_axis: str = "model"
  stat_axes = ROWS           # Each device holds every tower: the moments over every row.

  def fc_units(self, units):
    return units // self.blocks

  def merge(self, h):
    return jnp.concatenate(h, axis=-1)

  def fc_input(self, h):
    """Every row's pool5 (the 2014 paper's "all at once": one all-gather)."""
    both = jnp.concatenate(h, axis=-1)
    return lax.all_gather(both.reshape(both.shape[0], -1), ROWS, axis=0, tiled=True)

  def units(self, h):
    return lax.all_gather(jnp.concatenate(h, axis=-1), UNITS, axis=1, tiled=True)

  def fc8_input(self, h):
    """fc8 by its inputs: this device's fc7 units, times their rows of every tower's kernel."""
    return jnp.concatenate(h, axis=-1)

  def fc8_reduce(self, partial_BK):
    """Every device's partial logits summed onto each device's rows."""
    return lax.psum_scatter(partial_BK, ROWS, scatter_dimension=0, tiled=True)

  def logits(self, y):
    return y

  def fc8_shapes(self, units, classes):
    per_tower = classes // self.conv_towers
    return ((self.conv_towers, self.fc_towers * units, per_tower),
            (self.conv_towers, per_tower))

  def dropout_place(self, rows, inputs=False):
    """The whole batch's rows, this device's block of its towers' units (`inputs`: every
    unit of the one input all towers read)."""
    if inputs:
      return {"row_blocks": lax.axis_size(ROWS), "row_block": None}
    first = 0 if self.fc_towers == self.conv_towers else lax.axis_index("model") * self.fc_towers
    return {"row_blocks": lax.axis_size(ROWS), "row_block": None, "unit_blocks": self.blocks,
            "unit_block": lax.axis_index(self.unit_axes), "first_tower": first}


def shard_net(model_cfg, mesh: Mesh, impl=None):
  """apply(params, images_BHWC, rng, train) -> logits_BK, as parallel.shard_net's, under the
  hybrid layout. An evaluation batch that does not divide over the devices is padded."""
  alexnet.check_config(model_cfg)
  check_mesh(mesh, model_cfg)
  n = mesh.size
  towers = alexnet.towers_of(model_cfg)
  exchange = (Hybrid(1, 1, mesh.size, UNITS) if towers == 1 else
              Hybrid(towers, towers // mesh.shape["model"], mesh.shape["data"]))
  net = alexnet.AlexNet(ml_collections.FrozenConfigDict(model_cfg), impl, exchange=exchange)

  def apply(params, images_BHWC, rng, train: bool, micro=None, moments=False):
    batch = images_BHWC.shape[0]
    if train and batch % n:
      raise errors.ConfigError(
          f"The global batch ({batch}) must divide over the {n} devices of the "
          "hybrid layout (config.train.batch_size).")
    if train and rng is None:
      raise ValueError("apply(..., train=True) needs an rng: it draws the dropout masks.")
    rng = jax.random.key(0) if rng is None else rng  # Unused without training.
    pad = -batch % n
    x = jnp.pad(images_BHWC, ((0, pad),) + ((0, 0),) * 3) if pad else images_BHWC
    count = 1 if micro is None else micro[1]

    def local(params, x_bHWC, rng, index):
      logits, state = net.apply({"params": params}, x_bHWC, train=train, rng=rng,
                                micro=(index, count), mutable=["batch_stats"])
      return logits, {layer: sown["moments"]
                      for layer, sown in state.get("batch_stats", {}).items()}

    # The batch moments are averaged over every device (each holds both towers): replicated.
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(param_specs(params), P(ROWS), P(), P()),
                            out_specs=(P(ROWS), P()))
    logits, sown = sharded(params, x, rng, 0 if micro is None else micro[0])
    return (logits[:batch], sown) if moments else logits[:batch]

  return apply
