"""NIR under convention ``lmh-nir/2``: :mod:`.convention` (names, thresholds), :mod:`.write`
(DeployGraph -> NIR), :mod:`.read` (our file -> DeployGraph / layer chain), :mod:`.program`
(any NIR file -> a checked program: SCCs, delays, shapes), :mod:`.match` (neuron clusters run
exactly), :mod:`.run_numpy`, :mod:`.run_torch` and :mod:`.run_literal` (the NIR runtimes);
:mod:`.foreign` (NIR files written by other tools, discretized as their producer does) and
:mod:`.targets` (the lossy forms third-party importers run, and those tools as verification
runtimes)."""
