"""Forward and gradients against PyTorch on randomized configurations (CI installs torch)."""
import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab.layers.geometry import resolve_padding
from conftest import random_conv_configs

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_default_dtype(torch.float64)


def to_torch(x):
    """(N, H, W, C) -> (N, C, H, W) leaf tensor that records its gradient."""
    return torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)


def from_torch(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("cfg,shape", random_conv_configs(40, seed=100, groups=(1, 1, 2, 4), max_kernel=5, max_stride=3,
                                                             sizes=(5, 16), max_batch=4, max_channels_per_group=3,
                                                             max_filters_per_group=4))
def test_conv2d_matches_torch(cfg, shape):
    rng = np.random.default_rng(101)
    x = rng.standard_normal(shape)
    layer = L.Conv2D(**cfg)
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    if cfg["use_bias"]:
        layer.params["bias"][...] = rng.standard_normal(cfg["filters"])
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)

    t, b, l, r = resolve_padding(layer.padding, shape[1:3], layer.kernel_size, layer.strides, layer.dilation)
    xt = to_torch(x)
    w = torch.tensor(layer.params["kernel"].transpose(3, 2, 0, 1).copy(), requires_grad=True)   # (F, C/g, kh, kw)
    bias = torch.tensor(layer.params["bias"], requires_grad=True) if cfg["use_bias"] else None
    yt = F.conv2d(F.pad(xt, (l, r, t, b)), w, bias, stride=layer.strides, dilation=layer.dilation, groups=cfg["groups"])
    yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(y, from_torch(yt), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, from_torch(xt.grad), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["kernel"], w.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-10)
    if cfg["use_bias"]:
        np.testing.assert_allclose(layer.grads["bias"], bias.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_conv2d_float32_matches_torch():
    rng = np.random.default_rng(102)
    x = rng.standard_normal((8, 28, 28, 1)).astype(np.float32)
    layer = L.Conv2D(6, 5, padding="same")
    y = layer.forward(x)
    w = torch.tensor(layer.params["kernel"].transpose(3, 2, 0, 1).copy(), dtype=torch.float32)
    yt = F.conv2d(torch.tensor(x.transpose(0, 3, 1, 2).copy()), w, torch.tensor(layer.params["bias"]), padding=2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, yt.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def pool_configs(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        shape = (int(rng.integers(1, 4)), int(rng.integers(k[0] + 1, 14)), int(rng.integers(k[1] + 1, 14)), int(rng.integers(1, 5)))
        out.append((k, s, p, shape))
    return out


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k,s,p,shape", pool_configs(15, seed=200))
def test_pools_match_torch(kind, k, s, p, shape, compiled_loops):
    rng = np.random.default_rng(201)
    x = rng.standard_normal(shape)
    layer = (L.MaxPool2D if kind == "max" else L.AvgPool2D)(k, strides=s, padding=p)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt = to_torch(x)
    if kind == "max":
        yt = F.max_pool2d(xt, k, s, p)
    else:
        yt = F.avg_pool2d(xt, k, s, p, count_include_pad=False)
    yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(y, from_torch(yt), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, from_torch(xt.grad), rtol=1e-12, atol=1e-12)


def test_maxpool_ties_route_gradient_like_torch(compiled_loops):
    x = np.zeros((1, 4, 4, 1))                      # every window is a tie
    layer = L.MaxPool2D(2)
    layer.forward(x)
    dx = layer.backward(np.ones((1, 2, 2, 1)))
    xt = to_torch(x)
    F.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_array_equal(dx, from_torch(xt.grad))


def test_dense_matches_torch():
    rng = np.random.default_rng(300)
    for n, din, dout in [(1, 3, 4), (7, 20, 5), (32, 400, 120)]:
        x = rng.standard_normal((n, din))
        layer = L.Dense(dout)
        layer.build((din,), rng=rng, dtype=np.float64)
        layer.params["bias"][...] = rng.standard_normal(dout)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        lin = torch.nn.Linear(din, dout)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(layer.params["kernel"].T))
            lin.bias.copy_(torch.tensor(layer.params["bias"]))
        yt = lin(xt)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grads["kernel"], lin.weight.grad.numpy().T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grads["bias"], lin.bias.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("shape", [(8, 5), (4, 6, 7, 3), (1, 5, 5, 2)])
def test_batchnorm_matches_torch(shape):
    rng = np.random.default_rng(400)
    layer = L.BatchNorm(momentum=0.1, eps=1e-5)
    layer.build(shape[1:], rng=rng, dtype=np.float64)
    c = shape[-1]
    layer.params["gamma"][...] = rng.uniform(0.5, 2, c)
    layer.params["beta"][...] = rng.standard_normal(c)
    bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(layer.params["gamma"]))
        bn.bias.copy_(torch.tensor(layer.params["beta"]))
    nchw = (lambda a: a) if len(shape) == 2 else (lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    back = (lambda a: a) if len(shape) == 2 else (lambda a: a.transpose(0, 2, 3, 1))
    for step in range(3):                            # running statistics evolve identically
        x = rng.standard_normal(shape) * 2 + step
        y = layer.forward(x, training=True)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        xt = torch.tensor(nchw(x), requires_grad=True)
        bn.train()
        bn.weight.grad = bn.bias.grad = None
        yt = bn(xt)
        yt.backward(torch.tensor(nchw(dy)))
        np.testing.assert_allclose(y, back(yt.detach().numpy()), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(dx, back(xt.grad.numpy()), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(layer.grads["gamma"], bn.weight.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(layer.grads["beta"], bn.bias.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_mean"], bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_var"], bn.running_var.numpy(), rtol=1e-10)
    bn.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(layer.forward(x, training=False), back(bn(torch.tensor(nchw(x))).detach().numpy()),
                               rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name,ours,theirs", [
    ("sgd", lambda: cnnlab.optim.SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ("momentum", lambda: cnnlab.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("nesterov", lambda: cnnlab.optim.SGD(lr=0.05, momentum=0.8, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    ("adam", lambda: cnnlab.optim.Adam(lr=0.01, weight_decay=1e-3), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3)),
    ("adamw", lambda: cnnlab.optim.AdamW(lr=0.01, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
])
def test_optimizers_match_torch(name, ours, theirs):
    rng = np.random.default_rng(500)
    w = rng.standard_normal((4, 3))
    wt = torch.tensor(w.copy(), requires_grad=True)
    opt, topt = ours(), theirs([wt])
    for _ in range(6):
        g = rng.standard_normal(w.shape)
        opt.step([("w", w, g)])
        wt.grad = torch.tensor(g)
        topt.step()
        np.testing.assert_allclose(w, wt.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_lenet5_training_step_matches_torch():
    """The whole network: same weights, one SGD-momentum step on the same batch, same result."""
    model = cnnlab.models.lenet5(seed=3).astype(np.float64)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
                              torch.nn.Linear(84, 10))
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    ours = [layer for layer in model.layers if layer.params]
    with torch.no_grad():
        for mod, layer in zip(convs + linears, ours):
            k = layer.params["kernel"]
            if k.ndim == 4:
                mod.weight.copy_(torch.tensor(k.transpose(3, 2, 0, 1).copy()))
            elif mod is linears[0]:
                # Our Flatten is channels-last (H, W, C); torch's is (C, H, W): permute the rows.
                mod.weight.copy_(torch.tensor(k.reshape(5, 5, 16, 120).transpose(3, 2, 0, 1).reshape(120, 400).copy()))
            else:
                mod.weight.copy_(torch.tensor(k.T.copy()))
            mod.bias.copy_(torch.tensor(layer.params["bias"]))
    rng = np.random.default_rng(501)
    x, y = rng.random((16, 28, 28, 1)), rng.integers(0, 10, 16)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=cnnlab.optim.SGD(lr=0.1, momentum=0.9), shuffle=False, verbose=0)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(net(torch.tensor(x.transpose(0, 3, 1, 2).copy())), torch.tensor(y))
    loss.backward()
    topt.step()
    np.testing.assert_allclose(model.history["loss"][0], loss.item(), rtol=1e-10)
    np.testing.assert_allclose(model["conv2d"].params["kernel"], convs[0].weight.detach().numpy().transpose(2, 3, 1, 0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model["dense_2"].params["kernel"], linears[2].weight.detach().numpy().T, rtol=1e-9, atol=1e-12)


def residual_configs(n, seed):
    """``n`` random (input channels, filters, strides, map height, width, batch) of the zoo's basic block."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(n):
        cin, strides = int(rng.integers(1, 7)), int(rng.integers(1, 3))
        filters = cin if strides == 1 and rng.random() < 0.5 else int(rng.integers(1, 9))
        out.append((cin, filters, strides, int(rng.integers(4, 11)), int(rng.integers(4, 11)), int(rng.integers(2, 5))))
    return out


@pytest.mark.parametrize("cin,filters,strides,h,w,n", [(4, 4, 1, 8, 8, 3), (3, 6, 2, 8, 8, 3)] + residual_configs(4, 711))
def test_residual_block_matches_torch(cin, filters, strides, h, w, n, compiled_loops):
    # The zoo's basic block (identity shortcut, and strided 1x1 projection) against the same block in PyTorch,
    # with the same weights, in training mode: outputs, input gradient and every parameter gradient. The block
    # ends in the stack's fused BatchNorm -> Add -> ReLU step, with the compiled loops and without.
    from cnnlab.models import _basic_block
    from cnnlab.stack import BatchNormAddReLU
    rng = np.random.default_rng(700 + strides + 10 * cin + h)
    inputs = cnnlab.Input((h, w, cin))
    model = cnnlab.Model(inputs, _basic_block(inputs, filters, strides)).astype(np.float64)
    assert sum(isinstance(r, BatchNormAddReLU) for r, *_ in model.stack.plan().steps) == 1
    nn = torch.nn
    convs = [nn.Conv2d(cin, filters, 3, strides, 1, bias=False), nn.Conv2d(filters, filters, 3, 1, 1, bias=False)]
    bns = [nn.BatchNorm2d(filters), nn.BatchNorm2d(filters)]
    if strides != 1 or cin != filters:
        convs.append(nn.Conv2d(cin, filters, 1, strides, bias=False))
        bns.append(nn.BatchNorm2d(filters))
    ours_conv = [layer for layer in model.layers if isinstance(layer, L.Conv2D)]
    ours_bn = [layer for layer in model.layers if isinstance(layer, L.BatchNorm)]
    assert len(ours_conv) == len(convs) and len(ours_bn) == len(bns)
    with torch.no_grad():
        for layer, conv in zip(ours_conv, convs):
            conv.weight.copy_(torch.tensor(layer.params["kernel"].transpose(3, 2, 0, 1)))   # HWIO -> OIHW
        for layer, bn in zip(ours_bn, bns):
            layer.params["gamma"][...] = rng.uniform(0.5, 2, filters)
            layer.params["beta"][...] = rng.standard_normal(filters)
            bn.weight.copy_(torch.tensor(layer.params["gamma"]))
            bn.bias.copy_(torch.tensor(layer.params["beta"]))
    x = rng.standard_normal((n, h, w, cin))
    for layer in model.layers:
        layer.needs_input_grad = True                  # the input gradient too (in training mode)
    y = model.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = model.backward(dy)
    xt = to_torch(x)
    h = F.relu(bns[0](convs[0](xt)))
    h = bns[1](convs[1](h))
    yt = F.relu(h + (bns[2](convs[2](xt)) if len(convs) == 3 else xt))
    yt.backward(torch.tensor(np.ascontiguousarray(dy.transpose(0, 3, 1, 2))))
    np.testing.assert_allclose(y, from_torch(yt), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dx, from_torch(xt.grad), rtol=1e-8, atol=1e-10)
    for layer, conv in zip(ours_conv, convs):
        np.testing.assert_allclose(layer.grads["kernel"], conv.weight.grad.numpy().transpose(2, 3, 1, 0),
                                   rtol=1e-8, atol=1e-10)
    for layer, bn in zip(ours_bn, bns):
        np.testing.assert_allclose(layer.grads["gamma"], bn.weight.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(layer.grads["beta"], bn.bias.grad.numpy(), rtol=1e-8, atol=1e-10)
