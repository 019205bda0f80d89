"""How the conv networks change an image's sides: the rule the config checks and `nets` builds by.

It imports nothing from vaelab, so `config` (which refuses a conv model its images do not fit)
and `nets` (which builds the layers) share it without importing each other.
"""

from __future__ import annotations


def conv_sides(side: int, layers: int) -> list[int]:
    """[s_0 = side, s_1, ..., s_layers]: the side after each stride-2 convolution, s_{i+1} = floor(s_i / 2).

    A 4x4 kernel with stride 2 and padding 1 gives floor(s/2) for any s, and on an odd side its
    windows [2i-1, 2i+2] still reach the last pixel, s-1: no pixel is dropped, so odd sides need
    no other kernel, padding or crop. floor(floor(s/2)/2) = floor(s/4), hence the shift.
    """
    return [side >> i for i in range(layers + 1)]


def conv_misfit(h: int, w: int, layers: int, images: str = "the images are") -> str | None:
    """None when `layers` stride-2 convolutions fit H x W images; else why not, as the message for
    model.conv_channels: a side that the halvings would take to 0."""
    smallest = 1 << layers
    if min(h, w) >= smallest:
        return None
    return (f"{layers} stride-2 layers halve each side {layers} times (rounding down), so every side "
            f"needs at least {smallest} pixels; {images} {h}x{w}: use fewer layers, or model.net = \"mlp\"")
