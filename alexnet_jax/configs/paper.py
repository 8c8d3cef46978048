r"""Section 5's recipe, each value with its section. On ImageNet (README) the paper reports 40.7%
top-1 / 18.2% top-5 with 10 crops (table 2, "1 CNN", ~90 epochs); where this recipe stays at
chance `:caffe` learns (experiments/README.md); `:smoke` takes a minute on a CPU.

    python -m alexnet_jax.main --config=configs/paper.py --workdir=workdirs/paper
"""
import ml_collections

from alexnet_jax.configs import recipes


def get_config(arg=None):
  """arg: a recipe of configs/recipes.py (none: "paper"), "large_batch", "smoke", or several,
  comma-separated ("caffe,smoke")."""
  parts = [a for a in (arg or "").split(",") if a]
  unknown = [a for a in parts if a not in recipes.NAMES + ("smoke", "large_batch")]
  if unknown:
    raise ValueError(f"configs/paper.py:{arg}: {unknown[0]!r} is neither a recipe "
                     f"{recipes.NAMES} nor 'smoke' nor 'large_batch'.")
  config = base_config()
  for name in parts:
    if name in recipes.NAMES:
      recipes.apply(config, name)
  if "large_batch" in parts:
    large_batch(config)
  if "smoke" in parts:
    smoke(config)
  return config


def large_batch(config, batch_size=8192):
  """A global batch of 8,192, each value with its source; its rate (0.01 x 64) is a starting
  point to tune, its layout the towers' (docs/several_hosts.md, "Large global batches")."""
  config.train.batch_size = batch_size  # You, Gitman & Ginsburg 2017 trained AlexNet at 8K.
  config.train.optimizer = "lars"       # You et al. 2017, algorithm 1.
  config.train.lars_trust = 1e-3        # You et al. 2017's trust coefficient eta.
  config.train.lr_scaling = "linear"    # Goyal et al. 2017, section 2.1, from ...
  config.train.lr_base_batch = 128      # ... section 5's batch and rate.
  config.train.warmup_epochs = 5.0      # Goyal et al. 2017, section 2.2: 5 epochs of warmup.
  config.train.schedule = "poly"        # You et al. 2017: polynomial decay, power 2.
  config.train.poly_power = 2.0
  config.train.num_epochs = 90          # Section 5's "roughly 90 cycles" (You et al.: 100).


