"""The MMD-VAE objective (InfoVAE with alpha = 1; Zhao et al., 2019): the ELBO's KL term replaced by the
maximum mean discrepancy between the aggregate posterior q(z) (the batch's z) and the prior p(z).

    vaelab train --config examples/mmd_vae.toml        (paths in [plugins] are relative to where you run it)

Training maximizes E_q[log p(x|z)] - weight * MMD^2(q(z), p(z)); what it reports are the true ELBO's terms
(reconstruction, KL(q(z|x) || p(z))), so its numbers compare with any other run's.
"""

import torch

import vaelab


def gram(a, b, kernel):
    """k(a_i, b_j) for rows of a (n, d) and b (m, d), at the scale 2d: the mean squared distance of N(0, I) pairs."""
    scale = 2.0 * a.shape[-1]
    squared = ((a * a).sum(-1, keepdim=True) + (b * b).sum(-1) - 2 * a @ b.T).clamp_min(0)
    if kernel == "imq":  # inverse multiquadratic, as in the Wasserstein auto-encoder
        return scale / (scale + squared)
    if kernel == "rbf":
        return torch.exp(-squared / scale)
    raise ValueError(f"objective.args.kernel: {kernel!r} is not imq or rbf")


def mmd(z, z_prior, kernel="imq"):
    """The squared maximum mean discrepancy between the samples z (n, d) and z_prior (m, d) (V-statistic)."""
    return gram(z, z, kernel).mean() + gram(z_prior, z_prior, kernel).mean() - 2 * gram(z, z_prior, kernel).mean()


@vaelab.register_objective("mmd")
def mmd_vae(model, x, samples, generator, y, kl_weight, weight=1000.0, kernel="imq"):
    q = model.posterior(x) if y is None else model.posterior(x, y)
    z = vaelab.rsample(q, (samples,), generator)  # (samples, batch, ...): noise from vaelab's generator
    reconstruction = (model.likelihood(z) if y is None else model.likelihood(z, y)).log_prob(x).mean(0)
    prior = model.prior()
    z_prior = vaelab.rsample(prior, (z.shape[0] * z.shape[1],), generator)
    divergence = mmd(z.flatten(0, 1).flatten(1), z_prior.flatten(1), kernel)
    kl = model.kl(q, prior, z)  # vaelab.Model's: analytic where torch has it, else from the z drawn
    return vaelab.ObjectiveTerms(elbo=reconstruction - kl, reconstruction=reconstruction, kl=kl,
                                 objective=reconstruction - weight * divergence)


mmd_vae.takes_kl_weight = False  # no KL term in what it maximizes: beta and KL warm-up do not apply
