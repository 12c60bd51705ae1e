"""NIR under convention ``lmh-nir/1``: :mod:`.convention` (names, thresholds), :mod:`.write`
(DeployGraph -> NIR), :mod:`.read` (our file -> DeployGraph / layer chain), :mod:`.program`
(any NIR file -> a checked program: SCCs, delays, shapes), :mod:`.match` (neuron clusters run
exactly), :mod:`.run_numpy` and :mod:`.run_torch` (the two NIR runtimes)."""
