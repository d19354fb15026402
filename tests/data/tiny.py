"""Small real models for training tests (usconvert convert tests/data/tiny.py:tiny)."""

from torch import nn


def tiny(num_classes: int = 10) -> nn.Module:
    """Conv, batch norm, depthwise, residual, dropout: every part of training state matters."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, num_classes))


def tiny_no_bn(num_classes: int = 10) -> nn.Module:
    """No batch norm: distributed training must match one process exactly."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


class _DropBlock(nn.Module):
    """Dropout and timm's drop-path right before batch norms: calibration must see them off."""

    def __init__(self, channels: int):
        super().__init__()
        from timm.layers import DropPath
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm2d(channels)
        self.drop_path = DropPath(0.5)
        self.bn_after_residual = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn_after_residual(x + self.drop_path(self.bn(self.drop(self.conv(x)))))


def tiny_dropout(num_classes: int = 10) -> nn.Module:
    """Dropout and drop-path before batch norms (2d, and 1d after pooling, where a batch of one
    image has one value per channel)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        _DropBlock(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, num_classes))


class _Segmenter(nn.Module):
    """Dense prediction as torchvision's segmentation models give it: a dict of outputs."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.classifier, self.aux_classifier = nn.Conv2d(32, num_classes, 1), nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        early = self.stem(x)
        logits = nn.functional.interpolate(self.classifier(self.body(early)), size=x.shape[-2:])
        return {"out": logits, "aux": nn.functional.interpolate(self.aux_classifier(early), size=x.shape[-2:])}


def tiny_segmenter(num_classes: int = 4) -> nn.Module:
    return _Segmenter(num_classes)
