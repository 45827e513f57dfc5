"""The CAM-ready model: a backbone producing the last convolutional features, the linear
layer of a global-average-pooling head, labels and preprocessing (:class:`CamModel`).
How a network's head becomes that pair (exactly) is :mod:`camvideo.model.heads`.
Made by :func:`camvideo.model.registry.load_model` or :func:`camvideo.model.registry.from_modules`."""
from __future__ import annotations

import difflib
import logging
import threading
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..cam import logits_from_features
from ..pixels import resize_u8
from ..errors import ClassNameError
from ..options import DEFAULT_SIZE

__all__ = ["CamModel"]

log = logging.getLogger(__name__)
_BUILD_LOCK = threading.Lock()


class CamModel(nn.Module):
    """A classifier split for CAM: ``backbone`` → features, ``fc`` the GAP head's linear layer,
    so that ``logits = fc(mean_xy(backbone(x)))`` and class ``c``'s map is ``fc.weight[c] ·
    features``.

    What the features are depends on the head (:mod:`camvideo.model.heads`): the last
    convolutional maps (pool + linear heads), those maps normalised per frame (pool +
    LayerNorm + linear heads, ConvNeXt), or the ``K`` class maps themselves with ``fc``
    the identity (SqueezeNet's 1×1-conv classifier before the pooling).

    Attributes:
        name: registry name.
        backbone: maps ``(N, 3, H, W)`` normalised input to ``(N, C, h, w)`` features.
        fc: ``nn.Linear(C, K)``.
        labels: ``K`` class names.
        mean, std: RGB normalisation of inputs in ``[0, 1]``.
        stride: total downsampling of the backbone (input sizes are multiples of it).
        map_stride: the features' downsampling: :attr:`stride`, or half of it for fine
            maps (:func:`camvideo.model.finemaps.fine_maps`).
        min_side: the smallest input side the network accepts (pixels; Inception v3: 75).
        native_side: the input side its weights were trained at (pixels; 299 for
            Inception v3, 224 for most).
        head: how the head was decomposed (text, for logs).
        kind: ``"image"`` (a :class:`~camvideo.model.video.VideoCamModel` is ``"video"``).
        clip_len: frames per clip (0: an image network).
        default_side: the input short side used when none is given
            (:data:`camvideo.options.DEFAULT_SIZE`, 224).

    A model read from the cache (:func:`deferred`) has its head, labels and preprocessing
    but not its backbone yet: the backbone is built (timm/torchvision imported, weights
    loaded) the first time anything reads :attr:`backbone`, which camvideo's own paths
    avoid when the traced or int8 network is cached (:attr:`backbone_built`, :meth:`defer`).
    """

    kind = "image"
    clip_len = 0

    def __init__(self, name: str, backbone: nn.Module, fc: nn.Linear, labels: list[str],
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 stride: int = 32, *, min_side: int = 1, native_side: int = 224,
                 head: str = "pool + linear") -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.fc = fc
        self.labels = list(labels)
        self.stride = stride
        self.map_stride = stride
        self.min_side = int(min_side)
        self.native_side = int(native_side)
        self.head = head
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @classmethod
    def deferred(cls, name: str, build: Callable[[], nn.Module], fc: nn.Linear,
                 labels: list[str], mean: tuple[float, float, float],
                 std: tuple[float, float, float], stride: int = 32,
                 **attrs: Any) -> "CamModel":
        """A model whose backbone ``build()`` makes on first use (see the class notes);
        ``attrs``: ``min_side``, ``native_side``, ``head`` as for the constructor."""
        model = cls(name, nn.Identity(), fc, labels, mean, std, stride, **attrs)
        model.__dict__["_camvideo_pending"] = [build]
        return model

    @property
    def backbone(self) -> nn.Module:  # type: ignore[override]
        """maps ``(N, 3, H, W)`` normalised input to ``(N, C, h, w)`` features (built now
        if it was deferred)."""
        if self.__dict__.get("_camvideo_pending"):
            self._build_backbone()
        return self._modules["backbone"]  # type: ignore[return-value]

    @property
    def backbone_built(self) -> bool:
        """False while a deferred backbone has not been built."""
        return not self.__dict__.get("_camvideo_pending")

    def defer(self, fn: Callable[[nn.Module], nn.Module]) -> bool:
        """Apply ``fn`` to the backbone when it is built; False (nothing done) when it
        is built already."""
        with _BUILD_LOCK:
            pending = self.__dict__.get("_camvideo_pending")
            if not pending:
                return False
            pending.append(fn)
            return True

    def _build_backbone(self) -> None:
        with _BUILD_LOCK:
            pending = self.__dict__.get("_camvideo_pending")
            if not pending:
                return
            log.info("%s: building the network (not all of it is in the cache)", self.name)
            with torch.inference_mode(False):  # the engine may ask from inside it
                net = pending[0]()
                for fn in pending[1:]:
                    net = fn(net)
            self._modules["backbone"] = net.to(self.fc.weight.device)
            self.__dict__["_camvideo_pending"] = None

    @property
    def weight(self) -> Tensor:
        """``(K, C)`` linear weight (the CAM weights)."""
        return self.fc.weight

    @property
    def bias(self) -> Tensor | None:
        """``(K,)`` linear bias."""
        return self.fc.bias

    @property
    def fine_maps(self) -> bool:
        """Whether its maps are the fine ones (:attr:`map_stride` below :attr:`stride`)."""
        return self.map_stride != self.stride

    @property
    def calibration_name(self) -> str:
        """What its calibrated box threshold is filed under
        (:data:`camvideo.cam.BBOX_THRESHOLDS`): its name, with ``@os16`` for fine maps."""
        return f"{self.name}@os{self.map_stride}" if self.fine_maps else self.name

    @property
    def default_side(self) -> int:
        return DEFAULT_SIZE

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    def input_size(self, frame_h: int, frame_w: int, short_side: int = 224) -> tuple[int, int]:
        """Model input ``(H, W)`` for a frame: short side ``short_side``, aspect ratio kept,
        both sides rounded to multiples of :attr:`stride` (a 16:9 frame at 224 gives
        224×384 and a 7×12 map), and at least :attr:`min_side` (rounded up to a multiple
        of :attr:`stride`: Inception v3 at ``short_side`` 32 gets 96)."""
        s = self.stride
        low = max(s, -(-self.min_side // s) * s)
        scale = max(short_side, self.min_side) / min(frame_h, frame_w)
        h = max(low, int(round(frame_h * scale / s)) * s)
        w = max(low, int(round(frame_w * scale / s)) * s)
        return h, w

    def preprocess(self, frames: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Resize and normalise a batch of frames.

        Args:
            frames: ``(N, H, W, 3)`` uint8 RGB, on the model's device.
            size: ``(H', W')`` model input size (see :meth:`input_size`).

        Returns:
            ``(x, frames01)``: ``x`` ``(N, 3, H', W')`` normalised input (channels_last),
            ``frames01`` ``(N, 3, H', W')`` float32 RGB in ``[0, 1]``.
        """
        x = frames.permute(0, 3, 1, 2)  # a channels_last view, no copy
        if tuple(x.shape[-2:]) == tuple(size):
            x = x.float().div_(255.0)
        elif x.device.type == "cpu" and x.dtype == torch.uint8:
            x = resize_u8(x, size).float().div_(255.0)
        else:
            x = x.float().div_(255.0)
            x = nn.functional.interpolate(x, size=size, mode="bilinear",
                                          align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)
        return self.normalize(x), x

    def normalize(self, frames01: Tensor) -> Tensor:
        """``(N, 3, H, W)`` RGB in ``[0, 1]`` → the network's input (its mean and std,
        channels_last)."""
        return ((frames01 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(N, 3, H, W)`` normalised → ``(features (N, C, h, w), logits (N, K))``."""
        features = self.backbone(x)
        logits = logits_from_features(features, self.fc.weight, self.fc.bias)
        return features, logits

    def class_index(self, spec: str | int) -> int:
        """Resolve ``--class``: an index, or a label matched case-insensitively.

        Raises:
            ClassNameError: unknown index or name (the message lists close matches), or a
                name several classes share (ImageNet's ``Cardigan`` corgi and ``cardigan``
                sweater: the message lists their indexes).
        """
        k = len(self.labels)
        text = str(spec).strip()
        if text.lstrip("-").isdigit():
            idx = int(text)
            if not 0 <= idx < k:
                raise ClassNameError(f"class index {idx} is out of range 0..{k - 1}")
            return idx
        lowered = [lab.lower() for lab in self.labels]
        same = [i for i, lab in enumerate(lowered) if lab == text.lower()]
        if len(same) > 1:
            raise ClassNameError(f"class {text!r} is ambiguous for model {self.name}: "
                                 f"classes {', '.join(map(str, same))}; give the index")
        if same:
            return same[0]
        close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.6)
        close += [lab for lab in lowered if text.lower() in lab and lab not in close][:5]
        hint = f"; close matches: {', '.join(close[:5])}" if close else ""
        raise ClassNameError(f"unknown class {text!r} for model {self.name}{hint}")
