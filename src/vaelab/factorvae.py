"""FactorVAE's discriminator (Kim & Mnih, 2018, "Disentangling by Factorising"), trained beside the VAE.

The total correlation TC(z) = KL(q(z) || prod_j q(z_j)) has no closed form under the aggregate
posterior q(z); FactorVAE estimates it with the density-ratio trick. A discriminator D learns to
tell z ~ q(z) (codes of the batch's images) from samples of prod_j q(z_j) (the same codes with
each dimension permuted across the batch, `permute_dims`); at its optimum
log D(z) / (1 - D(z)) = log q(z) / prod_j q(z_j), so

    TC ~ E_q(z)[log D(z) / (1 - D(z))] = mean of logit_joint - logit_product      (`density_ratio`)

The objective (objectives.factor_vae) maximizes ELBO - gamma * TC with D's weights held fixed;
then `Adversary.step` moves D one Adam step on the batch's codes, detached from the VAE.

One difference from the paper's Algorithm 2: the permuted samples come from the same batch's
codes, not from a second batch. This keeps one data stream per epoch (what a resumed run redraws
exactly) and one encoder pass per step. The cost: each permuted code reuses values of the joint
codes it is compared with, so D sees the same marginal values in both classes (which is what it
should ignore) and only the pairing differs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The paper's discriminator and its optimizer (Kim & Mnih, 2018, Appendix: an MLP of 6 layers of
# 1000 units with leaky ReLU 0.2 and 2 outputs; Adam lr 1e-4 with betas (0.5, 0.9) for D, while the
# VAE's Adam keeps (0.9, 0.999)). "6 layers" counted as linear layers: 5 hidden of 1000, then 2 logits,
# as in the re-implementations disvae and 1Konny/FactorVAE.
PAPER_HIDDEN = (1000,) * 5
LEAK = 0.2
BETAS = (0.5, 0.9)
JOINT, PRODUCT = 0, 1  # the discriminator's two classes: z ~ q(z), and z ~ prod_j q(z_j)


class Discriminator(nn.Sequential):
    """(batch, latent) codes -> (batch, 2) logits: [z ~ q(z), z ~ prod_j q(z_j)]."""

    def __init__(self, latent: int, hidden: tuple[int, ...] | list[int] = PAPER_HIDDEN) -> None:
        layers: list[nn.Module] = []
        width = latent
        for units in hidden:
            layers += [nn.Linear(width, units), nn.LeakyReLU(LEAK)]
            width = units
        super().__init__(*layers, nn.Linear(width, 2))


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, d) -> (batch, d): each column shuffled across the batch by a permutation of its own.

    Each dimension keeps its values (its marginal over the batch) while the pairing between
    dimensions is broken: samples of prod_j q(z_j).
    """
    n = z.shape[0]
    columns = [column[torch.randperm(n, generator=generator, device=z.device)] for column in z.unbind(1)]
    return torch.stack(columns, 1)


def density_ratio(discriminator: nn.Module, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
    """(batch, d) -> (batch,): log D(z) / (1 - D(z)) = logit_joint - logit_product, per code.

    `frozen`: D's weights as constants, so the gradient reaches z (the encoder) and not D: the
    VAE's step must not train its adversary.
    """
    if frozen:
        weights = {name: p.detach() for name, p in discriminator.named_parameters()}
        logits = torch.func.functional_call(discriminator, weights, (z,))
    else:
        logits = discriminator(z)
    return logits[:, JOINT] - logits[:, PRODUCT]


def discriminator_loss(discriminator: nn.Module, z: torch.Tensor,
                       permuted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy summed over the 2 * batch codes, count of codes classified right), both 0-d.

    z, permuted: (batch, d), the joint codes and their permuted copies.
    """
    logits = discriminator(torch.cat([z, permuted]))
    labels = torch.cat([torch.full((len(z),), JOINT), torch.full((len(permuted),), PRODUCT)]).to(z.device)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    return loss, (logits.argmax(1) == labels).sum()


class Adversary:
    """The discriminator, its own Adam, and the epoch's sums; what the trainer steps and checkpoints.

    `sums` ((3,): the epoch's summed TC estimates, codes classified right, codes classified) is
    updated in place, like the trainer's sums, and restored in place on resume.
    """

    def __init__(self, latent: int, hidden: list[int], lr: float, device: torch.device,
                 seed: int, parallel: Any = None) -> None:
        with torch.random.fork_rng(devices=[]):  # seeds the init without touching global state
            torch.manual_seed(seed)
            self.discriminator = Discriminator(latent, hidden).to(device)
        self.parameters = list(self.discriminator.parameters())
        self.optimizer = torch.optim.Adam(self.parameters, lr=lr, betas=BETAS)
        self.parallel = parallel
        self.sums = torch.zeros(3, device=device)

    def keywords(self) -> dict[str, Any]:
        """What objectives.factor_vae takes besides the usual arguments and its config section's gamma."""
        return {"discriminator": self.discriminator}

    def step(self, z: torch.Tensor, tc: torch.Tensor, noise: torch.Generator, batch_total: int) -> None:
        """One Adam step of D on the batch's codes z (batch, d) and their permutation (drawn from
        `noise`, the run's checkpointed stream); tc (batch,) is the objective's TC estimate, summed
        for the epoch's record. Under torchrun each rank steps on its share and gradients are summed."""
        z = z.detach()
        loss, correct = discriminator_loss(self.discriminator, z, permute_dims(z, noise))
        for parameter in self.parameters:
            parameter.grad = None
        (loss / (2 * batch_total)).backward()  # the mean over the whole batch's codes, summed over ranks
        if self.parallel is not None:
            self.parallel.sum_gradients(self.parameters)
        self.optimizer.step()
        with torch.no_grad():  # on the device; read once an epoch
            self.sums += torch.stack([tc.detach().sum().float(), correct.float(),
                                      torch.tensor(2.0 * len(z), device=z.device)])

    def record(self) -> dict[str, float]:
        """The epoch's line in metrics.jsonl: the mean TC estimate (nats) and D's accuracy on the codes
        it was trained on (0.5 is chance: D cannot tell the codes from their permutation)."""
        sums = self.sums.clone()
        if self.parallel is not None:
            self.parallel.sum_(sums)
        tc, correct, classified = sums.tolist()
        if not classified:
            return {}
        return {"train_tc": tc / (classified / 2), "discriminator_accuracy": correct / classified}

    def state(self) -> dict[str, Any]:
        """For the checkpoint: D's weights, its optimizer's state_dict, the epoch's sums."""
        return {"weights": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sums": self.sums}

    def load_state(self, state: dict[str, Any]) -> None:
        """Back to a checkpoint's `state()`; RuntimeError or KeyError if it does not fit this D."""
        self.discriminator.load_state_dict(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sums.copy_(state["sums"])
