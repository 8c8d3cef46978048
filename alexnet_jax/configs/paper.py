r"""The recipe of Krizhevsky, Sutskever & Hinton (NIPS 2012), each value with its section.

At full width on 200 ImageNet classes (Tiny ImageNet, batch 128, 300 steps) this recipe did
not leave chance, where `configs/paper.py:caffe` did (experiments/README.md, "Three recipes on
Tiny ImageNet"): for a run that must learn, pass `:caffe`; no argument stays section 5's.

Run on ImageNet (TFDS `imagenet2012`, manual directory; see README):

    python -m alexnet_jax.main --config=configs/paper.py --workdir=workdirs/paper

The paper reports 40.7% top-1 / 18.2% top-5 validation error for one network with
10-crop testing (table 2, "1 CNN") after about 90 epochs. `configs/paper.py:smoke` shrinks the
run to about a minute on a CPU, on generated data.
"""
import ml_collections

from alexnet_jax.configs import recipes


def get_config(arg=None):
  """arg: a recipe of configs/recipes.py ("paper", "cuda_convnet", "caffe"; none: "paper"),
  "large_batch" (a global batch of 8,192), "smoke", or several, comma-separated
  ("caffe,smoke")."""
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
  """A global batch of 8,192 (`configs/paper.py:large_batch`), each value with its source.

  The learning rate is section 5's 0.01 at 128 scaled linearly (x64 = 0.64), a starting point
  to tune: no source here trained this network at this batch with this rate. The layout stays
  the towers': at 8,192 images a step the hybrid's fc exchanges outgrow the towers' gradient
  all-reduce (benchmarks/README.md, docs/several_hosts.md).
  """
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
  config.model.image_size = 224        # 3.5, 4.1: 224x224 crops. conv1 still gives 55x55, as
                                       # in the authors' cuda-convnet: its last filters overhang
                                       # the image by 3 zero pixels (alexnet.conv1_overhang).
                                       # 227: Caffe's convention, which tiles exactly.
  config.model.width = 1.0             # Multiplier on every layer's width; 1.0 is the paper.
  config.model.activation = "relu"     # 3.1; "tanh" for figure 1.
  config.model.norm = "lrn"            # 3.3: LRN after conv1 and conv2. "batch": batch
                                       # normalisation after every convolution, before its ReLU
                                       # (Ioffe & Szegedy 2015; You et al. 2017's AlexNet-BN),
                                       # in place of LRN; "none": neither.
  config.model.bn_momentum = 0.9       # Running averages r <- 0.9 r + 0.1 (batch moment), as
                                       # PyTorch's momentum=0.1; evaluation reads them.
  config.model.bn_epsilon = 1e-5       # Ioffe & Szegedy's epsilon (PyTorch's, Flax's default).
  config.model.lrn_convention = "paper"  # "paper": alpha as written (3.3); "caffe": alpha / n,
                                       # what the authors' code ran: cuda-convnet divides the
                                       # scale by the window, so their layer files (scale
                                       # 0.0001, size 5, minDiv 2) applied alpha = 2e-5, five
                                       # times weaker than the printed formula (the lrn sweep's
                                       # third point).
  config.model.lrn_across_towers = False  # 3.3: each tower normalises its own channels; True:
                                       # over both towers' as one stack, as Caffe's one-device
                                       # AlexNet did (tools/caffe.py sets it for its weights).
  config.model.lrn_k = 2.0
  config.model.lrn_n = 5
  config.model.lrn_alpha = 1e-4
  config.model.lrn_beta = 0.75
  config.model.pool_window = 3         # 3.4: overlapping pooling, z=3, s=2.
  config.model.pool_stride = 2
  config.model.dropout_rate = 0.5      # 4.2, on fc6 and fc7.
  config.model.dropout_scaling = "paper"  # 4.2: outputs x 0.5 at test time; "inverted": x 2
                                       # while training (Caffe, PyTorch). nets/alexnet.py says how
                                       # they differ.
  config.model.init = "paper"          # 5: "paper" N(0, weight_std); "he" sqrt(2/fan_in).
  config.model.input_scale = 1.0       # 4.1 feeds 0-255 pixels minus the mean; "he" wants ~1/60.
  config.model.weight_std = 0.01       # 5: weights N(0, 0.01). (The authors' 2-GPU layer file,
                                       # cuda-convnet2 layers-imagenet-2gpu-model.cfg, has 0.03
                                       # in conv3-5; the paper's value is kept.)
  # Per layer, where it differs from weight_std (0: weight_std); the cuda_convnet and caffe
  # recipes set some.
  config.model.layer_weight_std = ml_collections.ConfigDict(
      {layer: 0.0 for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                "fc8")})
  config.model.bias_init = 1.0         # 5: biases 1 in conv2, conv4, conv5, fc6, fc7.
  # Does this recipe learn at full width? On CIFAR-10's photos at batch 32 it leaves chance
  # within 300 steps with the paper's dropout scaling (4.2) and stays at chance with inverted
  # dropout; experiments/README.md, "Does the paper's recipe learn", has the curves and why.
  config.model.dtype = "float32"       # "bfloat16" for accelerators; parameters stay float32.
  # The same computation done otherwise, to time on accelerators (benchmarks/accelerator.py
  # --parts variants); each default is the step as it was, which none beat clearly on a CPU.
  config.model.lrn_grad = "custom"     # layers.lrn's written-out gradient; "autodiff": JAX's.
  config.model.pool_grad = "custom"    # layers.max_pool's phase gradient; "reduce_window": XLA's.
  config.model.lrn_dtype = "float32"   # LRN in float32; "compute": in config.model.dtype.
  config.model.tower_conv = "separate"  # model=1: a convolution per tower; "grouped": one.
  config.model.conv1_channels = 3      # 4 or 8: the image and conv1 zero-padded to that many.
  config.model.model1_gathers = True   # model=1: all_gather over the 1-device model axis too.
  # What bfloat16 convolutions and matmuls return: "compute", bfloat16, summed in float32 inside
  # cuDNN, cuBLAS or the TPU's MXU; "float32", which XLA:GPU runs as float32 (TF32) convolutions
  # and JAX differentiates in float32 (benchmarks/README.md, "What bfloat16 computes").
  config.model.product_output = "compute"

  # Section 3.2: two towers, one per device; the batch splits over `data`.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.model = 0                # 0: 2 when the devices allow it, else 1.
  config.mesh.layout = "towers"        # "towers": 3.2, a tower per model index, the batch over
                                       # data; "hybrid": Krizhevsky 2014, convolutions data-
                                       # parallel and fc6-fc8 split over every device
                                       # (alexnet_jax/parallel/hybrid.py; needs model 2 or 0).
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

  # Sections 2 and 4.1: input. (Owned by alexnet_jax/input_pipeline.py.)
  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds"          # "tfds", "folder", "imagenet", "tiny_imagenet" or
                                       # "generated".
  config.data.name = "imagenet2012"    # TFDS name (source "tfds").
  config.data.tfds_data_dir = ""       # "": TFDS's default (~/tensorflow_datasets).
  config.data.manual_dir = ""          # "": <tfds_data_dir>/downloads/manual, which holds
                                       # ILSVRC2012_img_{train,val}.tar.
  config.data.image_key = "image"      # TFDS feature names.
  config.data.label_key = "label"
  config.data.root = ""                # Source "folder": root/<split>/<class>/*.{jpg,jpeg,png};
                                       # "tiny_imagenet": the folder holding wnids.txt;
                                       # "imagenet": ILSVRC2012's tars, the Kaggle download or
                                       # train/ and a flat val/ (data/imagenet_layouts.py).
  config.data.extract_dir = ""         # Source "imagenet" from tars: where they are extracted
                                       # once (about their size); "": root.
  config.data.train_split = "train"
  config.data.max_train_per_class = 0  # > 0: the first this many images of each class (all
  config.data.max_eval_per_class = 0   # sources but tfds); 0: all.
  config.data.eval_split = ""          # "": "validation" for tfds, "val" for the others: what
                                       # training evaluates and the commands after it read.
  config.data.on_corrupt = "stop"      # Undecodable file: "stop" naming it, or "skip" (counted).
  config.data.cache_dir = ""           # "": ~/.cache/alexnet_jax (generated set, statistics).
  config.data.stats_file = ""          # "": <cache_dir>/stats/<dataset>.npz, written by
                                       # python -m alexnet_jax.data.stats.
  config.data.resize_size = 256        # 2: shorter side to 256, central 256x256 patch.
  config.data.resize = "antialias"     # Bilinear with every source pixel counted, as PIL's;
                                       # "fast": 4-pixel bilinear, aliases thin stripes
                                       # (alexnet_jax/data/decoding.py, benchmarks/).
  config.data.random_crop = True       # 4.1: random 224x224 patches (config.model.image_size),
                                       # offsets 0..32 on each axis (33 x 33; the paper's factor
                                       # of 2048 counts 32 x 32 x 2, the authors' jpeg.cpp draws
                                       # rand() % (32 + 1)) ...
  config.data.flip = True              # ... and their horizontal reflections.
  config.data.crop_op = "dynamic_slice"  # The crops on the device; "gather": the same pixels.
  config.data.mean = "image"           # 2: "image" (the paper), "channel" or "none".
  config.data.pca_noise_std = 0.1      # 4.1: a_i ~ N(0, 0.1); 0 turns the colour noise off.
  config.data.pca_scale = "cuda_convnet"  # Scale of l_i: "cuda_convnet", "fb_resnet", "paper"
                                          # (see alexnet_jax/preprocess.py for why).
  config.data.shuffle_buffer = 10_000  # Source "tfds" only; indexed sources permute fully.
  config.data.threads = 0              # tf.data threads; 0: AUTOTUNE over all cores.
  config.data.prefetch = 2             # Batches.
  config.data.decoded_cache = ""       # "memory" or "mmap" (a file in cache_dir): an indexed
                                       # split decoded once, then batches gathered from it.
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
  config.train.bias_decay_mult = 0.0   # ... and their decay weight_decay x this (the paper
                                       # writes decay for the weights only).
  config.train.num_epochs = 90         # "roughly 90 cycles".
  config.train.num_steps = 0           # If > 0, overrides num_epochs.
  config.train.schedule = "plateau"    # 5: divide by 10 when validation error stops improving.
  config.train.lr_drop_factor = 10.0
  config.train.plateau_patience = 2    # Evaluations without improvement before a drop.
  config.train.plateau_min_delta = 0.0
  config.train.max_lr_drops = 3        # "reduced three times prior to termination".
  config.train.step_epochs = (30, 60, 80)  # With schedule="step".
  # Large global batches (LARS and accumulation: steps.py; the rate rules: schedule.py); the
  # defaults are section 5's step.
  config.train.optimizer = "sgd"       # 5's rule; "lars": You, Gitman & Ginsburg 2017.
  config.train.lars_trust = 1e-3       # LARS's trust coefficient eta (You et al. 2017).
  config.train.accum_steps = 1         # k micro-batches of batch_size / k make one step.
  config.train.lr_scaling = "none"     # "sqrt" (Krizhevsky 2014), "linear" (Goyal et al. 2017):
  config.train.lr_base_batch = 128     # learning_rate is this batch's, scaled to batch_size.
  config.train.warmup_epochs = 0.0     # schedule="poly": linear warmup from learning_rate ...
  config.train.poly_power = 2.0        # ... then decay to 0 with this power (You et al. 2017).
  config.train.log_every_steps = 50
  config.train.steps_in_flight = 2     # Steps dispatched before the host waits for the oldest:
                                       # 2 hides the host on an accelerator, and on a CPU keeps
                                       # XLA's simulated devices from queueing collectives
                                       # until their rendezvous times out.
  config.train.stuck_window_steps = 2000  # A loss within 1% of ln(num_classes) for this many
                                       # steps prints one line on what is known to cause it
                                       # (0: never). 2000 steps of 128 is 256,000 images.
  config.train.stop_at_train_error = 0.0  # > 0: stop once an epoch's mean training top-1
                                       # error is at most this (figure 1's 25%).

  # Section 4.1: "averaging the predictions made by the network's softmax layer on the ten
  # patches"; periodic evaluations use the centre crop, the final one both.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 128         # Global; a 10-crop batch holds 10x as many images.
  config.eval.every_epochs = 1.0
  config.eval.ten_crop = True
  config.eval.checkpoint = "latest"    # What eval_only, predict, figures, features and weights
                                       # read: "latest", "best" (lowest validation error) or a step.

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  config.checkpoint.max_to_keep = 3    # The last few, and the best by validation error.
  config.checkpoint.restore_step = 0   # 0: the latest. N: when newer steps cannot be read, the
                                       # newest readable step >= N (docs/faults.md).

  config.eval_only = False             # Load config.eval.checkpoint and evaluate only.

  # Fine-tuning: a fresh run (not one resuming its own checkpoint) starts from these weights.
  config.init_from = ""                # A weights .npz (python -m alexnet_jax.tools.weights),
                                       # another run's workdir (its latest step) or
                                       # <workdir>/checkpoints/<step>.
  config.init_reset = ""               # Layers to initialise afresh instead, e.g. "fc8" for a new
                                       # class count; comma-separated.
  config.profile_steps = 0             # > 0: a jax.profiler trace of this many steps after warm-up,
                                       # in <workdir>/tensorboard (docs/progress_and_profile.md).

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
