"""vaelab: train, evaluate and explore variational autoencoders.

    import vaelab
    run = vaelab.train("mnist-lab", epochs=5)
    run.evaluate(samples=1000); run.figure("manifold"); run.report()
    model = vaelab.load_run("runs/x")      # the trained model: prior(), posterior(x), likelihood(z)
"""

__version__ = "0.1.0"

from .api import Figure, Page, Run, Sweep, compare, make_config, open_run, resume, train  # noqa: E402
from .runs import load_run  # noqa: E402

__all__ = ["Figure", "Page", "Run", "Sweep", "__version__", "compare", "load_run", "make_config", "open_run",
           "resume", "train"]
