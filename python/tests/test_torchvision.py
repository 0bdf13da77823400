"""torchvision adapters checked against torchvision itself: tiny models, one CPU training step.

The reference values are the losses torchvision returns and the anchors-per-level split of the
model's own feature maps and anchor generator, never values computed by hardmine.capture.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models import detection as tvd  # noqa: E402

from conftest import rel  # noqa: E402
from hardmine.capture import install  # noqa: E402

TOL = 1e-5


def batch(first_class: int):
    """Three images of different sizes: two with boxes, one without (max(1, 0) normaliser)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 128, generator=g), torch.rand(3, 128, 192, generator=g),
              torch.rand(3, 160, 128, generator=g)]
    c = first_class
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [30.0, 40.0, 120.0, 124.0]]),
         "labels": torch.tensor([c, c + 2])},
        {"boxes": torch.tensor([[0.0, 0.0, 100.0, 64.0], [120.0, 20.0, 180.0, 120.0],
                                [5.0, 70.0, 40.0, 100.0]]),
         "labels": torch.tensor([c + 1, c, c + 2])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    return images, targets


class FeatureShapes:
    """Records the backbone's feature-map shapes and the padded batch size of a forward."""

    def __init__(self, model):
        self.shapes = []
        self.image_hw = None
        model.backbone.register_forward_hook(self._features)
        model.anchor_generator.register_forward_pre_hook(self._images)

    def _features(self, module, args, out):
        maps = out.values() if isinstance(out, dict) else [out]
        self.shapes = [tuple(m.shape[-2:]) for m in maps]

    def _images(self, module, args):
        self.image_hw = tuple(args[0].tensors.shape[-2:])


def expected_split(model, shapes):
    per_loc = model.anchor_generator.num_anchors_per_location()
    assert len(per_loc) == len(shapes)
    return [h * w * a for (h, w), a in zip(shapes, per_loc)]


def read_levels(path):
    t = pq.read_table(path)
    ids = t["image_id"].to_numpy()
    levels = t["level"].to_numpy()
    return {i: levels[ids == i] for i in np.unique(ids)}, t


def check_levels(path, counts, first_level):
    expected = np.repeat(np.arange(first_level, first_level + len(counts)), counts)
    per_image, _ = read_levels(path)
    assert len(per_image) == 3
    for lv in per_image.values():
        np.testing.assert_array_equal(lv, expected)


def train_step(model, images, targets):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(images, targets)
    sum(losses.values()).backward()
    opt.step()
    opt.zero_grad()
    return {k: float(v.detach()) for k, v in losses.items()}


def test_retinanet_focal_equals_torchvision(tmp_path, analyze):
    torch.manual_seed(0)
    model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4,
                                       min_size=128, max_size=192).train()
    shapes = FeatureShapes(model)
    cap = install(model, tmp_path / "dump")
    images, targets = batch(first_class=0)
    measured = []
    for step in range(2):  # the second step runs on updated weights: a new dump, a new loss
        losses = train_step(model, images, targets)
        path = tmp_path / "dump" / f"part-r00000-s{step:010d}.parquet"
        j = analyze(path, "--strategies", "focal", "--gamma", "2", "--alpha", "0.25")
        focal = next(s for s in j["strategies"] if s["name"] == "focal")
        measured.append(rel(focal["loss"]["normalized"], losses["classification"]))
        assert measured[-1] <= TOL, (focal["loss"], losses)
        assert j["dataset"]["images"] == 3 and j["dataset"]["ignored"] > 0
        # Levels: the backbone's P3..P7 maps x the anchor generator's anchors per location.
        counts = expected_split(model, shapes.shapes)
        assert cap.last_level_counts == counts
        check_levels(path, counts, 3)
    print(f"retinanet max relative difference {max(measured):.3g}")

    # Anchors of sizes 128 and 512 at aspect ratios 0.5 and 2 have sqrt(area) just below 128 /
    # 512; the old box-size formula filed them under P4 / P6. They belong to P5 / P7.
    _, t = read_levels(tmp_path / "dump" / "part-r00000-s0000000000.parquet")
    w = t["x2"].to_numpy() - t["x1"].to_numpy()
    h = t["y2"].to_numpy() - t["y1"].to_numpy()
    side = np.sqrt(w * h)
    lv = t["level"].to_numpy()
    for size, level in ((128, 5), (512, 7)):
        near = (side > size - 1) & (side < size) & (np.abs(w - h) > 1)
        assert near.any()
        assert set(lv[near]) == {level}
        old = 3 + np.clip(np.floor(np.log2(side[near] / 32) + 1e-6), 0, 4)
        assert (old != level).all()  # the formula the adapter replaces gets these wrong

    # The ignored anchors are the Matcher's BETWEEN_THRESHOLDS ones; -1 is background.
    assert set(np.unique(t["label"].to_numpy())) <= {-2, -1, 0, 1, 2, 3}

    cap.remove()
    assert "compute_loss" not in model.head.__dict__
    train_step(model, images, targets)
    assert len(os.listdir(tmp_path / "dump")) == 2  # removed: nothing more written


