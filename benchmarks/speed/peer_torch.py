"""The PyTorch reference of `benchmarks.speed.peer`: amp-tf's network, T and AMP in plain torch.

Importing this module imports torch (ImportError without it: PyTorch is never a
requirement of amp-tf; `benchmarks.speed.peer_models.load_torch` returns None then),
and nothing of this repository: the comparison's settings (T every `cycle`
steps, crop padding `pad`) are `benchmarks.speed.peer_models`' and come in as
arguments, so the two modules import in one direction only (peer_models ->
peer_torch).

`TorchResNetSmall` is amp-tf's `resnet_small`; `TorchTrainer` the reference
anchored training loop (per-epoch shuffle, crop + flip, T on every 5th step);
`torch_amp_outputs` AMP's reduction (mean tau, exp calibration).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu((x if self.proj is None else self.proj(x)) + h)


class TorchResNetSmall(nn.Module):
    """amp-tf's resnet_small: stem conv3x3+BN+ReLU, blocks w/2w/4w (strides 1/2/2), GAP, Linear."""

    def __init__(self, cin, width=16, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.ReLU())
        self.blocks = nn.Sequential(TorchBlock(width, width, 1), TorchBlock(width, 2 * width, 2),
                                    TorchBlock(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def torch_crop_flip(x, g, pad):
    """Per-sample random crop (zero pad) + flip on an NHWC batch, vectorised; returns NCHW."""
    b, h, w, _ = x.shape
    p = F.pad(x, (0, 0, pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    rows = oy[:, None] + torch.arange(h)
    ar = torch.arange(w)
    cols = torch.where(flip[:, None], w - 1 - ar, ar) + ox[:, None]
    out = p[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]  # B,H,W,C
    return out.permute(0, 3, 1, 2).contiguous()


def torch_T(c, g, lo=0.0, hi=255.0):
    """amp-tf's T "all" for 1 channel in plain torch: resized crop (area 0.25-1, ratio
    3/4-4/3, bilinear), flip p=.5, brightness+contrast 0.4 in random order p=.8,
    Gaussian blur sigma 0.1-2 k=5 p=.8; per-sample parameters."""
    b, ch, h, w = c.shape
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    area = 0.25 + 0.75 * u(b)
    r = torch.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * u(b))
    bh = torch.clamp(torch.sqrt(area / r), max=1.0)
    bw = torch.clamp(torch.sqrt(area * r), max=1.0)
    y0, x0 = u(b) * (1 - bh), u(b) * (1 - bw)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = bw, (x0 + bw / 2) * 2 - 1
    theta[:, 1, 1], theta[:, 1, 2] = bh, (y0 + bh / 2) * 2 - 1
    grid = F.affine_grid(theta, (b, ch, h, w), align_corners=True)
    c = F.grid_sample(c, grid, mode="bilinear", padding_mode="border", align_corners=True)
    c = torch.where((u(b) < 0.5)[:, None, None, None], c.flip(3), c)
    # colour jitter
    span = hi - lo
    delta = (u(b, 1, 1, 1) * 0.8 - 0.4) * span
    cf = 0.6 + 0.8 * u(b, 1, 1, 1)
    jit = c
    for op in (("b", "c") if u(1).item() < 0.5 else ("c", "b")):
        if op == "b":
            jit = jit + delta
        else:
            m = jit.mean((1, 2, 3), keepdim=True)
            jit = (jit - m) * cf + m
        jit = jit.clamp(lo, hi)
    c = torch.where((u(b) < 0.8)[:, None, None, None], jit, c)
    # blur: separable per-sample kernels as one grouped conv over B*C channels
    sig = 0.1 + 1.9 * u(b)
    xs = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(xs[None] ** 2) / (2 * sig[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (B*C, 5)
    z = F.pad(c.reshape(1, b * ch, h, w), (2, 2, 2, 2), mode="reflect")
    z = F.conv2d(z, k[:, None, :, None], groups=b * ch)
    z = F.conv2d(z, k[:, None, None, :], groups=b * ch).reshape(b, ch, h, w)
    return torch.where((u(b) < 0.8)[:, None, None, None], z, c)


class TorchTrainer:
    """Reference anchored training loop: in-memory data, per-epoch shuffle, crop+flip (zero padding
    `pad`), T on every `cycle`-th step."""

    def __init__(self, args, x, y, augment=True, seed=0, *, cycle, pad):
        torch.manual_seed(seed)
        self.args, self.augment = args, augment
        self.cycle, self.pad = cycle, pad
        self.x = torch.from_numpy(x)  # N,H,W,C raw pixels
        self.y = torch.from_numpy(y.astype("int64"))
        self.model = TorchResNetSmall(2, args.width)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.g = torch.Generator().manual_seed(seed)
        self.step = 0

    def epoch(self):
        b = self.args.batch_size
        n = len(self.x)
        perm = torch.randperm(n, generator=self.g)
        self.model.train()
        for i in range(n // b):
            idx = perm[i * b:(i + 1) * b]
            xb = self.x[idx]
            if self.augment:
                xb = torch_crop_flip(xb, self.g, self.pad)
            else:
                xb = xb.permute(0, 3, 1, 2).contiguous()
            yb = self.y[idx]
            c = xb[torch.randperm(b, generator=self.g)]
            view = torch_T(c, self.g) if self.step % self.cycle == 0 else c
            inp = torch.cat([(view - 127.5) / 127.5, (xb - c) / 127.5], 1)
            out = self.model(inp)
            loss = F.cross_entropy(out, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            acc = (out.argmax(1) == yb).float().mean()  # noqa: F841  (the metric Keras computes)
            self.step += 1
        return float(loss.detach())


def torch_amp_outputs(logits):
    """(K, B, N) -> AMP score etc., as amp_tf.method.predictor.amp_outputs (mean tau, exp calibration)."""
    h = logits.mean(0)
    tau = torch.sigmoid(logits).std(0, unbiased=True).mean(-1)
    hc = h / (1 + torch.exp(tau))[:, None]
    amp = torch.logsumexp(hc, -1) - hc.mean(-1)
    return {"logits": h, "tau": tau, "calibrated_logits": hc, "amp_score": amp,
            "probabilities": torch.softmax(hc, -1)}


def torch_param_count(model):
    return sum(p.numel() for p in model.parameters())
