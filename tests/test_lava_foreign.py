"""Foreign NIR fixtures in Lava with Lava's own LIF process (issue 15): the producer's spikes.

Hard timeout per test; no Lava worker may outlive a test (as tests/test_lava_runtime.py)."""
import multiprocessing

import numpy as np
import pytest

pytest.importorskip("nir")

from lmh_deploy.nir import foreign as nf  # noqa: E402

from test_lava_runtime import _os_children  # noqa: E402

pytestmark = [pytest.mark.lava, pytest.mark.slow, pytest.mark.timeout(300, method="signal")]

from test_nir_foreign import FIX, _fixture  # noqa: E402


@pytest.fixture(autouse=True)
def no_leftover_workers():
    import os

    before = set(_os_children(os.getpid()))
    yield
    assert multiprocessing.active_children() == []
    assert set(_os_children(os.getpid())) - before == set()


# fixtures whose producer discretization Lava's LIF computes (hard reset to 0, decay form)
LAVA_CASES = [("snntorch_lif_mlp", "snntorch", None), ("snntorch_rec_lif", "snntorch", None),
              ("snntorch_cubalif", "snntorch", None), ("norse_lif_mlp", "norse", None),
              ("norse_cubalif", "norse", None), ("spikingjelly_lif_mlp", "spikingjelly", None),
              ("spikingjelly_cubalif", "spikingjelly", None), ("paper_lif_norse", "nir", 1e-4)]


@pytest.mark.parametrize("name,producer,dt", LAVA_CASES, ids=[c[0] for c in LAVA_CASES])
def test_lava_matches_producer(name, producer, dt):
    from lmh_deploy.lava.foreign import run_lava_foreign

    d, ref = _fixture(name)
    prog = nf.load_foreign(FIX / f"{name}.nir", producer=producer, dt=dt)
    with pytest.warns(RuntimeWarning) if producer == "spikingjelly" else _null():
        out, spikes = run_lava_foreign(prog, d["input"][:, :1])
    ref1 = {k: v[:, :1] for k, v in ref.items()}
    agree = nf.agreement(ref1, spikes)
    assert set(agree) == set(ref) and all(a == 1.0 for a in agree.values()), agree
    out_np, _ = nf.run_foreign(prog, d["input"][:, :1])
    np.testing.assert_allclose(out, out_np, rtol=0, atol=1e-4)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("name,producer,msg", [
    ("snntorch_conv", "snntorch", "node '0': Conv2d has no Lava LIF form"),
    ("sinabs_conv", "sinabs", "its reset rule is not Lava's LIF"),
    ("paper_braille_noDelay_bias_zero", "snntorch-delay", "its reset rule is not Lava's LIF"),
])
def test_lava_refuses_what_its_lif_cannot_compute(name, producer, msg):
    from lmh_deploy.lava.foreign import lava_chain

    with pytest.raises(nf.ForeignNirError, match=msg):
        lava_chain(nf.load_foreign(FIX / f"{name}.nir", producer=producer))