def test_fcos_batch_normalizer_equals_torchvision(tmp_path, analyze):
    torch.manual_seed(0)
    model = tvd.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4,
                                  min_size=128, max_size=192).train()
    shapes = FeatureShapes(model)
    install(model, tmp_path / "dump")
    images, targets = batch(first_class=0)
    losses = train_step(model, images, targets)
    path = tmp_path / "dump" / "part-r00000-s0000000000.parquet"
    j = analyze(path, "--strategies", "focal", "--gamma", "2", "--alpha", "0.25")
    batch_pos = next(n for n in j["normalizers"] if n["name"] == "batch_positives")["value"]
    d = rel(batch_pos, losses["classification"])
    print(f"fcos max relative difference {d:.3g}")
    assert d <= TOL, (batch_pos, losses)
    assert j["dataset"]["ignored"] == 0
    check_levels(path, expected_split(model, shapes.shapes), 3)


@pytest.mark.parametrize("builder", ["ssd300_vgg16", "ssdlite320_mobilenet_v3_large"])
def test_ssd_equals_torchvision(tmp_path, analyze, builder):
    torch.manual_seed(0)
    model = getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=5).train()
    shapes = FeatureShapes(model)
    cap = install(model, tmp_path / "dump")
    assert cap.analyze_args[:4] == ["--activation", "softmax", "--background-class", "0"]
    images, targets = batch(first_class=1)  # SSD: class 0 is the background
    losses = train_step(model, images, targets)
    path = tmp_path / "dump" / "part-r00000-s0000000000.parquet"
    j = analyze(path, *cap.analyze_args)
    ssd = next(s for s in j["strategies"] if s["name"] == "ssd")
    d = rel(ssd["extra"]["torchvision_normalized"], losses["classification"])
    print(f"{builder} max relative difference {d:.3g}")
    assert d <= TOL, (ssd, losses)
    assert j["metadata"]["activation"] == "softmax"
    counts = expected_split(model, shapes.shapes)
    first = round(math.log2(shapes.image_hw[0] // shapes.shapes[0][0]))
    check_levels(path, counts, first)
    labels = pq.read_table(path, columns=["label"])["label"].to_numpy()
    assert labels.min() == 0 and (labels > 0).any() and labels.max() <= 4


def test_ddp_wrapped_model(tmp_path, analyze):
    """install() goes through DistributedDataParallel's .module; the rank names the file."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0,
                            world_size=1)
    try:
        torch.manual_seed(0)
        inner = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                  num_classes=5).train()
        model = torch.nn.parallel.DistributedDataParallel(inner)
        cap = install(model, tmp_path / "dump", max_steps=1, rank=7)
        assert cap.model is inner
        images, targets = batch(first_class=1)
        losses = [train_step(model, images, targets) for _ in range(2)]
    finally:
        dist.destroy_process_group()
    assert os.listdir(tmp_path / "dump") == ["part-r00007-s0000000000.parquet"]  # max_steps=1
    j = analyze(tmp_path / "dump", *cap.analyze_args)
    ssd = next(s for s in j["strategies"] if s["name"] == "ssd")
    assert rel(ssd["extra"]["torchvision_normalized"], losses[0]["classification"]) <= TOL


def test_unsupported_models_are_refused(tmp_path):
    frcnn = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    with pytest.raises(TypeError, match="Faster R-CNN's RPN and box head sample"):
        install(frcnn, tmp_path / "a")

    class MyHead(tvd.retinanet.RetinaNetClassificationHead):
        def compute_loss(self, targets, head_outputs, matched_idxs):
            return super().compute_loss(targets, head_outputs, matched_idxs) * 2

    model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    model.head.classification_head = MyHead(256, 9, 3)
    with pytest.raises(TypeError, match=r"MyHead\.compute_loss.*DumpWriter"):
        install(model, tmp_path / "b")

    with pytest.raises(TypeError, match="no capture adapter"):
        install(torch.nn.Linear(2, 2), tmp_path / "c")
