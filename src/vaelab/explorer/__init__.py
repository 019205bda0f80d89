"""The latent explorer: one self-contained HTML page that decodes a trained model in the browser.

`write_explorer(run_dir)` writes RUN_DIR/explorer.html. The page carries the decoder's weights
(base64 float32), a sample of test-set posterior means with their labels, and a small decoder
written in plain JavaScript, so it works from disk with no server and no network. It shows:

- the latent scatter: z itself for 2-D latents, a strip per label for 1-D ones, and for larger
  latents the plane of the first two principal axes of the posterior means (computed here);
  the pointer sets z = off + a * pc1 + b * pc2, where `off` is the part of the current z off that
  plane (the mean, until a slider moves it);
- a slider per latent dimension (a class selector per variable for categorical latents);
- the decoder mean E[x|z] under the pointer, updated as it moves or is dragged;
- the interpolation strip between two clicked points;
- for a conditional model, a label selector that conditions the decoder.

`decoder_spec(model)` (decoder.py) turns the decoder into a list of layers and one blob of
weights; it raises `ExplorerError` for a decoder or likelihood head the page cannot reproduce
exactly, and the page is then written without a decoder and says why. Images are grey or colour
(C = 1 or 3) of any H x W, from an MLP or a transposed-convolution decoder (any kernel, stride,
padding, dilation and output padding). A decoder over `LIVE_LIMIT` multiply-adds a decode
(`decode_cost`) is too slow to follow the pointer: its page says so and carries images PyTorch
decoded on a grid over the map instead of the weights. page.py builds the page from the files
explorer.html, explorer.css and explorer.js in this package.

The page's decoder mean matches `model.decode_mean` up to float32 rounding (float32 weights,
float64 sums): every head is exact, including the continuous Bernoulli's mean and the discretized logistic's
exact mean over its 256 levels. `window.vaelab` is a small API (decode, pointToLatent, ...) that
the tests drive; see explorer.js.
"""

from .decoder import ExplorerError, decode_cost, decoder_spec, page_head
from .page import (
    CSP,
    LIVE_LIMIT,
    latent_description,
    posterior_means,
    precomputed_images,
    render_explorer,
    scatter_view,
    write_explorer,
)

__all__ = ["CSP", "LIVE_LIMIT", "ExplorerError", "decode_cost", "decoder_spec", "latent_description",
           "page_head", "posterior_means", "precomputed_images", "render_explorer", "scatter_view", "write_explorer"]
