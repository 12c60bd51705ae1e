"""The model metadata (``lmh.*`` keys) lmh-deploy writes into an ONNX file and reads back: the
one list of these names (:mod:`lmh_deploy.onnx.write` writes them, :mod:`lmh_deploy.onnx.run`
reads them)."""

TIMESTEPS = "lmh.timesteps"                  # T the graph is unrolled for (str int)
TRAINED_TIMESTEPS = "lmh.trained_timesteps"  # T of training
INPUT_LAYOUT = "lmh.input_layout"            # "BCHW" (static image) or "TBCHW" (frames)
INPUT_SHAPE = "lmh.input_shape"              # per-sample shape, JSON list
NUM_CLASSES = "lmh.num_classes"
INPUT_QUANTUM = "lmh.input_quantum"          # q of x_q = clip(round(x/q), -B/q, B/q)*q
INPUT_BOUND = "lmh.input_bound"              # B
INPUT_NORM = "lmh.input_norm"                # JSON: normalization folded in (input = raw pixels), or null
LEVELS = "lmh.levels"                        # largest spike count
TIME_INVARIANT = "lmh.time_invariant"        # "true" / "false"
OMEGA_PERIOD = "lmh.omega_period"            # LM-HT window T (runs need multiples), 0 if none
NEURONS = "lmh.neurons"                      # JSON {layer: source kind}
SPIKE_OUTPUTS = "lmh.spike_outputs"          # JSON {layer: output name} (--with-spikes)
SOURCE_CONFIG = "lmh.source_config"          # JSON model config of the checkpoint
