"""detectron2 adapter, tested against detectron2's documented conventions (not detectron2).

detectron2 is not on PyPI. RetinaNet.label_anchors gives gt_labels in {-1 ignored, 0..K-1,
K background}; RetinaNet.losses gets pred_logits per level [N, Hi*Wi*Ai, K] and computes
sigmoid focal loss over valid anchors with one_hot(gt, K+1)[:, :-1] targets, divided by an EMA
of max(1, positives) (momentum 0.9, initial 100). The reference below is that code path.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torchvision.ops import sigmoid_focal_loss  # noqa: E402

from conftest import rel  # noqa: E402
from hardmine.capture import DumpWriter, detectron2_batch_to_dump, detectron2_labels  # noqa: E402

K = 4


def test_labels_convention():
    np.testing.assert_array_equal(detectron2_labels(torch.tensor([0, 3, 4, -1, 4]), K),
                                  [0, 3, -1, -2, -1])
    with pytest.raises(ValueError, match="outside detectron2"):
        detectron2_labels(torch.tensor([5]), K)
    with pytest.raises(ValueError, match="outside detectron2"):
        detectron2_labels(torch.tensor([-2]), K)


def test_batch_matches_detectron2_loss(tmp_path, analyze):
    g = torch.Generator().manual_seed(0)
    counts = [8 * 8 * 9, 4 * 4 * 9, 2 * 2 * 9]
    n = 2
    pred_logits = [torch.randn(n, c, K, generator=g) - 2 for c in counts]
    gt_labels = []
    for _ in range(n):
        lab = torch.full((sum(counts),), K)
        r = torch.rand(sum(counts), generator=g)
        lab[r < 0.05] = torch.randint(0, K, (int((r < 0.05).sum()),), generator=g)
        lab[(r >= 0.05) & (r < 0.12)] = -1
        gt_labels.append(lab)
    d = detectron2_batch_to_dump(pred_logits, gt_labels, K, first_level=3)
    np.testing.assert_array_equal(d["levels"][0], np.repeat([3, 4, 5], counts))
    path = DumpWriter(tmp_path, rank=0).write_step(0, d["labels"], d["logits"], levels=d["levels"])

    # detectron2 RetinaNet.losses, classification part
    gt = torch.stack(gt_labels)
    valid = gt >= 0
    pos = (gt >= 0) & (gt != K)
    normalizer = 0.9 * 100 + 0.1 * max(int(pos.sum()), 1)
    target = F.one_hot(gt[valid], num_classes=K + 1)[:, :-1].float()
    loss_cls = sigmoid_focal_loss(torch.cat(pred_logits, 1)[valid], target, alpha=0.25,
                                  gamma=2.0, reduction="sum") / normalizer
    j = analyze(path, "--strategies", "focal", "--gamma", "2", "--alpha", "0.25")
    focal = next(s for s in j["strategies"] if s["name"] == "focal")
    assert rel(focal["loss"]["total"] / normalizer, float(loss_cls)) <= 1e-5
    assert j["dataset"]["ignored"] == int((gt == -1).sum())


def test_install_without_detectron2(tmp_path):
    try:
        import detectron2  # noqa: F401
    except ImportError:
        from hardmine.capture import detectron2 as d2

        with pytest.raises(ImportError, match="not on PyPI"):
            d2.install(torch.nn.Linear(1, 1), tmp_path)
    else:  # pragma: no cover
        pytest.skip("detectron2 is installed: the real-framework path applies")
