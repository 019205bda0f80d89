"""Conv and MLP networks for images of any H x W x C: the odd-size rule and its edges."""

import pytest
import torch

from vaelab.config import ConfigError, ModelConfig, resolve_config
from vaelab.conv_shapes import conv_sides
from vaelab.model import VAE
from vaelab.nets import MLP, ConvDecoder, ConvEncoder, Linear, Tanh, init_linear

SIZES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 45, 37), (1, 7, 9), (1, 1, 5)]


def _config(net, **overrides):
    values = {"latent_dim": 3, "net": net, "conv_channels": [4, 8], "encoder_hidden": [16],
              "decoder_hidden": [16], "likelihood": "discretized_logistic"} | overrides
    return ModelConfig(**values)


def _fits(net, shape):
    """Whether two stride-2 layers leave every side at least 1 (an MLP takes any size)."""
    return net == "mlp" or min(shape[1:]) >= 4


# ---------------------------------------------------------------- the rule

def test_each_layer_rounds_the_side_down():
    assert conv_sides(28, 2) == [28, 14, 7]
    assert conv_sides(45, 3) == [45, 22, 11, 5]
    assert conv_sides(7, 2) == [7, 3, 1]
    assert conv_sides(5, 3) == [5, 2, 1, 0]  # the 0 is what check_conv_fits refuses


# Written out from the divisible-only rule that built every conv model before any size was allowed:
# the same parameter shapes, so checkpoints of 28x28 and 32x32 conv models still load.
OLD_MNIST = {
    "encoder.convs.0.weight": (32, 1, 4, 4), "encoder.convs.0.bias": (32,),
    "encoder.convs.2.weight": (64, 32, 4, 4), "encoder.convs.2.bias": (64,),
    "encoder.linear.weight": (4, 3136), "encoder.linear.bias": (4,),
    "decoder.linear.0.weight": (3136, 2), "decoder.linear.0.bias": (3136,),
    "decoder.deconvs.0.weight": (64, 32, 4, 4), "decoder.deconvs.0.bias": (32,),
    "decoder.deconvs.2.weight": (32, 1, 4, 4), "decoder.deconvs.2.bias": (1,),
}
OLD_CIFAR_CONDITIONAL = {
    "encoder.convs.0.weight": (32, 3, 4, 4), "encoder.convs.0.bias": (32,),
    "encoder.convs.2.weight": (64, 32, 4, 4), "encoder.convs.2.bias": (64,),
    "encoder.linear.weight": (4, 4106), "encoder.linear.bias": (4,),
    "decoder.linear.0.weight": (4096, 12), "decoder.linear.0.bias": (4096,),
    "decoder.deconvs.0.weight": (64, 32, 4, 4), "decoder.deconvs.0.bias": (32,),
    "decoder.deconvs.2.weight": (32, 6, 4, 4), "decoder.deconvs.2.bias": (6,),
}


@pytest.mark.parametrize("shape, config, expected", [
    ((1, 28, 28), ModelConfig(net="conv"), OLD_MNIST),
    ((3, 32, 32), ModelConfig(net="conv", likelihood="discretized_logistic", conditional=True),
     OLD_CIFAR_CONDITIONAL),
])
def test_mnist_and_cifar_conv_models_keep_their_old_shapes(shape, config, expected):
    model = VAE(config, shape)
    assert {name: tuple(value.shape) for name, value in model.state_dict().items()} == expected
    # even sides need no output_padding: the very layers of the old rule, so the same numbers too
    for layer in model.decoder.deconvs:
        if isinstance(layer, torch.nn.ConvTranspose2d):
            assert layer.output_padding == (0, 0) and layer.padding == (1, 1)


def test_a_deeper_conv_model_keeps_the_old_flat_size_where_the_old_rule_applied():
    channels = [3, 4, 5]
    encoder = ConvEncoder((3, 32, 32), channels, 6)
    assert encoder.flat == 5 * (32 >> 3) * (32 >> 3)


# ---------------------------------------------------------------- any size

@pytest.mark.parametrize("net", ["conv", "mlp"])
@pytest.mark.parametrize("shape", SIZES)
def test_forward_and_backward_at_any_size(net, shape):
    torch.manual_seed(0)
    if not _fits(net, shape):
        with pytest.raises(ConfigError, match=r"^model\.conv_channels: .*at least 4 pixels.*1x5"):
            VAE(_config(net), shape)
        return
    model = VAE(_config(net), shape)
    n = shape[0] * shape[1] * shape[2]
    x = torch.randint(0, 256, (2, n)).float() / 255
    q = model.posterior(x)
    z = q.rsample((3,))
    p = model.likelihood(z)
    assert q.batch_shape == (2,) and p.batch_shape == (3, 2) and p.event_shape == (n,)
    loss = -(p.log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(param.grad is not None and torch.isfinite(param.grad).all() for param in model.parameters())


@pytest.mark.parametrize("shape", [s for s in SIZES if _fits("conv", s)])
def test_conv_round_trip_gives_exactly_h_by_w_by_c(shape):
    torch.manual_seed(0)
    c, h, w = shape
    encoder = ConvEncoder(shape, [4, 8], 5)
    decoder = ConvDecoder(5, shape, [4, 8], params_per_pixel=2)
    maps = []
    decoder.last.register_forward_hook(lambda _m, _i, out: maps.append(tuple(out.shape)))
    out = decoder(encoder(torch.rand(4, c * h * w)))
    assert maps == [(4, 2 * c, h, w)] and out.shape == (4, 2 * c * h * w)


@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 45, 37)])
def test_odd_sides_drop_no_pixel_on_the_way_in_or_out(shape):
    """Every input pixel moves the code, and the code moves every output pixel (the rounded-down rows too)."""
    torch.manual_seed(0)
    c, h, w = shape
    encoder = ConvEncoder(shape, [4, 8], 5, activation="tanh")
    decoder = ConvDecoder(5, shape, [4, 8], params_per_pixel=1, activation="tanh")
    x = torch.rand(c * h * w, requires_grad=True)
    encoder(x).square().sum().backward()
    assert (x.grad != 0).all()
    jacobian = torch.autograd.functional.jacobian(decoder, torch.randn(5))
    assert jacobian.shape == (c * h * w, 5) and (jacobian.abs().sum(1) > 0).all()


