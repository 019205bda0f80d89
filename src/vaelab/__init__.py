"""vaelab: train, evaluate and explore variational autoencoders.

    import vaelab
    run = vaelab.train("mnist-lab", epochs=5)
    run.evaluate(samples=1000); run.figure("manifold"); run.report()
    model = vaelab.load_run("runs/x")      # the trained model: prior(), posterior(x), likelihood(z)
    vaelab.pretrained()                    # the trained models shipped in the package: load_run("pretrained:mnist-2d")
    vaelab.train(model="my_vae.py:MyVAE")  # your own model (vaelab.Model), every command works on it
    vaelab.tune(config="search.toml", out="runs/search")  # a hyperparameter search ([tune], Optuna)
"""

__version__ = "0.1.0"

from .api import Figure, Page, Run, Study, Sweep, compare, make_config, open_run, resume, train, tune  # noqa: E402
from .contract import Model, ModelError, check_model  # noqa: E402
from .distributions import rsample  # noqa: E402
from .errors import VaelabError  # noqa: E402
from .objectives import ElboTerms, ObjectiveTerms  # noqa: E402
from .plugins import register, register_latent, register_likelihood, register_objective, register_prior  # noqa: E402
from .runs import load_run  # noqa: E402
from .shipped import pretrained  # noqa: E402
from .usercode import allow_code_changes  # noqa: E402

__all__ = ["ElboTerms", "Figure", "Model", "ModelError", "ObjectiveTerms", "Page", "Run", "Study", "Sweep", "VaelabError",
           "__version__", "allow_code_changes", "check_model", "compare", "load_run", "make_config", "open_run",
           "pretrained", "register", "register_latent", "register_likelihood", "register_objective", "register_prior",
           "resume", "rsample", "train", "tune"]
