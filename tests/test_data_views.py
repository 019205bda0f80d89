"""The views of a data set and how training draws from them (`ImageSet.batch`, `ImageSet.draw`)."""

import math

import pytest
import torch

from vaelab.data.views import ImageSet

MNIST_LIKE = [0, 255, 0, 0, 77, 0, 0, 0, 255, 0, 0, 1, 0, 0, 254, 0]  # a few grey pixels among 0 and 255


def grey_set(values: list[int], n: int = 4000, pixels: int = 16) -> ImageSet:
    """n images whose pixel j has grey level values[j % len(values)] (uint8 0..255)."""
    row = torch.tensor([values[j % len(values)] for j in range(pixels)], dtype=torch.uint8)
    return ImageSet(row.repeat(n, 1), torch.arange(n) % 10, resample=True, binary=False)


def assert_bernoulli_frequencies(binary: torch.Tensor, grey: torch.Tensor) -> None:
    """Each column's frequency of ones within 5 standard errors of its grey level / 255."""
    p = grey.float() / 255
    freq = binary.float().mean(0)
    se = (p * (1 - p) / binary.shape[0]).sqrt()
    assert torch.all((freq - p).abs() <= 5 * se + 1e-12), (freq, p)


@pytest.mark.parametrize("values, sparse", [
    (MNIST_LIKE, True),  # like MNIST: only the grey ones draw
    ([1, 77, 128, 200, 254, 30, 90, 0], False),  # mostly grey: every pixel draws
])
def test_draw_binarizes_each_pixel_with_probability_x_over_255(values, sparse):
    images = grey_set(values)
    drawn = images.draw(torch.arange(len(images)), torch.Generator().manual_seed(0))
    assert (images._uncertain[0].numel() > 0) == sparse
    assert drawn.binary and not drawn.resample and drawn.pixels.dtype == torch.uint8
    assert set(drawn.pixels.unique().tolist()) <= {0, 1}
    grey = images.pixels[0]
    assert torch.all(drawn.pixels[:, grey == 0] == 0) and torch.all(drawn.pixels[:, grey == 255] == 1)
    assert_bernoulli_frequencies(drawn.pixels, grey)
    # the same distribution as a batch drawn the per-batch way
    assert_bernoulli_frequencies(images.batch(slice(None), torch.Generator().manual_seed(1)), grey)


def test_draw_is_reproducible_in_the_order_asked_and_new_with_the_generator():
    torch.manual_seed(0)
    images = ImageSet((torch.rand(300, 20) * 256).to(torch.uint8), torch.arange(300), resample=True, binary=False)
    order = torch.randperm(300)
    first = images.draw(order, torch.Generator().manual_seed(5))
    again = images.draw(order, torch.Generator().manual_seed(5))
    other = images.draw(order, torch.Generator().manual_seed(6))
    assert torch.equal(first.pixels, again.pixels) and not torch.equal(first.pixels, other.pixels)
    assert torch.equal(first.labels, order)
    # row i of the draw is image order[i]: with the same stream, drawing in set order and permuting agrees
    in_order = images.draw(torch.arange(300), torch.Generator().manual_seed(5))
    assert torch.equal(in_order.pixels[order], first.pixels)


def test_draw_of_a_fixed_view_returns_the_rows_as_they_are():
    pixels = (torch.rand(50, 12) * 256).to(torch.uint8)
    order = torch.randperm(50)
    for binary in (False, True):
        images = ImageSet(pixels if not binary else pixels % 2, torch.arange(50), resample=False, binary=binary)
        drawn = images.draw(order)
        assert torch.equal(drawn.pixels, images.pixels[order]) and drawn.binary == binary
        assert torch.equal(drawn.batch(slice(0, 7)), images.batch(order[:7]))


def test_drawn_batches_match_the_per_batch_frequencies_on_real_grey_levels():
    """A set with every grey level: the epoch draw and per-batch draws give the same frequencies."""
    levels = list(range(256))
    images = grey_set(levels, n=3000, pixels=256)
    drawn = images.draw(torch.arange(len(images)), torch.Generator().manual_seed(2)).pixels
    batched = images.batch(slice(None), torch.Generator().manual_seed(3))
    grey = images.pixels[0]
    assert_bernoulli_frequencies(drawn, grey)
    assert_bernoulli_frequencies(batched, grey)
    # the two ways are equally spread: their frequencies differ by no more than sampling noise
    p = grey.float() / 255
    se = (2 * p * (1 - p) / len(images)).sqrt()
    assert torch.all((drawn.float().mean(0) - batched.float().mean(0)).abs() <= 5 * se + 1e-12)
    assert math.isclose(drawn.float().mean().item(), p.mean().item(), abs_tol=3e-3)



def test_sparse_draw_is_the_same_in_any_chunking_and_after_earlier_draws(monkeypatch):
    """The uncertain pixels are drawn in chunks into a buffer the set keeps between draws."""
    from vaelab.data import views

    order = torch.randperm(4000, generator=torch.Generator().manual_seed(0))
    reference = grey_set(MNIST_LIKE).draw(order, torch.Generator().manual_seed(7)).pixels
    monkeypatch.setattr(views, "_DRAW_CHUNK", 777)  # 12,000 uncertain pixels: 16 chunks, the last one short
    images = grey_set(MNIST_LIKE)
    assert torch.equal(images.draw(order, torch.Generator().manual_seed(7)).pixels, reference)
    other = images.draw(order, torch.Generator().manual_seed(8)).pixels  # overwrites the kept buffer
    assert not torch.equal(other, reference)
    assert torch.equal(images.draw(order, torch.Generator().manual_seed(7)).pixels, reference)


def test_draw_into_a_reused_buffer():
    images = grey_set(MNIST_LIKE)
    order = torch.randperm(4000)
    expected = images.draw(order, torch.Generator().manual_seed(3)).pixels
    buffer = torch.full((4000, 16), 9, dtype=torch.uint8)
    drawn = images.draw(order, torch.Generator().manual_seed(3), out=buffer)
    assert drawn.pixels.data_ptr() == buffer.data_ptr() and torch.equal(buffer, expected)
    fixed = ImageSet(expected, torch.arange(4000), resample=False, binary=True)
    assert torch.equal(fixed.draw(order, out=buffer).pixels, expected[order])
    with pytest.raises(ValueError, match=r"out must be uint8 of shape \(4000, 16\), not torch.uint8 \(10, 16\)"):
        images.draw(order, out=torch.empty(10, 16, dtype=torch.uint8))