def test_conditional_conv_model_at_an_odd_size():
    torch.manual_seed(0)
    shape = (3, 45, 37)
    n = 3 * 45 * 37
    model = VAE(_config("conv", conditional=True, n_classes=4), shape)
    x, y = torch.rand(5, n), torch.tensor([0, 1, 2, 3, 1])
    q = model.posterior(x, y)
    z = q.rsample()
    p = model.likelihood(z, y)
    assert p.event_shape == (n,) and p.batch_shape == (5,)
    assert model.decode_mean(z, y).shape == (5, n)
    (-(p.log_prob(x) - model.kl(q, model.prior(), z)).mean()).backward()
    assert model.encoder.linear.weight.grad.shape == (model.latent.n_params, 8 * 11 * 9 + 4)


@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 45, 37)])
def test_init_output_bias_at_an_odd_size(shape):
    model = VAE(_config("conv"), shape)
    mean = torch.rand(shape[0] * shape[1] * shape[2])
    model.init_output_bias(mean)
    expected = torch.logit(mean.clamp(1e-3, 1 - 1e-3)).reshape(shape[0], -1).mean(1)
    torch.testing.assert_close(model.decoder.last.bias[:shape[0]].detach(), expected)


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("shape, channels", [((1, 1, 5), [4]), ((1, 7, 9), [4, 8, 8]), ((3, 45, 37), [4] * 6)])
def test_sides_the_layers_would_halve_to_zero_are_refused_in_one_line(shape, channels):
    for build in (lambda: ConvEncoder(shape, channels, 3), lambda: ConvDecoder(3, shape, channels, 1)):
        with pytest.raises(ConfigError, match=r"^model\.conv_channels: ") as err:
            build()
        assert "\n" not in str(err.value) and f"at least {2 ** len(channels)} pixels" in str(err.value)


def test_config_accepts_sides_the_old_rule_refused_and_explains_a_refusal():
    assert resolve_config(overrides=["model.net=conv", "model.conv_channels=[8, 8, 8]"]).model.net == "conv"
    with pytest.raises(ConfigError, match=r"^model\.conv_channels: 6 stride-2 layers halve each side 6 times "
                                          r"\(rounding down\), so every side needs at least 64 pixels; "
                                          r"cifar10 is 32x32"):
        resolve_config(overrides=["data.name=cifar10", "model.net=conv", "model.conv_channels=[4, 4, 4, 4, 4, 4]"])


def test_tanh_written_through_exp_in_compiled_scoring_matches_torch():
    a = torch.cat([torch.randn(10_000) * 3, torch.tensor([0.0, -0.0, 1e-30, -1e-8, 1e-4, 20.0, -20.0, 1e4, -1e4,
                                                          float("inf"), -float("inf")])])
    tanh = Tanh()
    with torch.no_grad():
        fast = torch.compile(tanh)(a)
    exact = torch.tanh(a.double())
    torch.testing.assert_close(fast.double(), exact, atol=2e-7, rtol=0)
    assert (fast * a >= 0).all() and fast.abs().max() <= 1  # never the other sign, never past 1
    # eager, or with gradients: torch.tanh itself
    assert torch.equal(tanh(a), torch.tanh(a))
    b = a[:100].clone().requires_grad_()
    torch.testing.assert_close(torch.compile(Tanh())(b), torch.tanh(b))
    assert isinstance(tanh, torch.nn.Tanh)


def test_linear_adds_its_bias_apart_in_compiled_scoring_and_computes_the_same():
    torch.manual_seed(0)
    layer, x = Linear(20, 30), torch.randn(4, 5, 20)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer)(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert isinstance(layer, torch.nn.Linear) and set(layer.state_dict()) == {"weight", "bias"}


def test_a_gated_layer_multiplies_its_values_by_the_sigmoid_of_its_gates():
    torch.manual_seed(0)
    mlp, x = MLP(6, [5, 4], 3, block="gated"), torch.randn(2, 7, 6)
    h = x
    for layer in (mlp[0], mlp[2]):  # [W; V]: the first n_out rows make the values, the rest the gates
        w, v = layer.weight.split(layer.out_features // 2)
        b, c = layer.bias.split(layer.out_features // 2)
        h = (h @ w.T + b) * torch.sigmoid(h @ v.T + c)
    torch.testing.assert_close(mlp(x), h @ mlp[4].weight.T + mlp[4].bias)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [10, 8, 3]
    with pytest.raises(ValueError, match="unknown block 'residual'"):
        MLP(6, [5], 3, block="residual")


def test_a_seed_draws_the_plain_mlp_it_always_drew():
    """Each Linear made and initialized in turn, as before blocks existed: old seeds give old weights."""
    torch.manual_seed(3)
    mlp = MLP(8, [6, 5], 4, activation="elu")
    torch.manual_seed(3)
    reference = []
    for n_in, n_out in [(8, 6), (6, 5), (5, 4)]:
        reference.append(Linear(n_in, n_out))
        init_linear(reference[-1], "glorot")
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(torch.equal(a.weight, b.weight) for a, b in zip(linears, reference))
    assert [type(m).__name__ for m in mlp] == ["Linear", "ELU", "Linear", "ELU", "Linear"]
