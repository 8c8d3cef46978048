"""benchmarks/wire_bytes.py reads the collectives of a compiled step: the ring rules, the
groups, a combined all-reduce shared out by layer, and its model against its measurements."""
import pytest

from benchmarks import wire_bytes


def _meta(name):
  return f'metadata={{op_name="jit(train_step)/{name}"}}'


# HLO lines as XLA prints them (compiled as_text()), shortened to the fields read.
HLO = "\n".join([
    "ENTRY %main {",
    "  %ag = f32[128,9216]{1,0} all-gather(%x), channel_id=1, replica_groups=[1,8]<=[8], "
    f"dimensions={{0}}, {_meta('jvp()/shard_map/fc6/all_gather')}",
    "  %rs = f32[16,1000]{1,0} reduce-scatter(%y), channel_id=2, "
    "replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}, to_apply=%add, "
    f"{_meta('shard_map/fc8/reduce_scatter')}",
    "  %one = f32[8,512]{0,1} all-gather(%z), channel_id=3, replica_groups={{0},{1}}, "
    "dimensions={1}",
    "  %fc6_grad = f32[9216,512]{1,0} fusion(%w), kind=kLoop, "
    f"{_meta('transpose(jvp())/shard_map/fc6/dot_general')}",
    "  %all-reduce.1 = (f32[11,11,3,96]{3,2,1,0}, f32[1000]{0}) all-reduce(%a, %b), "
    "channel_id=4, replica_groups=[2,4]<=[8], to_apply=%add",
    "  %g0 = f32[11,11,3,96]{3,2,1,0} get-tuple-element(%all-reduce.1), index=0, "
    f"{_meta('transpose(jvp())/shard_map/conv1/psum_invariant')}",
    "  %g1 = f32[1000]{0} get-tuple-element(%all-reduce.1), index=1, "
    f"{_meta('transpose(jvp())/shard_map/fc8/psum_invariant')}",
    "}"])


def test_collectives_are_counted_by_the_ring_rules():
  ops = {op["name"]: op for op in wire_bytes.collectives(HLO, 8)}
  assert ops["ag"]["sent"] == pytest.approx(7 / 8 * 128 * 9216 * 4)  # (n - 1) / n x output
  assert ops["rs"]["sent"] == pytest.approx(7 * 16 * 1000 * 4)        # (n - 1) x output
  assert ops["one"]["group"] == 1 and ops["one"]["sent"] == 0         # A group of one.
  size = (11 * 11 * 3 * 96 + 1000) * 4
  assert ops["all-reduce.1"]["group"] == 4                             # [2,4]<=[8]: groups of 4.
  assert ops["all-reduce.1"]["sent"] == pytest.approx(2 * 3 / 4 * size)
  layers = wire_bytes.by_layer(list(ops.values()))
  assert layers["conv1"] == pytest.approx(2 * 3 / 4 * 11 * 11 * 3 * 96 * 4)
  assert layers["fc8"] == pytest.approx(7 * 16 * 1000 * 4 + 2 * 3 / 4 * 1000 * 4)
  assert layers["other"] == 0
  # The conv gradients' all-reduce comes after the fc layers' last backward op.
  assert wire_bytes.schedule_overlap(HLO, list(ops.values())).startswith("0 of 1")


@pytest.mark.parametrize("layout,n,batch,measured", [
    ("towers", 8, 128, 190.7), ("hybrid", 8, 128, 29.2), ("hybrid", 4, 512, 58.0),
    ("towers", 16, 128, 217.3)])
def test_the_model_reproduces_the_compiled_steps(layout, n, batch, measured):
  """benchmarks/results/wire_bytes.log, full width, float32: the layer-size model carried to
  64 and 256 devices agrees with what the compiled HLO sent at 4-16 devices."""
  assert wire_bytes.modelled_mb(layout, n, batch) == pytest.approx(measured, rel=0.01)