def base_config():
  """Section 5's recipe as printed: what `paper` names."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.rng_impl = ""                 # Dropout and augmentation keys: "" threefry2x32, "rbg".
  config.recipe = "paper"              # The recipe the fields below were set from.

  # Section 3 and figure 2: the network.
  config.model = ml_collections.ConfigDict()
  config.model.name = "alexnet"        # "cifar4": the CIFAR-10 nets of experiments/.
  config.model.num_classes = 1000
  config.model.image_size = 224        # 3.5, 4.1; conv1 gives 55x55 as cuda-convnet's did
                                       # (alexnet.conv1_overhang); 227: Caffe's.
  config.model.width = 1.0             # Multiplier on every layer's width; 1.0 is the paper.
  config.model.activation = "relu"     # 3.1; "tanh" for figure 1.
  config.model.norm = "lrn"            # 3.3: after conv1, conv2; "batch": after every conv,
                                       # before its ReLU (You et al.'s AlexNet-BN); "none".
  config.model.bn_momentum = 0.9       # Running averages r <- 0.9 r + 0.1 moment (PyTorch's 0.1).
  config.model.bn_epsilon = 1e-5       # Ioffe & Szegedy's epsilon (PyTorch's, Flax's default).
  config.model.lrn_convention = "paper"  # 3.3's alpha; "caffe": alpha / n, what the authors'
                                       # code ran (docs/design.md, "Layers").
  config.model.lrn_across_towers = False  # 3.3: each tower's channels; True: both as one stack,
                                       # as Caffe's one-device net (tools/caffe.py).
  config.model.lrn_k = 2.0
  config.model.lrn_n = 5
  config.model.lrn_alpha = 1e-4
  config.model.lrn_beta = 0.75
  config.model.pool_window = 3         # 3.4: overlapping pooling, z=3, s=2.
  config.model.pool_stride = 2
  config.model.dropout_rate = 0.5      # 4.2, on fc6 and fc7.
  config.model.dropout_scaling = "paper"  # 4.2: x 0.5 at test time; "inverted": x 2 while
                                       # training (Caffe; docs/design.md, "Layers").
  config.model.init = "paper"          # 5: "paper" N(0, weight_std); "he" sqrt(2/fan_in).
  config.model.input_scale = 1.0       # 4.1 feeds 0-255 pixels minus the mean; "he" wants ~1/60.
  config.model.weight_std = 0.01       # 5: weights N(0, 0.01) (the authors' files: 0.03 in
                                       # conv3-5, the cuda_convnet recipe).
  # Per layer where it differs from weight_std (0: weight_std), as recipes.py's do.
  config.model.layer_weight_std = ml_collections.ConfigDict(
      {layer: 0.0 for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                "fc8")})
  config.model.bias_init = 1.0         # 5: biases 1 in conv2, conv4, conv5, fc6, fc7.
  config.model.dtype = "float32"       # "bfloat16" for accelerators; parameters stay float32.

  # How the network is computed, not what (layers.IMPL): not in a checkpoint's fingerprint.
  config.impl = ml_collections.ConfigDict()
  config.impl.pool_grad = "custom"     # layers.max_pool's phase gradient; "reduce_window": XLA's.
  config.impl.lrn_dtype = "float32"    # LRN in float32; "compute": in config.model.dtype.
  config.impl.tower_conv = "separate"  # model=1: a convolution per tower; "grouped": one.
  config.impl.conv1_channels = 3       # 4 or 8: the image and conv1 zero-padded to that many.
  config.impl.model1_gathers = True    # model=1: all_gather over the 1-device model axis too.
  config.impl.product_output = "compute"  # What bfloat16 products return (layers.product_type).

  # Section 3.2: two towers, one per device; the batch splits over `data`.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.model = 0                # 0: 2 when the devices allow it, else 1.
  config.mesh.layout = "towers"        # 3.2; "hybrid": Krizhevsky 2014 (parallel/hybrid.py).
  config.mesh.num_cpu_devices = 0      # > 0: split the CPU into this many JAX devices.

  # Several hosts (jax.distributed; alexnet_jax/runtime.py, docs/several_hosts.md).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.mode = "off"      # "off": one process; "auto": JAX detects Cloud TPU,
                                       # SLURM, Open MPI; "manual": the three fields below.
  config.distributed.coordinator_address = ""  # host:port of process 0; "" in auto mode.
  config.distributed.num_processes = 0  # 0: detected (auto mode).
  config.distributed.process_id = -1    # -1: detected (auto mode).
  config.distributed.local_device_ids = ""  # e.g. "0,1": this process's GPUs; "": all/detected.
  config.distributed.initialization_timeout_s = 300  # Wait at most this for all processes.

  # Sections 2 and 4.1: input (alexnet_jax/data/).
  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds"          # Or folder, imagenet, tiny_imagenet, generated.
  config.data.name = "imagenet2012"    # TFDS name (source "tfds").
  config.data.tfds_data_dir = ""       # "": TFDS's default (~/tensorflow_datasets).
  config.data.manual_dir = ""          # "": <tfds_data_dir>/downloads/manual (the tars).
  config.data.image_key = "image"      # TFDS feature names.
  config.data.label_key = "label"
  config.data.root = ""                # folder: root/<split>/<class>/*.jpg; tiny_imagenet,
                                       # imagenet: their layouts (docs/design.md).
  config.data.extract_dir = ""         # imagenet's tars extracted there once; "": root.
  config.data.train_split = "train"
  config.data.max_train_per_class = 0  # > 0: the first this many images of each class (all
  config.data.max_eval_per_class = 0   # sources but tfds); 0: all.
  config.data.eval_split = ""          # "": "validation" for tfds, "val" for the others.
  config.data.on_corrupt = "stop"      # Undecodable file: "stop" naming it, or "skip" (counted).
  config.data.cache_dir = ""           # "": ~/.cache/alexnet_jax (generated set, statistics).
  config.data.stats_file = ""          # "": <cache_dir>/stats/<dataset>.npz (data.stats).
  config.data.resize_size = 256        # 2: shorter side to 256, central 256x256 patch.
  config.data.resize = "antialias"     # As PIL's bilinear; "fast": 4 pixels (data/decoding.py).
  config.data.random_crop = True       # 4.1: random 224x224 patches, offsets 0..32 ...
  config.data.flip = True              # ... and their horizontal reflections.
  config.data.crop_op = "dynamic_slice"  # The crops on the device; "gather": the same pixels.
  config.data.mean = "image"           # 2: "image" (the paper), "channel" or "none".
  config.data.pca_noise_std = 0.1      # 4.1: a_i ~ N(0, 0.1); 0 turns the colour noise off.
  config.data.pca_scale = "cuda_convnet"  # Or "fb_resnet", "paper" (preprocess.PCA_SCALES).
  config.data.shuffle_buffer = 10_000  # Source "tfds" only; indexed sources permute fully.
  config.data.threads = 0              # tf.data threads; 0: AUTOTUNE over all cores.
  config.data.prefetch = 2             # Batches.
  config.data.decoded_cache = ""       # "memory" or "mmap": an indexed split decoded once.
  config.data.generated = ml_collections.ConfigDict()  # Source "generated": shapes x textures.
  config.data.generated.seed = 0
  config.data.generated.num_classes = 10
  config.data.generated.image_size = 256
  config.data.generated.train_per_class = 300
  config.data.generated.val_per_class = 50

  # Section 5: learning.
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128        # Global batch, over all devices and hosts.
  config.train.learning_rate = 0.01
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4     # On the kernels.
  config.train.bias_lr_mult = 1.0      # The biases' rate is learning_rate x this ...
  config.train.bias_decay_mult = 0.0   # ... their decay weight_decay x this (5: weights only).
  config.train.num_epochs = 90         # "roughly 90 cycles".
  config.train.num_steps = 0           # If > 0, overrides num_epochs.
  config.train.schedule = "plateau"    # 5: divide by 10 when validation error stops improving.
  config.train.lr_drop_factor = 10.0
  config.train.plateau_patience = 2    # Evaluations without improvement before a drop.
  config.train.plateau_min_delta = 0.0
  config.train.max_lr_drops = 3        # "reduced three times prior to termination".
  config.train.step_epochs = (30, 60, 80)  # With schedule="step".
  # Large global batches (steps.py, schedule.py); the defaults are section 5's step.
  config.train.optimizer = "sgd"       # 5's rule; "lars": You, Gitman & Ginsburg 2017.
  config.train.lars_trust = 1e-3       # LARS's trust coefficient eta (You et al. 2017).
  config.train.accum_steps = 1         # k micro-batches of batch_size / k make one step.
  config.train.lr_scaling = "none"     # "sqrt" (Krizhevsky 2014), "linear" (Goyal et al. 2017):
  config.train.lr_base_batch = 128     # learning_rate is this batch's, scaled to batch_size.
  config.train.warmup_epochs = 0.0     # schedule="poly": linear warmup from learning_rate ...
  config.train.poly_power = 2.0        # ... then decay to 0 with this power (You et al. 2017).
  config.train.log_every_steps = 50
  config.train.steps_in_flight = 2     # Dispatched before the host waits (docs/design.md).
  config.train.stuck_window_steps = 2000  # Steps at chance before a line says so (0: never).
  config.train.stop_at_train_error = 0.0  # > 0: stop after an epoch's top-1 at most this.

  # Section 4.1's ten patches in the final evaluation; the periodic ones use the centre crop.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 128         # Global; a 10-crop batch holds 10x as many images.
  config.eval.every_epochs = 1.0
  config.eval.ten_crop = True
  config.eval.checkpoint = "latest"    # Read by eval_only and tools/: "best" or a step too.

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  config.checkpoint.max_to_keep = 3    # The last few, and the best by validation error.
  config.checkpoint.restore_step = 0   # N: the newest readable step >= N (docs/faults.md).

  config.eval_only = False             # Load config.eval.checkpoint and evaluate only.

  # Fine-tuning (a fresh run): a weights .npz, a workdir or <workdir>/checkpoints/<step> ...
  config.init_from = ""
  config.init_reset = ""               # ... but these layers, e.g. "fc8" (comma-separated).
  config.profile_steps = 0             # > 0: trace this many steps (docs/progress_and_profile.md).

  return config


def smoke(config):
  """About a minute on a CPU: the network at a quarter width, on generated data."""
  config.model.width = 0.25
  config.model.num_classes = 10
  config.train.batch_size = 16
  config.train.num_epochs = 1
  config.mesh.num_cpu_devices = 2   # Two towers on two CPU devices when there is no GPU.
  config.data.source = "generated"
  config.data.generated.train_per_class = 64  # 640 + 160 images, written in ~10 s.
  config.data.generated.val_per_class = 16
