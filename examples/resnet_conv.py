"""Residual convolutional networks for 64x64 colour images, inside vaelab's VAE (networks only).

    vaelab train --preset images-64 --images FOLDER \
        --set model.encoder=examples/resnet_conv.py:ResNetEncoder \
        --set model.decoder=examples/resnet_conv.py:ResNetDecoder

vaelab builds each with image_shape=(C, H, W), the sizes it must fit (out_features: the latent's
parameters; in_features: z's size; params_per_pixel: the likelihood's) and model.args (here `width`).
Sides must be multiples of 16. At width 22 they cost about the multiply-adds of the preset's own conv
nets (32-64-128-256): benchmarks/own_network_speed.py counts both and times them.
"""

import torch
from torch import nn


class Down(nn.Module):
    """Halves the sides: 4x4 stride-2 conv, ReLU, 3x3 conv, plus a shortcut (2x2 average, 1x1 conv)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x):
        return torch.relu(self.main(x) + self.skip(x))


class Up(nn.Module):
    """Doubles the sides: 4x4 stride-2 transposed conv, ReLU, 3x3 conv, plus a shortcut (1x1 conv, 2x nearest)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.main = nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.Upsample(scale_factor=2))

    def forward(self, x):
        return torch.relu(self.main(x) + self.skip(x))


class ResNetEncoder(nn.Module):
    """(batch, C, H, W) -> (batch, out_features): a stride-2 conv, three residual halvings, a linear layer."""

    def __init__(self, image_shape=(3, 64, 64), out_features=128, width=22):
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(nn.Conv2d(c, width, 4, 2, 1), nn.ReLU(), Down(width, 2 * width),
                                 Down(2 * width, 4 * width), Down(4 * width, 8 * width), nn.Flatten(),
                                 nn.Linear(8 * width * (h // 16) * (w // 16), out_features))

    def forward(self, images):
        return self.net(images)


class ResNetDecoder(nn.Module):
    """(batch, in_features) -> (batch, params_per_pixel * C, H, W): the encoder's mirror image."""

    def __init__(self, image_shape=(3, 64, 64), in_features=64, params_per_pixel=2, width=22):
        super().__init__()
        c, h, w = image_shape
        start = (8 * width, h // 16, w // 16)
        self.net = nn.Sequential(nn.Linear(in_features, start[0] * start[1] * start[2]), nn.ReLU(),
                                 nn.Unflatten(1, start), Up(8 * width, 4 * width), Up(4 * width, 2 * width),
                                 Up(2 * width, width), nn.ConvTranspose2d(width, params_per_pixel * c, 4, 2, 1))

    def forward(self, z):
        return self.net(z)
